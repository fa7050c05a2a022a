"""Stream a vendor archive into the archive bucket: S3 multipart, SSE-KMS, sha256 and verification on the way.

Guarantees:
- bounded memory: the part buffer being filled plus one copy per part in flight (PARTS_IN_FLIGHT, so
  (N+1) x part size: 32 MiB for 3 parts of 8 MiB), and the chunk in hand, whatever the archive's size; a zip
  is also spooled to a temporary file for verification (core/verify.py), on disk;
- an archive counts as stored only when verified: every chunk goes to the verifier for `archive.kind`
  (zip: opens, every CRC right; json: complete, success: true; bytes: length only), which judges before
  `CompleteMultipartUpload`; a failed verification aborts the upload (ArchiveInvalid, ArchiveTooLarge);
- nothing partial is ever visible: the object appears only when `CompleteMultipartUpload` runs, and that
  runs only after the whole stream arrived, matched its announced length and was verified; on any failure
  the upload is aborted, so no object and no orphaned parts (billed storage holding personal data) remain;
- an S3 hiccup does not lose the download (Elevate's is single-shot): every S3 call is retried on transient
  errors (`is_transient`: 5xx, SlowDown, RequestTimeout, connection drops, timeouts), S3_ATTEMPTS times in
  all; an UploadPart retry resends the part still in hand. A CompleteMultipartUpload whose answer was lost
  may have gone through: when a retry answers NoSuchUpload, or the retries run out, the key is HEADed and
  the object counts as stored if it is there with this upload's token (x-amz-meta-dsrflow-upload, set at
  CreateMultipartUpload) and exactly the bytes received. (botocore retries inside each call too, so a
  NoSuchUpload can come from its retry of our first attempt: handled the same way.)
- every put names the KMS key explicitly, whatever the bucket default says.

Parts in flight: with one part in flight the download stops during every UploadPart, and the two halves of
the transfer (vendor -> us, us -> S3) take turns. So up to `parts_in_flight` (N, PARTS_IN_FLIGHT = 3 by
default) UploadParts run at once in a small pool of uploader threads (one boto3 client: its calls are
thread-safe) while this thread goes on reading, hashing, verifying and filling the next part. The producer
blocks while N parts are pending and copies the buffer into a part's own bytes only once a thread is free
for it, so memory stays at N + 1 parts. Why 3: one part keeps the download going while another is sent and
a third covers a slow part's tail (S3 latency varies per request); each more costs a part size of memory
and buys little on collect's one vCPU, which also runs sha256 and verification. bench/bench_streaming.py
(1 GiB into a moto server over loopback, best of 3, on a shared 2-CPU machine): N=1 0.74x boto3
`upload_fileobj` with its 10 threads, N=3 1.02x, N=4 0.85x, at 0.41x, 0.52x and 0.57x its peak RSS
(runs vary by a third there; the server, about 8 s of CPU per GiB against our 3, is the limit, so 4 is no
faster than 3). What concurrency changes, and what it does not:
- parts may finish out of order; each part's number is fixed when it is handed off, and
  CompleteMultipartUpload lists the parts sorted by number, each with the CRC32 its UploadPart returned;
- each part is retried on its own (`with_retries`, resending its own bytes); MAX_PARTS is checked before a
  part is handed off;
- the first part that fails for good is the error reported (a part stopped because of it never is), and
  the stream stops at the next part boundary; its siblings make no further attempt;
- abort (any failure, KeyboardInterrupt included) first stops the parts in flight (no new attempt starts,
  queued ones are cancelled) and waits until every UploadPart under way has returned, and only then sends
  AbortMultipartUpload: no part lands after the abort. (An UploadPart under way cannot be interrupted, and a
  part in a retry pause finishes its pause: the abort may wait that long.)
- CreateMultipartUpload, CompleteMultipartUpload (and its HEAD check) and the abort run in the caller's
  thread, after every part has ended. `parts_in_flight=1` sends each part in the caller's thread, as before.

A CreateMultipartUpload whose answer is lost leaves an upload without parts (no data) that we never learn
the id of; the bucket's AbortIncompleteMultipartUpload lifecycle rule removes it.

Integrity in transit: every part carries a CRC32 and S3 keeps it. CreateMultipartUpload declares
`ChecksumAlgorithm="CRC32"`, each UploadPart names the same algorithm (botocore computes the CRC32 over the
bytes it sends and puts it in the request's trailer; S3 rejects a part whose bytes do not match it), and
CompleteMultipartUpload lists every part's `ChecksumCRC32` as UploadPart returned it, so S3 assembles exactly
the parts it verified (a wrong or missing part checksum fails the complete). Why CRC32, not SHA256: it is
what botocore (>= 1.36, `when_supported`) already sends with every part, so declaring it changes nothing on
the wire and only makes S3 keep and demand it; naming it on every UploadPart keeps it sent even where
`AWS_REQUEST_CHECKSUM_CALCULATION=when_required` turns botocore's default off. SHA256 would mean a second
SHA-256 over every byte on collect's one vCPU (ours already runs), for no gain: this checksum guards
the transfer, the proof is the manifest's sha256, computed by us over exactly the bytes we uploaded. moto
returns part checksums but verifies none: tests/unit/test_archive_store.py checks the calls themselves.
Should an UploadPart answer lack the checksum (a stand-in S3), the part's CRC32 is computed here from the
bytes still in hand, the same value botocore sent.

`rehash_stored` serves a task retried after its archive landed but before its outcome was written: it
streams the stored object back (bounded memory), recomputes sha256 and length, and re-verifies it.

Errors: `ArchiveTransferError` (retried by the workflow) for a broken download or S3 failing after
retries; `ArchiveInvalid` / `ArchiveTooLarge` (core/verify.py; not retried) for content. Messages quote the
S3 key (request id, vendor, action, archive name), byte counts, S3 operations and error codes, exception
type names and the verifier's rule; never an exception's own text, which for an HTTP error can carry a URL
with a customer key in its query string.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, cast

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from pydantic import ConfigDict, Field

from core.domain import Archive
from core.errors import ArchiveInvalid, ArchiveTooLarge, ArchiveTransferError, DsrError
from core.model import Model
from core.verify import Verifier, verifier_for

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

log = logging.getLogger(__name__)

T = TypeVar("T")

MIB = 1024 * 1024
DEFAULT_PART_SIZE = 8 * MIB
# S3 limits: every part but the last is at least 5 MiB, a part is at most 5 GiB, an upload has at most
# 10,000 parts (so 8 MiB parts cap an archive at ~78 GiB).
MIN_PART_SIZE = 5 * MIB
MAX_PART_SIZE = 5 * 1024 * MIB
MAX_PARTS = 10_000
# UploadParts in flight at once while the next part fills (see the module doc): memory holds this many parts
# plus the one filling. At most the connections botocore pools per host (max_pool_connections, 10 by default):
# more would open and drop a connection per part.
PARTS_IN_FLIGHT = 3
MAX_PARTS_IN_FLIGHT = 10
READ_CHUNK = 1 * MIB  # rehash_stored reads the stored object back in pieces this big

# Retries on top of botocore's own (which retry each call a few times within seconds): a longer pause for
# an S3 partition that is slow to recover, while the download we hold is still good.
S3_ATTEMPTS = 4
S3_RETRY_DELAYS = (0.2, 1.0, 3.0)  # seconds before the 2nd, 3rd and 4th attempt
TRANSIENT_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"})
TRANSIENT_EXCEPTIONS = (
    EndpointConnectionError,
    ConnectionClosedError,
    ReadTimeoutError,
    ConnectTimeoutError,
    ResponseStreamingError,  # a GET body broke off while being read
    IncompleteReadError,  # a GET body ended short of its Content-Length
)
UPLOAD_TOKEN = "dsrflow-upload"  # user metadata naming the upload an object came from (see the module doc)
NOT_FOUND = ("NoSuchKey", "404", "NotFound")
# The checksum every part carries and S3 keeps (see the module doc): the algorithm botocore sends by default.
CHECKSUM_ALGORITHM: Final = "CRC32"
CHECKSUM_FIELD = "ChecksumCRC32"  # its name in UploadPart's answer and in CompleteMultipartUpload's Parts


def crc32_b64(data: bytes) -> str:
    """A part's CRC32 as S3 and botocore write it: the big-endian 4 bytes, base64."""
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def error_code(exc: BaseException) -> str:
    """An S3 error code, or the exception's type name: safe to quote, unlike the exception's text."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "unknown")
    return type(exc).__name__


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return error_code(exc) in TRANSIENT_CODES or (isinstance(status, int) and status >= 500)
    return isinstance(exc, TRANSIENT_EXCEPTIONS)


def with_retries(
    call: Callable[[int], T],
    *,
    sleep: Callable[[float], None] = time.sleep,
    attempts: int = S3_ATTEMPTS,
    what: str = "S3 call",
) -> T:
    """`call(attempt)` (1-based) until it returns or raises something not transient, at most `attempts` times.
    The last error propagates unchanged: transient means the attempts ran out."""
    for attempt in range(1, attempts + 1):
        try:
            return call(attempt)
        except Exception as exc:
            if attempt >= attempts or not is_transient(exc):
                raise
            log.warning(f"{what} failed, retrying", extra={"error": error_code(exc), "attempt": attempt})
            sleep(S3_RETRY_DELAYS[min(attempt - 1, len(S3_RETRY_DELAYS) - 1)])
    raise AssertionError("unreachable")


def failure(exc: BaseException, attempts: int = S3_ATTEMPTS) -> str:
    """'(Code)' or '(Code) after N attempts' for a message: how an S3 call that `with_retries` gave up on failed."""
    return f"({error_code(exc)}) after {attempts} attempts" if is_transient(exc) else f"({error_code(exc)})"


class StoredArchive(Model):
    """One archive as it landed in S3; embedded in the manifest as proof."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    name: str
    content_type: str
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")  # hex digest of the stored bytes
    # What the content was verified as (core/verify.py). The default is for records written before
    # verification existed: they were checked for length only, which is what "bytes" means.
    verified: Literal["zip", "json", "bytes"] = "bytes"
    members: int | None = Field(default=None, ge=0)  # zip: member count


