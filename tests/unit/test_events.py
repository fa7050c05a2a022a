"""core.events.put_event: a rejected PutEvents entry is an error (EventNotDelivered), never a silent loss; and
finalize sends its completion event through it (a rejection fails the task, which the workflow retries)."""

from __future__ import annotations

import ast
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from moto import mock_aws

from core.errors import DsrError, EventNotDelivered
from core.events import put_event
from core.tasks import Runtime, finalize

DETAIL = {"request_id": "r1", "status": "completed", "secret-ish": "ada@example.com"}
FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"


class StubEvents:
    """An EventBridge client that records the entries and answers what it is told to."""

    def __init__(self, answer: dict[str, Any] | None = None, error: BaseException | None = None):
        self.entries: list[dict[str, Any]] = []
        self.answer = answer if answer is not None else {"FailedEntryCount": 0, "Entries": [{"EventId": "e-1"}]}
        self.error = error

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # boto3's parameter name
        self.entries += Entries
        if self.error is not None:
            raise self.error
        return self.answer


THROTTLED = {
    "FailedEntryCount": 1,
    "Entries": [{"ErrorCode": "ThrottlingException", "ErrorMessage": "Rate exceeded for ada@example.com"}],
}


def send(client: Any) -> None:
    put_event(client, source="dsrflow", detail_type="Data Subject Request Completed", bus="crm-bus", detail=DETAIL)


def test_an_accepted_entry_is_delivered():
    client = StubEvents()
    send(client)
    (entry,) = client.entries
    assert entry == {
        "Source": "dsrflow",
        "DetailType": "Data Subject Request Completed",
        "EventBusName": "crm-bus",
        "Detail": json.dumps(DETAIL),
    }


def test_a_throttled_entry_raises_event_not_delivered_naming_the_code_not_the_detail():
    with pytest.raises(EventNotDelivered) as caught:
        send(StubEvents(THROTTLED))
    error = caught.value
    assert isinstance(error, DsrError) and type(error).__name__ == "EventNotDelivered"  # the ASL retries the name
    assert error.error_code == "ThrottlingException"
    message = str(error)
    assert "'Data Subject Request Completed'" in message and "ThrottlingException" in message and "crm-bus" in message
    # Neither the detail nor AWS's message text (which could echo anything) reaches the history.
    assert "ada@example.com" not in message and "Rate exceeded" not in message and "r1" not in message
    assert error.detail is None


def test_a_failed_count_without_an_error_code_is_still_a_failure():
    with pytest.raises(EventNotDelivered, match="a failed entry without an error code"):
        send(StubEvents({"FailedEntryCount": 1, "Entries": [{}]}))


def test_an_entry_error_code_counts_even_if_the_count_says_zero():
    answer = {"FailedEntryCount": 0, "Entries": [{"ErrorCode": "InternalFailure", "ErrorMessage": "x"}]}
    with pytest.raises(EventNotDelivered, match="InternalFailure"):
        send(StubEvents(answer))


@pytest.mark.parametrize(
    "error, code",
    [
        (
            ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "PutEvents"),
            "AccessDeniedException",
        ),
        (EndpointConnectionError(endpoint_url="https://events.eu-west-1.amazonaws.com"), "EndpointConnectionError"),
    ],
    ids=["refused", "unreachable"],
)
def test_a_failing_call_is_reported_the_same_way(error, code):
    with pytest.raises(EventNotDelivered, match=code) as caught:
        send(StubEvents(error=error))
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_against_moto_an_event_on_an_existing_bus_is_delivered_and_a_missing_bus_is_not():
    with mock_aws():
        client = boto3.client("events", region_name="eu-west-1")
        client.create_event_bus(Name="crm-bus")
        send(client)
        # moto answers a missing bus as AWS does: HTTP 200 with the entry rejected.
        with pytest.raises(EventNotDelivered):
            put_event(client, source="dsrflow", detail_type="x", bus="no-such-bus", detail={})


def test_every_put_events_in_the_code_goes_through_put_event():
    """One place checks the answer: no other module calls put_events itself."""
    callers = []
    for path in FUNCTIONS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "put_events":
                callers.append(str(path.relative_to(FUNCTIONS)))
    assert callers == ["core/events.py"]


# --- finalize uses it ----------------------------------------------------------------------------------------


class Store:
    bucket = "b"

    def __init__(self) -> None:
        self.writes = 0

    def put_manifest(self, manifest: Any) -> None:
        self.writes += 1

    def list_keys(self, prefix: str) -> list[str]:
        return []


PAYLOAD = {
    "request_id": "r1",
    "received_at": "2026-11-23T10:00:00Z",
    "deadline": "2026-12-23T10:00:00Z",
    "plan": [{"vendor": "elevate", "actions": ["export"]}],
    "skipped": [],
    "results": [[{"vendor": "elevate", "action": "export", "status": "completed", "job_id": "j1", "archives": []}]],
}


def runtime(events: StubEvents) -> Runtime:
    return Runtime(
        store=Store(),  # type: ignore[arg-type]
        connector_for=None,  # type: ignore[arg-type]
        now=lambda: datetime(2026, 11, 24, tzinfo=UTC),
        events=events,
        event_bus_name="crm-bus",
    )


def test_finalize_fails_with_event_not_delivered_after_writing_the_manifest_and_a_retry_rewrites_it():
    rejecting = StubEvents(THROTTLED)
    rt = runtime(rejecting)
    with pytest.raises(EventNotDelivered):
        finalize(PAYLOAD, rt)
    assert rt.store.writes == 1  # type: ignore[attr-defined]

    # The workflow's retry runs the task again: the same manifest is written again, the event goes out.
    rejecting.answer = {"FailedEntryCount": 0, "Entries": [{"EventId": "e-2"}]}
    summary = finalize(PAYLOAD, rt)
    assert rt.store.writes == 2  # type: ignore[attr-defined]
    assert summary["status"] == "completed"
    assert len(rejecting.entries) == 2 and rejecting.entries[0] == rejecting.entries[1]
    detail = json.loads(rejecting.entries[1]["Detail"])
    assert detail["request_id"] == "r1" and detail["manifest"] == {"bucket": "b", "key": "requests/r1/manifest.json"}
