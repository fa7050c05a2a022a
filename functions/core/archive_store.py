"""Stream a vendor archive into the archive bucket: S3 multipart, SSE-KMS, sha256 on the way.

Guarantees:
- bounded memory: one part buffer (plus the copy handed to botocore and the chunk in hand), whatever the
  archive's size;
- nothing partial is ever visible: the object appears only when `CompleteMultipartUpload` runs, and that
  runs only after the whole stream arrived and matched its announced length; on any failure the upload is
  aborted, so no object and no orphaned parts (billed storage holding personal data) remain;
- every put names the KMS key explicitly, whatever the bucket default says.

Integrity in transit: botocore (>= 1.36, default `when_supported`) sends a CRC32 trailer with every
UploadPart and S3 rejects a part that does not match. We do not add `ChecksumAlgorithm="SHA256"`: S3
would then demand every part's SHA-256 in CompleteMultipartUpload, moto neither returns nor verifies those
checksums (so the path could not be tested here), and S3 has no full-object SHA-256 anyway. The sha256
recorded in the manifest is ours, computed over exactly the bytes we uploaded.

Errors are `ArchiveTransferError` (retried by the workflow). Messages quote the S3 key (request id, vendor,
action, archive name), byte counts, S3 error codes and exception type names; never an exception's own text,
which for an HTTP error can carry a URL with a customer key in its query string.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Iterator

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field

from connectors.base import Archive
from core.errors import ArchiveTransferError, DsrError

log = logging.getLogger(__name__)

MIB = 1024 * 1024
DEFAULT_PART_SIZE = 8 * MIB
# S3 limits: every part but the last is at least 5 MiB, a part is at most 5 GiB, an upload has at most
# 10,000 parts (so 8 MiB parts cap an archive at ~78 GiB).
MIN_PART_SIZE = 5 * MIB
MAX_PART_SIZE = 5 * 1024 * MIB
MAX_PARTS = 10_000


class StoredArchive(BaseModel):
    """One archive as it landed in S3; embedded in the manifest as proof."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    name: str
    content_type: str
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")  # hex digest of the stored bytes


def store_archive(
    s3: Any,
    bucket: str,
    key: str,
    kms_key_id: str,
    archive: Archive,
    part_size: int = DEFAULT_PART_SIZE,
) -> StoredArchive:
    """Stream `archive` to s3://bucket/key and return what was stored. Always closes the archive.

    Raises ArchiveTransferError when the download breaks off, its length differs from the announced
    Content-Length, or S3 refuses a call; in every such case nothing is stored. ValueError for a part
    size S3 would refuse.
    """
    try:
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ValueError(f"part_size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes, got {part_size}")
        return _Upload(s3, bucket, key, kms_key_id, archive, part_size).run()
    finally:
        archive.close()