def store_archive(
    s3: S3Client,
    bucket: str,
    key: str,
    kms_key_id: str,
    archive: Archive,
    part_size: int = DEFAULT_PART_SIZE,
    *,
    sleep: Callable[[float], None] = time.sleep,
    parts_in_flight: int = PARTS_IN_FLIGHT,
) -> StoredArchive:
    """Stream `archive` to s3://bucket/key, verify it as `archive.kind`, and return what was stored. Always
    closes the archive. In every failure case nothing is stored and no upload is left open (unless S3 also
    refuses the abort: then the lifecycle rule removes the parts; the object is never visible).

    Raises:
      ArchiveTransferError  the download broke off, its length differs from the announced Content-Length,
                            or S3 failed a call (after S3_ATTEMPTS for transient errors);
      ArchiveInvalid        the content is not what `archive.kind` documents (core/verify.py);
      ArchiveTooLarge       a zip too big to spool for verification (ARCHIVE_SPOOL_LIMIT_MB, free /tmp);
      ConfigError           ARCHIVE_SPOOL_LIMIT_MB or ARCHIVE_SPOOL_DIR is unusable;
      ValueError            a part size S3 would refuse, `parts_in_flight` outside 1..MAX_PARTS_IN_FLIGHT, or
                            an unknown `archive.kind`.
    `sleep` is the pause between retries (tests pass a no-op); `parts_in_flight` how many UploadParts may run
    at once while the download goes on (1: the download waits for each part, in this thread).
    """
    try:
        return _Upload(s3, bucket, key, kms_key_id, archive, part_size, sleep, parts_in_flight).run()
    except (ArchiveInvalid, ArchiveTooLarge) as exc:
        raise exc.with_message(f"{exc.message}; nothing was stored") from None
    finally:
        archive.close()


