"""Streaming a vendor archive into S3: store_archive with 1, 3 and 4 parts in flight against boto3's
`upload_fileobj`, on a 1 GiB archive, into a moto server over loopback.

Every run is a fresh child process (so its peak RSS, getrusage's ru_maxrss, is its own), with a boto3 client
pointed at a moto server in another process (`python -m moto.server`): moto keeps the objects in memory, and
that must not count against the client. Every run reads the same chunk source (64 KiB chunks, what the
connectors read from `iter_content`, sliced from a random pool) and writes 8 MiB parts, SSE-KMS, CRC32:

- ours N=k: store_archive(..., parts_in_flight=k) (kind "bytes": sha256 and the length check, no zip spool);
- boto3 threads: `upload_fileobj` with the default TransferConfig (10 threads, 8 MiB parts), reading the
  chunks through a file-like;
- boto3 single: the same with `use_threads=False`.

Figures: MiB/s (best of REPEATS runs, interleaved, each run listed too), peak RSS (the highest of the runs) and its growth over
the RSS after imports and client creation, each with its ratio to boto3 with threads, next to the targets
(>= 0.9x its throughput at <= 0.6x its peak RSS). Both processes share this machine's CPUs: the server's
work (moto parses every part in Python) is part of every figure alike.

BENCH_STREAMING_MIB sets the archive size (default 1024), BENCH_STREAMING_REPEATS the runs per mode (3). Prints figures only; it never fails on a number.
"""

from __future__ import annotations

import io
import json
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.chunks import CHUNK, pool_chunks

MIB = 1024 * 1024
SIZE = int(os.environ.get("BENCH_STREAMING_MIB", "1024")) * MIB
PART = 8 * MIB  # DEFAULT_PART_SIZE, and boto3's default multipart_chunksize
REPEATS = int(os.environ.get("BENCH_STREAMING_REPEATS", "3"))
BUCKET = "dsrflow-bench-streaming"
REGION = "eu-west-1"
ROOT = Path(__file__).resolve().parent.parent
MODES = ("ours N=1", "ours N=3", "ours N=4", "boto3 threads", "boto3 single")
BASELINE = "boto3 threads"
TARGET_SPEED, TARGET_RSS = 0.9, 0.6


def _chunks(total: int) -> Iterator[bytes]:
    """The shared chunk source over a random pool that is not a multiple of the part size."""
    return pool_chunks(total, random.Random(0).randbytes(PART + 3 * CHUNK))


