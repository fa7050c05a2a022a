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
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from core.clock import utcnow
from core.dynamo import from_attr, to_attr
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
EVENTS = (
    "received",
    "started",
    "waiting",  # held back by our own per-vendor limit (core/limits.py): nothing sent yet
    "submitted",
    "checked",
    "completed",
    "planned",
    "failed",
    "denied",
    "cancelled",
    "approval requested",
    "approved",
    "retried",
    "extended",
    "package built",
    "package link issued",
    "manifest written",
)
APPROVAL_SK = "APPROVAL#"  # + <vendor>#<action>: the open task token of the approval gate
FINISHED = ("completed", "partially_failed", "failed", "cancelled")
RUNNING = ("received", "running", "awaiting_approval")
THROTTLED = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
}
OWN_RETRIES = 2  # on top of botocore's

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


def _package_view(ref: Any) -> dict[str, Any]:
    """What the ledger keeps of the access package (core.models.PackageRef): status, size, digest, counts."""
    return _clean(
        {
            "status": ref.status,
            "bytes": ref.bytes,
            "sha256": ref.sha256,
            "files": ref.files,
            "attempt": ref.attempt,
            "built_at": _iso(ref.built_at) if ref.built_at else None,
            "reason": ref.reason,
            "error": ref.error,
        }
    )


