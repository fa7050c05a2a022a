"""store_archive against moto S3 (SSE-KMS bucket in eu-west-1): whole archives, odd chunks, content
verification (zip, json), S3 hiccups retried, every failure path, bounded memory, rehash_stored."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import threading
import time
import tracemalloc
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import ConnectionClosedError, EndpointConnectionError
from moto import mock_aws

from connectors.base import Archive
from core import archive_store
from core.archive_store import (
    CHECKSUM_ALGORITHM,
    MAX_PARTS,
    PARTS_IN_FLIGHT,
    S3_RETRY_DELAYS,
    UPLOAD_TOKEN,
    MultipartWriter,
    StoredArchive,
    crc32_b64,
    rehash_stored,
    store_archive,
)
from core.errors import ArchiveInvalid, ArchiveTooLarge, ArchiveTransferError
from local.discarding_s3 import DiscardingS3
from tests.unit.s3_faults import FaultyS3, client_error

MIB = 1024 * 1024
PART = 5 * MIB  # the S3 minimum, so tests need few megabytes to cross part boundaries
BUCKET = "dsrflow-archives-test"
KEY = "requests/r-0001/elevate/export/contacts.zip"
PERSONAL = "jane.doe@example.com"  # a member name a vendor might choose; must never reach a message


def random_chunks(sizes: Iterable[int], seed: int = 7) -> Iterator[bytes]:
    rng = random.Random(seed)
    for size in sizes:
        yield rng.randbytes(size)


def sha256_of(chunks: Iterable[bytes]) -> tuple[str, int]:
    sha, n = hashlib.sha256(), 0
    for chunk in chunks:
        sha.update(chunk)
        n += len(chunk)
    return sha.hexdigest(), n


def pieces(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


def make_zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def jsonl(rows: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    return b"".join(json.dumps({"id": i, "v": rng.random()}).encode() + b"\n" for i in range(rows))


class Source:
    """A vendor download stand-in: lazy chunks; records how many were pulled and whether it was closed."""

    def __init__(
        self,
        chunks: Iterable[bytes],
        length: int | None = None,
        fail_after: int | None = None,
        error: BaseException | None = None,
        kind: str = "bytes",
        name: str = "contacts.zip",
        content_type: str = "application/zip",
    ):
        self.pulled = 0
        self.closed = 0
        self._chunks = chunks
        self._fail_after = fail_after
        self._error = error
        self.archive = Archive(name, content_type, self._read(), length=length, close=self._close, kind=kind)  # type: ignore[arg-type]

    def _read(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            if self._fail_after is not None and self.pulled == self._fail_after:
                raise self._error
            self.pulled += 1
            yield chunk

    def _close(self) -> None:
        self.closed += 1


@pytest.fixture
def aws(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHIVE_SPOOL_DIR", str(tmp_path))
    with mock_aws():
        key_arn = boto3.client("kms", region_name="eu-west-1").create_key(Description="archives")["KeyMetadata"]["Arn"]
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield SimpleNamespace(s3=s3, key_arn=key_arn, spool=tmp_path)


def objects(s3) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def pending_uploads(s3) -> list[dict]:
    return s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])


def open_files(directory: Path) -> dict[int, str]:
    """Files this process has open under `directory` (the spool is unlinked at once: it shows only here)."""
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the fd listdir itself used, already closed
            continue
        if target.startswith(str(directory)):
            found[int(fd)] = target
    return found


def open_spools(directory: Path) -> list[str]:
    return sorted(open_files(directory).values())


def assert_nothing_stored(aws) -> None:
    assert objects(aws.s3) == []
    assert pending_uploads(aws.s3) == []
    assert open_spools(aws.spool) == [] and os.listdir(aws.spool) == []


def stored_body(aws, key: str = KEY) -> bytes:
    return aws.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def part_attempts(s3: FaultyS3) -> dict[int, int]:
    """UploadPart calls per part number."""
    counts: dict[int, int] = {}
    for phase, name, number in s3.events:
        if phase == "start" and name == "upload_part" and number is not None:
            counts[number] = counts.get(number, 0) + 1
    return counts


def most_parts_at_once(s3: FaultyS3) -> int:
    """The most UploadPart calls that were under way at the same time."""
    now = most = 0
    for phase, name, _ in s3.events:
        if name == "upload_part":
            now += 1 if phase == "start" else -1
            most = max(most, now)
    return most


def assert_no_part_after_the_abort(s3: FaultyS3) -> None:
    """Every UploadPart had returned before AbortMultipartUpload was sent, and none began after it."""
    events = s3.events
    abort = events.index(("start", "abort_multipart_upload", None))
    assert [e for e in events[abort:] if e[1] == "upload_part"] == []
    starts = sum(1 for e in events[:abort] if e[:2] == ("start", "upload_part"))
    ends = sum(1 for e in events[:abort] if e[:2] == ("end", "upload_part"))
    assert starts == ends, f"{starts - ends} UploadPart call(s) still under way when the abort was sent"


class SlowParts:
    """Delegates to an S3 client; each UploadPart waits `delay(part number)` seconds before it is sent, as a
    slow S3 request would, and the threads it ran in are recorded."""

    def __init__(self, client: Any, delay: Callable[[int], float]):
        self._client = client
        self._delay = delay
        self.threads: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def upload_part(self, **kwargs: Any) -> Any:
        self.threads.add(threading.current_thread().name)
        time.sleep(self._delay(kwargs["PartNumber"]))
        return self._client.upload_part(**kwargs)


# --- archives that land --------------------------------------------------------------------------------------


def test_archive_larger_than_a_part_lands_whole_with_checksum_and_sse_kms(aws):
    sizes = [64 * 1024] * 192  # 12 MiB
    expected_sha, total = sha256_of(random_chunks(sizes))
    source = Source(random_chunks(sizes), length=total)
    s3 = FaultyS3(aws.s3)

    stored = store_archive(s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART)

    assert stored == StoredArchive(
        key=KEY,
        name="contacts.zip",
        content_type="application/zip",
        bytes=total,
        sha256=expected_sha,
        verified="bytes",
        members=None,
    )
    assert s3.part_sizes == [PART, PART, 2 * MIB]
    body = stored_body(aws)
    assert (hashlib.sha256(body).hexdigest(), len(body)) == (expected_sha, total)
    head = aws.s3.head_object(Bucket=BUCKET, Key=KEY)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == aws.key_arn
    assert head["ContentType"] == "application/zip"
    assert len(head["Metadata"][UPLOAD_TOKEN]) == 32  # the upload's token, for confirming a lost complete
    assert pending_uploads(aws.s3) == []
    assert source.closed == 1


def test_odd_chunk_sizes_are_rebuffered_into_exact_parts(aws):
    sizes = [1, 7 * MIB, 1, 4 * MIB - 1, PART, 3, 2 * MIB]  # straddles, fills and overflows part boundaries
    expected_sha, total = sha256_of(random_chunks(sizes))
    source = Source(random_chunks(sizes))  # no announced length: nothing to verify against, still stored
    s3 = FaultyS3(aws.s3)

    stored = store_archive(s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART)

    assert (stored.sha256, stored.bytes) == (expected_sha, total)
    assert s3.part_sizes == [PART, PART, PART, total - 3 * PART]
    assert hashlib.sha256(stored_body(aws)).hexdigest() == expected_sha
    assert source.closed == 1


@pytest.mark.parametrize("chunks", [[], [b"", b""]], ids=["no-chunks", "empty-chunks"])
def test_empty_archive_is_stored_as_an_empty_encrypted_object(aws, chunks):
    source = Source(chunks, length=0)

    stored = store_archive(aws.s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART)

    assert (stored.bytes, stored.sha256) == (0, hashlib.sha256(b"").hexdigest())
    head = aws.s3.head_object(Bucket=BUCKET, Key=KEY)
    assert head["ContentLength"] == 0
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", aws.key_arn)
    assert pending_uploads(aws.s3) == []
    assert source.closed == 1


# --- integrity in transit: part checksums (real S3 enforces them, moto does not: the calls are checked) ------


class Wire:
    """What botocore makes of our calls, from its event system: the API parameters we passed
    (before-parameter-build), the headers it sends (before-send) and the answers it parsed (after-call).
    Parts go up from several threads: each record is tagged with the PartNumber its thread is sending
    (botocore fires a call's events in the calling thread), and `of` lists them in part-number order."""

    def __init__(self, client: Any):
        self.params: list[tuple[str, int, dict[str, Any]]] = []
        self.headers: list[tuple[str, int, dict[str, str]]] = []
        self.answers: list[tuple[str, int, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._thread = threading.local()
        events = client.meta.events
        events.register("before-parameter-build.s3", self._params)
        events.register("before-send.s3", self._send)
        events.register("after-call.s3", self._answer)

    def _record(self, where: list[Any], operation: str, value: Any) -> None:
        with self._lock:
            where.append((operation, getattr(self._thread, "part", 0), value))

    def _params(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self._thread.part = params.get("PartNumber", 0)
        self._record(self.params, model.name, dict(params))

    def _send(self, request: Any, **kwargs: Any) -> None:
        operation = kwargs["event_name"].rsplit(".", 1)[1]
        headers = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        self._record(self.headers, operation, headers)

    def _answer(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        self._record(self.answers, model.name, parsed)

    def of(self, what: list[tuple[str, int, Any]], operation: str) -> list[Any]:
        with self._lock:
            return [value for name, _, value in sorted(what, key=lambda r: r[1]) if name == operation]


def parts_of(data: bytes, size: int = PART) -> list[bytes]:
    return [data[at : at + size] for at in range(0, len(data), size)] or [b""]


def test_every_part_carries_the_declared_crc32_and_complete_lists_what_s3_returned(aws):
    data = b"".join(random_chunks([MIB] * 12))  # 3 parts: 5, 5 and 2 MiB
    wire = Wire(aws.s3)

    store_archive(aws.s3, BUCKET, KEY, aws.key_arn, Source(pieces(data, MIB), length=len(data)).archive, part_size=PART)

    (create,) = wire.of(wire.params, "CreateMultipartUpload")
    assert create["ChecksumAlgorithm"] == CHECKSUM_ALGORITHM == "CRC32"
    assert wire.of(wire.headers, "CreateMultipartUpload")[0]["x-amz-checksum-algorithm"] == "CRC32"
    expected = [crc32_b64(part) for part in parts_of(data)]
    assert len(expected) == 3
    uploads = wire.of(wire.params, "UploadPart")
    assert [p["ChecksumAlgorithm"] for p in uploads] == ["CRC32"] * 3
    # botocore computes the CRC32 over the bytes it sends and puts it in the trailer: the same algorithm.
    for headers in wire.of(wire.headers, "UploadPart"):
        assert headers["x-amz-trailer"] == "x-amz-checksum-crc32"
        assert headers["x-amz-sdk-checksum-algorithm"] == "CRC32"
    returned = [(a["ETag"], a["ChecksumCRC32"]) for a in wire.of(wire.answers, "UploadPart")]
    assert [checksum for _, checksum in returned] == expected
    (complete,) = wire.of(wire.params, "CompleteMultipartUpload")
    assert complete["MultipartUpload"]["Parts"] == [
        {"PartNumber": n, "ETag": etag, "ChecksumCRC32": checksum} for n, (etag, checksum) in enumerate(returned, 1)
    ]
    assert stored_body(aws) == data


def test_a_retried_part_is_listed_once_with_the_checksum_of_its_successful_attempt(aws, sleeps):
    data = b"".join(random_chunks([MIB] * 12))
    s3 = FaultyS3(aws.s3).fail("upload_part", on=[2], error=lambda: client_error("RequestTimeout", 400))
    wire = Wire(aws.s3)

    store_archive(s3, BUCKET, KEY, aws.key_arn, Source(pieces(data, MIB)).archive, part_size=PART, sleep=sleeps)

    (complete,) = wire.of(wire.params, "CompleteMultipartUpload")
    parts = complete["MultipartUpload"]["Parts"]
    assert [p["PartNumber"] for p in parts] == [1, 2, 3]
    assert [p["ChecksumCRC32"] for p in parts] == [crc32_b64(part) for part in parts_of(data)]


class WithoutPartChecksums(FaultyS3):
    """An S3 stand-in whose UploadPart answers carry no checksum (as DiscardingS3's)."""

    def __getattr__(self, name: str) -> Any:
        call = super().__getattr__(name)
        if name != "upload_part":
            return call
        return lambda **kwargs: {k: v for k, v in call(**kwargs).items() if not k.startswith("Checksum")}


def test_a_part_answer_without_checksum_gets_the_crc32_of_the_bytes_sent(aws):
    data = b"".join(random_chunks([MIB] * 7))
    wire = Wire(aws.s3)

    store_archive(WithoutPartChecksums(aws.s3), BUCKET, KEY, aws.key_arn, Source(pieces(data, MIB)).archive, PART)

    (complete,) = wire.of(wire.params, "CompleteMultipartUpload")
    assert [p["ChecksumCRC32"] for p in complete["MultipartUpload"]["Parts"]] == [
        crc32_b64(part) for part in parts_of(data)
    ]


def test_crc32_b64_is_the_value_botocore_sends():
    from botocore.httpchecksum import Crc32Checksum

    for data in (b"", b"x" * 100, random.Random(3).randbytes(MIB + 17)):
        botocore_crc = Crc32Checksum()
        botocore_crc.update(data)
        assert crc32_b64(data) == botocore_crc.b64digest()


# --- verified content: zip -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "members",
    [{}, {"empty.txt": b""}],
    ids=["empty-zip", "one-empty-member"],
)
def test_empty_zips_are_valid(aws, members):
    data = make_zip(members)
    source = Source(pieces(data), length=len(data), kind="zip")

    stored = store_archive(aws.s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART)

    assert (stored.verified, stored.members, stored.bytes) == ("zip", len(members), len(data))
    assert stored_body(aws) == data
    assert open_spools(aws.spool) == [] and os.listdir(aws.spool) == []


def test_multi_member_jsonl_zip_across_parts_is_verified_and_counted(aws):
    members = {f"table-{i}.jsonl": jsonl(2000, seed=i) for i in range(5)}
    members["blob.bin"] = random.Random(3).randbytes(7 * MIB)  # incompressible: the zip spans two parts
    data = make_zip(members)
    source = Source(pieces(data, 256 * 1024), length=len(data), kind="zip")

    stored = store_archive(aws.s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART)

    assert (stored.verified, stored.members) == ("zip", 6)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored_body(aws) == data
    assert pending_uploads(aws.s3) == []
    assert open_spools(aws.spool) == [] and os.listdir(aws.spool) == []


def test_html_login_page_served_as_a_zip_is_refused_and_nothing_is_stored(aws):
    page = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Please log in</body></html>\n"
    source = Source([page], length=len(page), kind="zip", name="qualifio-export-1.zip")

    with pytest.raises(ArchiveInvalid) as err:
        store_archive(aws.s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART)

    assert str(err.value) == (f"{KEY}: the download ({len(page)} bytes) is an HTML page, not a zip; nothing was stored")
    assert_nothing_stored(aws)
    assert source.closed == 1


def test_zip_cut_at_its_announced_500_bytes_is_refused(aws):
    whole = make_zip({"contacts.jsonl": jsonl(500)})
    assert len(whole) > 2000
    truncated = whole[:500]  # what the HTTP client hands on when Content-Length says 500
    source = Source(pieces(truncated, 128), length=500, kind="zip")

    with pytest.raises(
        ArchiveInvalid,
        match=r"the zip \(500 bytes\) has no end-of-central-directory record: it "
        r"is truncated or damaged; nothing was stored$",
    ):
        store_archive(aws.s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART)

    assert_nothing_stored(aws)


def test_corrupted_member_is_named_by_index_not_by_its_name(aws):
    body = random.Random(5).randbytes(4096)
    data = bytearray(
        make_zip({"a.jsonl": b"{}\n", f"{PERSONAL}.jsonl": body, "c.jsonl": b"{}\n"}, compression=zipfile.ZIP_STORED)
    )
    at = bytes(data).index(body[:64])  # stored: the member's bytes appear as they are
    data[at + 100] ^= 0x01  # one bit: the CRC-32 no longer matches
    data = bytes(data)
    source = Source(pieces(data, 1000), length=len(data), kind="zip")

    with pytest.raises(ArchiveInvalid) as err:
        store_archive(aws.s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART)

    message = str(err.value)
    assert message == f"{KEY}: member 2 of 3 fails its CRC-32 check: the zip is damaged; nothing was stored"
    assert PERSONAL not in message and "jane" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert_nothing_stored(aws)


def test_damaged_deflate_stream_is_refused_by_index(aws):
    data = bytearray(make_zip({f"{PERSONAL}.jsonl": jsonl(3000)}))
    data[200] ^= 0xFF  # inside the compressed data (the local header and name end well before)
    source = Source(pieces(bytes(data)), length=len(data), kind="zip")

    with pytest.raises(ArchiveInvalid, match=r"member 1 of 1 (fails its CRC-32 check|cannot be read)") as err:
        store_archive(aws.s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART)

    assert PERSONAL not in str(err.value)
    assert_nothing_stored(aws)


def test_zip_bigger_than_the_spool_limit_is_too_large_and_leaves_nothing(aws, monkeypatch):
    monkeypatch.setenv("ARCHIVE_SPOOL_LIMIT_MB", "1")
    data = make_zip({"blob.bin": random.Random(1).randbytes(2 * MIB)}, compression=zipfile.ZIP_STORED)
    seen: list[list[str]] = []

    def chunks() -> Iterator[bytes]:
        for piece in pieces(data):
            seen.append(open_spools(aws.spool))
            yield piece

    source = Source(chunks(), kind="zip")  # no announced length: found out while spooling

    with pytest.raises(ArchiveTooLarge) as err:
        store_archive(aws.s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART)

    assert str(err.value) == (
        f"{KEY}: the archive exceeds the 1 MiB this function may spool to verify a zip; raise the collect "
        "function's ephemeral storage and ARCHIVE_SPOOL_LIMIT_MB; nothing was stored"
    )
    assert seen[-1] and all(s == seen[-1] for s in seen[1:])  # one spool file, open while streaming
    assert source.pulled == MIB // (64 * 1024) + 1  # stopped at the first chunk over the limit
    assert_nothing_stored(aws)
    assert source.closed == 1


def test_zip_announced_beyond_the_spool_limit_is_refused_before_any_s3_call(aws, monkeypatch):
    monkeypatch.setenv("ARCHIVE_SPOOL_LIMIT_MB", "1")
    source = Source(random_chunks([MIB] * 2), length=2 * MIB, kind="zip")
    s3 = FaultyS3(aws.s3)

    with pytest.raises(ArchiveTooLarge, match=r"announced 2097152 bytes, more than the 1 MiB"):
        store_archive(s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART)

    assert s3.calls == [] and source.pulled == 0
    assert_nothing_stored(aws)
    assert source.closed == 1


# --- verified content: json ----------------------------------------------------------------------------------


JSON_KEY = "requests/r-0001/bloomreach/export/bloomreach-export-one.json"


def test_json_with_success_true_is_stored(aws):
    doc = json.dumps(
        {"success": True, "properties": {"email": PERSONAL}, "events": [{"type": "view", "n": i} for i in range(3000)]}
    ).encode()
    source = Source(
        pieces(doc, 4096),
        length=len(doc),
        kind="json",
        name="bloomreach-export-one.json",
        content_type="application/json",
    )

    stored = store_archive(aws.s3, BUCKET, JSON_KEY, aws.key_arn, source.archive, part_size=PART)

    assert (stored.verified, stored.members, stored.bytes) == ("json", None, len(doc))
    assert stored_body(aws, JSON_KEY) == doc


@pytest.mark.parametrize(
    "doc, rule",
    [
        (
            b'{"success": false, "errors": ["Customer ' + PERSONAL.encode() + b' is locked"]}',
            "is a JSON document with success: false",
        ),
        (b'{"success": true, "events": [{"type": "view"}, {"ty', "is truncated: the JSON document does not end"),
        (b"Service temporarily unavailable", "is not a JSON document"),
        (b"<html><body>Bad gateway</body></html>", "is an HTML page, not a JSON document"),
        (b'[{"success": true}]', "is JSON but its top level is not an object"),
    ],
    ids=["success-false", "truncated", "not-json", "html", "array"],
)
def test_json_that_is_not_a_successful_document_is_refused(aws, doc, rule):
    source = Source([doc], length=len(doc), kind="json", name="x.json", content_type="application/json")

    with pytest.raises(ArchiveInvalid) as err:
        store_archive(aws.s3, BUCKET, JSON_KEY, aws.key_arn, source.archive, part_size=PART)

    assert str(err.value) == f"{JSON_KEY}: the download ({len(doc)} bytes) {rule}; nothing was stored"
    assert PERSONAL not in str(err.value)
    assert_nothing_stored(aws)


# --- failures: nothing stored, archive closed ----------------------------------------------------------------


def test_stream_breaking_midway_aborts_and_does_not_quote_the_error_text(aws):
    error = requests.ConnectionError("GET https://vendor.example/export?customerKey=cust-secret-42 reset")
    source = Source(random_chunks([MIB] * 12), length=12 * MIB, fail_after=7, error=error, kind="zip")

    with pytest.raises(ArchiveTransferError) as err:
        store_archive(aws.s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART)

    message = str(err.value)
    assert message.startswith(KEY + ": the download broke off after 7340032 bytes (ConnectionError)")
    assert "cust-secret-42" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no chained text in Lambda's trace
    assert_nothing_stored(aws)  # the zip's spool included
    assert source.closed == 1


def test_shorter_than_announced_is_rejected(aws):
    source = Source(random_chunks([MIB] * 6), length=6 * MIB + 1)

    with pytest.raises(ArchiveTransferError, match=r"announced 6291457 bytes but sent 6291456; nothing was stored"):
        store_archive(aws.s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART)

    assert_nothing_stored(aws)
    assert source.closed == 1


def test_longer_than_announced_is_rejected_without_reading_to_the_end(aws):
    source = Source(random_chunks([MIB] * 20), length=6 * MIB - 1)

    with pytest.raises(ArchiveTransferError, match=r"announced 6291455 bytes but sent more"):
        store_archive(aws.s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART)

    assert source.pulled == 6  # stopped at the chunk that overflowed, not after 20 MiB
    assert_nothing_stored(aws)
    assert source.closed == 1


@pytest.mark.parametrize(
    "operation, method",
    [
        ("UploadPart", "upload_part"),
        ("CompleteMultipartUpload", "complete_multipart_upload"),
        ("CreateMultipartUpload", "create_multipart_upload"),
    ],
)
def test_s3_failing_on_every_attempt_aborts_after_the_retries(aws, sleeps, operation, method):
    """One part in flight: the attempts are counted exactly (parts in flight: the next test)."""
    source = Source(random_chunks([MIB] * 12), length=12 * MIB)
    s3 = FaultyS3(aws.s3).fail(method, on=None)

    with pytest.raises(
        ArchiveTransferError,
        match=rf"^{KEY}: S3 {operation} failed \(InternalError\) after 4 "
        r"attempts; nothing was stored$",
    ):
        store_archive(s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART, sleep=sleeps, parts_in_flight=1)

    assert s3.calls.count(method) == 4
    assert sleeps.delays[:3] == list(S3_RETRY_DELAYS)
    if operation != "CreateMultipartUpload":
        assert s3.calls[-1] == "abort_multipart_upload"
    assert_nothing_stored(aws)
    assert source.closed == 1


def test_parts_in_flight_failing_on_every_attempt_abort_after_each_parts_retries_at_most(aws, sleeps):
    source = Source(random_chunks([MIB] * 12), length=12 * MIB)
    s3 = FaultyS3(aws.s3).fail("upload_part", on=None)

    with pytest.raises(ArchiveTransferError, match=rf"^{KEY}: S3 UploadPart failed \(InternalError\) after 4 attempts"):
        store_archive(s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART, sleep=sleeps)

    attempts = part_attempts(s3)
    assert max(attempts.values()) == 4 and all(n <= 4 for n in attempts.values())  # a stopped part tries no more
    assert s3.calls[-1] == "abort_multipart_upload"
    assert_no_part_after_the_abort(s3)
    assert_nothing_stored(aws)
    assert source.closed == 1


@pytest.mark.parametrize("parts_in_flight", [1, PARTS_IN_FLIGHT])
def test_s3_refusal_that_is_not_transient_is_not_retried(aws, sleeps, parts_in_flight):
    source = Source(random_chunks([MIB] * 12), length=12 * MIB)
    refused = lambda: client_error("AccessDenied", 403)  # noqa: E731
    s3 = FaultyS3(aws.s3).fail("upload_part", on=[1], part=2, error=refused)

    with pytest.raises(ArchiveTransferError, match=rf"^{KEY}: S3 UploadPart failed \(AccessDenied\); nothing"):
        store_archive(
            s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART, sleep=sleeps, parts_in_flight=parts_in_flight
        )

    assert part_attempts(s3)[2] == 1 and sleeps.delays == []
    if parts_in_flight == 1:
        assert s3.calls.count("upload_part") == 2  # the last part is never sent
    assert_no_part_after_the_abort(s3)
    assert_nothing_stored(aws)


def test_missing_bucket_fails_before_reading_and_closes_the_archive(aws, sleeps):
    source = Source(random_chunks([MIB] * 2), length=2 * MIB)

    with pytest.raises(ArchiveTransferError, match=r"S3 CreateMultipartUpload failed \(NoSuchBucket\); nothing"):
        store_archive(aws.s3, "no-such-bucket-here", KEY, aws.key_arn, source.archive, part_size=PART, sleep=sleeps)

    assert source.pulled == 0 and sleeps.delays == []
    assert source.closed == 1


def test_interrupt_aborts_the_upload_and_propagates_unchanged(aws):
    source = Source(random_chunks([MIB] * 12), fail_after=6, error=KeyboardInterrupt(), kind="zip")

    with pytest.raises(KeyboardInterrupt):
        store_archive(aws.s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART)

    assert_nothing_stored(aws)
    assert source.closed == 1


def test_abort_failing_once_is_retried_and_leaves_nothing(aws, sleeps):
    source = Source(random_chunks([MIB] * 12), fail_after=6, error=requests.ConnectionError("reset"))
    unavailable = lambda: client_error("ServiceUnavailable", 503)  # noqa: E731
    s3 = FaultyS3(aws.s3).fail("abort_multipart_upload", on=[1], error=unavailable)

    with pytest.raises(ArchiveTransferError, match="the download broke off after 6291456 bytes"):
        store_archive(s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART, sleep=sleeps)

    assert s3.calls.count("abort_multipart_upload") == 2
    assert_nothing_stored(aws)


def test_failed_abort_still_reports_the_original_failure(aws, sleeps):
    source = Source(random_chunks([MIB] * 12), fail_after=6, error=requests.ConnectionError("reset"))
    unavailable = lambda: client_error("ServiceUnavailable", 503)  # noqa: E731
    s3 = FaultyS3(aws.s3).fail("abort_multipart_upload", on=None, error=unavailable)

    with pytest.raises(ArchiveTransferError, match="the download broke off after 6291456 bytes"):
        store_archive(s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART, sleep=sleeps)

    # The object never completed, so nothing is visible; the parts wait for the lifecycle rule.
    assert objects(aws.s3) == []
    assert [u["Key"] for u in pending_uploads(aws.s3)] == [KEY]
    assert source.closed == 1


def test_announced_length_beyond_s3_part_limit_is_rejected_before_upload(aws):
    source = Source(random_chunks([MIB]), length=PART * MAX_PARTS + 1)
    s3 = FaultyS3(aws.s3)

    with pytest.raises(ArchiveTransferError, match=r"more than 10000 parts"):
        store_archive(s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART)

    assert s3.calls == [] and source.pulled == 0
    assert source.closed == 1


def test_part_size_below_the_s3_minimum_is_refused(aws):
    source = Source(random_chunks([10]))

    with pytest.raises(ValueError, match="part_size"):
        store_archive(aws.s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART - 1)

    assert source.closed == 1


# --- parts in flight ---------------------------------------------------------------------------------------


def no_uploader_threads() -> bool:
    return not [t for t in threading.enumerate() if t.name.startswith("dsrflow-part")]


@pytest.mark.parametrize("parts_in_flight", [1, 2, 3, 4])
def test_parts_in_flight_overlap_up_to_the_limit_and_never_beyond(aws, parts_in_flight):
    data = b"".join(random_chunks([MIB] * 32))  # 7 parts: six of 5 MiB and one of 2 MiB
    slow = SlowParts(aws.s3, lambda _: 0.25)
    s3 = FaultyS3(slow)

    stored = store_archive(
        s3,
        BUCKET,
        KEY,
        aws.key_arn,
        Source(pieces(data, MIB), length=len(data)).archive,
        part_size=PART,
        parts_in_flight=parts_in_flight,
    )

    assert most_parts_at_once(s3) == parts_in_flight
    assert part_attempts(s3) == {n: 1 for n in range(1, 8)}
    assert (stored.bytes, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert stored_body(aws) == data
    if parts_in_flight == 1:
        assert slow.threads == {threading.current_thread().name}  # as before: in the caller's thread
    else:
        assert threading.current_thread().name not in slow.threads and len(slow.threads) <= parts_in_flight
    assert no_uploader_threads()


def test_parts_completing_out_of_order_are_listed_in_part_number_order(aws):
    data = b"".join(random_chunks([MIB] * 12))  # 3 parts, all in flight at once
    s3 = FaultyS3(SlowParts(aws.s3, lambda n: {1: 0.6, 2: 0.3, 3: 0.0}[n]))
    wire = Wire(aws.s3)

    store_archive(s3, BUCKET, KEY, aws.key_arn, Source(pieces(data, MIB)).archive, part_size=PART, parts_in_flight=3)

    assert [n for phase, name, n in s3.events if (phase, name) == ("end", "upload_part")] == [3, 2, 1]
    etags = [a["ETag"] for a in wire.of(wire.answers, "UploadPart")]  # in part-number order
    (complete,) = wire.of(wire.params, "CompleteMultipartUpload")
    assert complete["MultipartUpload"]["Parts"] == [
        {"PartNumber": n, "ETag": etag, "ChecksumCRC32": crc32_b64(part)}
        for n, (etag, part) in enumerate(zip(etags, parts_of(data), strict=True), 1)
    ]
    assert stored_body(aws) == data


@pytest.mark.parametrize(
    "error, attempts",
    [(lambda: client_error("AccessDenied", 403), 1), (lambda: client_error("InternalError", 500), 4)],
    ids=["refused", "transient-every-time"],
)
def test_a_part_failing_while_others_are_in_flight_aborts_once_they_have_ended(aws, sleeps, error, attempts):
    source = Source(random_chunks([MIB] * 40), length=40 * MIB)  # 8 parts
    s3 = FaultyS3(SlowParts(aws.s3, lambda n: 0.0 if n == 2 else 0.3)).fail("upload_part", on=None, part=2, error=error)

    with pytest.raises(ArchiveTransferError, match=rf"^{KEY}: S3 UploadPart failed \((AccessDenied|InternalError)\)"):
        store_archive(s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART, sleep=sleeps, parts_in_flight=3)

    assert part_attempts(s3)[2] == attempts
    assert most_parts_at_once(s3) >= 2  # part 2 failed while part 1 was under way
    assert s3.calls[-1] == "abort_multipart_upload"
    assert_no_part_after_the_abort(s3)
    assert source.pulled < 40  # the download stopped at a part boundary, not at its end
    assert_nothing_stored(aws)
    assert source.closed == 1
    assert no_uploader_threads()


def test_interrupt_while_parts_are_in_flight_waits_for_them_then_aborts(aws):
    source = Source(random_chunks([MIB] * 30), fail_after=17, error=KeyboardInterrupt(), kind="zip")
    s3 = FaultyS3(SlowParts(aws.s3, lambda _: 0.3))

    with pytest.raises(KeyboardInterrupt):
        store_archive(s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART, parts_in_flight=3)

    assert most_parts_at_once(s3) == 3  # parts 1 to 3 were under way when the interrupt came
    assert_no_part_after_the_abort(s3)
    assert_nothing_stored(aws)
    assert source.closed == 1
    assert no_uploader_threads()


@pytest.mark.parametrize("parts_in_flight", [1, 3])
def test_more_parts_than_s3_allows_aborts_before_the_extra_part(aws, monkeypatch, parts_in_flight):
    monkeypatch.setattr(archive_store, "MAX_PARTS", 2)
    source = Source(random_chunks([MIB] * 12))  # no announced length: found out while streaming

    with pytest.raises(ArchiveTransferError, match=rf"^{KEY}: the archive exceeds 2 parts of 5242880 bytes; nothing"):
        store_archive(
            s3 := FaultyS3(aws.s3), BUCKET, KEY, aws.key_arn, source.archive, PART, parts_in_flight=parts_in_flight
        )

    assert sorted(part_attempts(s3)) == [1, 2]
    assert_no_part_after_the_abort(s3)
    assert_nothing_stored(aws)


@pytest.mark.parametrize("parts_in_flight", [0, 11])
def test_parts_in_flight_outside_the_pool_limit_is_refused(aws, parts_in_flight):
    source = Source(random_chunks([10]))

    with pytest.raises(ValueError, match="parts_in_flight must be between 1 and 10"):
        store_archive(aws.s3, BUCKET, KEY, aws.key_arn, source.archive, PART, parts_in_flight=parts_in_flight)
    with pytest.raises(ValueError, match="parts_in_flight"):
        MultipartWriter(aws.s3, BUCKET, KEY, aws.key_arn, part_size=PART, parts_in_flight=parts_in_flight)

    assert source.closed == 1


@pytest.mark.parametrize("parts_in_flight", [1, PARTS_IN_FLIGHT])
def test_multipart_writer_keeps_parts_in_flight_and_lands_byte_identical(aws, parts_in_flight):
    data = b"".join(random_chunks([MIB] * 22))  # 5 parts
    s3 = FaultyS3(SlowParts(aws.s3, lambda _: 0.2))

    with MultipartWriter(
        s3, BUCKET, KEY, aws.key_arn, content_type="application/zip", part_size=PART, parts_in_flight=parts_in_flight
    ) as out:
        for piece in pieces(data, 300_000):
            out.write(piece)
        assert out.tell() == len(data)

    assert out.stored == (len(data), hashlib.sha256(data).hexdigest())
    assert most_parts_at_once(s3) == parts_in_flight
    assert s3.part_sizes == [PART] * 4 + [2 * MIB]
    assert stored_body(aws) == data
    assert pending_uploads(aws.s3) == [] and no_uploader_threads()


def test_multipart_writer_part_failing_while_others_are_in_flight_aborts(aws, sleeps):
    data = b"".join(random_chunks([MIB] * 40))
    refused = lambda: client_error("AccessDenied", 403)  # noqa: E731
    s3 = FaultyS3(SlowParts(aws.s3, lambda n: 0.0 if n == 2 else 0.3)).fail(
        "upload_part", on=None, part=2, error=refused
    )
    written = 0

    with pytest.raises(ArchiveTransferError, match=r"S3 UploadPart failed \(AccessDenied\); nothing was stored"):
        with MultipartWriter(s3, BUCKET, KEY, aws.key_arn, part_size=PART, sleep=sleeps) as out:
            for piece in pieces(data, MIB):
                written += out.write(piece)

    assert out.stored is None
    assert written < len(data)  # write raised at a part boundary, before the end
    assert_no_part_after_the_abort(s3)
    assert objects(aws.s3) == [] and pending_uploads(aws.s3) == []
    assert no_uploader_threads()


# --- S3 hiccups: retried, nothing lost -----------------------------------------------------------------------


def zip_source(size_mib: int = 12) -> tuple[Source, bytes]:
    data = make_zip(
        {f"part-{i}.bin": random.Random(i).randbytes(MIB) for i in range(size_mib)}, compression=zipfile.ZIP_STORED
    )
    return Source(pieces(data, 256 * 1024), length=len(data), kind="zip"), data


@pytest.mark.parametrize(
    "method, error",
    [
        ("complete_multipart_upload", lambda: client_error("InternalError", 500)),
        ("complete_multipart_upload", lambda: client_error("SlowDown", 503)),
        ("upload_part", lambda: client_error("RequestTimeout", 400)),
        ("upload_part", lambda: EndpointConnectionError(endpoint_url="https://s3.eu-west-1.amazonaws.com")),
        ("create_multipart_upload", lambda: client_error("ServiceUnavailable", 503)),
    ],
    ids=["complete-500", "complete-slowdown", "part-timeout", "part-connection", "create-503"],
)
def test_s3_failing_once_is_retried_and_the_archive_lands_byte_identical(aws, sleeps, method, error):
    source, data = zip_source()
    s3 = FaultyS3(aws.s3).fail(method, on=[2 if method == "upload_part" else 1], error=error)

    stored = store_archive(s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART, sleep=sleeps)

    assert s3.calls.count(method) == (4 if method == "upload_part" else 2)  # 3 parts, the second sent twice
    assert sleeps.delays == [S3_RETRY_DELAYS[0]]
    assert (stored.bytes, stored.sha256, stored.verified, stored.members) == (
        len(data),
        hashlib.sha256(data).hexdigest(),
        "zip",
        12,
    )
    assert stored_body(aws) == data
    assert pending_uploads(aws.s3) == []
    assert "abort_multipart_upload" not in s3.calls


def test_complete_that_went_through_with_its_answer_lost_then_no_such_upload_is_a_success(aws, sleeps):
    source, data = zip_source()
    # 1st complete reaches S3 and succeeds, the answer is lost; S3 answers the retry NoSuchUpload.
    lost = FaultyS3(aws.s3).fail(
        "complete_multipart_upload", on=[1], lost=True, error=lambda: ConnectionClosedError(endpoint_url="https://s3")
    )
    s3 = FaultyS3(lost).fail("complete_multipart_upload", on=[2], error=lambda: client_error("NoSuchUpload", 404))

    stored = store_archive(s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART, sleep=sleeps)

    assert s3.calls.count("complete_multipart_upload") == 2
    assert "head_object" in s3.calls and "abort_multipart_upload" not in s3.calls
    assert (stored.bytes, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert stored_body(aws) == data
    assert pending_uploads(aws.s3) == []


def test_complete_whose_answers_are_all_lost_is_confirmed_by_head(aws, sleeps):
    source, data = zip_source(6)
    s3 = FaultyS3(aws.s3).fail(
        "complete_multipart_upload", on=None, lost=True, error=lambda: ConnectionClosedError(endpoint_url="https://s3")
    )

    stored = store_archive(s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART, sleep=sleeps)

    assert s3.calls.count("complete_multipart_upload") == 4 and s3.calls[-1] == "head_object"
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored_body(aws) == data


def test_no_such_upload_without_our_object_at_the_key_is_a_failure(aws, sleeps):
    source, data = zip_source(6)
    # An object from another upload (an earlier run) with the very same bytes: not ours, not proof.
    aws.s3.put_object(Bucket=BUCKET, Key=KEY, Body=data)
    s3 = FaultyS3(aws.s3).fail("complete_multipart_upload", on=[1], error=lambda: client_error("NoSuchUpload", 404))

    with pytest.raises(
        ArchiveTransferError,
        match=r"S3 CompleteMultipartUpload failed \(NoSuchUpload\) and the "
        r"object from this upload was not found at the key; nothing",
    ):
        store_archive(s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART, sleep=sleeps)

    assert s3.calls.count("complete_multipart_upload") == 1  # NoSuchUpload is not retried: HEAD decides
    assert pending_uploads(aws.s3) == []  # the abort ran
    assert open_spools(aws.spool) == []


# --- rehash_stored -------------------------------------------------------------------------------------------


def test_rehash_stored_recomputes_what_store_archive_recorded(aws):
    source, _ = zip_source(7)
    stored = store_archive(aws.s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART)

    again = rehash_stored(aws.s3, BUCKET, KEY, "contacts.zip", "application/zip", "zip")
    from_object = rehash_stored(aws.s3, BUCKET, KEY, "contacts.zip", "", "zip")

    assert again == stored
    assert from_object == stored  # an empty content type is taken from the object
    assert open_spools(aws.spool) == []


def test_rehash_stored_of_a_missing_object_is_none(aws):
    assert rehash_stored(aws.s3, BUCKET, KEY, "contacts.zip", "application/zip", "zip") is None


def test_rehash_stored_retries_a_transient_read_failure(aws, sleeps):
    doc = b'{"success": true, "properties": {}}'
    aws.s3.put_object(Bucket=BUCKET, Key=JSON_KEY, Body=doc, ContentType="application/json")
    s3 = FaultyS3(aws.s3).fail("get_object", on=[1], error=lambda: client_error("InternalError"))

    stored = rehash_stored(s3, BUCKET, JSON_KEY, "x.json", "", "json", sleep=sleeps)

    assert stored == StoredArchive(
        key=JSON_KEY,
        name="x.json",
        content_type="application/json",
        bytes=len(doc),
        sha256=hashlib.sha256(doc).hexdigest(),
        verified="json",
    )
    assert sleeps.delays == [S3_RETRY_DELAYS[0]]


def test_rehash_stored_refuses_an_unverifiable_object_and_leaves_it(aws):
    page = b"<html><body>Please log in</body></html>"
    aws.s3.put_object(Bucket=BUCKET, Key=KEY, Body=page)  # stored before verification existed

    with pytest.raises(
        ArchiveInvalid,
        match=r"is an HTML page, not a zip \(re-checking the archive already "
        r"stored there\)$",
    ):
        rehash_stored(aws.s3, BUCKET, KEY, "contacts.zip", "application/zip", "zip")

    assert objects(aws.s3) == [KEY]


def test_rehash_stored_gives_up_after_the_retries(aws, sleeps):
    aws.s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"x")
    s3 = FaultyS3(aws.s3).fail("get_object", on=None, error=lambda: client_error("ServiceUnavailable", 503))

    with pytest.raises(
        ArchiveTransferError,
        match=r"S3 GetObject failed \(ServiceUnavailable\) after 4 attempts "
        r"while re-reading",
    ):
        rehash_stored(s3, BUCKET, KEY, "contacts.zip", "application/zip", "bytes", sleep=sleeps)


# --- bounded memory ------------------------------------------------------------------------------------------


def file_chunks(path: Path, size: int = 256 * 1024) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(size):
            yield chunk


def write_stored_zip(path: Path, total: int, member: int = 8 * MIB) -> None:
    """A zip of stored (uncompressed) members of random bytes, written in pieces: fast and never in memory."""
    rng = random.Random(11)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(total // member):
            with zf.open(f"member-{i}.bin", "w") as out:
                for _ in range(member // MIB):
                    out.write(rng.randbytes(MIB))


class SlowSink(DiscardingS3):
    """DiscardingS3 for parts sent from several threads (its byte counter is not thread-safe), each part held
    `delay` seconds as a slow S3 would, so that every allowed part really is in flight; records the most
    parts in flight at once."""

    def __init__(self, delay: float) -> None:
        self._lock = threading.Lock()
        self._delay = delay
        self._now = 0
        self.most = 0
        super().__init__()

    def _part(self, request: Any, **_: Any) -> Any:
        with self._lock:
            self._now += 1
            self.most = max(self.most, self._now)
        try:
            time.sleep(self._delay)
            while request.body.read(256 * 1024):  # drain like a socket would, block by block
                pass
            with self._lock:
                self.received += int(request.headers["X-Amz-Decoded-Content-Length"])
            return self._answer(request, headers={"ETag": '"part"'})
        finally:
            with self._lock:
                self._now -= 1


@pytest.mark.parametrize("parts_in_flight", [1, PARTS_IN_FLIGHT])
@pytest.mark.parametrize("kind", ["bytes", "zip"])
def test_memory_stays_within_a_few_parts_for_a_64_mib_archive(tmp_path, monkeypatch, kind, parts_in_flight):
    """The part buffer, one copy per part in flight, and botocore's own: (N + 1) parts plus less than one more
    (the bound with one part in flight was always 3 parts)."""
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setenv("ARCHIVE_SPOOL_DIR", str(spool))
    sink = SlowSink(delay=0.05 if parts_in_flight > 1 else 0.0)
    if kind == "zip":
        source_path = tmp_path / "export.zip"
        write_stored_zip(source_path, 64 * MIB)
        chunks: Callable[[], Iterator[bytes]] = lambda: file_chunks(source_path)  # noqa: E731
        warm = tmp_path / "warm.zip"
        write_stored_zip(warm, 6 * MIB, member=2 * MIB)
        warm_chunks = file_chunks(warm)
    else:
        sizes = [256 * 1024] * 256  # 64 MiB, generated lazily
        chunks = lambda: random_chunks(sizes)  # noqa: E731
        warm_chunks = random_chunks([MIB] * 6)
    # Warm up botocore (endpoint rules, models, signer) and zipfile so their one-off caches are not counted.
    store_archive(
        sink.client,
        BUCKET,
        KEY,
        "alias/k",
        Source(warm_chunks, kind=kind).archive,
        part_size=PART,
        parts_in_flight=parts_in_flight,
    )
    sink.received = sink.most = 0
    on_disk: list[int] = []

    def watched() -> Iterator[bytes]:
        for i, chunk in enumerate(chunks()):
            if i == 200:  # ~50 MiB in: the spool is a file on disk, not memory
                on_disk.extend(os.fstat(fd).st_size for fd in open_files(spool))
            yield chunk

    tracemalloc.start()
    try:
        stored = store_archive(
            sink.client,
            BUCKET,
            KEY,
            "alias/k",
            Source(watched(), kind=kind).archive,
            part_size=PART,
            parts_in_flight=parts_in_flight,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    total = sink.received
    assert stored.bytes == total >= 64 * MIB  # the whole archive went through botocore
    assert stored.sha256 == sha256_of(chunks())[0]
    assert stored.verified == kind
    if kind == "zip":
        assert stored.members == 8
        assert len(on_disk) == 1 and on_disk[0] >= 49 * MIB
    assert sink.most == parts_in_flight  # the bound below held with every allowed part in flight
    bound = (parts_in_flight + 2) * PART
    assert peak < bound, f"peak traced memory {peak / MIB:.1f} MiB for {parts_in_flight} x 5 MiB parts in flight"
    assert open_spools(spool) == [] and os.listdir(spool) == []
