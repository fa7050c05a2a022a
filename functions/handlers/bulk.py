"""Bulk intake's coordinator (core/bulk.py): a file put under bulk/incoming/ starts a batch (S3 -> EventBridge
"Object Created"), and the bulk state machine's `prepare` (index the lines) and `finish` (the result file) steps.
The lines themselves are handled by handlers/bulk_item.py, one child execution each."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from core import bulk
from core.errors import ConfigError
from core.settings import settings
from handlers.observability import logger, tracer
from handlers.runtime import client

READ_THREADS = 16  # rows read back in parallel by `finish` (one small object per line)


def _mac() -> Any:
    s = settings()
    if not s.bulk_mac_key_id:
        raise ConfigError("dsrflow", "BULK_MAC_KEY_ID", "is not set: bulk intake derives its ids with it")
    return bulk.kms_mac(client("kms"), s.bulk_mac_key_id)


def _dropped(event: dict[str, Any]) -> dict[str, Any]:
    """An EventBridge "Object Created" event from the archive bucket: start the file's batch. The batch id is
    derived from the key and its version, so a redelivered event starts nothing new."""
    s = settings()
    if not s.bulk_state_machine_arn:
        raise ConfigError("dsrflow", "BULK_STATE_MACHINE_ARN", "is not set for the bulk function")
    detail = event.get("detail") or {}
    key = str((detail.get("object") or {}).get("key", ""))
    version = str((detail.get("object") or {}).get("version-id") or (detail.get("object") or {}).get("etag", ""))
    if not key.startswith(bulk.INCOMING_PREFIX) or (detail.get("bucket") or {}).get("name") != s.archive_bucket:
        logger.warning("bulk: ignored an object outside bulk/incoming/")  # the rule matches that prefix only
        return {"started": False}
    batch_id = bulk.derive_id(_mac(), "s3", f"{key}\n{version}".encode())
    started = bulk.start_batch(
        client("stepfunctions"), s.bulk_state_machine_arn, batch_id, s.archive_bucket, key, s.bulk_max_concurrency
    )
    logger.info("bulk batch from the bucket", extra={"batch_id": batch_id, "started": started})
    return {"batch_id": batch_id, "started": started}


def _prepare(event: dict[str, Any]) -> dict[str, Any]:
    s = settings()
    batch_id, key = str(event["batch_id"]), str(event["key"])
    s3 = client("s3")
    head = s3.head_object(Bucket=s.archive_bucket, Key=key)
    if head["ContentLength"] > bulk.MAX_BATCH_BYTES:
        raise bulk.InvalidBatch(f"is larger than {bulk.MAX_BATCH_BYTES // (1024 * 1024)} MiB")
    data = s3.get_object(Bucket=s.archive_bucket, Key=key, IfMatch=head["ETag"])["Body"].read()
    refs = bulk.index_lines(data)
    s3.put_object(
        Bucket=s.archive_bucket,
        Key=bulk.index_key(batch_id),
        Body=b"[" + b",".join(r.model_dump_json().encode() for r in refs) + b"]",
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=s.archive_kms_key_id,
        ContentType="application/json",
    )
    logger.info("bulk batch indexed", extra={"batch_id": batch_id, "lines": len(refs)})
    return {
        "index_key": bulk.index_key(batch_id),
        "lines": len(refs),
    }


def _finish(event: dict[str, Any]) -> dict[str, Any]:
    s = settings()
    batch_id = str(event["batch_id"])
    s3 = client("s3")
    refs = [
        bulk.LineRef.model_validate(r)
        for r in _json(s3.get_object(Bucket=s.archive_bucket, Key=bulk.index_key(batch_id)))
    ]
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=s.archive_bucket, Prefix=bulk.rows_prefix(batch_id)
    ):
        keys += [o["Key"] for o in page.get("Contents", [])]
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        blobs = list(pool.map(lambda k: s3.get_object(Bucket=s.archive_bucket, Key=k)["Body"].read(), keys))
    rows = bulk.result_rows(refs, bulk.parse_rows(blobs))
    s3.put_object(
        Bucket=s.archive_bucket,
        Key=bulk.result_key(batch_id),
        Body=bulk.as_jsonl(rows),
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=s.archive_kms_key_id,
        ContentType="application/x-ndjson",
    )
    counts = bulk.summary(rows)
    logger.info("bulk batch done", extra={"batch_id": batch_id, **counts})
    return {"batch_id": batch_id, "result_key": bulk.result_key(batch_id), **counts}


def _json(response: Any) -> Any:
    import json

    return json.loads(response["Body"].read())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if event.get("source") == "aws.s3":
        return _dropped(event)
    step = event.get("step")
    if step == "prepare":
        return _prepare(event)
    if step == "finish":
        return _finish(event)
    raise ValueError("bulk: unknown event (expected an S3 Object Created event, or step prepare/finish)")
