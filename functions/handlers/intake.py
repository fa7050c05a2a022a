"""Trigger: API Gateway (POST /requests, GET /requests/{id}) and CRM events from EventBridge.

API callers get 202 with the request id and deadline, 200 for a duplicate, 400 naming the wrong field (never
its value), 409 when the request id is already used by a different request. Only an internal failure (S3, KMS,
Step Functions, configuration) answers 500, with a body that names nothing from the request.

An EventBridge event that does not validate raises InvalidRequest (a reused request id: RequestConflict):
Lambda retries the asynchronous invocation twice, then its on-failure destination (the intake dead-letter
queue, alarmed) keeps the event. Nothing is lost. The request id of an event defaults to the event id, so a
redelivered event starts nothing new.
"""

from __future__ import annotations

import re
import traceback
from datetime import datetime
from typing import Any, Literal

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import ServiceError
from aws_lambda_powertools.utilities.typing import LambdaContext

from core import intake
from core.clock import utcnow
from core.models import REQUEST_ID_PATTERN, parse_received_at
from core.runtime import client, runtime
from core.settings import settings
from handlers.observability import logger, tracer

app = APIGatewayRestResolver()
# EventBridge ids are UUIDs; the request id "evt-<id>" must stay a valid execution name (80 characters).
_EVENT_ID = re.compile(r"[A-Za-z0-9_-]{1,76}")


def _accept(
    request: intake.DsrRequest, source: Literal["api", "eventbridge"], now: datetime, prefix: str = ""
) -> intake.Accepted:
    s = settings()
    if not s.state_machine_arn:
        raise intake.DsrError("STATE_MACHINE_ARN is not set for the intake function")
    rt = runtime()
    result = intake.accept(
        request,
        source=source,
        store=rt.store,
        sfn=client("stepfunctions"),
        state_machine_arn=s.state_machine_arn,
        enabled_vendors=sorted(s.vendor_secrets),
        now=now,
        prefix=prefix,
        ledger=rt.ledger,
    )
    logger.info("request accepted", extra={"request_id": result.request_id, "status": result.status})
    return result


def _json(status: int, body: object) -> Response[object]:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


@app.post("/requests")
def create_request() -> Response[object]:
    event = app.current_event
    body = intake.parse_body(event.body, bool(event.is_base64_encoded))
    now = utcnow()
    request = intake.parse_request(body, now=now)
    result = _accept(request, "api", now)
    return _json(202 if result.status == "accepted" else 200, result.model_dump(mode="json"))


@app.get("/requests/<request_id>")
def get_request(request_id: str) -> Response[object]:
    if not re.fullmatch(REQUEST_ID_PATTERN, request_id):
        raise intake.InvalidRequest([{"field": "request_id", "message": "letters, digits, - and _ only (max 80)"}])
    s = settings()
    rt = runtime()
    found = intake.describe(
        request_id,
        store=rt.store,
        sfn=client("stepfunctions"),
        state_machine_arn=s.state_machine_arn or "",
        ledger=rt.ledger,
    )
    if found is None:
        return _json(404, {"error": f"no request with id {request_id}"})
    return _json(200, found)


@app.exception_handler(intake.InvalidRequest)  # type: ignore[untyped-decorator]  # unannotated in Powertools
def invalid_request(exc: intake.InvalidRequest) -> Response[object]:
    logger.info("request rejected", extra={"fields": [f["field"] for f in exc.fields]})
    return _json(400, {"error": "invalid request", "fields": exc.fields})


@app.exception_handler(intake.RequestConflict)  # type: ignore[untyped-decorator]  # idem
def conflict(exc: intake.RequestConflict) -> Response[object]:
    logger.info("request id conflict", extra={"request_id": exc.request_id})
    return _json(409, {"error": "conflict", "message": exc.message})


@app.exception_handler(ServiceError)  # type: ignore[untyped-decorator]  # idem
def service_error(exc: ServiceError) -> Response[object]:
    # Powertools' own answers (404 for an unknown route, ...), kept as Powertools writes them: without this,
    # the catch-all below would turn them into 500s.
    return _json(exc.status_code, {"statusCode": exc.status_code, "message": exc.msg})


@app.exception_handler(Exception)  # type: ignore[untyped-decorator]  # idem
def internal_error(exc: Exception) -> Response[object]:
    # Only an internal failure gets here: every problem with the input is an InvalidRequest or RequestConflict.
    # An exception's text may quote the request, so the log carries its type and where it was raised, and the
    # body nothing at all (Powertools would re-raise, or in debug mode answer with the traceback).
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} {frame.name}" if frame else None
    logger.error("intake failed", extra={"error": type(exc).__name__, "where": where})
    return _json(500, {"error": "internal error", "message": "the request was not processed; it is safe to retry"})


def _event_request(event: Any, now: datetime) -> dict[str, Any]:
    """The request an EventBridge event carries: its detail, with the request id and received_at taken from the
    envelope unless the detail gives them. InvalidRequest when the envelope itself is malformed."""
    if not isinstance(event, dict):
        raise intake.InvalidRequest([{"field": "(event)", "message": "must be an EventBridge event object"}])
    problems = []
    event_id, detail = event.get("id"), event.get("detail")
    if not isinstance(event.get("detail-type"), str):
        problems.append({"field": "detail-type", "message": "must be a string"})
    if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
        problems.append(
            {"field": "id", "message": "must be 1-76 letters, digits, - and _ (the request id is evt-<id>)"}
        )
    received_at = ""
    try:
        # The CRM emitted the event when it received the request: the GDPR clock starts then, not when intake ran.
        received_at = parse_received_at(event.get("time"), now).isoformat()
    except ValueError as exc:
        problems.append({"field": "time", "message": str(exc)})
    if not isinstance(detail, dict):
        problems.append({"field": "detail", "message": "must be a JSON object"})
        detail = {}
    if problems:
        raise intake.InvalidRequest(problems)
    # Redeliveries of one event carry the same id and time: the same request id and the same fingerprint.
    return {
        "request_id": f"evt-{event_id}",
        "received_at": received_at,
        **{k: v for k, v in detail.items() if v is not None},
    }


def _from_eventbridge(event: Any) -> dict[str, Any]:
    now = utcnow()
    request = intake.parse_request(_event_request(event, now), prefix="detail.", now=now)
    return _accept(request, "eventbridge", now, prefix="detail.").model_dump(mode="json")


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    # API Gateway proxy events have an HTTP method; anything else is treated (and validated) as a CRM event.
    if isinstance(event, dict) and "httpMethod" in event:
        return app.resolve(event, context)
    return _from_eventbridge(event)
