"""Store against moto S3: every call retried on transient S3 errors, StoreUnavailable once the retries are
spent, the conditional request write keeping its first-one-wins semantics (and not mistaking its own lost
answer for a duplicate)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, ReadTimeoutError
from moto import mock_aws

from core.archive_store import S3_RETRY_DELAYS
from core.errors import TRANSIENT_ERRORS, StoreUnavailable
from core.models import StoredRequest
from core.store import Store, request_key
from tests.unit.s3_faults import FaultyS3, client_error

BUCKET = "dsrflow-store-test"
KEY = "requests/r-1/elevate/export/outcome.json"


@pytest.fixture
def aws():
    with mock_aws():
        key_arn = boto3.client("kms", region_name="eu-west-1").create_key()["KeyMetadata"]["Arn"]
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield s3, key_arn


@pytest.fixture
def store(aws, sleeps):
    def make(faulty: FaultyS3 | None = None) -> Store:
        s3, key_arn = aws
        return Store(faulty or s3, BUCKET, key_arn, sleep=sleeps)

    return make


def read(aws, key: str = KEY) -> Any:
    return json.loads(aws[0].get_object(Bucket=BUCKET, Key=key)["Body"].read())


def request(request_id: str = "r-1", **extra: Any) -> StoredRequest:
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    return StoredRequest.model_validate(
        {
            "request_id": request_id,
            "actions": ["export"],
            "subject": {"email": "ada@example.com"},
            "received_at": now,
            "deadline": now + timedelta(days=30),
            "source": "api",
            "plan": [],
            **extra,
        }
    )


# --- writes -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        lambda: client_error("InternalError"),
        lambda: client_error("SlowDown", 503),
        lambda: client_error("RequestTimeout", 400),
        lambda: client_error("BadGateway", 502),
        lambda: EndpointConnectionError(endpoint_url="https://s3"),
        lambda: ReadTimeoutError(endpoint_url="https://s3"),
    ],
    ids=["internal", "slowdown", "request-timeout", "any-5xx", "endpoint", "read-timeout"],
)
def test_put_json_failing_once_is_retried_and_stored_encrypted(aws, store, sleeps, error):
    s3 = FaultyS3(aws[0]).fail("put_object", error=error)

    store(s3).put_json(KEY, {"status": "completed"})

    assert s3.calls == ["put_object", "put_object"]
    assert sleeps.delays == [S3_RETRY_DELAYS[0]]
    assert read(aws) == {"status": "completed"}
    head = aws[0].head_object(Bucket=BUCKET, Key=KEY)
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", aws[1])


def test_put_json_failing_every_time_is_store_unavailable(aws, store, sleeps):
    s3 = FaultyS3(aws[0]).fail("put_object", on=None)

    with pytest.raises(StoreUnavailable) as err:
        store(s3).put_json(KEY, {"status": "completed"})

    assert str(err.value) == f"S3 PutObject of {KEY} failed (InternalError) after 4 attempts"
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert type(err.value).__name__ in TRANSIENT_ERRORS  # the workflow retries it by name
    assert s3.calls.count("put_object") == 4 and sleeps.delays == list(S3_RETRY_DELAYS)


def test_a_refusal_that_is_not_transient_propagates_at_once(aws, store, sleeps):
    s3 = FaultyS3(aws[0]).fail("put_object", error=lambda: client_error("AccessDenied", 403))

    with pytest.raises(ClientError, match="AccessDenied"):
        store(s3).put_json(KEY, {})

    assert s3.calls == ["put_object"] and sleeps.delays == []


def test_put_manifest_retries_each_copy(aws, store, sleeps):
    from core.models import Manifest

    manifest = Manifest.model_validate(
        {
            "request_id": "r-1",
            "status": "completed",
            "received_at": "2025-01-02T03:04:05Z",
            "deadline": "2025-02-01T03:04:05Z",
            "finished_at": "2025-01-03T00:00:00Z",
            "within_deadline": True,
            "counts": {"completed": 0, "failed": 0, "skipped": 0},
            "outcomes": [],
            "manifest_key": "requests/r-1/manifest.json",
            "proof_key": "proof/r-1/manifest.json",
        }
    )
    s3 = FaultyS3(aws[0]).fail("put_object", on=[1, 3], error=lambda: client_error("ServiceUnavailable", 503))

    store(s3).put_manifest(manifest)

    assert s3.calls.count("put_object") == 5  # three copies, two of them retried once
    assert read(aws, "requests/r-1/manifest.json") == read(aws, "proof/r-1/manifest.json")
    assert read(aws, "proof/r-1/attempts/1/manifest.json") == read(aws, "proof/r-1/manifest.json")


# --- create_request: first one wins ---------------------------------------------------------------------------


def test_create_request_once_then_a_duplicate_is_false(aws, store):
    s = store()
    assert s.create_request(request("r-2")) is True
    assert s.create_request(request("r-2", source="eventbridge")) is False  # the first stays
    assert read(aws, request_key("r-2"))["source"] == "api"


def test_create_request_retried_after_a_lost_answer_is_still_a_success(aws, store, sleeps):
    # The first put lands at S3 but its answer is lost; the retry finds the key taken by our own bytes.
    s3 = FaultyS3(aws[0]).fail("put_object", lost=True, error=lambda: ConnectionClosedError(endpoint_url="https://s3"))

    assert store(s3).create_request(request()) is True

    assert s3.calls == ["put_object", "put_object", "get_object"]
    assert sleeps.delays == [S3_RETRY_DELAYS[0]]


def test_create_request_retried_into_another_request_is_a_duplicate(aws, store):
    store().create_request(request(source="eventbridge"))  # someone else's, just before our retry
    s3 = FaultyS3(aws[0]).fail("put_object", error=lambda: client_error("InternalError"))

    assert store(s3).create_request(request()) is False
    assert read(aws, request_key("r-1"))["source"] == "eventbridge"


def test_create_request_precondition_conflict_is_not_retried(aws, store, sleeps):
    s3 = FaultyS3(aws[0]).fail("put_object", error=lambda: client_error("ConditionalRequestConflict", 409))

    assert store(s3).create_request(request()) is False
    assert s3.calls == ["put_object"] and sleeps.delays == []


def test_create_request_failing_every_time_is_store_unavailable(aws, store):
    s3 = FaultyS3(aws[0]).fail("put_object", on=None, error=lambda: client_error("SlowDown", 503))

    with pytest.raises(
        StoreUnavailable,
        match=r"^S3 PutObject of requests/r-1/request.json failed \(SlowDown\) "
        r"after 4 attempts$",
    ):
        store(s3).create_request(request())


# --- reads --------------------------------------------------------------------------------------------------


def test_get_json_retries_a_transient_failure(aws, store, sleeps):
    store().put_json(KEY, {"a": 1})
    s3 = FaultyS3(aws[0]).fail("get_object", error=lambda: EndpointConnectionError(endpoint_url="https://s3"))

    assert store(s3).get_json(KEY) == {"a": 1}
    assert s3.calls == ["get_object", "get_object"] and sleeps.delays == [S3_RETRY_DELAYS[0]]


def test_get_json_of_a_missing_key_is_none_without_retrying(aws, store, sleeps):
    s3 = FaultyS3(aws[0])
    assert store(s3).get_json(KEY) is None
    assert s3.calls == ["get_object"] and sleeps.delays == []


def test_get_json_failing_every_time_is_store_unavailable(aws, store):
    s3 = FaultyS3(aws[0]).fail("get_object", on=None)
    with pytest.raises(StoreUnavailable, match=rf"^S3 GetObject of {KEY} failed \(InternalError\) after 4 attempts$"):
        store(s3).get_json(KEY)


def test_load_request_reads_through_a_hiccup(aws, store):
    store().create_request(request())
    s3 = FaultyS3(aws[0]).fail("get_object", error=lambda: client_error("InternalError"))
    assert store(s3).load_request("r-1") == request()


def test_list_keys_is_sorted_and_retried(aws, store, sleeps):
    s = store()
    for name in ("b.zip", "a.zip", "outcome.json"):
        s.put_json(f"requests/r-1/elevate/export/{name}", {})
    s.put_json("requests/r-2/x.json", {})
    calls = {"n": 0}

    def flaky(params: Any, **_: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise client_error("InternalError")

    aws[0].meta.events.register("before-call.s3.ListObjectsV2", flaky)
    try:
        keys = s.list_keys("requests/r-1/")
    finally:
        aws[0].meta.events.unregister("before-call.s3.ListObjectsV2", flaky)

    assert keys == [f"requests/r-1/elevate/export/{n}" for n in ("a.zip", "b.zip", "outcome.json")]
    assert calls["n"] == 2 and sleeps.delays == [S3_RETRY_DELAYS[0]]
