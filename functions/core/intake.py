"""Intake: validate, store the subject encrypted, start the workflow once per request id."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from connectors import registry
from connectors.base import Action
from core.errors import DsrError
from core.models import DsrRequest, ExecutionInput, Skipped, StoredRequest, VendorPlan, deadline_for
from core.store import Store


def plan(request: DsrRequest, enabled: list[str], source: str, now: datetime) -> StoredRequest:
    """Normalise a request: id, deadline, and per vendor what will run or why it is skipped."""
    request_id = request.request_id or f"dsr-{uuid.uuid4()}"
    received_at = request.received_at or now
    wanted = request.vendors if request.vendors is not None else list(enabled)
    vendors: list[VendorPlan] = []
    skipped: list[Skipped] = []
    for vendor in wanted:
        cls = registry.connector_class(vendor) if vendor in enabled else None
        actions: list[Action] = []
        for action in request.actions:
            if cls is None:
                reason = "not enabled in this deployment (no credentials secret)"
            else:
                reason = cls.cannot_act_on(request.subject, action)  # also: an action the vendor lacks
            if reason:
                skipped.append(Skipped(vendor=vendor, action=action, reason=reason))
                continue
            actions.append(action)
        if actions:
            vendors.append(VendorPlan(vendor=vendor, actions=actions))
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
        source=source,  # type: ignore[arg-type]
    )


def execution_input(stored: StoredRequest) -> ExecutionInput:
    return ExecutionInput(
        request_id=stored.request_id,
        received_at=stored.received_at,
        deadline=stored.deadline,
        vendors=stored.plan,
        skipped=stored.skipped,
    )


class InvalidRequest(DsrError):
    """The request body or event detail does not validate; `fields` says which field and why."""

    def __init__(self, fields: list[dict[str, str]]):
        names = ", ".join(f["field"] for f in fields)
        super().__init__(f"invalid request: {names}")
        self.fields = fields


def field_errors(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """Pydantic errors as [{"field": "subject.email", "message": ...}], without the offending values."""
    out = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"] if p not in ("function-after",)) or "(body)"
        message = err["msg"].removeprefix("Value error, ")
        out.append({"field": f"{prefix}{loc}", "message": message})
    return out


def parse_request(raw: Any, prefix: str = "") -> DsrRequest:
    if not isinstance(raw, dict):
        raise InvalidRequest([{"field": prefix.rstrip(".") or "(body)", "message": "must be a JSON object"}])
    try:
        return DsrRequest.model_validate(raw)
    except ValidationError as exc:
        raise InvalidRequest(field_errors(exc, prefix)) from None


class Accepted(BaseModel):
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
    source: str,
    store: Store,
    sfn: Any,
    state_machine_arn: str,
    enabled_vendors: list[str],
    now: datetime,
) -> Accepted:
    stored = plan(request, enabled_vendors, source, now)
    created = store.create_request(stored)
    if not created:
        # A duplicate delivery: the first stored request wins, so a retry never swaps the subject.
        stored = store.load_request(stored.request_id)
    try:
        arn = sfn.start_execution(
            stateMachineArn=state_machine_arn,
            name=stored.request_id,
            input=execution_input(stored).model_dump_json(),
        )["executionArn"]
    except sfn.exceptions.ExecutionAlreadyExists:
        arn = execution_arn(state_machine_arn, stored.request_id)
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


def describe(request_id: str, *, store: Store, sfn: Any, state_machine_arn: str) -> dict[str, Any] | None:
    """Status of a request for GET /requests/{id}: the execution, and the manifest once written."""
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
    }