class _ChunkReader(io.RawIOBase):
    """The chunk source as a non-seekable file for upload_fileobj: read(n) joins chunks up to n bytes."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._rest = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        want = sys.maxsize if size is None or size < 0 else size
        out = bytearray(self._rest)
        for chunk in self._chunks:
            out += chunk
            if len(out) >= want:
                break
        self._rest = bytes(out[want:])
        return bytes(out[:want])


def _client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3", region_name=REGION, endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench"
    )


def _child(mode: str, endpoint: str, key_id: str, key: str) -> None:
    """One upload; print one JSON line of figures."""
    s3 = _client(endpoint)
    if mode.startswith("ours"):
        for p in (ROOT / "functions", ROOT):
            sys.path.insert(0, str(p))
        from core.archive_store import store_archive
        from core.domain import Archive
    else:
        from boto3.s3.transfer import TransferConfig
    s3.head_bucket(Bucket=BUCKET)  # endpoint rules, signer, connection: one-off costs in the baseline
    usage = resource.getrusage(resource.RUSAGE_SELF)
    before, cpu_before = usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime
    started = time.perf_counter()
    if mode.startswith("ours"):
        stored = store_archive(
            s3,
            BUCKET,
            key,
            key_id,
            Archive("a.zip", "application/zip", _chunks(SIZE), length=SIZE),
            PART,
            parts_in_flight=int(mode.rsplit("=", 1)[1]),
        )
        if stored.bytes != SIZE:  # a broken run must not print plausible figures
            raise RuntimeError(f"stored {stored.bytes} bytes of {SIZE}")
    else:
        config = TransferConfig(multipart_chunksize=PART, use_threads=mode == "boto3 threads")
        s3.upload_fileobj(
            _ChunkReader(_chunks(SIZE)),
            BUCKET,
            key,
            ExtraArgs={
                "ContentType": "application/zip",
                "ServerSideEncryption": "aws:kms",
                "SSEKMSKeyId": key_id,
                "ChecksumAlgorithm": "CRC32",
            },
            Config=config,
        )
    elapsed = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu_before
    print(json.dumps({"seconds": elapsed, "peak_rss": usage.ru_maxrss * 1024, "rss_before": before, "cpu": cpu}))


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # one log line per request
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("the moto server did not start") from None
            time.sleep(0.2)


def main() -> None:
    import boto3

    server, endpoint = _start_server()
    try:
        s3 = _client(endpoint)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        kms = boto3.client(
            "kms", region_name=REGION, endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench"
        )
        key_id = kms.create_key()["KeyMetadata"]["Arn"]
        print(
            f"{SIZE // MIB} MiB archive, {CHUNK // 1024} KiB chunks, {PART // MIB} MiB parts, SSE-KMS, CRC32; "
            f"moto server over loopback in another process; best of {REPEATS} runs",
            flush=True,
        )
        results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
        for run in range(REPEATS):
            for mode in MODES:
                key = f"requests/bench/vendor/export/{run}-{mode.replace(' ', '-')}.zip"
                server_cpu = _cpu_seconds(server.pid)
                out = subprocess.run(
                    [sys.executable, "-m", "bench.bench_streaming", "--child", mode, endpoint, key_id, key],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                if s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] != SIZE:
                    raise RuntimeError(f"{mode}: the object at {key} is not {SIZE} bytes")
                figures = json.loads(out.stdout.strip().splitlines()[-1])
                figures["server_cpu"] = _cpu_seconds(server.pid) - server_cpu  # includes the HEAD above
                s3.delete_object(Bucket=BUCKET, Key=key)  # moto holds it in memory
                results[mode].append(figures)
        _table(results)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _table(results: dict[str, list[dict[str, float]]]) -> None:
    rows = {
        mode: (
            SIZE / MIB / min(r["seconds"] for r in runs),
            max(r["peak_rss"] for r in runs),
            max(r["peak_rss"] - r["rss_before"] for r in runs),
        )
        for mode, runs in results.items()
    }
    gib = SIZE / (1024 * MIB)
    base_rate, base_peak, base_growth = rows[BASELINE]
    print(
        f"target: >= {TARGET_SPEED}x {BASELINE}'s throughput at <= {TARGET_RSS}x its peak RSS. CPU: seconds per "
        "GiB in the client and in the moto server (median run); runs: MiB/s of each run"
    )
    print(
        f"{'':>14} {'MiB/s':>6} {'x boto3':>8} {'peak RSS':>9} {'x boto3':>8} {'growth':>8} {'x boto3':>8} "
        f"{'client CPU':>10} {'server CPU':>10}   runs"
    )
    for mode, (rate, peak, growth) in rows.items():
        runs = results[mode]
        client_cpu = statistics.median(r["cpu"] for r in runs) / gib
        server_cpu = statistics.median(r["server_cpu"] for r in runs) / gib
        each = "/".join(f"{SIZE / MIB / r['seconds']:.0f}" for r in runs)
        print(
            f"{mode:>14} {rate:>6.0f} {rate / base_rate:>7.2f}x {peak / MIB:>5.0f} MiB {peak / base_peak:>7.2f}x "
            f"{growth / MIB:>4.0f} MiB {growth / base_growth:>7.2f}x {client_cpu:>9.1f}s {server_cpu:>9.1f}s   {each}",
            flush=True,
        )
    single = rows["boto3 single"][0]
    print("throughput x boto3 single: " + ", ".join(f"{m} {r[0] / single:.2f}x" for m, r in rows.items()))


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        _child(*sys.argv[2:])
    else:
        main()