class _Stopped(Exception):
    """Raised in an uploader thread instead of a part's next attempt once the upload is being given up."""


class _Multipart:
    """One multipart upload to s3://bucket/key, SSE-KMS, every part with its CRC32: create, send parts (up to
    `parts_in_flight` at once, see the module doc), complete (confirming a lost answer by HEAD), abort.
    `_Upload` (an archive pulled from a vendor) and `MultipartWriter` (a file-like written to, the access
    package) fill the parts; everything but the UploadPart calls runs in the caller's thread."""

    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        key: str,
        kms_key_id: str,
        part_size: int,
        sleep: Callable[[float], None],
        content_type: str,
        parts_in_flight: int,
    ):
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ValueError(f"part_size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes, got {part_size}")
        if not 1 <= parts_in_flight <= MAX_PARTS_IN_FLIGHT:
            raise ValueError(f"parts_in_flight must be between 1 and {MAX_PARTS_IN_FLIGHT}, got {parts_in_flight}")
        self.s3 = s3
        self.bucket = bucket
        self.key = key
        self.kms_key_id = kms_key_id
        self.part_size = part_size
        self.sleep = sleep
        self.content_type = content_type
        self.parts_in_flight = parts_in_flight
        self.token = uuid.uuid4().hex
        self.upload_id: str | None = None
        self.parts: list[CompletedPartTypeDef] = []  # parts S3 accepted; in part-number order once complete
        self.sent = 0  # parts handed to UploadPart so far: the next part's number is sent + 1
        self.received = 0
        # Parts in flight (parts_in_flight > 1): uploader threads, started with the first part.
        self._pool: ThreadPoolExecutor | None = None
        self._pending: set[Future[CompletedPartTypeDef]] = set()
        self._stop = threading.Event()  # set once a part failed for good or the upload is being aborted
        self._failure: BaseException | None = None  # the first part that failed for good: what is raised
        self._failure_lock = threading.Lock()

    def _create(self, **extra: Any) -> None:
        created = self._s3(
            "CreateMultipartUpload",
            lambda _: self.s3.create_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                ContentType=self.content_type,
                ServerSideEncryption="aws:kms",
                SSEKMSKeyId=self.kms_key_id,
                Metadata={UPLOAD_TOKEN: self.token},
                ChecksumAlgorithm=CHECKSUM_ALGORITHM,
                **extra,
            ),
        )
        self.upload_id = created["UploadId"]

    def _send_part(self, data: memoryview) -> None:
        """Hand the part in `data` (the caller's buffer, refilled once this returns) to UploadPart: at once
        with one part in flight, else to an uploader thread once fewer than `parts_in_flight` are pending.
        Raises the failure of any part that failed since the last call."""
        number = self.sent + 1
        if number > MAX_PARTS:
            raise ArchiveTransferError(
                f"{self.key}: the archive exceeds {MAX_PARTS} parts of {self.part_size} bytes; nothing was stored"
            )
        if self.parts_in_flight == 1:
            # A bytes copy for botocore (the buffer is refilled next; botocore wraps bytes without copying
            # and re-reads them if it retries the call), made once: our retries resend the same copy.
            self.parts.append(self._upload_part(number, bytes(data)))
            self.sent = number
            return
        self._reap(block=False)  # a part that failed meanwhile stops the stream here, at a part boundary
        while len(self._pending) >= self.parts_in_flight:
            self._reap(block=True)
        # The copy only once a thread is free for it: parts_in_flight copies and the buffer, never more.
        body = bytes(data)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.parts_in_flight, thread_name_prefix="dsrflow-part")
        self._pending.add(self._pool.submit(self._upload_part, number, body))
        self.sent = number

    def _upload_part(self, number: int, body: bytes) -> CompletedPartTypeDef:
        """UploadPart `number` with its retries (each resends `body`), in the caller's or an uploader thread.
        Stops before its next attempt once another part failed or the upload is being aborted."""

        def attempt(_: int) -> Any:
            if self._stop.is_set():
                raise _Stopped
            return self.s3.upload_part(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=cast(str, self.upload_id),  # set before any part is sent
                PartNumber=number,
                Body=body,
                ChecksumAlgorithm=CHECKSUM_ALGORITHM,
            )

        try:
            response = with_retries(attempt, sleep=self.sleep, what="S3 UploadPart")
        except _Stopped:
            raise
        except Exception as exc:  # ClientError, connection errors, timeouts (BotoCoreError and friends)
            raise self._failed(
                ArchiveTransferError(f"{self.key}: S3 UploadPart failed {failure(exc)}; nothing was stored")
            ) from None
        except BaseException as exc:
            self._failed(exc)
            raise
        # S3 verified the part against this checksum and checks CompleteMultipartUpload's list against it.
        checksum = response.get("ChecksumCRC32") or crc32_b64(body)
        return {"PartNumber": number, "ETag": response["ETag"], "ChecksumCRC32": checksum}

    def _failed(self, exc: BaseException) -> BaseException:
        """Record the first part failure (the one reported) and stop the other parts' further attempts."""
        with self._failure_lock:
            if self._failure is None:
                self._failure = exc
        self._stop.set()
        return exc

    def _reap(self, *, block: bool) -> None:
        """Collect the parts in flight that ended (after waiting for one, with `block`); raise the first part
        failure if any ended badly. A part stopped by another's failure raises that failure, never its own."""
        if block:
            wait(self._pending, return_when=FIRST_COMPLETED)
        for future in [f for f in self._pending if f.done()]:
            self._pending.discard(future)
            error = future.exception()
            if error is not None:
                raise self._failure or error
            self.parts.append(future.result())

    def _finish_parts(self) -> None:
        """Wait for every part in flight (raising the first failure) and put the parts in part-number order."""
        while self._pending:
            self._reap(block=True)
        self._close_pool()
        self.parts.sort(key=lambda part: part["PartNumber"])

    def _stop_parts(self) -> None:
        """Stop the parts in flight and wait until each has ended: no part may land after the abort."""
        self._stop.set()
        for future in self._pending:
            future.cancel()  # one not yet started never starts; a running one stops before its next attempt
        wait(self._pending)
        self._pending.clear()
        self._close_pool()

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _complete(self) -> None:
        self._finish_parts()

        def attempt(_: int) -> Any:
            try:
                return self.s3.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=self.key,
                    UploadId=cast(str, self.upload_id),  # set by run() before any part is sent
                    MultipartUpload={"Parts": self.parts},
                )
            except ClientError as exc:
                # The upload is gone: an earlier attempt (ours, or botocore's retry inside this call) may
                # have completed it with its answer lost. Not worth retrying: look at the key instead.
                if error_code(exc) == "NoSuchUpload":
                    if self._landed():
                        return None
                    raise ArchiveTransferError(
                        f"{self.key}: S3 CompleteMultipartUpload failed (NoSuchUpload) and the object from "
                        "this upload was not found at the key; nothing was stored"
                    ) from None
                raise

        try:
            with_retries(attempt, sleep=self.sleep, what="S3 CompleteMultipartUpload")
        except DsrError:
            raise
        except Exception as exc:
            # Retries spent on a transient error: the last attempt may still have gone through.
            if is_transient(exc) and self._landed():
                return
            raise ArchiveTransferError(
                f"{self.key}: S3 CompleteMultipartUpload failed {failure(exc)}; nothing was stored"
            ) from None

    def _landed(self) -> bool:
        """True when the key holds the object this upload made: its token, and exactly the bytes received."""
        try:
            head = with_retries(
                lambda _: self.s3.head_object(Bucket=self.bucket, Key=self.key),
                sleep=self.sleep,
                what="S3 HeadObject",
            )
        except Exception as exc:
            if error_code(exc) not in NOT_FOUND:
                # S3 still failing: we cannot show it landed, so we report a failure (if it did land, the
                # workflow's retry of the task finds it with rehash_stored).
                log.warning("could not confirm a completed upload", extra={"key": self.key, "error": error_code(exc)})
            return False
        ours = head.get("Metadata", {}).get(UPLOAD_TOKEN) == self.token
        landed = ours and head.get("ContentLength") == self.received
        if landed:
            log.info("completed upload confirmed by HEAD after a lost answer", extra={"key": self.key})
        return landed

    def _s3(self, operation: str, call: Callable[[int], T]) -> T:
        try:
            return with_retries(call, sleep=self.sleep, what=f"S3 {operation}")
        except Exception as exc:  # ClientError, connection errors, timeouts (BotoCoreError and friends)
            raise ArchiveTransferError(
                f"{self.key}: S3 {operation} failed {failure(exc)}; nothing was stored"
            ) from None

    def _abort(self) -> None:
        self._stop_parts()
        if self.upload_id is None:
            return
        try:
            with_retries(
                lambda _: self.s3.abort_multipart_upload(
                    Bucket=self.bucket,
                    Key=self.key,
                    UploadId=cast(str, self.upload_id),  # not None: checked above
                ),
                sleep=self.sleep,
                what="S3 AbortMultipartUpload",
            )
        except Exception as exc:
            if error_code(exc) == "NoSuchUpload":
                return  # already gone (aborted, or a lost complete): nothing left to remove
            # Nothing more we can do here; the bucket's AbortIncompleteMultipartUpload lifecycle rule
            # removes the parts later. The object itself was never completed, so nothing is visible.
            log.warning(
                "could not abort multipart upload; the lifecycle rule will remove its parts",
                extra={"key": self.key, "upload_id": self.upload_id, "error": error_code(exc)},
            )


