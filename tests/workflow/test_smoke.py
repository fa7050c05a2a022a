"""The deployed-stage smoke test (local/smoke.py), run against the local engine so its checks cannot rot.

CI has no AWS account: here the same checks run through LocalTarget (the intake function in-process, moto for
S3, Step Functions, EventBridge and SQS); only the SigV4 transport of StackTarget is unit-tested, offline.
"""

from __future__ import annotations

import datetime
import http.server
import json
import threading
from typing import Any

import boto3
import botocore.auth
import pytest
from botocore.credentials import Credentials
from botocore.stub import Stubber
from moto import mock_aws

from local import smoke
from local.simulators.data import SAMPLE
from tests.workflow.conftest import local_run, sample_subject


def _results(checks: list[smoke.Check]) -> dict[str, bool]:
    return {c.name: c.ok for c in checks}


def _leftovers(target: Any) -> tuple[list, list]:
    rules = target.client("events").list_rules(NamePrefix="dsrflow-smoke-")["Rules"]
    # Its own prefix: the local engine keeps a queue of its own on the bus (LocalCloud.events).
    return rules, target.client("sqs").list_queues(QueueNamePrefix="dsrflow-smoke-").get("QueueUrls", [])


@pytest.mark.slow
def test_smoke_passes_against_the_local_engine_and_removes_its_rule_and_queue():
    with local_run() as (cloud, _):
        target = smoke.LocalTarget(cloud)
        checks = smoke.run_smoke(target, sample_subject(), timeout=120, event_timeout=10, say=lambda _: None)
        table = smoke.table(checks)
        assert [c.name for c in checks] == list(smoke.CHECKS), table
        assert all(c.ok for c in checks), table
        assert _leftovers(target) == ([], [])


class _NotADryRun(smoke.LocalTarget):
    """A regression that drops dry_run on the way to the API: the erasures really run."""

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return super().api(method, path, {**body, "dry_run": False} if body else body)


@pytest.mark.slow
def test_smoke_fails_when_an_erase_was_sent():
    with local_run() as (cloud, _):
        checks = smoke.run_smoke(
            _NotADryRun(cloud), sample_subject(), timeout=120, event_timeout=10, say=lambda _: None
        )
    results = _results(checks)
    assert results.pop("erase only planned") is False, smoke.table(checks)
    assert all(results.values()), smoke.table(checks)


@pytest.mark.slow
def test_smoke_fails_when_a_subject_value_is_kept_in_the_history():
    # Intake refuses a request id holding the subject's values, so a leak is planted where the check reads:
    # a history whose pages carry the customer key (as a vendor echo in a cause would).
    class LeakyHistory:
        def __init__(self, sfn: Any):
            self.sfn = sfn

        def get_paginator(self, name: str) -> Any:
            pages = self.sfn.get_paginator(name)

            class Planted:
                def paginate(self, **kwargs: Any) -> Any:
                    for page in pages.paginate(**kwargs):
                        page["events"].append({"cause": f"no job for {SAMPLE.customer_key.upper()}"})
                        yield page

            return Planted()

        def __getattr__(self, name: str) -> Any:
            return getattr(self.sfn, name)

    class LeakyTarget(smoke.LocalTarget):
        def client(self, service: str) -> Any:
            real = super().client(service)
            return LeakyHistory(real) if service == "stepfunctions" else real

    with local_run(vendors=("qualifio",)) as (cloud, _):
        checks = smoke.run_smoke(
            LeakyTarget(cloud), sample_subject(), timeout=120, event_timeout=10, say=lambda _: None
        )
    failed = next(c for c in checks if c.name == "no subject value kept")
    assert not failed.ok and "customer_key in execution history" in failed.reason, smoke.table(checks)
    assert SAMPLE.customer_key not in smoke.table(checks)  # the report names the value, never prints it
    assert all(c.ok for c in checks if c.name != "no subject value kept"), smoke.table(checks)


def test_subject_values_are_found_in_any_case_and_url_encoded():
    subject = {"email": "Ada.Lovelace+dsr@example.com", "customer_ids": {"registered": "crm-1001", "x": "ab"}}
    assert smoke.find_subject('{"q": "email=ada.lovelace%2Bdsr%40EXAMPLE.com"}', subject) == ["email"]
    assert smoke.find_subject("ADA.LOVELACE+DSR@EXAMPLE.COM", subject) == ["email"]
    assert smoke.find_subject("id CRM-1001", subject) == ["customer id registered"]
    assert smoke.find_subject("ab is too short to look for", subject) == []
    check = smoke.check_no_subject(subject, {"execution history": [{"input": "ada.lovelace%2bdsr%40example.com"}]})
    assert not check.ok and "example.com" not in check.reason


