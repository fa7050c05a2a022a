"""The request ledger: one DynamoDB item per request (its lifecycle) and its audit trail, no personal data.

Executions come and go (their history is kept 90 days); the ledger is what an operator reads. Layout, one
table per stage (infra/ledger.py; ARCHITECTURE.md, "Request ledger"):

    pk = REQ#<request id>, sk = REQUEST             the request: status, received_at, deadline, dry_run, source,
                                                    one map attribute per vendor action ("action#<vendor>#<action>":
                                                    state, since, at, job_id, next_check_at, vendor_status,
                                                    reason, error), open_pk = "OPEN" while the request is open
    pk = REQ#<request id>, sk = AUDIT#<iso time>#<n> one audit event: submitted, checked, completed, ...

Every item carries `expires_at` (epoch seconds, the table's TTL attribute) = received_at + the proof retention
(LEDGER_RETENTION_DAYS, default 1095): the ledger is proof of what was done, kept as long as proof/.

What is written: ids, statuses, times, vendor and action names, job ids and status words the task layer
already allow-listed (core.safe), and reasons built by this code. Where the subject is known (intake and the
job-loop tasks pass it), every value also goes through the `core.safe.scrub` backstop.

Failure policy (decided here): the ledger is a view, never the source of truth; the vendor's result travels
in the execution and the manifest. A ledger write is retried (botocore's standard retries, plus a couple of
our own on throttling); if it still fails, it logs a warning and a metric (`LedgerWriteFailed`) and returns
False: it never raises, so a task's result is never lost because of the ledger. `finished()` rewrites every
action's final state from the manifest, which repairs any intermediate write that was lost.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from core.clock import utcnow
from core.models import Manifest, StoredRequest
from core.safe import scrub, subject_values

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

log = logging.getLogger(__name__)

DEFAULT_RETENTION_DAYS = 1095
REQUEST_SK = "REQUEST"
OPEN = "OPEN"  # open_pk while the request is open: the sparse "open requests by deadline" index
OPEN_INDEX = "open-by-deadline"  # open_pk, deadline
STATUS_INDEX = "by-status"  # status, received_at
ACTION_PREFIX = "action#"
EVENTS = ("received", "submitted", "checked", "completed", "planned", "failed", "manifest written")
THROTTLED = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
}
OWN_RETRIES = 2  # on top of botocore's

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()
_counter = itertools.count()


def pk(request_id: str) -> str:
    return f"REQ#{request_id}"


def action_attr(vendor: str, action: str) -> str:
    return f"{ACTION_PREFIX}{vendor}#{action}"


def _iso(moment: datetime) -> str:
    """UTC with a "Z", as the manifest writes times (and so sortable as text)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _av(value: Any) -> AttributeValueTypeDef:
    return _serializer.serialize(value)


