"""The operator's actions on a request: list, audit, the access package's link, approve, deny, retry, cancel,
extend.

Each one is a plain function over `Ops` (the store, Step Functions, the ledger, the event bus, the clock), so
the API routes (handlers/intake.py) stay thin and tests run them without Lambda. They answer, or raise:
- `InvalidRequest` (400): a field of the body or query is wrong; `fields` names each one;
- `NotFound` (404): no request with this id;
- `StateConflict` (409): the request is not in a state that allows it; the message states the rule;
- `AuditUnavailable` (503): what was asked could not be recorded in the audit trail, so nothing was handed out.

Nothing is half-applied: the ledger records a decision only once the workflow took it (an approval after
SendTaskSuccess succeeded; a retry is claimed in the ledger with a condition and released if the execution
could not start).

What an operator writes (a reason) is an operator's words, not a vendor's nor the subject's: it is kept
(ledger, manifest) only after checking it holds none of the subject's identifiers (core.safe.holds_subject).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

from botocore.exceptions import ClientError
from pydantic import BeforeValidator, ConfigDict, Field, StrictInt, StrictStr

from core.archive_store import NOT_FOUND, error_code, failure, is_transient, with_retries
from core.clock import iso_z, utcnow
from core.domain import Action
from core.errors import DsrError, StoreUnavailable
from core.events import deliver
from core.intake import InvalidRequest, execution_arn
from core.ledger import FINISHED, RUNNING, Ledger
from core.model import Model
from core.models import (
    MAX_EXTENSION_DAYS,
    MAX_EXTENSIONS,
    ActionOutcome,
    ApprovalGate,
    ExecutionInput,
    Manifest,
    VendorName,
    VendorPlan,
    _text,
)
from core.safe import holds_subject
from core.store import (
    RequestNotFound,
    Store,
    manifest_key,
    outcome_key,
    package_key,
    proof_key,
    submission_key,
)

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_stepfunctions import SFNClient

log = logging.getLogger(__name__)

MAX_REASON_CHARS = 500
DEFAULT_PAGE = 50
MAX_PAGE = 100

Reason = Annotated[
    StrictStr,
    Field(min_length=1, max_length=MAX_REASON_CHARS, description="Why, in the operator's words (no subject data)"),
    BeforeValidator(_text),
]


class NotFound(DsrError):
    """No request with this id (404)."""


class StateConflict(DsrError):
    """The request's state does not allow the action (409); the message says why and what would."""


class AuditUnavailable(DsrError):
    """The audit trail could not record what was asked (503): nothing was handed out; safe to try again."""


# --- the bodies the routes accept (declared once: the API's validation and its OpenAPI document) -------------


class _Body(Model):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class Decision(_Body):
    """POST /requests/{id}/approve: every vendor action awaiting approval, or only the one named."""

    vendor: VendorName | None = None
    action: Action | None = None
    reason: Reason | None = None


class Denial(_Body):
    """POST /requests/{id}/deny: the reason is required; it goes to the manifest and the audit trail."""

    vendor: VendorName | None = None
    action: Action | None = None
    reason: Reason


class RetryBody(_Body):
    """POST /requests/{id}/retry: re-runs what failed, was withheld or denied (optionally one vendor's only)."""

    vendors: list[VendorName] | None = Field(default=None, min_length=1, max_length=20)


class CancelBody(_Body):
    reason: Reason | None = None


class Extension(_Body):
    """POST /requests/{id}/extend: at most 60 days in total, decided before the original deadline."""

    days: StrictInt = Field(ge=1, le=MAX_EXTENSION_DAYS)
    reason: Reason


# --- the dependencies -------------------------------------------------------------------------------------


@dataclass
class Ops:
    store: Store
    sfn: SFNClient
    state_machine_arn: str
    ledger: Ledger
    events: EventBridgeClient | None = None
    event_bus_name: str | None = None
    now: Callable[[], datetime] = utcnow
    sleep: Callable[[float], None] = time.sleep
    approval_gate: ApprovalGate = "none"  # REQUIRE_APPROVAL: what a retry's execution gates (the rule now)
    package_url_seconds: int = 3600  # PACKAGE_URL_SECONDS: how long a link to the access package is valid
    # The client that signs the package's links; None: the store's. It must be configured for SigV4 explicitly
    # (botocore presigns with SigV2 unless told otherwise; handlers.runtime.presigner): a SigV4 link states its
    # lifetime (X-Amz-Expires) and S3 refuses it once that has passed or its credentials have expired.
    presigner: S3Client | None = None