def test_manifest_check_fails_when_the_proof_copy_is_missing_or_differs():
    manifest = {"request_id": "r1", "outcomes": []}
    assert not smoke.check_manifests(manifest, None, "r1").ok
    assert not smoke.check_manifests(manifest, {**manifest, "status": "x"}, "r1").ok
    assert smoke.check_manifests(manifest, dict(manifest), "r1").ok


def test_the_listener_is_removed_when_the_run_is_interrupted():
    class Interrupted:
        bucket, event_bus, state_machine_arn, poll_seconds = (
            "b",
            "default",
            "arn:aws:states:eu-west-1:1:stateMachine:m",
            0,
        )

        def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
            raise KeyboardInterrupt  # Ctrl-C while the request is in flight

        def client(self, service: str) -> Any:
            return boto3.client(service, region_name="eu-west-1")

    with mock_aws():
        target = Interrupted()
        with pytest.raises(KeyboardInterrupt):
            smoke.run_smoke(target, {"email": "a@example.com"}, say=lambda _: None)
        assert _leftovers(target) == ([], [])


def test_sigv4_headers_from_fixed_credentials(monkeypatch):
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: datetime.datetime(2026, 11, 23, 10, 0, 0))
    url = "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/requests"
    creds = Credentials("AKIDEXAMPLE", "secret", "session-token")
    headers = smoke.sign("POST", url, b"{}", creds, "eu-west-1")
    assert headers["X-Amz-Date"] == "20261123T100000Z"
    auth = headers["Authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261123/eu-west-1/execute-api/aws4_request, ")
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {"host", "x-amz-date", "x-amz-security-token"} <= set(signed)
    assert headers["X-Amz-Security-Token"] == "session-token"
    # Deterministic for the same call; the body is signed too: another body, another signature.
    assert smoke.sign("POST", url, b"{}", creds, "eu-west-1")["Authorization"] == auth
    assert smoke.sign("POST", url, b"[]", creds, "eu-west-1")["Authorization"] != auth
    # Long-term keys carry no session token header.
    plain = smoke.sign("GET", url + "/r1", None, Credentials("AKIDEXAMPLE", "secret"), "eu-west-1")
    assert "X-Amz-Security-Token" not in plain and "x-amz-security-token" not in plain["Authorization"]


def test_stack_target_reads_the_stack_outputs():
    session = boto3.Session(aws_access_key_id="k", aws_secret_access_key="s", region_name="eu-west-1")
    cfn = session.client("cloudformation")
    outputs = {
        "ApiUrl": "https://abc123.execute-api.eu-central-1.amazonaws.com/prod/",
        "ArchiveBucketName": "dsrflow-prod-archives",
        "StateMachineArn": "arn:aws:states:eu-central-1:123456789012:stateMachine:dsrflow-prod",
    }
    stack = {
        "StackName": "dsrflow-prod",
        "CreationTime": "2026-01-01T00:00:00Z",
        "StackStatus": "CREATE_COMPLETE",
        "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()],
    }
    with Stubber(cfn) as stub:
        stub.add_response("describe_stacks", {"Stacks": [stack]}, {"StackName": "dsrflow-prod"})
        session.client = lambda service, **_: cfn  # type: ignore[method-assign]
        target = smoke.StackTarget.from_stack(session, "dsrflow-prod", event_bus="crm-events")
    assert (target.api_url, target.bucket, target.event_bus) == (
        "https://abc123.execute-api.eu-central-1.amazonaws.com/prod",
        "dsrflow-prod-archives",
        "crm-events",
    )
    assert target.region == "eu-central-1" and target.state_machine_arn == outputs["StateMachineArn"]


def test_stack_target_sends_signed_calls_and_reads_error_answers():
    """StackTarget.api over loopback HTTP: the signed headers arrive, a 4xx body is still read."""
    seen: list[tuple[str, dict[str, str], bytes]] = []

    class Api(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.path, dict(self.headers), body))
            answer = json.dumps({"error": "invalid request", "fields": [{"field": "subject", "message": "x"}]})
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(answer.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        session = boto3.Session(
            aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="s", aws_session_token="t", region_name="eu-west-1"
        )
        target = smoke.StackTarget(session, f"http://127.0.0.1:{server.server_port}/prod/", "b", "arn", "default")
        status, body = target.api("POST", "/requests", {"actions": ["export"]})
    finally:
        server.shutdown()
        server.server_close()
    assert status == 400 and body["fields"][0]["field"] == "subject"
    path, headers, sent = seen[0]
    assert path == "/prod/requests" and json.loads(sent) == {"actions": ["export"]}
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/execute-api/aws4_request" in headers["Authorization"]
    assert headers["X-Amz-Security-Token"] == "t" and "X-Amz-Date" in headers