def _clean(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class Ledger:
    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        *,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        now: Callable[[], datetime] = utcnow,
        metric: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.client = client
        self.table = table
        self.retention = timedelta(days=retention_days)
        self.now = now
        self.metric = metric
        self.sleep = sleep

    # --- writes ------------------------------------------------------------------------------------------
    def received(self, stored: StoredRequest) -> bool:
        """The request item (status `received`; the first vendor step makes it `running`) and its first audit
        event. Each planned vendor action starts `queued`, each skipped one `skipped`."""
        now = self.now()
        expires = self._expires(stored.received_at)
        item: dict[str, Any] = {
            "pk": pk(stored.request_id),
            "sk": REQUEST_SK,
            "request_id": stored.request_id,
            "status": "received",
            "received_at": _iso(stored.received_at),
            "deadline": _iso(stored.deadline),
            "dry_run": stored.dry_run,
            "source": stored.source,
            "open_pk": OPEN,
            "updated_at": _iso(now),
            "expires_at": expires,
        }
        for p in stored.plan:
            for a in p.actions:
                item[action_attr(p.vendor, a.value)] = {"vendor": p.vendor, "action": a.value, "state": "queued"}
                item[action_attr(p.vendor, a.value)]["since"] = _iso(now)
        for s in stored.skipped:
            item[action_attr(s.vendor, s.action.value)] = {
                "vendor": s.vendor,
                "action": s.action.value,
                "state": "skipped",
                "since": _iso(now),
                "reason": s.reason,
            }
        values = subject_values(stored.subject)
        item = scrub(item, values, where="ledger request")

        def put() -> None:
            try:
                self.client.put_item(
                    TableName=self.table,
                    Item={k: _av(v) for k, v in item.items()},
                    ConditionExpression="attribute_not_exists(pk)",
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise  # already there: an earlier write of the same request won

        ok = self._write("received", put)
        audit = {"event": "received", "status": "received", "source": stored.source, "dry_run": stored.dry_run}
        return self._audit(stored.request_id, scrub(audit, values, where="ledger audit"), expires, now) and ok

    def action(
        self,
        request_id: str,
        vendor: str,
        action: str,
        event: str,
        *,
        job_id: str | None = None,
        vendor_status: str | None = None,
        next_check_at: datetime | None = None,
        outcome: str | None = None,
        reason: str | None = None,
        error: str | None = None,
        subject: Any = None,
    ) -> bool:
        """One vendor action's step: its state in the request item, and an audit event. `event` is one of
        submitted, checked (`outcome` = the check's status), completed, planned, failed."""
        assert event in EVENTS, event
        now = self.now()
        state = outcome if event == "checked" and outcome else event
        fields = _clean(
            {
                "vendor": vendor,
                "action": action,
                "state": state,
                "at": _iso(now),
                "job_id": job_id,
                "vendor_status": vendor_status,
                "next_check_at": _iso(next_check_at) if next_check_at else None,
                "reason": reason,
                "error": error,
            }
        )
        values = subject_values(subject) if subject is not None else []
        fields = scrub(fields, values, where="ledger action")
        attr = action_attr(vendor, action)
        expires: list[int] = []

        def update() -> None:
            names = {"#a": attr, "#st": "status", "#state": "state"}
            common = {":running": _av("running"), ":now": _av(_iso(now)), ":fallback": _av(self._expires(now))}
            set_status = "#st = :running, updated_at = :now, expires_at = if_not_exists(expires_at, :fallback)"
            try:
                # A new state: the whole map, `since` now. Only when the state changed, so `since` means it.
                answer = self.client.update_item(
                    TableName=self.table,
                    Key=self._key(request_id, REQUEST_SK),
                    UpdateExpression=f"SET {set_status}, #a = :fields",
                    ConditionExpression="attribute_not_exists(#a) OR #a.#state <> :state",
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues={
                        **common,
                        ":fields": _av({**fields, "since": _iso(now)}),
                        ":state": _av(state),
                    },
                    ReturnValues="ALL_NEW",
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
                # The same state again (another pending check): keep `since`, refresh the rest.
                parts = {k: v for k, v in fields.items() if k not in ("vendor", "action", "state")}
                names.pop("#state")  # DynamoDB refuses a name the expression does not use
                for k in parts:
                    names[f"#f_{k}"] = k
                answer = self.client.update_item(
                    TableName=self.table,
                    Key=self._key(request_id, REQUEST_SK),
                    UpdateExpression=f"SET {set_status}" + "".join(f", #a.#f_{k} = :f_{k}" for k in parts),
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues={**common, **{f":f_{k}": _av(v) for k, v in parts.items()}},
                    ReturnValues="ALL_NEW",
                )
            raw = answer.get("Attributes", {}).get("expires_at")
            if raw is not None:
                expires.append(int(_deserializer.deserialize(raw)))

        ok = self._write(event, update)
        audit = {"event": event, **{k: v for k, v in fields.items() if k not in ("at", "state")}}
        if event == "checked" and outcome:
            audit["outcome"] = outcome
        return self._audit(request_id, audit, expires[0] if expires else self._expires(now), now) and ok

    def finished(self, manifest: Manifest) -> bool:
        """The final status and every action's final state from the manifest (repairing any lost write), the
        open-index attribute removed, a `failed` audit event per failed action and `manifest written`."""
        now = self.now()
        expires = self._expires(manifest.received_at)
        item: dict[str, Any] = {
            "request_id": manifest.request_id,
            "status": manifest.status,
            "received_at": _iso(manifest.received_at),
            "deadline": _iso(manifest.deadline),
            "dry_run": manifest.dry_run,
            "finished_at": _iso(manifest.finished_at),
            "within_deadline": manifest.within_deadline,
            "counts": dict(manifest.counts),
            "updated_at": _iso(now),
            "expires_at": expires,
        }
        for o in manifest.outcomes:
            item[action_attr(o.vendor, o.action.value)] = _clean(
                {
                    "vendor": o.vendor,
                    "action": o.action.value,
                    "state": o.status,
                    "since": _iso(o.completed_at or manifest.finished_at),
                    "at": _iso(now),
                    "job_id": o.job_id,
                    "reason": o.reason,
                    "error": o.error,
                    "step": o.step,
                }
            )
        names = {f"#n{i}": k for i, k in enumerate(item)}
        values = {f":v{i}": _av(v) for i, v in enumerate(item.values())}

        def update() -> None:
            self.client.update_item(
                TableName=self.table,
                Key=self._key(manifest.request_id, REQUEST_SK),
                UpdateExpression="SET " + ", ".join(f"#n{i} = :v{i}" for i in range(len(item))) + " REMOVE open_pk",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )

        ok = self._write("manifest written", update)
        for o in manifest.outcomes:
            if o.status == "failed":
                failed = _clean(
                    {
                        "event": "failed",
                        "vendor": o.vendor,
                        "action": o.action.value,
                        "job_id": o.job_id,
                        "error": o.error,
                        "step": o.step,
                        "reason": o.reason,
                    }
                )
                ok = self._audit(manifest.request_id, failed, expires, now) and ok
        written = {"event": "manifest written", "status": manifest.status, "counts": dict(manifest.counts)}
        return self._audit(manifest.request_id, written, expires, now) and ok

    # --- reads -------------------------------------------------------------------------------------------
    def item(self, request_id: str) -> dict[str, Any] | None:
        """The request item as plain values; None when there is none (or the ledger cannot be read)."""
        try:
            answer = self.client.get_item(
                TableName=self.table, Key=self._key(request_id, REQUEST_SK), ConsistentRead=True
            )
        except (ClientError, BotoCoreError) as exc:
            log.warning("ledger read failed", extra={"error": type(exc).__name__})
            return None
        raw = answer.get("Item")
        if raw is None:
            return None
        return {k: _plain(_deserializer.deserialize(v)) for k, v in raw.items()}

    def view(self, request_id: str) -> dict[str, Any] | None:
        """What GET /requests/{id} shows: overall status, deadline, days left and per vendor action its state,
        since when, the next look and the vendor's status word."""
        item = self.item(request_id)
        if item is None:
            return None
        deadline = item.get("deadline")
        days_left = None
        if isinstance(deadline, str):
            left = datetime.fromisoformat(deadline) - self.now()
            days_left = left.days if left >= timedelta(0) else -((-left).days + (1 if (-left).seconds else 0))
        actions = [
            {
                "vendor": v.get("vendor"),
                "action": v.get("action"),
                "state": v.get("state"),
                "since": v.get("since"),
                "next_check_at": v.get("next_check_at"),
                "vendor_status": v.get("vendor_status"),
            }
            for k, v in sorted(item.items())
            if k.startswith(ACTION_PREFIX) and isinstance(v, dict)
        ]
        return {
            "status": item.get("status"),
            "received_at": item.get("received_at"),
            "deadline": deadline,
            "days_left": days_left,
            "finished_at": item.get("finished_at"),
            "actions": actions,
        }

    def audit(self, request_id: str) -> list[dict[str, Any]]:
        """The audit events in time order (tests and operators; no Lambda role is granted Query yet)."""
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :audit)",
            "ExpressionAttributeValues": {":pk": _av(pk(request_id)), ":audit": _av("AUDIT#")},
        }
        while True:
            page = self.client.query(**kwargs)
            items += [{k: _plain(_deserializer.deserialize(v)) for k, v in i.items()} for i in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # --- plumbing ----------------------------------------------------------------------------------------
    def _key(self, request_id: str, sk: str) -> dict[str, AttributeValueTypeDef]:
        return {"pk": _av(pk(request_id)), "sk": _av(sk)}

    def _expires(self, received_at: datetime) -> int:
        return int((received_at + self.retention).timestamp())

    def _audit(self, request_id: str, event: dict[str, Any], expires: int, now: datetime) -> bool:
        n = next(_counter)

        def put() -> None:
            item = {
                "pk": pk(request_id),
                "sk": f"AUDIT#{_iso(now)}#{n:06d}",
                "request_id": request_id,
                "at": _iso(now),
                "expires_at": expires,
                **_clean(event),
            }
            self.client.put_item(TableName=self.table, Item={k: _av(v) for k, v in item.items()})

        return self._write(f"audit {event.get('event')}", put)

    def _write(self, what: str, call: Callable[[], None]) -> bool:
        """Run one write with our own retries on throttling; False (logged, counted) when it still fails."""
        for attempt in range(OWN_RETRIES + 1):
            try:
                call()
                return True
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code in THROTTLED and attempt < OWN_RETRIES:
                    self.sleep(0.2 * 2**attempt)
                    continue
                error = code or type(exc).__name__
            except Exception as exc:  # never raise: the task's result matters more than the ledger
                error = type(exc).__name__
            log.warning("ledger write failed", extra={"write": what, "error": error})
            if self.metric is not None:
                try:
                    self.metric("LedgerWriteFailed")
                except Exception:  # the metric is best effort too
                    pass
            return False
        return False  # pragma: no cover  # the loop always returns


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal: whole numbers as int."""
    from decimal import Decimal

    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, set)):
        return [_plain(v) for v in value]
    return value


__all__ = ["Ledger", "pk", "action_attr", "OPEN_INDEX", "STATUS_INDEX", "DEFAULT_RETENTION_DAYS"]
