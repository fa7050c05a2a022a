"""The operator's actions (core/operations.py) on moto's DynamoDB, S3 and Step Functions: the rules each one
enforces, and that a refused or failed call leaves the ledger as it was."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from core import operations
from core.domain import Action
from core.intake import InvalidRequest
from core.ledger import Ledger
from core.models import REQUEST_ID_PATTERN, Manifest, StoredRequest, Subject, VendorPlan
from core.operations import Extension, NotFound, Ops, RetryBody, StateConflict
from core.store import Store
from local.engine import create_ledger_table

REGION = "eu-west-1"
RECEIVED = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
EMAIL = "Jane.Doe@Example.com"
WHO = "arn:aws:iam::123456789012:role/dpo"


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def ops():
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name=REGION)
        create_ledger_table(ddb, "ledger")
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="ops-bucket", CreateBucketConfiguration={"LocationConstraint": REGION})
        key = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["Arn"]
        sfn = boto3.client("stepfunctions", region_name=REGION)
        arn = sfn.create_state_machine(
            name="dsr",
            definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
            roleArn="arn:aws:iam::123456789012:role/x",
        )["stateMachineArn"]
        clock = Clock(RECEIVED + timedelta(days=2))
        yield Ops(
            store=Store(s3, "ops-bucket", key),
            sfn=sfn,
            state_machine_arn=arn,
            ledger=Ledger(ddb, "ledger", now=clock),
            now=clock,
            sleep=lambda _: None,
        )


def _request(ops: Ops, request_id: str = "dsr-1", *, status: str = "received") -> StoredRequest:
    stored = StoredRequest(
        request_id=request_id,
        actions=[Action.EXPORT, Action.ERASE],
        subject=Subject(email=EMAIL),
        received_at=RECEIVED,
        deadline=RECEIVED + timedelta(days=30),
        plan=[VendorPlan(vendor="bloomreach", actions=[Action.EXPORT, Action.ERASE])],
    )
    ops.store.create_request(stored)
    ops.ledger.received(stored)
    return stored


def _finish(ops: Ops, request_id: str, statuses: dict[str, str]) -> Manifest:
    manifest = Manifest.model_validate(
        {
            "request_id": request_id,
            "status": "partially_failed" if "failed" in statuses.values() else "completed",
            "received_at": RECEIVED,
            "deadline": RECEIVED + timedelta(days=30),
            "finished_at": RECEIVED + timedelta(days=1),
            "within_deadline": True,
            "counts": {},
            "outcomes": [
                {"vendor": "bloomreach", "action": action, "status": status} for action, status in statuses.items()
            ],
            "manifest_key": f"requests/{request_id}/manifest.json",
            "proof_key": f"proof/{request_id}/manifest.json",
        }
    )
    ops.store.put_manifest(manifest)
    ops.ledger.finished(manifest)
    return manifest


def test_retry_execution_names_never_collide_with_a_request_id():
    assert operations._execution_name("dsr-1", 1) == "dsr-1"
    for request_id in ("dsr-1", "x" * 80, "y" * 75):
        for attempt in (2, 3, 12):
            name = operations._execution_name(request_id, attempt)
            assert len(name) <= 80 and re.fullmatch(REQUEST_ID_PATTERN, name) is None, name
    assert operations._execution_name("x" * 80, 2) != operations._execution_name("x" * 79 + "z", 2)


def test_next_tokens_are_opaque_and_only_ours_are_accepted(ops):
    for request_id in ("a", "b", "c"):
        _request(ops, request_id)
    first = operations.list_requests(ops, status=None, due_before=None, limit=2, next_token=None)
    assert len(first["requests"]) == 2 and first["next_token"]
    rest = operations.list_requests(ops, status=None, due_before=None, limit=2, next_token=first["next_token"])
    assert {r["request_id"] for r in first["requests"] + rest["requests"]} == {"a", "b", "c"}
    for bad in ("garbage!", "e30", "W10", "eyJwayI6IDF9"):  # not base64, {}, [], {"pk": 1}
        with pytest.raises(InvalidRequest) as refused:
            operations.list_requests(ops, status=None, due_before=None, limit=2, next_token=bad)
        assert refused.value.fields[0]["field"] == "next_token", bad


def test_describe_answers_from_the_ledger_and_the_proof_once_the_execution_is_gone(ops):
    _request(ops)
    _finish(ops, "dsr-1", {"export": "completed", "erase": "completed"})
    ops.store.s3.delete_object(Bucket="ops-bucket", Key="requests/dsr-1/manifest.json")  # the request data expired
    found = operations.describe(ops, "dsr-1")
    assert found["execution"] is None and found["status"] == "completed"
    assert found["manifest"]["proof_key"] == "proof/dsr-1/manifest.json"
    with pytest.raises(NotFound):
        operations.describe(ops, "nobody")


def _item(ops: Ops) -> dict[str, Any]:
    return ops.ledger.item("dsr-1") or {}


def test_extension_rules_of_gdpr_article_12_3(ops):
    _request(ops)
    ops.ledger.started("dsr-1")
    with pytest.raises(InvalidRequest):  # the reason must not carry the subject's identifiers
        operations.extend(ops, "dsr-1", Extension(days=10, reason=f"asked by {EMAIL.lower()}"), principal=WHO)
    before = _item(ops)
    done = operations.extend(ops, "dsr-1", Extension(days=20, reason="complex"), principal=WHO)
    assert done["deadline"] == "2027-01-12T10:00:00Z" and done["extended_days"] == 20
    with pytest.raises(StateConflict, match="60 days"):
        operations.extend(ops, "dsr-1", Extension(days=41, reason="more"), principal=WHO)
    operations.extend(ops, "dsr-1", Extension(days=10, reason="more"), principal=WHO)
    operations.extend(ops, "dsr-1", Extension(days=10, reason="more"), principal=WHO)
    with pytest.raises(StateConflict, match="3 times"):
        operations.extend(ops, "dsr-1", Extension(days=1, reason="more"), principal=WHO)
    item = _item(ops)
    assert item["extended_days"] == 40 and item["original_deadline"] == before["deadline"]
    assert [e["days"] for e in item["extensions"]] == [20, 10, 10] and item["extensions"][0]["by"] == WHO
    ops.now.at = RECEIVED + timedelta(days=30, seconds=1)  # past the original deadline
    with pytest.raises(StateConflict, match="before the original deadline"):
        operations.extend(ops, "dsr-1", Extension(days=1, reason="late"), principal=WHO)


def test_a_retry_that_cannot_start_releases_its_claim(ops, monkeypatch):
    _request(ops)
    _finish(ops, "dsr-1", {"export": "completed", "erase": "failed"})
    before = _item(ops)

    def refuse(**_: Any) -> Any:
        raise RuntimeError("StartExecution failed")

    monkeypatch.setattr(ops.sfn, "start_execution", refuse)
    with pytest.raises(RuntimeError):
        operations.retry(ops, "dsr-1", RetryBody(), principal=WHO)
    after = _item(ops)
    assert after["status"] == before["status"] == "partially_failed"
    assert after["attempt"] == 1 and len(after["attempts"]) == 1 and "open_pk" not in after


def test_a_retry_runs_only_what_failed_and_is_refused_while_running(ops):
    _request(ops)
    _finish(ops, "dsr-1", {"export": "completed", "erase": "failed"})
    started = operations.retry(ops, "dsr-1", RetryBody(), principal=WHO)
    assert started["attempt"] == 2 and started["actions"] == ["bloomreach/erase"]
    execution = ops.sfn.describe_execution(executionArn=started["execution_arn"])
    given = json.loads(execution["input"])
    assert given["attempt"] == 2 and given["plan"] == [
        {"vendor": "bloomreach", "actions": ["export", "erase"], "run": ["erase"]}
    ]
    assert given["deadline"].startswith("2026-12-23T10:00:00")
    with pytest.raises(StateConflict, match="still running"):
        operations.retry(ops, "dsr-1", RetryBody(), principal=WHO)
    with pytest.raises(StateConflict, match="nothing to retry"):
        _request(ops, "dsr-2")
        _finish(ops, "dsr-2", {"export": "completed"})
        operations.retry(ops, "dsr-2", RetryBody(), principal=WHO)


def test_a_vendor_named_in_a_body_must_be_one_of_the_request(ops):
    _request(ops)
    _finish(ops, "dsr-1", {"export": "completed", "erase": "failed"})
    for call in (
        lambda: operations.approve(ops, "dsr-1", operations.Decision(vendor="elevate"), principal=WHO),
        lambda: operations.deny(ops, "dsr-1", operations.Denial(vendor="elevate", reason="no"), principal=WHO),
        lambda: operations.retry(ops, "dsr-1", RetryBody(vendors=["elevate"]), principal=WHO),
    ):
        with pytest.raises(InvalidRequest) as refused:
            call()
        assert "bloomreach" in refused.value.fields[0]["message"]
    assert _item(ops)["attempt"] == 1, "nothing was started"