def _emit(ops: Ops, kind: str, detail: dict[str, Any]) -> bool:
    return deliver(ops.events, ops.event_bus_name, kind, detail, sleep=ops.sleep)


# --- reading ----------------------------------------------------------------------------------------------


def _item(ops: Ops, request_id: str) -> dict[str, Any]:
    item = ops.ledger.item(request_id)
    if item is None:
        raise NotFound(f"no request with id {request_id}")
    return item


def _days_left(deadline: str | None, now: datetime) -> int | None:
    if not isinstance(deadline, str):
        return None
    left = datetime.fromisoformat(deadline) - now
    return left.days if left >= timedelta(0) else -((-left).days + (1 if (-left).seconds else 0))


def _execution_name(request_id: str, attempt: int) -> str:
    """The execution of attempt `attempt`: the request id for the first; a retry's name holds a '.', which no
    request id can (core.models.REQUEST_ID_PATTERN), so it never collides with another request's execution."""
    if attempt == 1:
        return request_id
    suffix = f".retry-{attempt}"
    if len(request_id) + len(suffix) <= 80:
        return request_id + suffix
    digest = hashlib.sha256(request_id.encode()).hexdigest()[:8]
    return f"{request_id[: 80 - len(suffix) - 9]}.{digest}{suffix}"


def describe(ops: Ops, request_id: str) -> dict[str, Any]:
    """GET /requests/{id}: the ledger's view (status, deadline, days left, each vendor action, the attempts),
    the latest execution while it exists, and the manifest (its proof copy once the request data expired)."""
    view = ops.ledger.view(request_id)
    item = ops.ledger.item(request_id) if view is not None else None
    attempt = int(item.get("attempt") or 1) if item else 1
    execution: dict[str, Any] | None = None
    try:
        found = ops.sfn.describe_execution(
            executionArn=execution_arn(ops.state_machine_arn, _execution_name(request_id, attempt))
        )
        execution = {
            "arn": found["executionArn"],
            "status": found["status"],
            "started_at": found["startDate"].isoformat(),
            "stopped_at": found["stopDate"].isoformat() if found.get("stopDate") else None,
        }
    except ops.sfn.exceptions.ExecutionDoesNotExist:
        execution = None
    manifest = ops.store.load_manifest(request_id)
    if view is None and execution is None and manifest is None:
        raise NotFound(f"no request with id {request_id}")
    return {
        "request_id": request_id,
        "status": (view or {}).get("status") or (manifest.status if manifest else None),
        "deadline": (view or {}).get("deadline") or (iso_z(manifest.deadline) if manifest else None),
        "days_left": (view or {}).get("days_left"),
        "execution": execution,
        # Today's fields, kept for callers of the first API version.
        "execution_status": execution["status"] if execution else None,
        "execution_arn": execution["arn"] if execution else None,
        "manifest": manifest.summary() if manifest else None,
        "ledger": view,
        "attempts": (item or {}).get("attempts") or [],
    }


def _package_manifest(ops: Ops, request_id: str) -> tuple[dict[str, Any] | None, Manifest]:
    """The request's ledger item (None when unreadable or gone) and the manifest whose access package
    GET /requests/{id}/package hands out: the latest one, once the request has finished. While the ledger's
    current attempt runs (a first execution, or a retry that will rebuild the package) there is none to hand
    out yet: 409."""
    item = ops.ledger.item(request_id)
    manifest: Manifest | None = None
    if item is not None and str(item.get("status")) in RUNNING:
        # Finalize wrote this attempt's manifest but the ledger did not hear of it yet: the request is done.
        manifest = ops.store.load_attempt_manifest(request_id, int(item.get("attempt") or 1))
        if manifest is None:
            raise StateConflict(
                f"request {request_id} is still running: its access package is built once its exports finish"
            )
    manifest = manifest or ops.store.load_manifest(request_id)
    if manifest is None:
        if item is None:
            raise NotFound(f"no request with id {request_id}")
        raise NotFound(f"request {request_id} has no access package: it has no manifest")
    return item, manifest