def _av(value: Any) -> AttributeValueTypeDef:
    return to_attr(value)  # type: ignore[return-value]  # the stubs' union of shapes


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
        """The request item (status `received`; `started` makes it `running`) and its first audit
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
            "attempt": 1,
            "attempts": [{"attempt": 1, "execution": stored.request_id, "at": _iso(now), "by": stored.source}],
            "extended_days": 0,
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
            names = {"#a": attr, "#state": "state"}
            # The request's status is set by the lifecycle (started, awaiting approval, finished), never here:
            # one branch's step must not hide that another branch awaits a decision.
            common = {":now": _av(_iso(now)), ":fallback": _av(self._expires(now))}
            set_status = "updated_at = :now, expires_at = if_not_exists(expires_at, :fallback)"
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
                expires.append(int(from_attr(raw)))

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
        if manifest.package is not None:
            item["package"] = _package_view(manifest.package)
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
        if manifest.package is not None and manifest.package.status == "built":
            built = {"event": "package built", **_package_view(manifest.package)}
            ok = self._audit(manifest.request_id, built, expires, now) and ok
        written = {"event": "manifest written", "status": manifest.status, "counts": dict(manifest.counts)}
        return self._audit(manifest.request_id, written, expires, now) and ok

    def package_link(
        self,
        request_id: str,
        *,
        by: str,
        expires_at: datetime,
        sha256: str,
        item: Mapping[str, Any] | None = None,
    ) -> bool:
        """Audit one link to the access package handed out (GET /requests/{id}/package): who, and until when.
        `item`: the request item the caller has read already (the event expires with it); else it is read here.
        Returns False when the event could not be written: the caller then hands out no link, because a link
        nobody can account for is exactly what the audit trail is there to prevent."""
        now = self.now()
        item = item if item is not None else self.item(request_id)
        expires = int(item["expires_at"]) if item and "expires_at" in item else self._expires(now)
        event = {"event": "package link issued", "by": by, "link_expires_at": _iso(expires_at), "sha256": sha256}
        return self._audit(request_id, event, expires, now)

    # --- the operator's lifecycle (core/operations.py) ---------------------------------------------------
    # Unlike the step writes above, these raise: each one is a decision or a lock the caller must know about.
    def started(self, request_id: str) -> bool:
        """The first execution started: `received` becomes `running` (never raises, like the step writes)."""
        now = self.now()

        expires: list[int] = []

        def update() -> None:
            try:
                answer = self.client.update_item(
                    TableName=self.table,
                    Key=self._key(request_id, REQUEST_SK),
                    UpdateExpression="SET #st = :running, updated_at = :now",
                    ConditionExpression="#st = :received",
                    ExpressionAttributeNames={"#st": "status"},
                    ExpressionAttributeValues={
                        ":running": _av("running"),
                        ":received": _av("received"),
                        ":now": _av(_iso(now)),
                    },
                    ReturnValues="ALL_NEW",
                )
                expires.append(self._expires_of(answer, now))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise  # already further along (a redelivered request)

        ok = self._write("started", update)
        if expires:
            self._audit(request_id, {"event": "started", "execution": request_id, "attempt": 1}, expires[0], now)
        return ok

    def awaiting_approval(self, request_id: str, vendor: str, action: str, token: str, *, attempt: int) -> None:
        """Keep the gate's task token (the approve/deny routes answer it) and mark the action and the request
        awaiting approval. Raises StoreUnavailable when it cannot: without the token nobody could decide."""
        from core.errors import StoreUnavailable

        now = self.now()
        try:
            answer = self.client.update_item(
                TableName=self.table,
                Key=self._key(request_id, REQUEST_SK),
                UpdateExpression="SET #st = :awaiting, #a = :fields, updated_at = :now",
                ExpressionAttributeNames={"#st": "status", "#a": action_attr(vendor, action)},
                ExpressionAttributeValues={
                    ":awaiting": _av("awaiting_approval"),
                    ":fields": _av(
                        {"vendor": vendor, "action": action, "state": "awaiting_approval", "since": _iso(now)}
                    ),
                    ":now": _av(_iso(now)),
                },
                ReturnValues="ALL_NEW",
            )
            expires = self._expires_of(answer, now)
            self.client.put_item(
                TableName=self.table,
                Item={
                    k: _av(v)
                    for k, v in {
                        "pk": pk(request_id),
                        "sk": f"{APPROVAL_SK}{vendor}#{action}",
                        "request_id": request_id,
                        "vendor": vendor,
                        "action": action,
                        "token": token,
                        "attempt": attempt,
                        "state": "open",
                        "requested_at": _iso(now),
                        "expires_at": expires,
                    }.items()
                },
            )
        except (ClientError, BotoCoreError) as exc:
            raise StoreUnavailable(
                f"{vendor} approval: the request ledger could not record the approval gate's task token "
                f"({type(exc).__name__}); the workflow retries"
            ) from None
        self._audit(
            request_id,
            {"event": "approval requested", "vendor": vendor, "action": action, "attempt": attempt},
            expires,
            now,
        )

    def open_approvals(self, request_id: str) -> list[dict[str, Any]]:
        """The approval gates waiting on a decision for this request (with their tokens)."""
        page = self.client.query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :approval)",
            ExpressionAttributeValues={":pk": _av(pk(request_id)), ":approval": _av(APPROVAL_SK)},
            ConsistentRead=True,
        )
        items = [{k: _plain(from_attr(v)) for k, v in i.items()} for i in page.get("Items", [])]
        return [i for i in items if i.get("state") == "open"]

    def deciding(self, gate: dict[str, Any], decision: str, *, by: str, reason: str | None) -> None:
        """Note the decision on the gate item just before it is sent to the workflow, so that the workflow's
        side (core.tasks.record: a denial's reason) can read it whatever Step Functions keeps of the cause.
        The gate stays open until `decided`."""
        self.client.update_item(
            TableName=self.table,
            Key=self._key(str(gate["request_id"]), str(gate["sk"])),
            UpdateExpression="SET decision = :d, decided_by = :by, decided_at = :now, reason = :why",
            ExpressionAttributeValues={
                ":d": _av(decision),
                ":by": _av(by),
                ":now": _av(_iso(self.now())),
                ":why": _av(reason),
            },
        )

    def expired(self, gate: dict[str, Any]) -> None:
        """The gate's token no longer waits (timed out, stopped): it is closed without a decision."""
        self.client.update_item(
            TableName=self.table,
            Key=self._key(str(gate["request_id"]), str(gate["sk"])),
            UpdateExpression="SET #state = :expired",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={":expired": _av("expired")},
        )

    def gate(self, request_id: str, vendor: str, action: str) -> dict[str, Any] | None:
        """The approval gate item of one vendor action (its decision once taken), None when there is none."""
        answer = self.client.get_item(
            TableName=self.table, Key=self._key(request_id, f"{APPROVAL_SK}{vendor}#{action}"), ConsistentRead=True
        )
        raw = answer.get("Item")
        return {k: _plain(from_attr(v)) for k, v in raw.items()} if raw else None

    def decided(self, gate: dict[str, Any], decision: str, *, by: str, reason: str | None, still_open: int) -> None:
        """Record a decision the workflow has already taken (SendTaskSuccess/Failure succeeded): the gate is
        closed, the action approved or denied, the audit event written; the request is `running` again once
        no other gate is open."""
        assert decision in ("approved", "denied"), decision
        now = self.now()
        request_id, vendor, action = gate["request_id"], gate["vendor"], gate["action"]
        self.client.update_item(
            TableName=self.table,
            Key=self._key(request_id, str(gate["sk"])),
            UpdateExpression="SET #state = :decision, decided_by = :by, decided_at = :now",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={":decision": _av(decision), ":by": _av(by), ":now": _av(_iso(now))},
        )
        fields = {"vendor": vendor, "action": action, "state": decision, "since": _iso(now), "by": by}
        names = {"#a": action_attr(vendor, action)}
        values: dict[str, Any] = {":fields": _av(_clean({**fields, "reason": reason})), ":now": _av(_iso(now))}
        expression = "SET #a = :fields, updated_at = :now"
        if still_open == 0:
            names["#st"] = "status"
            values[":running"] = _av("running")
            expression += ", #st = :running"
        answer = self.client.update_item(
            TableName=self.table,
            Key=self._key(request_id, REQUEST_SK),
            UpdateExpression=expression,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
        event = _clean({"event": decision, "vendor": vendor, "action": action, "by": by, "reason": reason})
        self._audit(request_id, event, self._expires_of(answer, now), now)

    def claim_attempt(
        self, request_id: str, attempt: int, execution: str, *, by: str, actions: list[str], status: str
    ) -> bool:
        """Claim attempt number `attempt` for a retry: only when the request is still at attempt `attempt - 1`
        and finished with `status` (two concurrent retries: one wins). The request is open and `running` again.
        False when the condition failed."""
        now = self.now()
        answer = self._update_if(
            request_id,
            ReturnValues="ALL_NEW",
            UpdateExpression=(
                "SET #st = :running, attempt = :attempt, open_pk = :open, updated_at = :now, "
                "attempts = list_append(if_not_exists(attempts, :empty), :this)"
            ),
            ConditionExpression="#st = :was AND (attempt = :previous OR attribute_not_exists(attempt))",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues={
                ":running": _av("running"),
                ":attempt": _av(attempt),
                ":previous": _av(attempt - 1),
                ":open": _av(OPEN),
                ":now": _av(_iso(now)),
                ":empty": _av([]),
                ":this": _av(
                    [{"attempt": attempt, "execution": execution, "at": _iso(now), "by": by, "actions": actions}]
                ),
                ":was": _av(status),
            },
        )
        if answer is None:
            return False
        event = {"event": "retried", "attempt": attempt, "execution": execution, "by": by, "actions": actions}
        self._audit(request_id, event, self._expires_of(answer, now), now)
        return True

    def release_attempt(self, request_id: str, attempt: int, status: str) -> None:
        """Undo claim_attempt when the execution could not start: the request is back as it was."""
        self.client.update_item(
            TableName=self.table,
            Key=self._key(request_id, REQUEST_SK),
            UpdateExpression="SET #st = :was, attempt = :previous REMOVE open_pk, attempts[" + str(attempt - 1) + "]",
            ConditionExpression="attempt = :attempt",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues={":was": _av(status), ":previous": _av(attempt - 1), ":attempt": _av(attempt)},
        )

    def extend(
        self, request_id: str, *, days: int, total: int, deadline: datetime, original: datetime, by: str, reason: str
    ) -> bool:
        """Move the deadline to `deadline` (= the original + `total` days), if no other extension landed since
        the caller read `total - days`. False when one did (the caller re-reads and decides again)."""
        now = self.now()
        answer = self._update_if(
            request_id,
            ReturnValues="ALL_NEW",
            UpdateExpression=(
                "SET deadline = :deadline, original_deadline = :original, extended_days = :total, "
                "updated_at = :now, extensions = list_append(if_not_exists(extensions, :empty), :this)"
            ),
            ConditionExpression="attribute_not_exists(extended_days) OR extended_days = :before",
            ExpressionAttributeValues={
                ":deadline": _av(_iso(deadline)),
                ":original": _av(_iso(original)),
                ":total": _av(total),
                ":before": _av(total - days),
                ":now": _av(_iso(now)),
                ":empty": _av([]),
                ":this": _av([{"days": days, "reason": reason, "by": by, "at": _iso(now)}]),
            },
        )
        if answer is None:
            return False
        event = {"event": "extended", "days": days, "deadline": _iso(deadline), "by": by, "reason": reason}
        self._audit(request_id, event, self._expires_of(answer, now), now)
        return True

    def cancelled(self, manifest: Manifest, *, by: str, reason: str | None) -> bool:
        """The request was cancelled: its final state from the cancel manifest, and who cancelled it."""
        now = self.now()
        ok = self.finished(manifest)
        event = _clean({"event": "cancelled", "by": by, "reason": reason, "attempt": manifest.attempt})
        return self._audit(manifest.request_id, event, self._expires(manifest.received_at), now) and ok

    def page(
        self,
        *,
        status: str | None,
        due_before: datetime | None,
        limit: int,
        start: dict[str, Any] | None,
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """One page of request items through an index (never a scan): by status (newest received first), or
        the open ones by deadline (earliest first); `due_before` narrows either. Returns (items, next key)."""
        kwargs: dict[str, Any] = {"TableName": self.table, "Limit": limit}
        values: dict[str, Any] = {}
        if status is not None:
            kwargs.update(IndexName=STATUS_INDEX, KeyConditionExpression="#st = :status", ScanIndexForward=False)
            kwargs["ExpressionAttributeNames"] = {"#st": "status"}
            values[":status"] = _av(status)
            if due_before is not None:
                kwargs["FilterExpression"] = "deadline <= :before"
        else:
            kwargs.update(IndexName=OPEN_INDEX, KeyConditionExpression="open_pk = :open")
            values[":open"] = _av(OPEN)
            if due_before is not None:
                kwargs["KeyConditionExpression"] = "open_pk = :open AND deadline <= :before"
        if due_before is not None:
            values[":before"] = _av(_iso(due_before))
        kwargs["ExpressionAttributeValues"] = values
        if start:
            kwargs["ExclusiveStartKey"] = start
        answer = self.client.query(**kwargs)
        items = [{k: _plain(from_attr(v)) for k, v in i.items()} for i in answer.get("Items", [])]
        return items, answer.get("LastEvaluatedKey")

    def audit_page(
        self, request_id: str, *, limit: int, start: dict[str, Any] | None
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :audit)",
            "ExpressionAttributeValues": {":pk": _av(pk(request_id)), ":audit": _av("AUDIT#")},
            "Limit": limit,
        }
        if start:
            kwargs["ExclusiveStartKey"] = start
        answer = self.client.query(**kwargs)
        items = [{k: _plain(from_attr(v)) for k, v in i.items()} for i in answer.get("Items", [])]
        return items, answer.get("LastEvaluatedKey")

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
        return {k: _plain(from_attr(v)) for k, v in raw.items()}

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
                "job_id": v.get("job_id"),
                "reason": v.get("reason"),
                "error": v.get("error"),
                "by": v.get("by"),  # who approved or denied it
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
            "original_deadline": item.get("original_deadline"),
            "extended_days": item.get("extended_days") or 0,
            "extensions": item.get("extensions") or [],
            "attempt": item.get("attempt") or 1,
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
            items += [{k: _plain(from_attr(v)) for k, v in i.items()} for i in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # --- plumbing ----------------------------------------------------------------------------------------
    def _key(self, request_id: str, sk: str) -> dict[str, AttributeValueTypeDef]:
        return {"pk": _av(pk(request_id)), "sk": _av(sk)}

    def _update_if(self, request_id: str, **update: Any) -> Any | None:
        """UpdateItem on the request item under a ConditionExpression: the answer, or None when the condition
        did not hold (the caller's lock or rule); any other error propagates."""
        try:
            return self.client.update_item(TableName=self.table, Key=self._key(request_id, REQUEST_SK), **update)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return None
            raise

    def _expires_of(self, answer: Any, now: datetime) -> int:
        """The request item's own expires_at from an update's ALL_NEW answer: every item of a request expires
        with it (received_at + the retention), whenever it was written."""
        raw = (answer or {}).get("Attributes", {}).get("expires_at")
        return int(from_attr(raw)) if raw is not None else self._expires(now)

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

    # --- the deadline watch ------------------------------------------------------------------------------
    # core/watch.sweep reads the open requests through the sparse open-by-deadline index and marks each one
    # warned for its deadline (`at_risk_warned_for`) before it emits the warning, so a warning goes out once per
    # deadline value: an extended deadline is a new value and re-arms it. Unlike the writes above, these raise:
    # the sweep decides what a failure means (the next hourly run tries again).
    def open_requests(self, due_before: datetime | None = None) -> Iterator[dict[str, Any]]:
        """Every open request item (plain values) by deadline, earliest first; with `due_before`, only those
        whose deadline is at or before it. Raises what DynamoDB raises."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": OPEN_INDEX,
            "KeyConditionExpression": "open_pk = :open",
            "ExpressionAttributeValues": {":open": _av(OPEN)},
        }
        if due_before is not None:
            kwargs["KeyConditionExpression"] = "open_pk = :open AND deadline <= :before"
            kwargs["ExpressionAttributeValues"][":before"] = _av(_iso(due_before))
        while True:
            page = self.client.query(**kwargs)
            for raw in page.get("Items", []):
                yield {k: _plain(from_attr(v)) for k, v in raw.items()}
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def mark_at_risk(self, request_id: str, deadline: str) -> bool:
        """Record that the deadline warning for `deadline` is going out: True when this call set it, False when
        the request was already warned for that deadline (or is no longer open with that deadline: finished,
        extended since it was read). Any other error propagates."""
        answer = self._update_if(
            request_id,
            UpdateExpression="SET at_risk_warned_for = :d",
            ConditionExpression=(
                "open_pk = :open AND deadline = :d "
                "AND (attribute_not_exists(at_risk_warned_for) OR at_risk_warned_for <> :d)"
            ),
            ExpressionAttributeValues={":d": _av(deadline), ":open": _av(OPEN)},
        )
        return answer is not None

    def unmark_at_risk(self, request_id: str, deadline: str) -> bool:
        """Undo mark_at_risk (the warning was not delivered), only if it still records `deadline`: the next
        sweep warns again. True when removed; any error but the condition's propagates."""
        answer = self._update_if(
            request_id,
            UpdateExpression="REMOVE at_risk_warned_for",
            ConditionExpression="at_risk_warned_for = :d",
            ExpressionAttributeValues={":d": _av(deadline)},
        )
        return answer is not None


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