class _Upload(_Multipart):
    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        key: str,
        kms_key_id: str,
        archive: Archive,
        part_size: int,
        sleep: Callable[[float], None],
        parts_in_flight: int,
    ):
        super().__init__(
            s3,
            bucket,
            key,
            kms_key_id,
            part_size,
            sleep,
            archive.content_type or "application/octet-stream",
            parts_in_flight,
        )
        self.archive = archive
        self.verifier: Verifier | None = None

    def run(self) -> StoredArchive:
        if self.archive.length is not None and self.archive.length > self.part_size * MAX_PARTS:
            raise ArchiveTransferError(
                f"{self.key}: the vendor announced {self.archive.length} bytes, more than {MAX_PARTS} parts of "
                f"{self.part_size} bytes can hold; nothing was stored"
            )
        # Before any S3 call: a zip announced too big for the spool is refused with nothing to undo.
        self.verifier = verifier_for(self.archive.kind, self.key, length=self.archive.length)
        try:
            return self._run()
        finally:
            self.verifier.close()

    def _run(self) -> StoredArchive:
        assert self.verifier is not None
        self._create()
        try:
            digest = self._send_parts()
            result = self.verifier.finish()
            self._complete()
        except BaseException as exc:
            # BaseException too: a KeyboardInterrupt or SystemExit must not leave parts behind either.
            self._abort()
            if isinstance(exc, Exception) and not isinstance(exc, DsrError):
                raise ArchiveTransferError(
                    f"{self.key}: transfer failed after {self.received} bytes ({type(exc).__name__}); "
                    "nothing was stored"
                ) from None
            raise
        log.info(
            "archive stored",
            extra={
                "key": self.key,
                "bytes": self.received,
                "parts": len(self.parts),
                "verified": result.kind,
                "members": result.members,
            },
        )
        return StoredArchive(
            key=self.key,
            name=self.archive.name,
            content_type=self.content_type,
            bytes=self.received,
            sha256=digest,
            verified=result.kind,
            members=result.members,
        )

    def _send_parts(self) -> str:
        """Re-buffer the chunks into parts of exactly `part_size` (the last one shorter), feeding the verifier;
        return the sha256."""
        assert self.verifier is not None
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
            self.verifier.feed(chunk)
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
        if filled or not self.sent:
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


