"""The intake Lambda handler as API Gateway and EventBridge call it, against moto (executions are recorded, not
run): every bad input is a 400 naming the field (API) or an InvalidRequest (EventBridge), never a 5xx or
another exception, and never an execution."""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any
from unittest import mock

import boto3
import pytest
from moto import mock_aws

from core.intake import InvalidRequest, RequestConflict
from local.engine import api_gateway_event

REGION = "eu-west-1"
SUBJECT = {"email": "ada@example.com", "customer_key": "k-1", "customer_ids": {"registered": "crm-1"}}


class Context:
    function_name = "dsrflow-intake"
    function_version = "$LATEST"
    invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:dsrflow-intake"
    memory_limit_in_mb = 512
    aws_request_id = "req-1"
    log_group_name = "/aws/lambda/dsrflow-intake"
    log_stream_name = "test"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


class Deployment:
    """What the stack gives the intake function: bucket, KMS key, state machine, vendor secrets (names only)."""

    def __init__(self) -> None:
        from handlers.intake import handler

        self.handler = handler
        self.sfn = boto3.client("stepfunctions", region_name=REGION)
        self.s3 = boto3.client("s3", region_name=REGION)

    def executions(self) -> list[str]:
        out = self.sfn.list_executions(stateMachineArn=self.state_machine_arn, maxResults=1000)["executions"]
        return [e["name"] for e in out]

    def api(self, method: str, path: str, body: Any = None, *, base64_encoded: bool = False) -> tuple[int, Any]:
        if base64_encoded and body is not None:  # bytes as they are, text as UTF-8
            raw = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
            body = base64.b64encode(raw).decode()
        elif body is not None and not isinstance(body, str):
            body = json.dumps(body)
        event = api_gateway_event(method, path, body, base64_encoded=base64_encoded)
        out = self.handler(event, Context())
        return out["statusCode"], json.loads(out["body"]) if out.get("body") else None

    def event(self, detail: Any = None, **envelope: Any) -> dict[str, Any]:
        return self.handler(crm_event(detail, **envelope), Context())


def crm_event(detail: Any = None, **envelope: Any) -> dict[str, Any]:
    from core.clock import utcnow

    return {
        "version": "0",
        "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "detail-type": "Data Subject Request",
        "source": "crm",
        "account": "123456789012",
        "time": utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [],
        "detail": {"actions": ["export"], "subject": SUBJECT} if detail is None else detail,
        **envelope,
    }


@contextlib.contextmanager
def deployment(vendors: str = '{"elevate": "x", "bloomreach": "y", "qualifio": "z"}') -> Iterator[Deployment]:
    from core import settings
    from handlers import runtime

    env = {
        "AWS_DEFAULT_REGION": REGION,
        "ARCHIVE_BUCKET": "dsrflow-test-archives",
        "VENDOR_SECRETS": vendors,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_SERVICE_NAME": "dsrflow",
    }
    with mock.patch.dict(os.environ, env), mock_aws():
        kms = boto3.client("kms", region_name=REGION)
        key = kms.create_key(Description="archives")["KeyMetadata"]["Arn"]
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket=env["ARCHIVE_BUCKET"], CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        sm = boto3.client("stepfunctions", region_name=REGION).create_state_machine(
            name="dsr",
            definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
            roleArn="arn:aws:iam::123456789012:role/dsr",
        )["stateMachineArn"]
        from local.engine import create_ledger_table

        create_ledger_table(boto3.client("dynamodb", region_name=REGION), "dsrflow-test-ledger")
        os.environ.update({"ARCHIVE_KMS_KEY_ID": key, "STATE_MACHINE_ARN": sm, "LEDGER_TABLE": "dsrflow-test-ledger"})
        runtime.reset()
        settings.settings.cache_clear()
        try:
            d = Deployment()
            d.state_machine_arn = sm
            d.bucket = env["ARCHIVE_BUCKET"]
            yield d
        finally:
            runtime.reset()
            settings.settings.cache_clear()


