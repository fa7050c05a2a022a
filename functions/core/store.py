"""The bucket layout, and reading/writing the request and manifest objects. Every put is SSE-KMS with the
bucket's key set explicitly, so an object can never land under another key or unencrypted.

Every S3 call (writes, reads, listings) is retried on transient errors (core.archive_store.is_transient:
5xx, SlowDown, RequestTimeout, connection drops, timeouts), S3_ATTEMPTS times with a growing pause; once
they are spent the call raises StoreUnavailable, which the workflow retries by name. Its message names the
S3 operation, the key and the error code, never the exception's text. Other S3 errors propagate as they are.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import ClientError

from core.archive_store import NOT_FOUND, S3_ATTEMPTS, error_code, is_transient, with_retries
from core.errors import DsrError, StoreUnavailable
from core.models import Manifest, StoredRequest

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")
# A conditional put that found the key taken (S3 answers 409 ConditionalRequestConflict while another
# conditional write to the key is in flight).
PRECONDITION_FAILED = ("PreconditionFailed", "412", "ConditionalRequestConflict")


class RequestNotFound(DsrError):
    """The request's stored record is missing: the bucket was emptied or the id is wrong."""


def prefix(request_id: str) -> str:
    return f"requests/{request_id}/"


def request_key(request_id: str) -> str:
    return f"{prefix(request_id)}request.json"


def manifest_key(request_id: str) -> str:
    return f"{prefix(request_id)}manifest.json"


def proof_key(request_id: str) -> str:
    """The manifest's second copy: no personal data, so it may outlive the request data as proof."""
    return f"proof/{request_id}/manifest.json"


def archive_key(request_id: str, vendor: str, action: str, name: str) -> str:
    safe = name.replace("/", "_").lstrip(".") or "archive"
    return f"{prefix(request_id)}{vendor}/{action}/{safe}"


def package_key(request_id: str) -> str:
    """The access package: one zip per request, under requests/ so it expires with the request data."""
    return f"{prefix(request_id)}package/dsrflow-access-{request_id}.zip"


def outcome_key(request_id: str, vendor: str, action: str) -> str:
    return f"{prefix(request_id)}{vendor}/{action}/outcome.json"


def submission_key(request_id: str, vendor: str, action: str, attempt: int = 1) -> str:
    """Every try to start the vendor job, recorded before the call (at most one more job per action). One
    record per attempt: a retry of the request (an operator's decision) starts from a clean record."""
    suffix = "" if attempt == 1 else f"-{attempt}"
    return f"{prefix(request_id)}{vendor}/{action}/submission{suffix}.json"


def attempt_manifest_key(request_id: str, attempt: int) -> str:
    """Every version of the manifest, one per attempt, kept under proof/ beside the latest."""
    return f"proof/{request_id}/attempts/{attempt}/manifest.json"


class Store:
    def __init__(self, s3: S3Client, bucket: str, kms_key_id: str, *, sleep: Callable[[float], None] = time.sleep):
        self.s3 = s3
        self.bucket = bucket
        self.kms_key_id = kms_key_id
        self.sleep = sleep  # the pause between retries (tests pass a no-op)

    def _retrying(self, operation: str, key: str, call: Callable[[int], T]) -> T:
        """`call(attempt)` with transient retries; spent retries become StoreUnavailable."""
        try:
            return with_retries(call, sleep=self.sleep, what=f"S3 {operation}")
        except Exception as exc:
            if is_transient(exc):
                raise StoreUnavailable(
                    f"S3 {operation} of {key} failed ({error_code(exc)}) after {S3_ATTEMPTS} attempts"
                ) from None
            raise

    def _put_once(self, key: str, body: bytes, **extra: Any) -> None:
        self.s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=body,
            ContentType="application/json",
            ServerSideEncryption="aws:kms",
            SSEKMSKeyId=self.kms_key_id,
            **extra,
        )

    def _put(self, key: str, body: bytes, **extra: Any) -> None:
        self._retrying("PutObject", key, lambda _: self._put_once(key, body, **extra))

    def _get_bytes(self, key: str) -> bytes | None:
        """One GetObject, body read whole (these objects are small JSON records); None if there is none."""
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if error_code(exc) in NOT_FOUND:
                return None
            raise

    def _get_json(self, key: str) -> Any | None:
        body = self._retrying("GetObject", key, lambda _: self._get_bytes(key))
        return json.loads(body) if body is not None else None

    def create_request(self, request: StoredRequest) -> bool:
        """Write the request once. False if a request with this id is already stored (a duplicate delivery):
        the first one wins, so a running execution never has its subject swapped underneath it."""
        key = request_key(request.request_id)
        body = request.model_dump_json().encode()

        def attempt(number: int) -> bool:
            try:
                self._put_once(key, body, IfNoneMatch="*")
            except ClientError as exc:
                if error_code(exc) in PRECONDITION_FAILED:
                    # After a transient failure the key may hold our own earlier attempt, whose answer was
                    # lost: that is a success, not a duplicate. A first attempt keeps the plain semantics.
                    return number > 1 and self._get_bytes(key) == body
                raise
            return True

        return self._retrying("PutObject", key, attempt)

    def load_request(self, request_id: str) -> StoredRequest:
        raw = self._get_json(request_key(request_id))
        if raw is None:
            raise RequestNotFound(f"request {request_id}: its stored record {request_key(request_id)} is missing")
        return StoredRequest.model_validate(raw)

    def put_json(self, key: str, payload: Any) -> None:
        self._put(key, json.dumps(payload, indent=2, sort_keys=True, default=str).encode())

    def get_json(self, key: str) -> Any | None:
        return self._get_json(key)

    def list_keys(self, key_prefix: str) -> list[str]:
        def attempt(_: int) -> list[str]:
            keys: list[str] = []
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=key_prefix):
                keys += [o["Key"] for o in page.get("Contents", [])]
            return sorted(keys)

        return self._retrying("ListObjectsV2", key_prefix, attempt)

    def put_manifest(self, manifest: Manifest) -> None:
        body = manifest.model_dump_json(indent=2).encode()
        self._put(manifest.manifest_key, body)
        self._put(attempt_manifest_key(manifest.request_id, manifest.attempt), body)
        self._put(manifest.proof_key, body)

    def load_attempt_manifest(self, request_id: str, attempt: int) -> Manifest | None:
        """The manifest as attempt `attempt` wrote it (None when it wrote none)."""
        raw = self._get_json(attempt_manifest_key(request_id, attempt))
        return Manifest.model_validate(raw) if raw is not None else None

    def load_manifest(self, request_id: str) -> Manifest | None:
        """The manifest, from the proof copy once the request data has expired."""
        raw = self._get_json(manifest_key(request_id)) or self._get_json(proof_key(request_id))
        return Manifest.model_validate(raw) if raw is not None else None
