"""store_archive into moto S3, in-process: throughput and peak memory for 16, 64 and 256 MiB archives.

Archives arrive in 64 KiB chunks (what the connectors read from `iter_content`) and go up in the
production part size (8 MiB), with the default parts in flight (PARTS_IN_FLIGHT; bench_streaming compares
1, 3 and 4 against boto3 over loopback). Two passes per size, because tracemalloc slows allocation-heavy code:

- timed, untraced: MiB/s end to end (chunks -> sha256 -> botocore with its CRC32 trailer -> moto S3),
  including moto assembling the object in memory on CompleteMultipartUpload (S3 does that server-side);
- traced: peak while streaming, sampled as CompleteMultipartUpload is sent (moto spills stored parts to
  temporary files, so: our part buffer + botocore + moto's copies of the request in flight), and the
  peak for the whole call, which adds moto's in-memory assembly and so grows with the archive.
  moto's per-request objects sit in reference cycles that only the cyclic GC frees, and it rarely runs
  here: left alone they pile up to the archive's size. The traced pass collects after each part so the
  figure shows what stays alive, not moto's garbage (botocore alone leaves no such cycles: see the sink).

A second table repeats both passes with a real botocore client whose HTTP send is replaced by a sink
that reads and drops each body: our code and botocore, without moto, i.e. what a Lambda holds in memory
and the ceiling our side of the transfer can reach on this machine.

A third table measures content verification (core/verify.py) through the same sink: one zip read from
disk, stored as kind "bytes" (length only) and as kind "zip" (spooled to a temporary file, then every
member read back with its CRC checked), for a 64 MiB zip of stored random members and one of 128 MiB of
deflated JSONL (a vendor export's usual shape; the table shows the compressed size). MiB/s counts the
archive's (compressed) bytes.

Prints figures only; it never fails on a number.
"""

from __future__ import annotations

import gc
import json
import os
import random
import tempfile
import time
import tracemalloc
import zipfile
from collections.abc import Iterator
from typing import Any

import boto3
from moto import mock_aws

from bench.chunks import CHUNK, pool_chunks
from connectors.base import Archive
from core.archive_store import DEFAULT_PART_SIZE, store_archive
from local.discarding_s3 import DiscardingS3

MIB = 1024 * 1024
SIZES_MIB = (16, 64, 256)
BUCKET = "dsrflow-bench-archives"
REGION = "eu-west-1"


def _chunks(total: int, pool: bytes) -> Iterator[bytes]:
    return pool_chunks(total, pool, CHUNK)


class _SampleAtComplete:
    """Delegates to the S3 client; frees moto's cyclic garbage after each part and records the traced
    peak just before CompleteMultipartUpload."""

    def __init__(self, client: Any):
        self._client = client
        self.streaming_peak = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def upload_part(self, **kwargs: Any) -> Any:
        response = self._client.upload_part(**kwargs)
        gc.collect()
        return response

    def complete_multipart_upload(self, **kwargs: Any) -> Any:
        self.streaming_peak = tracemalloc.get_traced_memory()[1]
        return self._client.complete_multipart_upload(**kwargs)


def _measure(s3: Any, key_id: str, pool: bytes, size_mib: int) -> tuple[float, int, int, int]:
    """(MiB/s untraced, streaming peak, whole-call peak, archive bytes) for one archive size."""
    total = size_mib * MIB
    key = f"requests/bench/vendor/export/{size_mib}.zip"

    gc.collect()
    started = time.perf_counter()
    stored = store_archive(s3, BUCKET, key, key_id, Archive("a.zip", "application/zip", _chunks(total, pool)))
    elapsed = time.perf_counter() - started
    if stored.bytes != total:  # a broken run must not print plausible figures
        raise RuntimeError(f"stored {stored.bytes} bytes of {total}")

    gc.collect()
    sampler = _SampleAtComplete(s3)
    tracemalloc.start()
    try:
        store_archive(sampler, BUCKET, key, key_id, Archive("a.zip", "application/zip", _chunks(total, pool)))
        whole_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return size_mib / elapsed, sampler.streaming_peak, whole_peak, total