@pytest.fixture
def aws():
    with deployment() as d:
        yield d


def post(aws: Deployment, body: Any, **kw: Any) -> tuple[int, Any]:
    return aws.api("POST", "/requests", body, **kw)


def bad_fields(aws: Deployment, body: Any, **kw: Any) -> list[dict[str, str]]:
    status, answer = post(aws, body, **kw)
    assert status == 400, answer
    assert answer["error"] == "invalid request"
    return answer["fields"]


# --- the API path ---------------------------------------------------------------------------------------------------


def test_a_valid_request_is_accepted_once(aws):
    request = {"request_id": "r-1", "actions": ["export", "erase"], "subject": SUBJECT, "dry_run": True}
    status, body = post(aws, request)
    assert status == 202 and body["status"] == "accepted" and body["request_id"] == "r-1"
    stored = json.loads(aws.s3.get_object(Bucket=aws.bucket, Key="requests/r-1/request.json")["Body"].read())
    assert len(stored["fingerprint"]) == 64
    started = aws.sfn.describe_execution(executionArn=body["execution_arn"])
    assert json.loads(started["input"])["dry_run"] is True
    assert post(aws, request)[0] == 200
    assert aws.executions() == ["r-1"]


def test_base64_encoded_bodies(aws):
    status, body = post(aws, {"actions": ["export"], "subject": SUBJECT}, base64_encoded=True)
    assert status == 202
    not_utf8 = b'{"actions": ["export"], "subject": {"email": "\xff@example.com"}}'
    assert bad_fields(aws, not_utf8, base64_encoded=True) == [{"field": "(body)", "message": "is not valid UTF-8"}]
    assert bad_fields(aws, "%%%", base64_encoded=False)[0]["message"] == "is not JSON"
    assert bad_fields(aws, None) == [{"field": "(body)", "message": "must be a JSON object"}]
    assert aws.executions() != []


@pytest.mark.parametrize(
    "body, field, message",
    [
        ({"actions": ["export"], "subject": SUBJECT, "received_at": "9999-12-31T00:00:00Z"}, "received_at", "92 days"),
        ({"actions": ["export"], "subject": SUBJECT, "received_at": 0}, "received_at", "RFC 3339"),
        ({"actions": ["export"], "subject": SUBJECT, "received_at": "2026-11-23"}, "received_at", "RFC 3339"),
        ('{"actions": ["export"], "subject": {"email": "ada\\ud800@example.com"}}', "subject.email", "valid text"),
        ('{"actions": ["export"], "subject": {"email": "a@b.co"}, "vendors": ["\\ud800"]}', "vendors.0", "text"),
        ({"actions": ["export"], "subject": SUBJECT, "dry_run": "yes"}, "dry_run", "boolean"),
        ({"actions": ["export"], "subject": {"email": "a" * 1_000_000 + "@b.co"}}, "(body)", "64 KiB"),
        ({"actions": ["export"], "subject": {"email": "a" * 300 + "@b.co"}}, "subject.email", "254"),
        ({"actions": ["export"], "subject": SUBJECT, "vendors": ["v" * 300_000]}, "(body)", "64 KiB"),
        ({"actions": ["export"], "subject": SUBJECT, "vendors": ["v" * 30_000]}, "vendors.0", "pattern"),
        ({"actions": ["export"], "subject": SUBJECT, "vendors": [f"v{i}" for i in range(3000)]}, "vendors", "20"),
        ('{"actions": ["export"], "subject": ' + "[" * 100_000, "(body)", "64 KiB"),
        ('{"actions": ["export"], "subject": ' + "[" * 50_000, "(body)", "nested too deeply"),
        ("[" * 33 + "]" * 33, "(body)", "nested too deeply"),
        ("{not json", "(body)", "is not JSON"),
        ('"\ud800"', "(body)", "UTF-8"),
        ("[1, 2]", "(body)", "JSON object"),
        ("null", "(body)", "JSON object"),
        ({"actions": ["export"], "subject": SUBJECT, "vendors": ["salesforce"]}, "vendors.0", "known: bloomreach"),
        ({"actions": ["export"], "subject": {"customer_ids": {"cookie": "c"}}, "vendors": ["qualifio"]}, "subject", ""),
    ],
)
def test_bad_requests_are_400_naming_the_field_and_start_nothing(aws, body, field, message):
    fields = bad_fields(aws, body)
    assert fields[0]["field"] == field and message in fields[0]["message"], fields
    assert aws.executions() == []
    assert aws.s3.list_objects_v2(Bucket=aws.bucket).get("KeyCount") == 0