def _head(ops: Ops, key: str) -> int | None:
    """The stored package's size; None when the object is gone (it expires with the request data)."""

    def head(_: int) -> int | None:
        try:
            return int(ops.store.s3.head_object(Bucket=ops.store.bucket, Key=key)["ContentLength"])
        except ClientError as exc:
            if error_code(exc) in NOT_FOUND:
                return None
            raise

    try:
        return with_retries(head, sleep=ops.sleep, what="S3 HeadObject")
    except Exception as exc:
        if is_transient(exc):
            raise StoreUnavailable(f"S3 HeadObject of {key} failed {failure(exc)}") from None
        raise


def package(ops: Ops, request_id: str, *, principal: str) -> dict[str, Any]:
    """GET /requests/{id}/package: a link to the request's access package (one zip, SSE-KMS), minted for this
    call and valid for `package_url_seconds`. The link is a bearer credential: it is never stored, logged or
    put in an event; the audit trail records who got one, until when, and the package's sha256, before the
    link is handed out (AuditUnavailable, and no link, when that record cannot be written)."""
    item, manifest = _package_manifest(ops, request_id)
    ref = manifest.package
    if ref is None:
        raise NotFound(
            f"request {request_id} has no access package: its manifest records none (no export was asked, or "
            "the request finished before dsrflow built access packages)"
        )
    if ref.status != "built":
        why = ref.reason or (f"building it failed ({ref.error})" if ref.status == "failed" else "nothing to package")
        raise NotFound(f"request {request_id} has no access package: {why}")
    if ref.sha256 is None or ref.bytes is None:  # a built package always has both (core.models.PackageRef)
        raise NotFound(f"request {request_id} has no access package: its manifest does not record its digest")
    key = ref.key or package_key(request_id)
    stored = _head(ops, key)
    if stored is None:
        raise NotFound(f"the access package of request {request_id} expired with the request data")
    if stored != ref.bytes:
        raise StateConflict(
            f"request {request_id}: its access package holds {stored} bytes, its manifest records {ref.bytes}; "
            "it is being rebuilt or was replaced: read the request again, or retry it to rebuild the package"
        )
    seconds = ops.package_url_seconds
    expires_at = ops.now() + timedelta(seconds=seconds)
    url = (ops.presigner or ops.store.s3).generate_presigned_url(
        "get_object",
        Params={
            "Bucket": ops.store.bucket,
            "Key": key,
            "ResponseContentDisposition": f'attachment; filename="dsrflow-access-{request_id}.zip"',
        },
        ExpiresIn=seconds,
    )
    if not ops.ledger.package_link(request_id, by=principal, expires_at=expires_at, sha256=ref.sha256, item=item):
        raise AuditUnavailable(
            f"request {request_id}: the link could not be recorded in the audit trail; nothing was handed out, "
            "try again"
        )
    log.info("package link issued", extra={"request_id": request_id, "link_expires_at": iso_z(expires_at)})
    return {
        "request_id": request_id,
        "url": url,
        "expires_at": iso_z(expires_at),
        "bytes": ref.bytes,
        "sha256": ref.sha256,
        "files": ref.files,
    }


def _token(start: dict[str, Any] | None) -> str | None:
    if not start:
        return None
    return base64.urlsafe_b64encode(json.dumps(start, sort_keys=True).encode()).decode().rstrip("=")


def _start(next_token: str | None) -> dict[str, Any] | None:
    """The DynamoDB key a next_token stands for; InvalidRequest for anything this API did not hand out."""
    if next_token is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(next_token + "=" * (-len(next_token) % 4))
        start = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        start = None
    ok = (
        isinstance(start, dict)
        and bool(start)
        and all(
            isinstance(k, str) and isinstance(v, dict) and len(v) == 1 and next(iter(v)) in ("S", "N")
            for k, v in start.items()
        )
    )
    if not ok or not isinstance(start, dict):
        raise InvalidRequest([{"field": "next_token", "message": "is not a token this API handed out"}])
    return start