class MultipartWriter(_Multipart):
    """A write-only, non-seekable file streamed into s3://bucket/key by multipart upload: what zipfile writes
    the access package into (core/package.py). Memory: one part buffer and the copies of the parts in flight
    (`parts_in_flight`, PARTS_IN_FLIGHT by default: (N+1) parts in all).

        with MultipartWriter(s3, bucket, key, kms_key_id, content_type="application/zip") as out:
            out.write(b"...")
        out.stored  # (bytes, sha256) once the upload completed

    Nothing is visible at the key until the with-block ends without an error: then the upload completes. On
    any error inside the block, or when completing fails, the upload is aborted and nothing is stored.
    Raises ArchiveTransferError when S3 fails (after S3_ATTEMPTS for transient errors) or the object would
    exceed MAX_PARTS parts: from `write` at the part boundary after a part failed, or from the block's end.
    """

    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        key: str,
        kms_key_id: str,
        *,
        content_type: str = "application/octet-stream",
        content_disposition: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        sleep: Callable[[float], None] = time.sleep,
        parts_in_flight: int = PARTS_IN_FLIGHT,
    ):
        super().__init__(s3, bucket, key, kms_key_id, part_size, sleep, content_type, parts_in_flight)
        self.content_disposition = content_disposition
        self._buffer = memoryview(bytearray(part_size))
        self._filled = 0
        self._sha = hashlib.sha256()
        self.stored: tuple[int, str] | None = None

    def __enter__(self) -> MultipartWriter:
        self._create(**({"ContentDisposition": self.content_disposition} if self.content_disposition else {}))
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if kind is not None:
            self._abort()
            return
        try:
            # The remainder is the last part (an empty object still needs one part).
            if self._filled or not self.sent:
                self._send_part(self._buffer[: self._filled])
                self._filled = 0
            self._complete()
        except BaseException:
            self._abort()
            raise
        self.stored = (self.received, self._sha.hexdigest())

    # What zipfile asks of a file it writes to (it wraps a non-seekable one and counts positions itself).
    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self.received

    def flush(self) -> None:
        pass

    def close(self) -> None:
        """Nothing to do: the with-block's end completes (or aborts) the upload, not zipfile's close."""

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        self._sha.update(view)
        self.received += size
        while view:
            take = min(len(view), self.part_size - self._filled)
            self._buffer[self._filled : self._filled + take] = view[:take]
            self._filled += take
            view = view[take:]
            if self._filled == self.part_size:
                self._send_part(self._buffer)
                self._filled = 0
        return size