def test_unknown_vendor_body_is_exactly_as_documented(aws):
    status, body = post(aws, {"actions": ["export"], "subject": SUBJECT, "vendors": ["qualifio", "hubspot"]})
    assert (status, body) == (
        400,
        {
            "error": "invalid request",
            "fields": [
                {
                    "field": "vendors.1",
                    "message": "is not a vendor of this deployment (known: bloomreach, elevate, qualifio)",
                }
            ],
        },
    )


def test_a_subject_no_vendor_can_act_on_is_400_with_the_reasons(aws):
    subject = {"customer_ids": {"cookie": "c-1"}}
    request = {"actions": ["export"], "subject": subject, "vendors": ["elevate", "qualifio"]}
    [problem] = bad_fields(aws, request)
    assert problem["field"] == "subject"
    assert "elevate: no customer_key given" in problem["message"]
    assert "qualifio: Qualifio finds profiles by email only" in problem["message"]
    assert "c-1" not in problem["message"]


def test_same_id_different_request_is_409(aws):
    request = {"request_id": "dsr-dup", "actions": ["export"], "subject": SUBJECT}
    assert post(aws, request)[0] == 202
    status, body = post(aws, {**request, "subject": {"email": "someone.else@example.com"}})
    assert (status, body) == (
        409,
        {
            "error": "conflict",
            "message": "request id dsr-dup is already used by a different request; choose another id",
        },
    )
    stored = json.loads(aws.s3.get_object(Bucket=aws.bucket, Key="requests/dsr-dup/request.json")["Body"].read())
    assert stored["subject"]["email"] == "ada@example.com" and aws.executions() == ["dsr-dup"]


def test_internal_failure_is_500_naming_nothing(aws):
    os.environ["STATE_MACHINE_ARN"] = aws.state_machine_arn.replace(":dsr", ":gone")
    from core import settings

    settings.settings.cache_clear()
    status, body = post(aws, {"request_id": "r-500", "actions": ["export"], "subject": SUBJECT})
    assert status == 500
    assert body == {"error": "internal error", "message": "the request was not processed; it is safe to retry"}


def test_internal_failure_in_debug_mode_shows_no_traceback(aws):
    aws.s3.delete_bucket(Bucket=aws.bucket)
    with mock.patch("handlers.intake.app._debug", True):
        status, body = post(aws, {"actions": ["export"], "subject": SUBJECT})
    assert status == 500 and "Traceback" not in json.dumps(body) and "ada" not in json.dumps(body)


def test_get_keeps_its_400_and_404(aws):
    assert aws.api("GET", "/requests/bad id!")[0] == 400
    assert aws.api("GET", "/requests/nope")[0] == 404
    assert aws.api("GET", "/elsewhere")[0] == 404  # Powertools' own answer, not the catch-all 500
    assert aws.api("DELETE", "/requests")[0] in (404, 405)


def test_get_shows_an_accepted_request(aws):
    post(aws, {"request_id": "r-get", "actions": ["export"], "subject": SUBJECT})
    status, body = aws.api("GET", "/requests/r-get")
    assert status == 200 and body["request_id"] == "r-get"


# --- the EventBridge path -------------------------------------------------------------------------------------------