def _summary(item: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {
        "request_id": item.get("request_id"),
        "status": item.get("status"),
        "received_at": item.get("received_at"),
        "deadline": item.get("deadline"),
        "days_left": _days_left(item.get("deadline"), now),
        "dry_run": item.get("dry_run"),
        "finished_at": item.get("finished_at"),
        "attempt": item.get("attempt") or 1,
    }


def list_requests(
    ops: Ops, *, status: str | None, due_before: datetime | None, limit: int, next_token: str | None
) -> dict[str, Any]:
    """GET /requests: by status (newest first), or the open requests by deadline (earliest first); both
    narrowed by due_before. A page may hold fewer than `limit` when due_before filters a status page."""
    items, after = ops.ledger.page(status=status, due_before=due_before, limit=limit, start=_start(next_token))
    now = ops.now()
    return {"requests": [_summary(i, now) for i in items], "next_token": _token(after)}


def audit(ops: Ops, request_id: str, *, limit: int, next_token: str | None) -> dict[str, Any]:
    """GET /requests/{id}/audit: the audit trail, oldest first."""
    _item(ops, request_id)
    items, after = ops.ledger.audit_page(request_id, limit=limit, start=_start(next_token))
    hidden = ("pk", "sk", "expires_at")
    return {
        "request_id": request_id,
        "events": [{k: v for k, v in i.items() if k not in hidden} for i in items],
        "next_token": _token(after),
    }


# --- deciding ---------------------------------------------------------------------------------------------


def _subject_free(ops: Ops, request_id: str, reason: str | None) -> None:
    """An operator's reason is kept for years: it must not carry the subject's identifiers."""
    if not reason:
        return
    try:
        stored = ops.store.load_request(request_id)
    except RequestNotFound:
        return  # the request data expired: nothing left to compare with (nor to leak)
    if holds_subject(reason, stored.subject):
        raise InvalidRequest(
            [{"field": "reason", "message": "must not contain the subject's identifiers (it is kept for years)"}]
        )


def _of_request(item: dict[str, Any], vendors: list[str] | None, field: str) -> None:
    """A vendor named in a body must be one of the request's: a 400 naming the field, not a 409."""
    known = {str(v.get("vendor")) for k, v in item.items() if k.startswith("action#") and isinstance(v, dict)}
    unknown = [v for v in vendors or [] if v not in known]
    if unknown:
        raise InvalidRequest(
            [{"field": field, "message": f"is not a vendor of this request (its vendors: {', '.join(sorted(known))})"}]
        )


def _gates(
    ops: Ops, request_id: str, vendor: str | None, action: Action | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(every open gate of the request, the ones the decision names)."""
    item = _item(ops, request_id)
    _of_request(item, [vendor] if vendor else None, "vendor")
    gates = ops.ledger.open_approvals(request_id)
    chosen = [
        g
        for g in gates
        if (vendor is None or g["vendor"] == vendor) and (action is None or g["action"] == action.value)
    ]
    if not chosen:
        which = " ".join(x for x in (vendor, action.value if action else None) if x) or "action"
        raise StateConflict(
            f"request {request_id} has no {which} awaiting approval (status {item.get('status')}); "
            "GET /requests/{id} shows each vendor action's state"
        )
    return gates, chosen


def _answered(ops: Ops, token: str, decision: str, said: str) -> bool:
    """Send the decision to the workflow; False when the token is no longer waiting (timed out, already
    answered, execution stopped): then nothing is recorded."""
    errors = ops.sfn.exceptions
    try:
        if decision == "approved":
            ops.sfn.send_task_success(taskToken=token, output=said)
        else:
            ops.sfn.send_task_failure(taskToken=token, error="ApprovalDenied", cause=said)
    except (errors.TaskTimedOut, errors.InvalidToken, errors.TaskDoesNotExist):
        return False
    return True


def _decide(
    ops: Ops,
    request_id: str,
    decision: str,
    vendor: str | None,
    action: Action | None,
    principal: str,
    reason: str | None,
) -> dict[str, Any]:
    _subject_free(ops, request_id, reason)
    gates, chosen = _gates(ops, request_id, vendor, action)
    now = ops.now()
    # What the workflow receives (the approval lands in the outcome; a denial's cause in the Catch): the
    # approver's principal, the time and the checked reason.
    said = json.dumps({"by": principal, "at": iso_z(now), "reason": reason})
    done: list[dict[str, Any]] = []
    open_left = len(gates)
    for gate in chosen:
        ops.ledger.deciding(gate, decision, by=principal, reason=reason)
        answered = _answered(ops, str(gate["token"]), decision, said)
        open_left -= 1  # answered now, or no longer waiting at all
        if not answered:
            ops.ledger.expired(gate)
            continue
        try:
            ops.ledger.decided(gate, decision, by=principal, reason=reason, still_open=open_left)
        except Exception as exc:  # the workflow has resumed: the decision stands (noted on the gate before)
            log.error("ledger not updated after a decision", extra={"error": type(exc).__name__})
        done.append({"vendor": gate["vendor"], "action": gate["action"]})
        _emit(
            ops,
            decision,
            {
                "request_id": request_id,
                "vendor": gate["vendor"],
                "action": gate["action"],
                "by": principal,
                "at": iso_z(now),
            },
        )
    if not done:
        raise StateConflict(
            f"request {request_id}: the approval gate is no longer waiting (it timed out at the deadline, was "
            "answered already, or the request was cancelled); nothing was recorded"
        )
    return {"request_id": request_id, "decision": decision, "by": principal, "actions": done}


def approve(ops: Ops, request_id: str, body: Decision, *, principal: str) -> dict[str, Any]:
    """POST /requests/{id}/approve: resume each matching gate; recorded only once the workflow resumed."""
    return _decide(ops, request_id, "approved", body.vendor, body.action, principal, body.reason)


def deny(ops: Ops, request_id: str, body: Denial, *, principal: str) -> dict[str, Any]:
    """POST /requests/{id}/deny: the branch ends `denied` with the reason (a decision, not a failure)."""
    return _decide(ops, request_id, "denied", body.vendor, body.action, principal, body.reason)


# --- retrying ---------------------------------------------------------------------------------------------

RETRYABLE = ("failed", "denied")  # withheld erasures are failed (ErasureWithheld)


def retry(ops: Ops, request_id: str, body: RetryBody, *, principal: str) -> dict[str, Any]:
    """POST /requests/{id}/retry: a new execution runs only what failed, was withheld or denied, under the
    same request id, receipt date and deadline; completed actions are never run again."""
    item = _item(ops, request_id)
    _of_request(item, body.vendors, "vendors")
    status = str(item.get("status"))
    if status in RUNNING:
        raise StateConflict(f"request {request_id} is still {status}; retry it once it has finished")
    if status == "cancelled":
        raise StateConflict(f"request {request_id} was cancelled; a cancelled request is final, submit a new one")
    attempt = int(item.get("attempt") or 1)
    manifest = ops.store.load_attempt_manifest(request_id, attempt) or ops.store.load_manifest(request_id)
    if manifest is None:
        raise StateConflict(f"request {request_id} has no manifest yet; nothing to retry")
    try:
        stored = ops.store.load_request(request_id)
    except RequestNotFound:
        raise StateConflict(
            f"request {request_id}: its request data has expired (only the proof is kept); submit a new request"
        ) from None
    wanted = set(body.vendors) if body.vendors else None
    rerun: dict[str, list[Action]] = {}
    for o in manifest.outcomes:
        if o.status in RETRYABLE and (wanted is None or o.vendor in wanted):
            rerun.setdefault(o.vendor, []).append(o.action)
    # Every action done but the access package failed: the retry runs no vendor branch at all (an empty Map)
    # and only builds the package again, from the outcomes already recorded.
    package_only = not rerun and wanted is None and manifest.package is not None and manifest.package.status == "failed"
    if not rerun and not package_only:
        raise StateConflict(
            f"request {request_id}: nothing to retry (no vendor action failed, was withheld or denied"
            + (" among the vendors named" if wanted else "")
            + "); completed actions are never run again"
        )
    asked = {p.vendor: p.actions for p in stored.plan}
    plan = [
        VendorPlan(vendor=v, actions=asked.get(v, actions), run=sorted(actions, key=lambda a: a != Action.EXPORT))
        for v, actions in sorted(rerun.items())
    ]
    next_attempt = attempt + 1
    name = _execution_name(request_id, next_attempt)
    actions = [f"{p.vendor}/{a.value}" for p in plan for a in p.run]
    if not ops.ledger.claim_attempt(request_id, next_attempt, name, by=principal, actions=actions, status=status):
        raise StateConflict(f"request {request_id} changed meanwhile (another retry or cancel); read it again")
    deadline = datetime.fromisoformat(item["deadline"]) if isinstance(item.get("deadline"), str) else stored.deadline
    execution = ExecutionInput(
        request_id=request_id,
        received_at=stored.received_at,
        deadline=deadline,
        plan=plan,
        skipped=[],
        dry_run=stored.dry_run,
        approval=ops.approval_gate,
        attempt=next_attempt,
    )
    try:
        arn = ops.sfn.start_execution(
            stateMachineArn=ops.state_machine_arn, name=name, input=execution.model_dump_json()
        )["executionArn"]
    except Exception:
        ops.ledger.release_attempt(request_id, next_attempt, status)
        raise
    return {"request_id": request_id, "attempt": next_attempt, "execution_arn": arn, "actions": actions}


# --- cancelling -------------------------------------------------------------------------------------------


def _so_far(ops: Ops, request_id: str, item: dict[str, Any], attempt: int, now: datetime) -> list[ActionOutcome]:
    """What each vendor action of this attempt had reached when it was cancelled. A retry ran only some
    actions (its attempts entry lists them): the others keep what the earlier attempts recorded."""
    run: set[str] | None = None
    if attempt > 1:
        entry: dict[str, Any] = next((a for a in item.get("attempts") or [] if a.get("attempt") == attempt), {})
        run = set(entry.get("actions") or [])
    outcomes: list[ActionOutcome] = []
    for key, state in sorted(item.items()):
        if not key.startswith("action#") or not isinstance(state, dict):
            continue
        vendor, action = str(state.get("vendor")), Action(str(state.get("action")))
        if run is not None and f"{vendor}/{action.value}" not in run:
            continue
        if state.get("state") == "skipped":
            outcomes.append(ActionOutcome(vendor=vendor, action=action, status="skipped", reason=state.get("reason")))
            continue
        recorded = ops.store.get_json(outcome_key(request_id, vendor, action.value))
        if isinstance(recorded, dict) and recorded.get("attempt", 1) == attempt:
            outcomes.append(ActionOutcome.model_validate(recorded))
            continue
        submitted = ops.store.get_json(submission_key(request_id, vendor, action.value, attempt)) or {}
        job_ids = [a["job_id"] for a in submitted.get("attempts") or [] if a.get("job_id")]
        if job_ids:
            reason = (
                f"cancelled after the vendor job was submitted ({', '.join(job_ids)}): a vendor job cannot be "
                "withdrawn, the vendor may still complete it"
            )
        else:
            reason = "cancelled before anything was sent to the vendor"
        outcomes.append(
            ActionOutcome(
                vendor=vendor,
                action=action,
                status="cancelled",
                job_id=job_ids[-1] if job_ids else None,
                job_ids=job_ids,
                reason=reason,
                attempt=attempt,
                completed_at=now,
            )
        )
    return outcomes


def cancel(ops: Ops, request_id: str, body: CancelBody, *, principal: str) -> dict[str, Any]:
    """POST /requests/{id}/cancel: stop the running execution and write a `cancelled` manifest with the
    outcomes so far; vendor jobs already submitted are listed as such (they cannot be withdrawn)."""
    from core.tasks import earlier_outcomes, merge_attempts, summarise

    item = _item(ops, request_id)
    status = str(item.get("status"))
    if status in FINISHED:
        raise StateConflict(f"request {request_id} has finished (status {status}); there is nothing to cancel")
    _subject_free(ops, request_id, body.reason)
    attempt = int(item.get("attempt") or 1)
    arn = execution_arn(ops.state_machine_arn, _execution_name(request_id, attempt))
    try:
        found = ops.sfn.describe_execution(executionArn=arn)
    except ops.sfn.exceptions.ExecutionDoesNotExist:
        found = None
    if found is not None and found["status"] == "SUCCEEDED":
        raise StateConflict(f"request {request_id} has just finished; there is nothing to cancel")
    if found is not None and found["status"] == "RUNNING":
        # The cause is fixed wording: it stays in the execution history.
        ops.sfn.stop_execution(executionArn=arn, error="Cancelled", cause="cancelled through the dsrflow API")
    now = ops.now()
    outcomes = merge_attempts(
        earlier_outcomes(ops.store, request_id, attempt), _so_far(ops, request_id, item, attempt, now), attempt
    )
    counts, _ = summarise(outcomes)
    # An earlier attempt's access package still exists (this attempt's Package step never ran to Finalize):
    # the cancelled manifest keeps pointing at it, so GET /requests/{id}/package still serves it.
    previous = (
        (ops.store.load_attempt_manifest(request_id, attempt - 1) or ops.store.load_manifest(request_id))
        if attempt > 1
        else None
    )
    deadline = datetime.fromisoformat(item["deadline"])
    original = item.get("original_deadline")
    manifest = Manifest(
        request_id=request_id,
        status="cancelled",
        dry_run=bool(item.get("dry_run")),
        received_at=datetime.fromisoformat(item["received_at"]),
        deadline=deadline,
        original_deadline=datetime.fromisoformat(original) if isinstance(original, str) else None,
        attempt=attempt,
        cancelled_by=principal,
        finished_at=now,
        within_deadline=now <= deadline,
        counts=counts,
        outcomes=outcomes,
        manifest_key=manifest_key(request_id),
        proof_key=proof_key(request_id),
        package=previous.package if previous is not None else None,
    )
    ops.store.put_manifest(manifest)
    ops.ledger.cancelled(manifest, by=principal, reason=body.reason)
    delivered = _emit(
        ops,
        "cancelled",
        {
            "request_id": request_id,
            "by": principal,
            "at": iso_z(now),
            "manifest": {"bucket": ops.store.bucket, "key": manifest.manifest_key},
        },
    )
    return {"request_id": request_id, "status": "cancelled", "manifest": manifest.summary(), "event": delivered}


# --- extending --------------------------------------------------------------------------------------------


def extend(ops: Ops, request_id: str, body: Extension, *, principal: str) -> dict[str, Any]:
    """POST /requests/{id}/extend: GDPR Art. 12(3) allows two further months (60 days here) in total, decided
    and told to the subject within the first month, i.e. before the original deadline."""
    item = _item(ops, request_id)
    status = str(item.get("status"))
    if status in ("completed", "cancelled"):
        raise StateConflict(f"request {request_id} is {status}; its deadline no longer runs")
    _subject_free(ops, request_id, body.reason)
    original = datetime.fromisoformat(str(item.get("original_deadline") or item["deadline"]))
    now = ops.now()
    if now >= original:
        raise StateConflict(
            f"request {request_id}: an extension must be decided before the original deadline "
            f"({iso_z(original)}, GDPR Art. 12(3): within one month of receipt); it has passed"
        )
    already = int(item.get("extended_days") or 0)
    if len(item.get("extensions") or []) >= MAX_EXTENSIONS:
        raise StateConflict(
            f"request {request_id}: its deadline was already extended {MAX_EXTENSIONS} times, the most dsrflow "
            "allows (each extension should cover what is needed)"
        )
    total = already + body.days
    if total > MAX_EXTENSION_DAYS:
        raise StateConflict(
            f"request {request_id}: GDPR Art. 12(3) allows at most {MAX_EXTENSION_DAYS} days of extension in "
            f"total; {already} already granted, {MAX_EXTENSION_DAYS - already} left"
        )
    deadline = original + timedelta(days=total)
    if not ops.ledger.extend(
        request_id, days=body.days, total=total, deadline=deadline, original=original, by=principal, reason=body.reason
    ):
        raise StateConflict(f"request {request_id}: another extension landed meanwhile; read it again")
    delivered = _emit(
        ops,
        "deadline_extended",
        {
            "request_id": request_id,
            "deadline": iso_z(deadline),
            "original_deadline": iso_z(original),
            "extended_days": total,
            "by": principal,
        },
    )
    return {
        "request_id": request_id,
        "deadline": iso_z(deadline),
        "original_deadline": iso_z(original),
        "extended_days": total,
        "event": delivered,
    }


__all__ = [
    "Ops",
    "NotFound",
    "StateConflict",
    "AuditUnavailable",
    "Decision",
    "Denial",
    "RetryBody",
    "CancelBody",
    "Extension",
    "describe",
    "package",
    "list_requests",
    "audit",
    "approve",
    "deny",
    "retry",
    "cancel",
    "extend",
]
