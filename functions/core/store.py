"""The bucket layout, and reading/writing the request and manifest objects. Every put is SSE-KMS with the
bucket's key set explicitly, so an object can never land under another key or unencrypted."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from core.errors import DsrError
from core.models import Manifest, StoredRequest


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


def outcome_key(request_id: str, vendor: str, action: str) -> str:
    return f"{prefix(request_id)}{vendor}/{action}/outcome.json"


class Store:
    def __init__(self, s3: Any, bucket: str, kms_key_id: str):
        self.s3 = s3
        self.bucket = bucket
        self.kms_key_id = kms_key_id

    def _put(self, key: str, body: bytes, **extra: Any) -> None:
        self.s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=body,
            ContentType="application/json",
            ServerSideEncryption="aws:kms",
            SSEKMSKeyId=self.kms_key_id,
            **extra,
        )

    def _get_json(self, key: str) -> Any | None:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise
        return json.loads(body)

    def create_request(self, request: StoredRequest) -> bool:
        """Write the request once. False if a request with this id is already stored (a duplicate delivery):
        the first one wins, so a running execution never has its subject swapped underneath it."""
        try:
            self._put(request_key(request.request_id), request.model_dump_json().encode(), IfNoneMatch="*")
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise
        return True

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
        keys: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=key_prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return sorted(keys)

    def put_manifest(self, manifest: Manifest) -> None:
        body = manifest.model_dump_json(indent=2).encode()
        self._put(manifest.manifest_key, body)
        self._put(manifest.proof_key, body)

    def load_manifest(self, request_id: str) -> Manifest | None:
        """The manifest, from the proof copy once the request data has expired."""
        raw = self._get_json(manifest_key(request_id)) or self._get_json(proof_key(request_id))
        return Manifest.model_validate(raw) if raw is not None else None
