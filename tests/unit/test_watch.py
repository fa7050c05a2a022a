"""The deadline watch (core/watch.py, the ledger's deadline-watch section) against moto's DynamoDB: counts, one
warning per deadline value, re-armed by an extension, undone when the event is not delivered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from core.errors import EventNotDelivered
from core.ledger import Ledger, pk
from core.watch import SweepResult, days_left, sweep
from local.engine import create_ledger_table
from tests.event_schemas import validate_event

TABLE = "ledger"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Events:
    """An EventBridge client that records the entries; `fail` makes it reject them (FailedEntryCount)."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.fail = False

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # boto3's parameter name
        if self.fail:
            return {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "ThrottlingException", "ErrorMessage": "slow"}]}
        self.entries += Entries
        return {"FailedEntryCount": 0, "Entries": [{"EventId": f"e-{len(self.entries)}"}]}

    def kinds(self) -> list[tuple[str, str]]:
        import json

        return [(validate_event(e), json.loads(e["Detail"])["request_id"]) for e in self.entries]


class Metrics:
    def __init__(self) -> None:
        self.put: list[tuple[str, float]] = []

    def __call__(self, name: str, value: float) -> None:
        self.put.append((name, value))

    def last(self) -> dict[str, float]:
        return dict(self.put[-3:])


@pytest.fixture
def table():
    with mock_aws():
        client = boto3.client("dynamodb", region_name="eu-west-1")
        create_ledger_table(client, TABLE)
        yield client


@pytest.fixture
def ledger(table) -> Ledger:
    return Ledger(table, TABLE, now=lambda: NOW)


def put_request(client: Any, request_id: str, deadline: datetime, *, open_: bool = True, status: str = "running"):
    item = {
        "pk": {"S": pk(request_id)},
        "sk": {"S": "REQUEST"},
        "request_id": {"S": request_id},
        "status": {"S": status},
        "received_at": {"S": iso(deadline - timedelta(days=30))},
        "deadline": {"S": iso(deadline)},
    }
    if open_:
        item["open_pk"] = {"S": "OPEN"}
    client.put_item(TableName=TABLE, Item=item)


def set_deadline(client: Any, request_id: str, deadline: datetime) -> None:
    client.update_item(
        TableName=TABLE,
        Key={"pk": {"S": pk(request_id)}, "sk": {"S": "REQUEST"}},
        UpdateExpression="SET deadline = :d",
        ExpressionAttributeValues={":d": {"S": iso(deadline)}},
    )


def run(ledger: Ledger, events: Events, metrics: Metrics, now: datetime = NOW, bus: str | None = "crm") -> SweepResult:
    return sweep(ledger, events_client=events, bus=bus, now=now, metric=metrics)  # type: ignore[arg-type]


@pytest.fixture
def three(table):
    """Requests due in 10 days, in 5 days and 2 days ago, and one finished (not in the open index)."""
    put_request(table, "dsr-10d", NOW + timedelta(days=10))
    put_request(table, "dsr-5d", NOW + timedelta(days=5), status="received")
    put_request(table, "dsr-late", NOW - timedelta(days=2))
    put_request(table, "dsr-done", NOW + timedelta(days=3), open_=False, status="completed")


def test_counts_warnings_and_metrics(ledger, three):
    events, metrics = Events(), Metrics()
    result = run(ledger, events, metrics)
    assert result == SweepResult(open=3, due_soon=1, overdue=1, warned=["dsr-5d"])
    assert metrics.put == [("OpenRequests", 3), ("RequestsDueSoon", 1), ("RequestsOverdue", 1)]
    (entry,) = events.entries
    assert validate_event(entry) == "deadline_at_risk"
    import json

    assert json.loads(entry["Detail"]) == {
        "request_id": "dsr-5d",
        "deadline": iso(NOW + timedelta(days=5)),
        "days_left": 5,
        "status": "received",
    }
    assert entry["EventBusName"] == "crm" and entry["Source"] == "dsrflow"
    assert ledger.item("dsr-5d")["at_risk_warned_for"] == iso(NOW + timedelta(days=5))
    assert "at_risk_warned_for" not in ledger.item("dsr-10d") and "at_risk_warned_for" not in ledger.item("dsr-late")


