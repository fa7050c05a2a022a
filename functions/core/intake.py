"""Intake: validate, store the subject encrypted, start the workflow once per request id.

What the caller sent is either accepted or refused with a named error, never anything else:
- `InvalidRequest`: a field (or the raw body) is wrong; `fields` names each one, never its value.
- `RequestConflict`: the request id is already stored with a different request.
Any other exception from here is an internal failure (S3, KMS or Step Functions unavailable, a misconfigured
deployment), which is safe to retry: a duplicate delivery starts nothing new.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from core.clock import iso_z, utcnow
from core.domain import Action, Connector
from core.errors import ConfigError, DsrError
from core.events import deliver
from core.ledger import Ledger
from core.model import Model
from core.models import (
    MAX_BODY_BYTES,
    MAX_NESTING,
    ApprovalGate,
    DsrRequest,
    ExecutionInput,
    Skipped,
    StoredRequest,
    VendorPlan,
    deadline_for,
    is_text,
)
from core.safe import holds_subject
from core.store import Store

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_stepfunctions import SFNClient

MAX_FIELD_ERRORS = 20  # a 400 body stays small whatever the caller sent
# A location part the error may name: our field names, and the caller's unknown keys when they look like names.
_SAFE_LOC = re.compile(r"[A-Za-z0-9_-]{1,64}")
_JSON_TOKEN = re.compile(r'[\[\]{}"\\]')


class InvalidRequest(DsrError):
    """The request body or event detail does not validate; `fields` says which field and why."""

    def __init__(self, fields: list[dict[str, str]]):
        names = ", ".join(f["field"] for f in fields)
        super().__init__(f"invalid request: {names}")
        self.fields = fields


class RequestConflict(DsrError):
    """The request id is already used by a different request (another subject, other actions...). Nothing is
    started and the first request stays as stored: the caller must choose another id."""

    def __init__(self, request_id: str):
        super().__init__(f"request id {request_id} is already used by a different request; choose another id")
        self.request_id = request_id


def _invalid(field: str, message: str) -> InvalidRequest:
    return InvalidRequest([{"field": field, "message": message}])


# --- raw input ----------------------------------------------------------------------------------------------


def _nested_too_deeply(text: str, limit: int = MAX_NESTING) -> bool:
    """Whether JSON text nests objects/arrays deeper than `limit`, without parsing it (linear, no recursion)."""
    depth, in_string, escaped_at = 0, False, -1
    for token in _JSON_TOKEN.finditer(text):
        at, char = token.start(), token.group()
        if at == escaped_at:
            continue
        if in_string:
            if char == "\\":
                escaped_at = at + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _structure_problem(value: Any, where: str, prefix: str, limit: int = MAX_NESTING) -> dict[str, str] | None:
    """What pydantic cannot report itself for a parsed value (an EventBridge detail arrives parsed): nesting
    deeper than `limit`, or a key that is not valid text (pydantic cannot even read one with a lone surrogate).
    Iterative, so depth costs no recursion."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        field = f"{prefix}{path}" if path else where
        if depth > limit:
            return {"field": where, "message": f"is nested too deeply (more than {MAX_NESTING} levels)"}
        if isinstance(node, dict):
            if not all(isinstance(key, str) and is_text(key) for key in node):
                return {"field": field, "message": "has a field name that is not valid text"}
            items = [(_loc(key), child) for key, child in node.items()]
        else:
            items = [(str(i), child) for i, child in enumerate(node)]
        stack.extend(
            (child, depth + 1, f"{path}.{name}" if path else name)
            for name, child in items
            if isinstance(child, (dict, list))
        )
    return None


