"""store_archive against moto S3 (SSE-KMS bucket in eu-west-1): whole archives, odd chunks, every failure path."""

from __future__ import annotations

import hashlib
import random
import tracemalloc
from types import SimpleNamespace
from typing import Any, Iterable, Iterator

import boto3
import pytest
import requests
from botocore.exceptions import ClientError
from moto import mock_aws

from connectors.base import Archive
from core.archive_store import MAX_PARTS, StoredArchive, store_archive
from core.errors import ArchiveTransferError
from local.discarding_s3 import DiscardingS3

MIB = 1024 * 1024
PART = 5 * MIB  # the S3 minimum, so tests need few megabytes to cross part boundaries
BUCKET = "dsrflow-archives-test"
KEY = "requests/r-0001/elevate/export/contacts.zip"


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


class Source:
    """A vendor download stand-in: lazy chunks; records how many were pulled and whether it was closed."""

    def __init__(self, chunks: Iterable[bytes], length: int | None = None, fail_after: int | None = None,
                 error: BaseException | None = None):
        self.pulled = 0
        self.closed = 0
        self._chunks = chunks
        self._fail_after = fail_after
        self._error = error
        self.archive = Archive("contacts.zip", "application/zip", self._read(), length=length, close=self._close)

    def _read(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            if self._fail_after is not None and self.pulled == self._fail_after:
                raise self._error
            self.pulled += 1
            yield chunk

    def _close(self) -> None:
        self.closed += 1


class Recording:
    """Wraps an S3 client: records calls and part sizes; optionally fails one call with a ClientError."""

    def __init__(self, client: Any, fail: tuple[str, int] | None = None, code: str = "InternalError"):
        self._client = client
        self._fail = fail
        self._code = code
        self.calls: list[str] = []
        self.part_sizes: list[int] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(**kwargs: Any) -> Any:
            self.calls.append(name)
            if self._fail and self._fail == (name, self.calls.count(name)):
                raise ClientError({"Error": {"Code": self._code, "Message": "injected"}}, name)
            if name == "upload_part":
                self.part_sizes.append(len(kwargs["Body"]))
            return method(**kwargs)

        return call


@pytest.fixture
def aws():
    with mock_aws():
        key_arn = boto3.client("kms", region_name="eu-west-1").create_key(Description="archives")["KeyMetadata"]["Arn"]
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield SimpleNamespace(s3=s3, key_arn=key_arn)


def objects(s3) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def pending_uploads(s3) -> list[dict]:
    return s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])


def assert_nothing_stored(aws) -> None:
    assert objects(aws.s3) == []
    assert pending_uploads(aws.s3) == []


# --- archives that land --------------------------------------------------------------------------------------


def test_archive_larger_than_a_part_lands_whole_with_checksum_and_sse_kms(aws):
    sizes = [64 * 1024] * 192  # 12 MiB
    expected_sha, total = sha256_of(random_chunks(sizes))
    source = Source(random_chunks(sizes), length=total)
    s3 = Recording(aws.s3)

    stored = store_archive(s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART)

    assert stored == StoredArchive(key=KEY, name="contacts.zip", content_type="application/zip", bytes=total,
                                   sha256=expected_sha)
    assert s3.part_sizes == [PART, PART, 2 * MIB]
    body = aws.s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read()
    assert (hashlib.sha256(body).hexdigest(), len(body)) == (expected_sha, total)
    head = aws.s3.head_object(Bucket=BUCKET, Key=KEY)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == aws.key_arn
    assert head["ContentType"] == "application/zip"
    assert pending_uploads(aws.s3) == []
    assert source.closed == 1


def test_odd_chunk_sizes_are_rebuffered_into_exact_parts(aws):
    sizes = [1, 7 * MIB, 1, 4 * MIB - 1, PART, 3, 2 * MIB]  # straddles, fills and overflows part boundaries
    expected_sha, total = sha256_of(random_chunks(sizes))
    source = Source(random_chunks(sizes))  # no announced length: nothing to verify against, still stored
    s3 = Recording(aws.s3)

    stored = store_archive(s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART)

    assert (stored.sha256, stored.bytes) == (expected_sha, total)
    assert s3.part_sizes == [PART, PART, PART, total - 3 * PART]
    body = aws.s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == expected_sha
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


# --- failures: nothing stored, archive closed ----------------------------------------------------------------