def test_exactly_one_event_per_deadline_across_sweeps(ledger, three):
    events, metrics = Events(), Metrics()
    run(ledger, events, metrics)
    second = run(ledger, events, metrics, now=NOW + timedelta(hours=1))
    assert second.warned == [] and second.due_soon == 1
    assert events.kinds() == [("deadline_at_risk", "dsr-5d")]
    # A day later the 10-day request enters the window (now 7 days away, the bound included): warned once.
    third = run(ledger, events, metrics, now=NOW + timedelta(days=3))
    assert third.warned == ["dsr-10d"] and third.due_soon == 2
    assert run(ledger, events, metrics, now=NOW + timedelta(days=3, hours=1)).warned == []
    assert events.kinds() == [("deadline_at_risk", "dsr-5d"), ("deadline_at_risk", "dsr-10d")]


def test_the_window_bounds(ledger, table):
    put_request(table, "dsr-now", NOW)  # due right now: not overdue yet, due soon
    put_request(table, "dsr-7d", NOW + timedelta(days=7))  # exactly 7 days: due soon
    put_request(table, "dsr-7d1s", NOW + timedelta(days=7, seconds=1))  # just outside
    put_request(table, "dsr-1s-late", NOW - timedelta(seconds=1))
    result = run(ledger, Events(), Metrics())
    assert (result.open, result.due_soon, result.overdue) == (4, 2, 1)
    assert sorted(result.warned) == ["dsr-7d", "dsr-now"]


def test_an_extended_deadline_re_arms_the_warning(ledger, table):
    events, metrics = Events(), Metrics()
    put_request(table, "dsr-1", NOW + timedelta(days=2))
    assert run(ledger, events, metrics).warned == ["dsr-1"]
    set_deadline(table, "dsr-1", NOW + timedelta(days=40))  # extended: out of the window, no warning
    assert run(ledger, events, metrics).warned == []
    later = NOW + timedelta(days=35)  # the new deadline is 5 days away: a new value, warned again
    assert run(ledger, events, metrics, now=later).warned == ["dsr-1"]
    assert run(ledger, events, metrics, now=later + timedelta(hours=1)).warned == []
    assert [e for e, _ in events.kinds()] == ["deadline_at_risk", "deadline_at_risk"]
    assert ledger.item("dsr-1")["at_risk_warned_for"] == iso(NOW + timedelta(days=40))


def test_a_failed_emit_undoes_the_mark_goes_on_and_raises_after_the_metrics(ledger, table):
    put_request(table, "dsr-a", NOW + timedelta(days=1))
    put_request(table, "dsr-b", NOW + timedelta(days=2))
    events, metrics = Events(), Metrics()
    events.fail = True
    with pytest.raises(EventNotDelivered) as caught:
        run(ledger, events, metrics)
    assert caught.value.error_code == "ThrottlingException"
    assert metrics.put == [("OpenRequests", 2), ("RequestsDueSoon", 2), ("RequestsOverdue", 0)]
    for rid in ("dsr-a", "dsr-b"):  # both were tried, both unmarked
        assert "at_risk_warned_for" not in ledger.item(rid)
    events.fail = False
    assert sorted(run(ledger, events, metrics).warned) == ["dsr-a", "dsr-b"]  # the next sweep tries again
    assert sorted(r for _, r in events.kinds()) == ["dsr-a", "dsr-b"]


