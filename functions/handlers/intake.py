"""Trigger: API Gateway (POST /requests, GET /requests/{id}) and CRM events from EventBridge.

API callers get 202 with the request id and deadline, 200 for a duplicate, 400 naming the wrong field.
An EventBridge event that does not validate raises: Lambda retries the asynchronous invocation twice, then its
on-failure destination (the intake dead-letter queue, alarmed) keeps the event. Nothing is lost.
The request id of an event defaults to the event id, so a redelivered event starts nothing new.
"""

from __future__ import annotations

import re

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.utilities.parser import envelopes, parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from core import intake
from core.clock import utcnow
from core.models import REQUEST_ID_PATTERN
from core.runtime import client, runtime
from core.settings import settings
from handlers.observability import logger, tracer

app = APIGatewayRestResolver()


def _accept(request, source: str) -> intake.Accepted:
    s = settings()
    if not s.state_machine_arn:
        raise intake.DsrError("STATE_MACHINE_ARN is not set for the intake function")
    result = intake.accept(
        request,
        source=source,
        store=runtime().store,
        sfn=client("stepfunctions"),
        state_machine_arn=s.state_machine_arn,
        enabled_vendors=sorted(s.vendor_secrets),
        now=utcnow(),
    )
    logger.info("request accepted", extra={"request_id": result.request_id, "status": result.status})
    return result


def _json(status: int, body: object) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


@app.post("/requests")
def create_request() -> Response:
    try:
        body = app.current_event.json_body
    except ValueError:
        return _json(400, {"error": "invalid request", "fields": [{"field": "(body)", "message": "is not JSON"}]})
    request = intake.parse_request(body)
    result = _accept(request, "api")
    return _json(202 if result.status == "accepted" else 200, result.model_dump(mode="json"))


@app.get("/requests/<request_id>")
def get_request(request_id: str) -> Response:
    if not re.fullmatch(REQUEST_ID_PATTERN, request_id):
        raise intake.InvalidRequest([{"field": "request_id", "message": "letters, digits, - and _ only (max 80)"}])
    s = settings()
    found = intake.describe(
        request_id, store=runtime().store, sfn=client("stepfunctions"), state_machine_arn=s.state_machine_arn or ""
    )
    if found is None:
        return _json(404, {"error": f"no request with id {request_id}"})
    return _json(200, found)


@app.exception_handler(intake.InvalidRequest)
def invalid_request(exc: intake.InvalidRequest) -> Response:
    logger.info("request rejected", extra={"fields": [f["field"] for f in exc.fields]})
    return _json(400, {"error": "invalid request", "fields": exc.fields})


def _from_eventbridge(event: dict) -> dict:
    try:
        detail = parse(event=event, model=dict, envelope=envelopes.EventBridgeEnvelope)
    except ValidationError as exc:
        raise intake.InvalidRequest(intake.field_errors(exc)) from None
    envelope = EventBridgeModel.model_validate(event)
    if isinstance(detail, dict):
        # Redeliveries of one event carry the same id: derive the request id from it. The CRM emitted the
        # event when it received the request, so the GDPR clock starts then, not when intake ran.
        detail = {
            "request_id": f"evt-{envelope.id}",
            "received_at": envelope.time.isoformat(),
            **{k: v for k, v in detail.items() if v is not None},
        }
    request = intake.parse_request(detail, prefix="detail.")
    return _accept(request, "eventbridge").model_dump(mode="json")


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def handler(event: dict, context: LambdaContext) -> dict:
    if "detail-type" in event and "detail" in event:
        return _from_eventbridge(event)
    return app.resolve(event, context)