def test_stream_breaking_midway_aborts_and_does_not_quote_the_error_text(aws):
    error = requests.ConnectionError("GET https://vendor.example/export?customerKey=cust-secret-42 reset")
    source = Source(random_chunks([MIB] * 12), length=12 * MIB, fail_after=7, error=error)

    with pytest.raises(ArchiveTransferError) as err:
        store_archive(aws.s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART)

    message = str(err.value)
    assert message.startswith(KEY + ": the download broke off after 7340032 bytes (ConnectionError)")
    assert "cust-secret-42" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no chained text in Lambda's trace
    assert_nothing_stored(aws)
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
    "fail, operation",
    [(("upload_part", 2), "UploadPart"), (("complete_multipart_upload", 1), "CompleteMultipartUpload")],
    ids=["second-upload-part", "complete"],
)
def test_s3_error_during_upload_aborts(aws, fail, operation):
    source = Source(random_chunks([MIB] * 12), length=12 * MIB)
    s3 = Recording(aws.s3, fail=fail)

    with pytest.raises(ArchiveTransferError, match=rf"^{KEY}: S3 {operation} failed \(InternalError\)"):
        store_archive(s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART)

    assert s3.calls[-1] == "abort_multipart_upload"
    assert_nothing_stored(aws)
    assert source.closed == 1


def test_missing_bucket_fails_before_reading_and_closes_the_archive(aws):
    source = Source(random_chunks([MIB] * 2), length=2 * MIB)

    with pytest.raises(ArchiveTransferError, match=r"S3 CreateMultipartUpload failed \(NoSuchBucket\)"):
        store_archive(aws.s3, "no-such-bucket-here", KEY, aws.key_arn, source.archive, part_size=PART)

    assert source.pulled == 0
    assert source.closed == 1


def test_interrupt_aborts_the_upload_and_propagates_unchanged(aws):
    source = Source(random_chunks([MIB] * 12), fail_after=6, error=KeyboardInterrupt())

    with pytest.raises(KeyboardInterrupt):
        store_archive(aws.s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART)

    assert_nothing_stored(aws)
    assert source.closed == 1


def test_failed_abort_still_reports_the_original_failure(aws):
    source = Source(random_chunks([MIB] * 12), fail_after=6, error=requests.ConnectionError("reset"))
    s3 = Recording(aws.s3, fail=("abort_multipart_upload", 1), code="ServiceUnavailable")

    with pytest.raises(ArchiveTransferError, match="the download broke off after 6291456 bytes"):
        store_archive(s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART)

    # The object never completed, so nothing is visible; the parts wait for the lifecycle rule.
    assert objects(aws.s3) == []
    assert [u["Key"] for u in pending_uploads(aws.s3)] == [KEY]
    assert source.closed == 1


def test_announced_length_beyond_s3_part_limit_is_rejected_before_upload(aws):
    source = Source(random_chunks([MIB]), length=PART * MAX_PARTS + 1)
    s3 = Recording(aws.s3)

    with pytest.raises(ArchiveTransferError, match=r"more than 10000 parts"):
        store_archive(s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART)

    assert s3.calls == [] and source.pulled == 0
    assert source.closed == 1


def test_part_size_below_the_s3_minimum_is_refused(aws):
    source = Source(random_chunks([10]))

    with pytest.raises(ValueError, match="part_size"):
        store_archive(aws.s3, BUCKET, KEY, aws.key_arn, source.archive, part_size=PART - 1)

    assert source.closed == 1


# --- bounded memory ------------------------------------------------------------------------------------------


def test_memory_stays_within_a_few_parts_for_a_64_mib_archive():
    sink = DiscardingS3()
    # Warm up botocore (endpoint rules, models, signer) so its one-off caches are not counted.
    store_archive(sink.client, BUCKET, KEY, "alias/k", Source(random_chunks([MIB] * 6)).archive, part_size=PART)
    sink.received = 0
    sizes = [256 * 1024] * 256  # 64 MiB, generated lazily

    tracemalloc.start()
    try:
        stored = store_archive(sink.client, BUCKET, KEY, "alias/k", Source(random_chunks(sizes)).archive,
                               part_size=PART)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert sink.received == stored.bytes == 64 * MIB  # the whole archive went through botocore
    assert stored.sha256 == sha256_of(random_chunks(sizes))[0]
    assert peak < 3 * PART, f"peak traced memory {peak / MIB:.1f} MiB for 5 MiB parts"