def test_without_a_bus_it_counts_and_marks_nothing(ledger, table):
    put_request(table, "dsr-1", NOW + timedelta(days=1))
    events, metrics = Events(), Metrics()
    result = run(ledger, events, metrics, bus=None)
    assert (result.open, result.due_soon, result.warned) == (1, 1, [])
    assert events.entries == [] and "at_risk_warned_for" not in ledger.item("dsr-1")
    assert metrics.last() == {"OpenRequests": 1, "RequestsDueSoon": 1, "RequestsOverdue": 0}


def test_no_open_requests_still_puts_zeros(ledger):
    metrics = Metrics()
    assert run(ledger, Events(), metrics) == SweepResult()
    assert metrics.put == [("OpenRequests", 0), ("RequestsDueSoon", 0), ("RequestsOverdue", 0)]


def test_open_requests_pages_and_filters_by_deadline(ledger, table, monkeypatch):
    for i in range(7):
        put_request(table, f"dsr-{i}", NOW + timedelta(days=i))
    calls = []
    real = table.query

    def small_pages(**kwargs):
        calls.append(kwargs)
        return real(**{**kwargs, "Limit": 2})

    monkeypatch.setattr(table, "query", small_pages)
    assert [i["request_id"] for i in ledger.open_requests()] == [f"dsr-{i}" for i in range(7)]
    assert len(calls) >= 4 and all(c["IndexName"] == "open-by-deadline" for c in calls)
    due = [i["request_id"] for i in ledger.open_requests(due_before=NOW + timedelta(days=2))]
    assert due == ["dsr-0", "dsr-1", "dsr-2"]  # at or before, earliest first


def test_mark_at_risk_once_per_deadline_and_only_while_open(ledger, table):
    deadline = iso(NOW + timedelta(days=3))
    put_request(table, "dsr-1", NOW + timedelta(days=3))
    assert ledger.mark_at_risk("dsr-1", deadline) is True
    assert ledger.mark_at_risk("dsr-1", deadline) is False
    assert ledger.unmark_at_risk("dsr-1", iso(NOW)) is False  # another value: left alone
    assert ledger.unmark_at_risk("dsr-1", deadline) is True
    assert ledger.mark_at_risk("dsr-1", deadline) is True
    assert ledger.mark_at_risk("dsr-1", iso(NOW + timedelta(days=9))) is False  # not its deadline (moved since)
    put_request(table, "dsr-done", NOW + timedelta(days=3), open_=False)
    assert ledger.mark_at_risk("dsr-done", deadline) is False  # finished meanwhile
    assert ledger.mark_at_risk("dsr-missing", deadline) is False  # never creates an item
    assert ledger.item("dsr-missing") is None


def test_mark_at_risk_propagates_other_errors(ledger, table, monkeypatch):
    def throttled(**kwargs):
        raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "UpdateItem")

    monkeypatch.setattr(table, "update_item", throttled)
    with pytest.raises(ClientError):
        ledger.mark_at_risk("dsr-1", iso(NOW))


def test_a_ledger_error_on_one_request_does_not_stop_the_others(ledger, table, monkeypatch):
    put_request(table, "dsr-a", NOW + timedelta(days=1))
    put_request(table, "dsr-b", NOW + timedelta(days=2))
    real = table.update_item

    def flaky(**kwargs):
        if kwargs["Key"]["pk"]["S"] == pk("dsr-a"):
            raise ClientError({"Error": {"Code": "InternalServerError"}}, "UpdateItem")
        return real(**kwargs)

    monkeypatch.setattr(table, "update_item", flaky)
    events, metrics = Events(), Metrics()
    with pytest.raises(ClientError):
        run(ledger, events, metrics)
    assert events.kinds() == [("deadline_at_risk", "dsr-b")]
    assert metrics.last()["RequestsDueSoon"] == 2


def test_days_left():
    assert days_left(NOW + timedelta(days=5, hours=3), NOW) == 5
    assert days_left(NOW, NOW) == 0
    assert days_left(NOW - timedelta(hours=1), NOW) == -1
