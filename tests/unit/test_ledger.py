"""The request ledger (core/ledger.py) against moto's DynamoDB, and its failure policy: never raise."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from connectors.base import Action
from core.ledger import Ledger
from core.models import ActionOutcome, Manifest, Skipped, StoredRequest, Subject, VendorPlan
from local.engine import create_ledger_table

TABLE = "ledger"
RECEIVED = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
EMAIL = "Jane.Doe@Example.com"


class Clock:
    def __init__(self) -> None:
        self.at = RECEIVED

    def __call__(self) -> datetime:
        self.at += timedelta(seconds=1)
        return self.at


@pytest.fixture
def ledger():
    with mock_aws():
        client = boto3.client("dynamodb", region_name="eu-west-1")
        create_ledger_table(client, TABLE)
        yield Ledger(client, TABLE, now=Clock())


def stored(request_id: str = "dsr-1") -> StoredRequest:
    return StoredRequest(
        request_id=request_id,
        actions=[Action.EXPORT, Action.ERASE],
        subject=Subject(email=EMAIL, customer_key="ck-12345678"),
        received_at=RECEIVED,
        deadline=RECEIVED + timedelta(days=30),
        plan=[VendorPlan(vendor="elevate", actions=[Action.EXPORT, Action.ERASE])],
        skipped=[Skipped(vendor="qualifio", action=Action.ERASE, reason="no registered id")],
    )


def manifest(status: str = "partially_failed") -> Manifest:
    return Manifest(
        request_id="dsr-1",
        status=status,
        received_at=RECEIVED,
        deadline=RECEIVED + timedelta(days=30),
        finished_at=RECEIVED + timedelta(days=2),
        within_deadline=True,
        counts={"completed": 1, "planned": 0, "failed": 1, "skipped": 1},
        outcomes=[
            ActionOutcome(vendor="elevate", action=Action.EXPORT, status="completed", job_id="j1"),
            ActionOutcome(
                vendor="elevate", action=Action.ERASE, status="failed", error="VendorError", reason="elevate check: no"
            ),
            ActionOutcome(vendor="qualifio", action=Action.ERASE, status="skipped", reason="no registered id"),
        ],
        manifest_key="requests/dsr-1/manifest.json",
        proof_key="proof/dsr-1/manifest.json",
    )


def test_received_writes_the_request_item_and_its_first_audit_event(ledger):
    assert ledger.received(stored()) is True
    item = ledger.item("dsr-1")
    assert item["status"] == "received" and item["open_pk"] == "OPEN"
    assert item["received_at"] == "2026-11-23T10:00:00Z" and item["deadline"] == "2026-12-23T10:00:00Z"
    assert item["expires_at"] == int((RECEIVED + timedelta(days=1095)).timestamp())
    assert item["action#elevate#export"]["state"] == "queued"
    assert item["action#qualifio#erase"] == {
        "vendor": "qualifio",
        "action": "erase",
        "state": "skipped",
        "since": item["action#qualifio#erase"]["since"],
        "reason": "no registered id",
    }
    (audit,) = ledger.audit("dsr-1")
    assert audit["event"] == "received" and audit["expires_at"] == item["expires_at"]
    assert audit["sk"].startswith("AUDIT#2026-11-23T10:00:01")
    # A second delivery of the same request keeps what the first wrote.
    ledger.started("dsr-1")
    ledger.action("dsr-1", "elevate", "export", "submitted", job_id="j1")
    ledger.received(stored())
    assert ledger.item("dsr-1")["status"] == "running"


def test_actions_update_the_state_and_append_audit_events(ledger):
    ledger.received(stored())
    ledger.started("dsr-1")  # the execution started (intake, after StartExecution)
    later = RECEIVED + timedelta(days=5)
    ledger.action("dsr-1", "elevate", "export", "submitted", job_id="j1", next_check_at=later)
    ledger.action(
        "dsr-1",
        "elevate",
        "export",
        "checked",
        job_id="j1",
        outcome="pending",
        vendor_status="RUNNING",
        next_check_at=later,
    )
    first = ledger.item("dsr-1")["action#elevate#export"]
    ledger.action(
        "dsr-1", "elevate", "export", "checked", outcome="pending", vendor_status="QUEUED", next_check_at=later
    )
    item = ledger.item("dsr-1")
    again = item["action#elevate#export"]
    assert item["status"] == "running"
    assert again["state"] == "pending" and again["since"] == first["since"], "`since` is when the state changed"
    assert again["vendor_status"] == "QUEUED" and again["at"] > first["at"]
    assert again["job_id"] == "j1" and again["next_check_at"] == "2026-11-28T10:00:00Z"
    ledger.action("dsr-1", "elevate", "export", "completed", job_id="j1")
    assert ledger.item("dsr-1")["action#elevate#export"]["state"] == "completed"
    events = [a["event"] for a in ledger.audit("dsr-1")]
    assert events == ["received", "started", "submitted", "checked", "checked", "completed"]
    assert len({a["expires_at"] for a in ledger.audit("dsr-1")}) == 1


def test_finished_writes_final_states_and_leaves_the_open_index(ledger):
    ledger.received(stored())
    ledger.finished(manifest())
    item = ledger.item("dsr-1")
    assert item["status"] == "partially_failed" and "open_pk" not in item
    assert item["action#elevate#export"]["state"] == "completed"
    assert item["action#elevate#erase"]["state"] == "failed" and item["action#elevate#erase"]["error"] == "VendorError"
    events = [a["event"] for a in ledger.audit("dsr-1")]
    assert events == ["received", "failed", "manifest written"]
    opened = ledger.client.query(
        TableName=TABLE,
        IndexName="open-by-deadline",
        KeyConditionExpression="open_pk = :o",
        ExpressionAttributeValues={":o": {"S": "OPEN"}},
    )
    assert opened["Items"] == []


def test_finished_repairs_a_lost_received_write(ledger):
    ledger.finished(manifest("completed"))
    item = ledger.item("dsr-1")
    assert item["status"] == "completed" and item["received_at"] == "2026-11-23T10:00:00Z"
    assert item["expires_at"] == int((RECEIVED + timedelta(days=1095)).timestamp())


def test_a_subject_value_is_masked_where_the_subject_is_known(ledger):
    ledger.received(stored())
    subject = Subject(email=EMAIL)
    ledger.action(
        "dsr-1",
        "elevate",
        "export",
        "checked",
        outcome="pending",
        reason=f"waiting for {EMAIL.upper()}",
        subject=subject,
    )
    text = str(ledger.client.scan(TableName=TABLE)["Items"]).casefold()
    assert EMAIL.casefold() not in text and "ck-12345678" not in text


def test_view_for_get_requests(ledger):
    ledger.received(stored())
    ledger.started("dsr-1")
    ledger.action("dsr-1", "elevate", "export", "checked", outcome="pending", vendor_status="RUNNING")
    view = ledger.view("dsr-1")
    assert view["status"] == "running" and view["deadline"] == "2026-12-23T10:00:00Z"
    assert view["days_left"] == 29
    export = next(a for a in view["actions"] if a["action"] == "export" and a["vendor"] == "elevate")
    assert export["state"] == "pending" and export["vendor_status"] == "RUNNING" and export["since"]
    assert ledger.view("dsr-unknown") is None


class BrokenClient:
    """Every call fails: throttled (`code`) or an outage."""

    def __init__(self, code: str = "ThrottlingException"):
        self.code = code
        self.calls = 0

    def _fail(self, *args, **kwargs):
        self.calls += 1
        raise ClientError({"Error": {"Code": self.code, "Message": "no"}}, "Op")

    put_item = update_item = get_item = query = _fail


def test_a_failing_write_is_retried_then_swallowed_with_a_log_and_a_metric(caplog):
    metrics: list[str] = []
    sleeps: list[float] = []
    client = BrokenClient()
    ledger = Ledger(client, TABLE, metric=metrics.append, sleep=sleeps.append)
    with caplog.at_level(logging.WARNING, logger="core.ledger"):
        assert ledger.action("dsr-1", "elevate", "export", "submitted", job_id="j1") is False
        assert ledger.received(stored()) is False
        assert ledger.finished(manifest()) is False
    assert client.calls > 6 and len(sleeps) >= 4  # our own retries on throttling, on top of botocore's
    assert "LedgerWriteFailed" in metrics
    assert any(r.getMessage() == "ledger write failed" for r in caplog.records)
    assert EMAIL not in caplog.text
    assert ledger.view("dsr-1") is None


def test_a_failing_ledger_leaves_the_task_result_unchanged():
    from core.tasks import finalize
    from tests.unit.test_finalize import BASE, DONE, runtime

    payload = {**BASE, "plan": BASE["plan"][:1], "results": [[DONE]]}
    without = finalize(payload, runtime())
    rt = runtime()
    rt.ledger = Ledger(BrokenClient("InternalFailure"), TABLE, sleep=lambda s: None)
    assert finalize(payload, rt) == without
