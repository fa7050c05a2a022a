"""The one way dsrflow puts an event on EventBridge: `put_event`, which makes sure it was delivered.

PutEvents answers HTTP 200 even when it rejected an entry: the rejection is only in the answer
(`FailedEntryCount`, and an `ErrorCode` / `ErrorMessage` on the entry: ThrottlingException,
InternalFailure, AccessDeniedException, ...). botocore does not retry those and raises nothing, so a caller
that ignores the answer loses the event silently. `put_event` reads the answer and raises
`EventNotDelivered` (core/errors.py), which the workflow retries with backoff (the "Finalize manifest"
state of statemachines/dsr.asl.json); a failure of the call itself (after botocore's own retries) is
reported the same way. The error names the detail-type, the bus and AWS's error code, never the detail
(which may one day carry more than ids) nor AWS's message text.
"""

from __future__ import annotations

import json
import logging
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


__all__ = ["put_event"]