def _no_constant(name: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


def parse_body(body: Any, base64_encoded: bool = False) -> Any:
    """The API body as a JSON value. The bytes are checked before parsing: at most 64 KiB, UTF-8, nested at
    most 32 deep, strict JSON (no NaN/Infinity). InvalidRequest on field "(body)" otherwise."""
    if body is None or body == "":
        raise _invalid("(body)", "must be a JSON object")
    if not isinstance(body, str):
        raise _invalid("(body)", "is not JSON")
    too_large = _invalid("(body)", f"is larger than {MAX_BODY_BYTES // 1024} KiB")
    if base64_encoded:
        if len(body) > 4 * (MAX_BODY_BYTES // 3 + 1):  # decoding cannot give 64 KiB or less
            raise too_large
        try:
            raw = base64.b64decode(body, validate=True)
        except (ValueError, binascii.Error):
            raise _invalid("(body)", "is not valid base64") from None
    else:
        if len(body) > MAX_BODY_BYTES:  # every character is at least one byte
            raise too_large
        try:
            raw = body.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate in the event's own text
            raise _invalid("(body)", "is not valid UTF-8") from None
    if len(raw) > MAX_BODY_BYTES:
        raise too_large
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid("(body)", "is not valid UTF-8") from None
    if _nested_too_deeply(text):
        raise _invalid("(body)", f"is nested too deeply (more than {MAX_NESTING} levels)")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # RecursionError: a backstop, the scan above already refuses depth
        raise _invalid("(body)", "is not JSON") from None


def parse_object(body: Any, base64_encoded: bool = False) -> dict[str, Any] | None:
    """An API body that must be a JSON object: None when the request has no body (the route decides whether
    that is allowed), else `parse_body`'s checks, then an object whose keys are all valid text. InvalidRequest
    on field "(body)" otherwise. Every route's body is read through here (handlers/intake.py)."""
    if body is None or body == "":
        return None
    value = parse_body(body, base64_encoded)
    if not isinstance(value, dict):
        raise _invalid("(body)", "must be a JSON object")
    problem = _structure_problem(value, "(body)", "")
    if problem is not None:
        raise InvalidRequest([problem])
    return value


def _loc(part: Any) -> str:
    if isinstance(part, int):
        return str(part)
    # An unknown key is named only when it looks like a name: it may be anything the caller wrote.
    return part if isinstance(part, str) and _SAFE_LOC.fullmatch(part) else "(unknown field)"


def field_errors(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """Pydantic errors as [{"field": "subject.email", "message": ...}], without the offending values."""
    return error_fields(exc.errors(include_input=False, include_url=False), prefix)


def error_fields(errors: Iterable[Mapping[str, Any]], prefix: str = "") -> list[dict[str, str]]:
    """Pydantic-style errors (their "loc" and "msg" only: never "input") as [{"field", "message"}]; the API's
    routes use it for what Powertools' validation found (handlers/intake.py)."""
    out = []
    for err in list(errors)[:MAX_FIELD_ERRORS]:
        loc = ".".join(_loc(p) for p in err["loc"] if p not in ("function-after", "[key]")) or "(body)"
        message = str(err["msg"]).removeprefix("Value error, ")
        out.append({"field": f"{prefix}{loc}", "message": message})
    return out


def parse_request(raw: Any, prefix: str = "", now: datetime | None = None) -> DsrRequest:
    """Validate a request (API body, EventBridge detail, CLI); `now` bounds received_at (default: the clock)."""
    where = prefix.rstrip(".") or "(body)"
    if not isinstance(raw, dict):
        raise _invalid(where, "must be a JSON object")
    problem = _structure_problem(raw, where, prefix)
    if problem is not None:
        raise InvalidRequest([problem])
    try:
        request = DsrRequest.model_validate(raw, context={"now": now or utcnow()})
    except ValidationError as exc:
        raise InvalidRequest(field_errors(exc, prefix)) from None
    if request.request_id and holds_subject(request.request_id, request.subject):
        # The id is the execution's name: it sits in the history (90 days) and in every record, unmasked.
        raise _invalid(f"{prefix}request_id", "must not contain the subject's identifiers (it is kept in every record)")
    return request


# --- planning -------------------------------------------------------------------------------------------------


def plan(
    request: DsrRequest,
    enabled: list[str],
    source: Literal["api", "eventbridge", "cli", "bulk"],  # StoredRequest.source
    now: datetime,
    prefix: str = "",
    *,
    connector_class: Callable[[str], type[Connector]],
) -> StoredRequest:
    """Normalise a request: id, deadline, and per vendor what will run or why it is skipped.

    `connector_class` looks a vendor's connector class up by name (the handler passes
    `connectors.registry.connector_class`: core never imports connectors).

    InvalidRequest when a vendor the request names is not enabled in this deployment, or when no vendor can act
    on anything (each lacks the identifier it needs): an execution that could only skip is not started.
    """
    if not enabled:
        raise ConfigError("dsrflow", "VENDOR_SECRETS", "names no vendor")
    if request.vendors is not None:
        known = ", ".join(sorted(enabled))
        unknown = [
            {"field": f"{prefix}vendors.{i}", "message": f"is not a vendor of this deployment (known: {known})"}
            for i, vendor in enumerate(request.vendors)
            if vendor not in enabled
        ]
        if unknown:
            raise InvalidRequest(unknown[:MAX_FIELD_ERRORS])
    request_id = request.request_id or f"dsr-{uuid.uuid4()}"
    received_at = request.received_at or now
    wanted = request.vendors if request.vendors is not None else list(enabled)
    vendors: list[VendorPlan] = []
    skipped: list[Skipped] = []
    for vendor in wanted:
        cls = connector_class(vendor)
        actions: list[Action] = []
        for action in request.actions:
            reason = cls.cannot_act_on(request.subject, action)  # also: an action the vendor lacks
            if reason:
                skipped.append(Skipped(vendor=vendor, action=action, reason=reason))
                continue
            actions.append(action)
        if actions:
            vendors.append(VendorPlan(vendor=vendor, actions=actions))
    if not vendors:
        # The connectors' reasons are fixed wording (which identifier is missing), never a value.
        reasons = list(dict.fromkeys(f"{s.vendor}: {s.reason}" for s in skipped))
        raise _invalid(f"{prefix}subject", "no vendor can act on this subject: " + "; ".join(reasons))
    return StoredRequest(
        request_id=request_id,
        actions=request.actions,
        subject=request.subject,
        justification=request.justification,
        dry_run=request.dry_run,
        received_at=received_at,
        deadline=deadline_for(received_at),
        plan=vendors,
        skipped=skipped,
        source=source,
        fingerprint=request.fingerprint(),
    )


def execution_input(stored: StoredRequest, approval: ApprovalGate = "none") -> ExecutionInput:
    return ExecutionInput(
        request_id=stored.request_id,
        received_at=stored.received_at,
        deadline=stored.deadline,
        plan=stored.plan,
        skipped=stored.skipped,
        dry_run=stored.dry_run,
        approval=approval,
    )


class Accepted(Model):
    request_id: str
    status: str  # "accepted" (new) | "duplicate" (already known: nothing new started)
    execution_arn: str
    deadline: datetime
    vendors: list[dict[str, Any]]
    skipped: list[dict[str, Any]]


def execution_arn(state_machine_arn: str, request_id: str) -> str:
    head, name = state_machine_arn.split(":stateMachine:")
    return f"{head}:execution:{name}:{request_id}"


def accept(
    request: DsrRequest,
    *,
    source: Literal["api", "eventbridge", "cli", "bulk"],
    store: Store,
    sfn: SFNClient,
    state_machine_arn: str,
    enabled_vendors: list[str],
    now: datetime,
    prefix: str = "",
    ledger: Ledger | None = None,
    connector_class: Callable[[str], type[Connector]],
    approval: ApprovalGate = "none",
    events: EventBridgeClient | None = None,
    event_bus_name: str | None = None,
) -> Accepted:
    """Plan, store once, start once. A redelivery of the same request answers "duplicate"; the same id with a
    different request raises RequestConflict; neither replaces the stored subject. A new request enters the
    ledger (status `received`) before its execution starts; a duplicate does not (core/ledger.py)."""
    stored = plan(request, enabled_vendors, source, now, prefix, connector_class=connector_class)
    created = store.create_request(stored)
    if created and ledger is not None:
        ledger.received(stored)  # never raises: a lost write is repaired when finalize writes the manifest
    if not created:
        existing = store.load_request(stored.request_id)
        # Records written before fingerprints existed cannot be compared: taken as the same request.
        if existing.fingerprint is not None and existing.fingerprint != stored.fingerprint:
            raise RequestConflict(stored.request_id)
        stored = existing
    try:
        arn = sfn.start_execution(
            stateMachineArn=state_machine_arn,
            name=stored.request_id,
            input=execution_input(stored, approval).model_dump_json(),
        )["executionArn"]
    except sfn.exceptions.ExecutionAlreadyExists:
        arn = execution_arn(state_machine_arn, stored.request_id)
        started = False
    else:
        started = True
    if started:
        if ledger is not None:
            ledger.started(stored.request_id)
        # After the start, never before: a CRM told "received" can count on the request running.
        deliver(
            events,
            event_bus_name,
            "received",
            {
                "request_id": stored.request_id,
                "received_at": iso_z(stored.received_at),
                "deadline": iso_z(stored.deadline),
                "dry_run": stored.dry_run,
                "source": stored.source,
                "vendors": [p.vendor for p in stored.plan],
                "actions": [a.value for a in stored.actions],
                "approval": approval,
            },
        )
    return _accepted(stored, "accepted" if created else "duplicate", arn)


def _accepted(stored: StoredRequest, status: str, arn: str) -> Accepted:
    return Accepted(
        request_id=stored.request_id,
        status=status,
        execution_arn=arn,
        deadline=stored.deadline,
        vendors=[p.model_dump(mode="json") for p in stored.plan],
        skipped=[s.model_dump(mode="json") for s in stored.skipped],
    )


def describe(
    request_id: str, *, store: Store, sfn: SFNClient, state_machine_arn: str, ledger: Ledger | None = None
) -> dict[str, Any] | None:
    """Status of a request for GET /requests/{id}: the execution, the manifest once written, and the ledger's
    view (overall status, deadline, days left, each vendor action's state; None when there is no ledger item)."""
    try:
        execution = sfn.describe_execution(executionArn=execution_arn(state_machine_arn, request_id))
    except sfn.exceptions.ExecutionDoesNotExist:
        return None
    manifest = store.load_manifest(request_id)
    return {
        "request_id": request_id,
        "execution_status": execution["status"],
        "execution_arn": execution["executionArn"],
        "started_at": execution["startDate"].isoformat(),
        "stopped_at": execution["stopDate"].isoformat() if execution.get("stopDate") else None,
        "manifest": manifest.summary() if manifest else None,
        "ledger": ledger.view(request_id) if ledger is not None else None,
    }
