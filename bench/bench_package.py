"""The access package (core/package.py) from a 1 GiB vendor archive: time, throughput and peak memory.

Two vendor zips of 1 GiB each, written to a temporary directory first (not timed):
- "jsonl": eight JSON Lines members stored uncompressed in the vendor's zip, so the package deflates 1 GiB
  of text (the expensive case: zlib on one core);
- "media": eight incompressible members named .jpg, which the package stores as they are (sha256, CRC32 and
  the copy only).

Each is packed in a fresh child process, exactly as the Package step runs it: ranged reads of 8 MiB
(PACKAGE_READ_MB), members copied in 1 MiB chunks through zipfile into a MultipartWriter of 8 MiB parts. S3 is
replaced on both sides so that only the Lambda's own memory is measured: ranged GETs are served from the
file with os.pread (the bytes S3 would send, never the whole object), and the uploads go through a real
botocore client whose HTTP send drops the bodies (local/discarding_s3.py). Peak memory is the child's
maximum RSS (getrusage), and its growth over the RSS after imports, before packing.

Prints figures only; it never fails on a number.
"""

from __future__ import annotations

import io
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
SIZE = 1024 * MIB
MEMBERS = 8
ROOT = Path(__file__).resolve().parent.parent


def _write_vendor_zip(path: Path, kind: str) -> None:
    rng = random.Random(7)
    if kind == "jsonl":
        rows = []
        while sum(map(len, rows)) < 8 * MIB:  # distinct rows: deflate sees real text, not one row repeated
            n = len(rows)
            rows.append(json.dumps({"id": n, "email": f"user{n}@example.com", "score": rng.random()}) + "\n")
        pool = "".join(rows).encode()
    else:
        pool = rng.randbytes(8 * MIB)
    per_member = SIZE // MEMBERS
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for i in range(MEMBERS):
            name = f"events-{i}.jsonl" if kind == "jsonl" else f"photo-{i}.jpg"
            info = zipfile.ZipInfo(name, date_time=(2026, 12, 1, 0, 0, 0))
            info.file_size = per_member
            with z.open(info, "w") as out:
                written = 0
                while written < per_member:
                    piece = pool[: per_member - written]
                    out.write(piece)
                    written += len(piece)


class _FileS3:
    """Ranged GETs answered from a local file by pread; every other call to a sink that drops the uploads."""

    def __init__(self, path: str, key: str):
        from local.discarding_s3 import DiscardingS3

        self.fd, self.key, self.size = os.open(path, os.O_RDONLY), key, os.path.getsize(path)
        self.sink = DiscardingS3()
        self.gets = 0

    def get_object(self, *, Bucket: str, Key: str, Range: str) -> dict[str, Any]:
        start, end = (int(x) for x in Range.removeprefix("bytes=").split("-"))
        self.gets += 1
        data = os.pread(self.fd, end - start + 1, start)
        return {"Body": io.BytesIO(data), "ContentRange": f"bytes {start}-{end}/{self.size}"}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sink.client, name)


def _child(path: str) -> None:
    """Pack one vendor zip; print one JSON line of figures."""
    for p in (ROOT / "functions", ROOT):
        sys.path.insert(0, str(p))
    from core.archive_store import StoredArchive
    from core.domain import Action
    from core.models import ActionOutcome
    from core.package import Builder, PackageInput

    key = "requests/bench/elevate/export/export.zip"
    s3 = _FileS3(path, key)
    archive = StoredArchive(
        key=key, name="export.zip", content_type="application/zip", bytes=s3.size, sha256="0" * 64, verified="zip"
    )
    outcome = ActionOutcome(vendor="elevate", action=Action.EXPORT, status="completed", archives=[archive])
    now = datetime(2026, 12, 2, tzinfo=UTC)
    request = PackageInput(request_id="bench", received_at=now, attempt=1, outcomes=[outcome])
    builder = Builder(s3, "bench-bucket", "kms", now=lambda: now)  # type: ignore[arg-type]  # a stand-in S3
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    ref = builder.build(request)
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if ref.bytes != s3.sink.received:  # a broken run must not print plausible figures
        raise RuntimeError(f"package of {ref.bytes} bytes, {s3.sink.received} uploaded")
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "source": s3.size,
                "package": ref.bytes,
                "files": ref.files,
                "peak_rss": peak,
                "rss_before": before,
                "gets": s3.gets,
            }
        )
    )


def main() -> None:
    print(
        f"{'vendor zip':>13} {'time':>7} {'MiB/s':>6} {'package':>10} {'files':>5} {'peak RSS':>9} "
        f"{'growth':>8} {'growth/data':>11} {'GETs':>5}"
    )
    with tempfile.TemporaryDirectory(prefix="dsrflow-bench-package-") as tmp:
        for kind in ("jsonl", "media"):
            path = Path(tmp) / f"{kind}.zip"
            _write_vendor_zip(path, kind)
            out = subprocess.run(
                [sys.executable, "-m", "bench.bench_package", "--child", str(path)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            path.unlink()
            r = json.loads(out.stdout.strip().splitlines()[-1])
            growth = r["peak_rss"] - r["rss_before"]
            print(
                f"{'1 GiB ' + kind:>13} {r['seconds']:>6.1f}s {r['source'] / MIB / r['seconds']:>6.0f} "
                f"{r['package'] / MIB:>6.0f} MiB {r['files']:>5} {r['peak_rss'] / MIB:>5.0f} MiB "
                f"{growth / MIB:>4.0f} MiB {growth / r['source']:>11.3f} {r['gets']:>5}",
                flush=True,
            )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child(sys.argv[2])
    else:
        main()