class _Upload:
    def __init__(self, s3: Any, bucket: str, key: str, kms_key_id: str, archive: Archive, part_size: int):
        self.s3 = s3
        self.bucket = bucket
        self.key = key
        self.kms_key_id = kms_key_id
        self.archive = archive
        self.part_size = part_size
        self.content_type = archive.content_type or "application/octet-stream"
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.received = 0

    def run(self) -> StoredArchive:
        if self.archive.length is not None and self.archive.length > self.part_size * MAX_PARTS:
            raise ArchiveTransferError(
                f"{self.key}: the vendor announced {self.archive.length} bytes, more than {MAX_PARTS} parts of "
                f"{self.part_size} bytes can hold; nothing was stored"
            )
        created = self._s3(
            "CreateMultipartUpload",
            self.s3.create_multipart_upload,
            ContentType=self.content_type,
            ServerSideEncryption="aws:kms",
            SSEKMSKeyId=self.kms_key_id,
        )
        self.upload_id = created["UploadId"]
        try:
            digest = self._send_parts()
            self._s3(
                "CompleteMultipartUpload",
                self.s3.complete_multipart_upload,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": self.parts},
            )
        except BaseException as exc:
            # BaseException too: a KeyboardInterrupt or SystemExit must not leave parts behind either.
            self._abort()
            if isinstance(exc, Exception) and not isinstance(exc, ArchiveTransferError):
                raise ArchiveTransferError(
                    f"{self.key}: transfer failed after {self.received} bytes ({type(exc).__name__}); "
                    "nothing was stored"
                ) from None
            raise
        log.info("archive stored", extra={"key": self.key, "bytes": self.received, "parts": len(self.parts)})
        return StoredArchive(
            key=self.key,
            name=self.archive.name,
            content_type=self.content_type,
            bytes=self.received,
            sha256=digest,
        )

    def _send_parts(self) -> str:
        """Re-buffer the chunks into parts of exactly `part_size` (the last one shorter); return the sha256."""
        expected = self.archive.length
        sha = hashlib.sha256()
        # One fixed buffer, filled through memoryviews: no regrowth per part, and chunks of any size (a
        # byte, or bigger than a part) are split without intermediate copies.
        buffer = memoryview(bytearray(self.part_size))
        filled = 0
        for chunk in self._chunks():
            sha.update(chunk)
            self.received += len(chunk)
            # Stop at the first byte too many: no point streaming a runaway body to the end.
            if expected is not None and self.received > expected:
                raise ArchiveTransferError(
                    f"{self.key}: the vendor announced {expected} bytes but sent more; nothing was stored"
                )
            view = memoryview(chunk)
            while view:
                take = min(len(view), self.part_size - filled)
                buffer[filled : filled + take] = view[:take]
                filled += take
                view = view[take:]
                if filled == self.part_size:
                    self._send_part(buffer)
                    filled = 0
        if expected is not None and self.received != expected:
            raise ArchiveTransferError(
                f"{self.key}: the vendor announced {expected} bytes but sent {self.received}; nothing was stored"
            )
        # The remainder is the last part. An empty archive still needs one part: S3 sets no minimum size
        # for the last part, and moto accepts a single empty part as the whole upload (tested).
        if filled or not self.parts:
            self._send_part(buffer[:filled])
        return sha.hexdigest()

    def _chunks(self) -> Iterator[bytes]:
        """The archive's chunks; a failure while reading becomes an ArchiveTransferError."""
        it = iter(self.archive.chunks)
        while True:
            try:
                chunk = next(it)
            except StopIteration:
                return
            except Exception as exc:
                # Our own errors have messages written to be quoted; anyone else's only by type.
                detail = str(exc) if isinstance(exc, DsrError) else type(exc).__name__
                raise ArchiveTransferError(
                    f"{self.key}: the download broke off after {self.received} bytes ({detail}); nothing was stored"
                ) from None
            if chunk:
                yield chunk

    def _send_part(self, data: memoryview) -> None:
        number = len(self.parts) + 1
        if number > MAX_PARTS:
            raise ArchiveTransferError(
                f"{self.key}: the archive exceeds {MAX_PARTS} parts of {self.part_size} bytes; nothing was stored"
            )
        # A bytes copy for botocore (the buffer is refilled next; botocore wraps bytes without copying
        # and re-reads them if it retries the call).
        response = self._s3(
            "UploadPart",
            self.s3.upload_part,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=bytes(data),
        )
        self.parts.append({"PartNumber": number, "ETag": response["ETag"]})

    def _s3(self, operation: str, call: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return call(Bucket=self.bucket, Key=self.key, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "unknown")
            raise ArchiveTransferError(f"{self.key}: S3 {operation} failed ({code}); nothing was stored") from None
        except Exception as exc:  # connection errors, timeouts (BotoCoreError and friends)
            raise ArchiveTransferError(
                f"{self.key}: S3 {operation} failed ({type(exc).__name__}); nothing was stored"
            ) from None

    def _abort(self) -> None:
        try:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
        except Exception as exc:
            # Nothing more we can do here; the bucket's AbortIncompleteMultipartUpload lifecycle rule
            # removes the parts later. The object itself was never completed, so nothing is visible.
            code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None
            log.warning(
                "could not abort multipart upload; the lifecycle rule will remove its parts",
                extra={"key": self.key, "upload_id": self.upload_id, "error": code or type(exc).__name__},
            )
