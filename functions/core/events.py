"""The one way dsrflow puts an event on EventBridge: `put_event`, which makes sure it was delivered.

PutEvents answers HTTP 200 even when it rejected an entry: the rejection is only in the answer
(`FailedEntryCount`, and an `ErrorCode` / `ErrorMessage` on the entry: ThrottlingException,
InternalFailure, AccessDeniedException, ...). botocore does not retry those and raises nothing, so a caller
that ignores the answer loses the event silently. `put_event` reads the answer and raises
`EventNotDelivered` (core/errors.py), which the workflow retries with backoff (the "Finalize manifest"
state of statemachines/dsr.asl.json); a failure of the call itself (after botocore's own retries) is
reported the same way. The error names the detail-type, the bus and AWS's error code, never the detail
(which may one day carry more than ids) nor AWS's message text.

The lifecycle events dsrflow emits are catalogued here (`DETAIL_TYPES`, kind -> detail-type) and sent with
`emit`; each kind's detail has a JSON Schema in schemas/events/<kind>.schema.json (ids, enums, times, ARNs
and counts only: no personal data fits in it), checked by tests/event_schemas.py.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from core.errors import EventNotDelivered

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient

log = logging.getLogger(__name__)


def put_event(
    events_client: EventBridgeClient, *, source: str, detail_type: str, bus: str, detail: dict[str, Any]
) -> None:
    """Put one event on `bus`; return only once EventBridge accepted it.

    Raises EventNotDelivered when EventBridge rejected the entry or the call failed.
    """
    try:
        answer: Any = events_client.put_events(
            Entries=[{"Source": source, "DetailType": detail_type, "EventBusName": bus, "Detail": json.dumps(detail)}]
        )
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code") or "an error")
        raise EventNotDelivered(detail_type, code, bus) from None
    except BotoCoreError as exc:  # connection failures, timeouts: named by type, never by their text
        raise EventNotDelivered(detail_type, type(exc).__name__, bus) from None
    answer = answer or {}  # a client answering nothing reported no rejection
    results = answer.get("Entries") or []
    codes = [str(r["ErrorCode"]) for r in results if isinstance(r, dict) and r.get("ErrorCode")]
    if answer.get("FailedEntryCount") or codes:
        raise EventNotDelivered(detail_type, codes[0] if codes else "a failed entry without an error code", bus)
    event_id = results[0].get("EventId") if results and isinstance(results[0], dict) else None
    log.info("event delivered", extra={"detail_type": detail_type, "bus": bus, "event_id": event_id})


EVENT_SOURCE = "dsrflow"
# kind -> EventBridge detail-type; one JSON Schema per kind in schemas/events/<kind>.schema.json.
DETAIL_TYPES: dict[str, str] = {
    "received": "Data Subject Request Received",
    "approval_required": "Data Subject Request Approval Required",
    "approved": "Data Subject Request Approved",
    "denied": "Data Subject Request Denied",
    "completed": "Data Subject Request Completed",
    "deadline_at_risk": "Data Subject Request Deadline At Risk",
    "deadline_extended": "Data Subject Request Deadline Extended",
    "cancelled": "Data Subject Request Cancelled",
}
COMPLETED_DETAIL_TYPE = DETAIL_TYPES["completed"]  # also core.tasks.COMPLETED_DETAIL_TYPE


class UnknownEventKind(KeyError, ValueError):
    """`emit` was asked for a kind the catalog does not have (a programming error, never retried)."""


def emit(events_client: EventBridgeClient, bus: str, kind: str, detail: dict[str, Any]) -> None:
    """Put one lifecycle event of `kind` (a key of DETAIL_TYPES) on `bus`, source "dsrflow".

    Raises UnknownEventKind (a KeyError and a ValueError) for a kind not in the catalog, EventNotDelivered
    when EventBridge did not accept it.
    """
    try:
        detail_type = DETAIL_TYPES[kind]
    except KeyError:
        raise UnknownEventKind(f"unknown dsrflow event kind {kind!r}; known: {', '.join(DETAIL_TYPES)}") from None
    put_event(events_client, source=EVENT_SOURCE, detail_type=detail_type, bus=bus, detail=detail)


DELIVERY_TRIES = 3


def deliver(
    events_client: EventBridgeClient | None,
    bus: str | None,
    kind: str,
    detail: dict[str, Any],
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """`emit`, retried in the call, for events that report something already done outside the workflow
    (a request received, a decision taken through the API): the action stands whatever EventBridge says.
    True once delivered; False (logged as an error) when EventBridge refused every try or no bus is set."""
    if events_client is None or not bus:
        return False
    for attempt in range(DELIVERY_TRIES):
        try:
            emit(events_client, bus, kind, detail)
            return True
        except EventNotDelivered as exc:
            if attempt == DELIVERY_TRIES - 1:
                log.error("event not delivered", extra={"kind": kind, "error": exc.error_code, "bus": bus})
                return False
            sleep(0.2 * 2**attempt)
    return False  # pragma: no cover  # the loop always returns


__all__ = ["put_event", "emit", "deliver", "EVENT_SOURCE", "DETAIL_TYPES", "COMPLETED_DETAIL_TYPE", "UnknownEventKind"]
