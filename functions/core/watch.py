"""The deadline watch: one sweep over the open requests (run hourly by handlers/sweep.py).

A GDPR request has a deadline (one month, extendable). The sweep counts the open requests, those due within
`WARN_WITHIN` (7 days) and those already overdue, and puts the three counts as metrics (OpenRequests,
RequestsDueSoon, RequestsOverdue: infra/watch.py alarms on RequestsOverdue > 0). A request due soon gets one
`deadline_at_risk` event (core/events.py; schemas/events/deadline_at_risk.schema.json) per deadline value:

    mark the ledger item warned for its deadline (conditional: only one sweep wins), then emit the event;
    when the event is not delivered, undo the mark so the next sweep tries again.

An extended deadline is a new value, so it re-arms the warning. A failure with one request does not stop the
others: the sweep finishes, puts its metrics, then raises the first failure (the scheduled invocation fails
and shows in the function's Errors metric; the next hourly run tries again).

Nothing here holds personal data: the ledger holds ids, statuses and times only, and so do the event and the
metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import Field

from core.errors import EventNotDelivered
from core.events import emit
from core.ledger import Ledger
from core.model import Model

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient

log = logging.getLogger(__name__)

WARN_WITHIN = timedelta(days=7)  # "due soon": the deadline is at most this far ahead
METRICS = ("OpenRequests", "RequestsDueSoon", "RequestsOverdue")


class SweepResult(Model):
    open: int = 0  # open requests (in the open-by-deadline index)
    due_soon: int = 0  # now <= deadline <= now + WARN_WITHIN
    overdue: int = 0  # deadline < now
    warned: list[str] = Field(default_factory=list)  # request ids warned by this sweep (event delivered)


def days_left(deadline: datetime, now: datetime) -> int:
    """Whole days until the deadline, as GET /requests/{id} shows them (core/ledger.Ledger.view)."""
    left = deadline - now
    return left.days if left >= timedelta(0) else -((-left).days + (1 if (-left).seconds else 0))


def _deadline(item: dict[str, Any]) -> datetime | None:
    raw = item.get("deadline")
    if not isinstance(raw, str):
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def sweep(
    ledger: Ledger,
    *,
    events_client: EventBridgeClient | None,
    bus: str | None,
    now: datetime,
    metric: Callable[[str, float], None],
) -> SweepResult:
    """Count the open, due-soon and overdue requests, warn each due-soon one once per deadline, put the counts.

    Without a bus (EVENT_BUS_NAME unset) it counts and warns nobody (nothing is marked). Raises the first
    EventNotDelivered or DynamoDB error after every request was looked at and the metrics were put.
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    result = SweepResult()
    failures: list[Exception] = []
    for item in ledger.open_requests():
        result.open += 1
        request_id = str(item.get("request_id") or str(item.get("pk", "")).removeprefix("REQ#"))
        deadline = _deadline(item)
        if deadline is None:
            log.warning("open request without a readable deadline", extra={"request_id": request_id})
            continue
        if deadline < now:
            result.overdue += 1
            continue
        if deadline > now + WARN_WITHIN:
            continue
        result.due_soon += 1
        stored = str(item["deadline"])  # the exact value the mark records (and compares against)
        if events_client is None or not bus or item.get("at_risk_warned_for") == stored:
            continue
        try:
            if not ledger.mark_at_risk(request_id, stored):
                continue  # another sweep warned for this deadline, or the request moved on since it was read
        except (ClientError, BotoCoreError) as exc:
            log.warning(
                "could not mark a request at risk", extra={"request_id": request_id, "error": type(exc).__name__}
            )
            failures.append(exc)
            continue
        detail = {
            "request_id": request_id,
            "deadline": stored,
            "days_left": days_left(deadline, now),
            "status": str(item.get("status") or "running"),
        }
        try:
            emit(events_client, bus, "deadline_at_risk", detail)
        except EventNotDelivered as exc:
            log.warning("deadline warning not delivered", extra={"request_id": request_id, "error": exc.error_code})
            failures.append(exc)
            try:
                ledger.unmark_at_risk(request_id, stored)
            except (ClientError, BotoCoreError) as undo:  # the warning stays marked: logged for the operator
                log.error(
                    "deadline warning not delivered and still marked as sent",
                    extra={"request_id": request_id, "error": type(undo).__name__},
                )
            continue
        result.warned.append(request_id)
        log.info("deadline warning sent", extra={"request_id": request_id, "days_left": detail["days_left"]})
    for name, value in zip(METRICS, (result.open, result.due_soon, result.overdue), strict=True):
        metric(name, value)
    if failures:
        raise failures[0]
    return result


__all__ = ["sweep", "SweepResult", "WARN_WITHIN", "METRICS", "days_left"]