def test_crm_event_is_accepted_and_its_redelivery_is_a_duplicate(aws):
    event = crm_event()
    first = aws.handler(event, Context())
    again = aws.handler(event, Context())
    assert first["status"] == "accepted" and again["status"] == "duplicate"
    assert first["request_id"] == "evt-6a7e8feb-b491-4cf7-a9f1-bf3703467718"
    assert aws.executions() == [first["request_id"]]


def test_crm_event_reusing_a_request_id_for_another_request_is_a_conflict(aws):
    aws.event({"request_id": "crm-1", "actions": ["export"], "subject": SUBJECT})
    with pytest.raises(RequestConflict, match="request id crm-1 is already used by a different request"):
        aws.event({"request_id": "crm-1", "actions": ["erase"], "subject": SUBJECT}, id="another-event")
    assert aws.executions() == ["crm-1"]


def test_crm_event_drops_null_fields(aws):
    result = aws.event({"actions": ["export"], "subject": SUBJECT, "vendors": None, "justification": None})
    assert result["status"] == "accepted"


@pytest.mark.parametrize(
    "change, field",
    [
        ({"time": "9999-12-31T00:00:00Z"}, "time"),
        ({"time": "0001-01-01T00:00:00+01:00"}, "time"),
        ({"time": 1764590400}, "time"),
        ({"time": "2026-11-23T10:00:00"}, "time"),
        ({"time": None}, "time"),
        ({"id": None}, "id"),
        ({"id": "x" * 77}, "id"),
        ({"id": "has space"}, "id"),
        ({"id": "\ud800"}, "id"),
        ({"detail": ["export"]}, "detail"),
        ({"detail": "x"}, "detail"),
    ],
)
def test_malformed_envelope_is_invalid_request(aws, change, field):
    with pytest.raises(InvalidRequest) as err:
        aws.handler({**crm_event(), **change}, Context())
    assert field in [f["field"] for f in err.value.fields]
    assert aws.executions() == []


def test_envelope_without_id_or_time_or_detail(aws):
    for missing in ("id", "time", "detail", "detail-type"):
        event = crm_event()
        del event[missing]
        with pytest.raises(InvalidRequest):
            aws.handler(event, Context())
    for event in ({}, [], "x", None, 1):
        with pytest.raises(InvalidRequest):
            aws.handler(event, Context())
    assert aws.executions() == []


@pytest.mark.parametrize(
    "detail, field",
    [
        ({"actions": ["export"], "subject": {"email": "x"}}, "detail.subject.email"),
        ({"actions": ["export"], "subject": {"email": "ada\ud800@example.com"}}, "detail.subject.email"),
        ({"actions": ["export"], "subject": SUBJECT, "received_at": "9999-12-31T00:00:00Z"}, "detail.received_at"),
        ({"actions": ["export"], "subject": SUBJECT, "vendors": ["salesforce"]}, "detail.vendors.0"),
        ({"actions": ["export"], "subject": SUBJECT, "vendors": [f"v{i}" for i in range(3000)]}, "detail.vendors"),
        ({"actions": ["export"], "subject": SUBJECT, "vendors": ["v" * 300_000]}, "detail.vendors.0"),
        ({"actions": ["export"], "subject": {"customer_ids": {"c": "1"}}, "vendors": ["qualifio"]}, "detail.subject"),
        ({"actions": ["export"], "subject": SUBJECT, "dry_run": 1}, "detail.dry_run"),
    ],
)
def test_bad_detail_is_invalid_request(aws, detail, field):
    with pytest.raises(InvalidRequest) as err:
        aws.event(detail)
    assert field in [f["field"] for f in err.value.fields]
    assert aws.executions() == []


def test_deeply_nested_detail_is_invalid_request(aws):
    deep: Any = "x"
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(InvalidRequest) as err:
        aws.event({"actions": ["export"], "subject": SUBJECT, "justification": deep})
    assert err.value.fields == [{"field": "detail", "message": "is nested too deeply (more than 32 levels)"}]