def rehash_stored(
    s3: S3Client,
    bucket: str,
    key: str,
    name: str,
    content_type: str,
    kind: str,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> StoredArchive | None:
    """The StoredArchive for an object already at s3://bucket/key, or None if there is none.

    For a task retried after its archive landed but before its outcome was written: the object is streamed
    back (bounded memory: READ_CHUNK pieces, a zip spooled to disk as in store_archive), its sha256 and
    length recomputed and its content re-verified as `kind`. An empty `content_type` takes the object's.

    Raises ArchiveInvalid / ArchiveTooLarge when the stored object fails verification (it stays where it
    is: deciding about it is the caller's), ArchiveTransferError when S3 keeps failing the read.
    """

    def attempt(_: int) -> StoredArchive | None:
        try:
            obj = s3.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in NOT_FOUND:
                return None
            raise
        body = obj["Body"]
        try:
            verifier = verifier_for(kind, key, length=obj.get("ContentLength"))
            with verifier:
                sha, received = hashlib.sha256(), 0
                # botocore's StreamingBody raises IncompleteReadError if the body ends short: retried.
                for chunk in body.iter_chunks(READ_CHUNK):
                    sha.update(chunk)
                    received += len(chunk)
                    verifier.feed(chunk)
                result = verifier.finish()
        finally:
            body.close()
        return StoredArchive(
            key=key,
            name=name,
            content_type=content_type or obj.get("ContentType") or "application/octet-stream",
            bytes=received,
            sha256=sha.hexdigest(),
            verified=result.kind,
            members=result.members,
        )

    try:
        return with_retries(attempt, sleep=sleep, what="S3 GetObject")
    except (ArchiveInvalid, ArchiveTooLarge) as exc:
        raise exc.with_message(f"{exc.message} (re-checking the archive already stored there)") from None
    except DsrError:
        raise
    except Exception as exc:
        raise ArchiveTransferError(
            f"{key}: S3 GetObject failed {failure(exc)} while re-reading the archive already stored there"
        ) from None