def _table(title: str, rows: Any) -> None:
    print(title)
    print(f"{'archive':>9} {'MiB/s':>7} {'peak streaming':>15} {'peak/archive':>13} {'peak whole call':>16}")
    for size_mib, (rate, streaming, whole, total) in rows:
        print(
            f"{size_mib:>5} MiB {rate:>7.0f} {streaming / MIB:>11.1f} MiB "
            f"{streaming / total:>13.3f} {whole / MIB:>12.1f} MiB",
            flush=True,
        )


def _file_chunks(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def _write_zip(path: str, total: int, deflated: bool) -> None:
    rng = random.Random(1)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if deflated else zipfile.ZIP_STORED) as zf:
        for i in range(8):
            with zf.open(f"table-{i}.jsonl" if deflated else f"blob-{i}.bin", "w") as out:
                written = 0
                while written < total // 8:
                    if deflated:  # distinct rows, so it compresses like real data, not like one row repeated
                        block = b"".join(
                            json.dumps(
                                {
                                    "id": written + n,
                                    "email": f"user{rng.randrange(10**6)}@example.com",
                                    "score": rng.random(),
                                    "events": ["view", "click"],
                                }
                            ).encode()
                            + b"\n"
                            for n in range(1000)
                        )
                    else:
                        block = rng.randbytes(MIB)
                    out.write(block)
                    written += len(block)


def _verification_table(sink: Any) -> None:
    print("content verification through the sink: one archive from disk, kind bytes vs kind zip")
    print(f"{'zip of':>22} {'archive':>9} {'bytes MiB/s':>12} {'zip MiB/s':>10} {'bytes peak':>11} {'zip peak':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, deflated in (("stored random members", False), ("deflated JSONL", True)):
            path = os.path.join(tmp, "export.zip")
            _write_zip(path, 64 * MIB if not deflated else 128 * MIB, deflated)
            size = os.path.getsize(path)
            rates, peaks = {}, {}
            for kind in ("bytes", "zip"):

                def run(path: str = path, kind: str = kind, size: int = size) -> None:  # bound now: B023
                    stored = store_archive(
                        sink,
                        BUCKET,
                        "k",
                        "alias/bench",
                        Archive("a.zip", "application/zip", _file_chunks(path), kind=kind),
                    )
                    if stored.bytes != size:  # a broken run must not print plausible figures
                        raise RuntimeError(f"stored {stored.bytes} bytes of {size}")

                gc.collect()
                started = time.perf_counter()
                run()
                rates[kind] = size / MIB / (time.perf_counter() - started)
                tracemalloc.start()
                try:
                    run()
                    peaks[kind] = tracemalloc.get_traced_memory()[1]
                finally:
                    tracemalloc.stop()
            print(
                f"{label:>22} {size / MIB:>5.0f} MiB {rates['bytes']:>12.0f} {rates['zip']:>10.0f} "
                f"{peaks['bytes'] / MIB:>7.1f} MiB {peaks['zip'] / MIB:>5.1f} MiB",
                flush=True,
            )


def main() -> None:
    pool = random.Random(0).randbytes(DEFAULT_PART_SIZE + 3 * CHUNK)  # not a multiple of the part size
    print(f"part size {DEFAULT_PART_SIZE // MIB} MiB, chunks {CHUNK // 1024} KiB")

    with mock_aws():
        key_id = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["Arn"]
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        # Warm-up: botocore's endpoint rules and moto's first-request setup are one-off costs.
        store_archive(s3, BUCKET, "warmup", key_id, Archive("w", "application/zip", _chunks(MIB, pool)))

        def moto_rows() -> Iterator[tuple[int, tuple[float, int, int, int]]]:
            for size_mib in SIZES_MIB:
                yield size_mib, _measure(s3, key_id, pool, size_mib)
                s3.delete_object(Bucket=BUCKET, Key=f"requests/bench/vendor/export/{size_mib}.zip")

        _table(
            "into moto S3 in-process, SSE-KMS (whole call includes moto assembling the object in memory)", moto_rows()
        )

    # Outside mock_aws: moto's hook is off, the sink answers instead. Dummy credentials for the signer.
    sink = DiscardingS3(REGION).client
    store_archive(sink, BUCKET, "warmup", "alias/bench", Archive("w", "application/zip", _chunks(MIB, pool)))
    print()
    _table(
        "real botocore, bodies drained and dropped at the HTTP layer (what a Lambda holds)",
        ((size_mib, _measure(sink, "alias/bench", pool, size_mib)) for size_mib in SIZES_MIB),
    )
    print()
    _verification_table(sink)
