"""Trigger: the API (API Gateway REST proxy, IAM-authenticated) and CRM events from EventBridge.

The API's routes are declared once, here: Powertools' resolver with `enable_validation=True` reads each route's
typed parameters (path, query, body: the pydantic models of core.models and core.operations) to validate the
request and to write the OpenAPI document (`docs/openapi.json`, handlers/openapi.py; API Gateway's methods and
request validation are derived from that document, infra/triggers.py).

    POST /requests                      a new request: 202 (its id and deadline), 200 for a duplicate
    POST /requests/bulk                 a batch, JSON Lines (core/bulk.py): 202 (its batch id), 200 the same again
    GET  /requests                      list (?status=&due_before=&limit=&next_token=)
    GET  /requests/{request_id}         status, manifest, the ledger's view
    GET  /requests/{request_id}/audit   the audit trail (?limit=&next_token=)
    GET  /requests/{request_id}/package a link to the access package (minted per call, audited; 503 if not)
    POST /requests/{request_id}/approve | deny | retry (202) | cancel | extend   the operator's actions

Bad input is a 4xx naming what is wrong and never its value: 400 `{"error": "invalid request", "fields":
[{"field", "message"}]}` (a malformed body, a wrong field, parameter or request id), 404 `{"error": "not found"}`,
409 `{"error": "conflict"}` (a request id used by a different request; a state that does not allow the action),
503 `{"error": "unavailable"}` (the audit trail could not record a package link: none was handed out).
Only an internal failure (S3, KMS, Step Functions, DynamoDB, configuration) answers 500, with a body that names
nothing from the request.

Every body is read by `core.intake.parse_object` before Powertools sees it (`_JsonBody`): at most 64 KiB, valid
base64 and UTF-8, nested at most 32 deep, strict JSON, an object with valid-text keys, whatever the Content-Type
says. POST /requests declares its body as `DsrRequest` for the document but validates it itself, as the
EventBridge path does (`core.intake.parse_request`: "now" bounds received_at, the request id must not hold the
subject's identifiers, the same messages); the operator's bodies are validated by Powertools.

An EventBridge event that does not validate raises InvalidRequest (a reused request id: RequestConflict):
Lambda retries the asynchronous invocation twice, then its on-failure destination (the intake dead-letter
queue, alarmed) keeps the event. Nothing is lost. The request id of an event defaults to the event id, so a
redelivered event starts nothing new.
"""

from __future__ import annotations

import base64
import binascii
import re
import traceback
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import ForbiddenError, ServiceError
from aws_lambda_powertools.event_handler.middlewares.openapi_validation import OpenAPIRequestValidationMiddleware
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.event_handler.types import EventHandlerInstance
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import AwareDatetime, BaseModel, BeforeValidator, Field, SkipValidation

from connectors import registry
from core import bulk, intake, operations
from core.clock import utcnow
from core.model import Model
from core.models import RECEIVED_AT_FORMAT, REQUEST_ID_PATTERN, DsrRequest, parse_received_at
from core.operations import DEFAULT_PAGE, MAX_PAGE, CancelBody, Decision, Denial, Extension, RetryBody
from core.settings import settings
from handlers.observability import logger, metrics, tracer
from handlers.runtime import client, ops, runtime

app = APIGatewayRestResolver(enable_validation=True)
# EventBridge ids are UUIDs; the request id "evt-<id>" must stay a valid execution name (80 characters).
_EVENT_ID = re.compile(r"[A-Za-z0-9_-]{1,76}")
MAX_NEXT_TOKEN_CHARS = 2048


class _JsonBody(OpenAPIRequestValidationMiddleware):
    """Powertools' request validation, reading the body through core.intake.parse_object instead of
    `event.json_body` (which would answer 500 for a body that is not base64 or UTF-8, or nested deep enough to
    exhaust the recursion limit, and which follows the Content-Type to form and multipart parsers).

    Powertools runs its request validation before any other middleware, so this replaces it rather than adding
    one: `app._request_validation_middleware` is where the resolver keeps it (Powertools 3.x; pinned by
    tests/unit/test_api_routes.py)."""

    def _get_body(self, app: EventHandlerInstance) -> dict[str, Any] | None:  # type: ignore[override]  # None: no body
        event = app.current_event
        return intake.parse_object(event.body, bool(event.is_base64_encoded))


app._request_validation_middleware = _JsonBody()  # type: ignore[no-untyped-call]  # Powertools' __init__

# --- what the routes declare (the OpenAPI document is generated from it) ------------------------------------

RequestStatus = Literal[
    "received", "running", "awaiting_approval", "completed", "partially_failed", "failed", "cancelled"
]
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)


def _rfc3339(value: Any) -> Any:
    if isinstance(value, str) and not _RFC3339.fullmatch(value):
        raise ValueError(RECEIVED_AT_FORMAT)
    return value


RequestId = Annotated[
    str,
    Path(pattern=REQUEST_ID_PATTERN, description="The request id: 1-80 letters, digits, - and _"),
]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"Page size, 1-{MAX_PAGE}")]
NextToken = Annotated[
    str | None,
    Query(min_length=1, max_length=MAX_NEXT_TOKEN_CHARS, description="The previous page's next_token"),
]


class FieldProblem(Model):
    field: str
    message: str


class InvalidBody(Model):
    """400: what is wrong, field by field (never the value sent)."""

    error: Literal["invalid request"]
    fields: list[FieldProblem]


class Problem(Model):
    """404 (`not found`), 409 (`conflict`), 503 (`unavailable`), 500 (`internal error`)."""

    error: str
    message: str


class PackageLink(Model):
    """200 of GET /requests/{id}/package: a presigned GET of the access package (a bearer credential until
    `expires_at`: hand it only to whom may read the subject's data), with what to verify the download against."""

    request_id: str
    url: str = Field(description="Presigned S3 GET (SigV4), minted for this call; never stored nor logged")
    expires_at: str = Field(description="When the link stops working (RFC 3339, UTC)")
    bytes: int = Field(description="The zip's size")
    sha256: str = Field(description="The zip's sha256, hex")
    files: int | None = Field(default=None, description="Files in the zip, index.html and manifest.json included")


_ERRORS: dict[int, OpenAPIResponse] = {
    400: {
        "description": "A malformed body, a wrong field, parameter or request id",
        "content": {"application/json": {"model": InvalidBody}},
    },
    404: {"description": "No request with this id", "content": {"application/json": {"model": Problem}}},
    409: {
        "description": "The request's state does not allow it (or the request id is used by another request)",
        "content": {"application/json": {"model": Problem}},
    },
    503: {
        "description": "The audit trail could not record it, so nothing was handed out; safe to retry",
        "content": {"application/json": {"model": Problem}},
    },
    500: {
        "description": "An internal failure; nothing from the request is named; safe to retry",
        "content": {"application/json": {"model": Problem}},
    },
}
_ANY_OBJECT: dict[str, Any] = {"application/json": {"schema": {"type": "object"}}}


def _responses(ok: Mapping[int, str], *errors: int, model: type[BaseModel] | None = None) -> dict[int, OpenAPIResponse]:
    content: Any = {"application/json": {"model": model}} if model is not None else _ANY_OBJECT
    out: dict[int, OpenAPIResponse] = {code: {"description": text, "content": content} for code, text in ok.items()}
    return out | {code: _ERRORS[code] for code in (400, *errors, 500)}


def _json(status: int, body: object) -> Response[object]:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


def _principal() -> str:
    """The caller's IAM principal (API Gateway's IAM authorization puts it in the request context)."""
    arn = app.current_event.request_context.identity.user_arn
    if not arn:
        raise ForbiddenError("the API takes SigV4-signed (IAM) callers only")
    return arn


# --- routes -------------------------------------------------------------------------------------------------


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
        connector_class=registry.connector_class,
        approval=s.require_approval,
        events=client("events") if s.event_bus_name else None,
        event_bus_name=s.event_bus_name,
    )
    logger.info("request accepted", extra={"request_id": result.request_id, "status": result.status})
    if result.status == "accepted":  # a new request (a duplicate starts nothing): the dashboard's "received"
        metrics.add_metric(name="RequestsReceived", unit=MetricUnit.Count, value=1)
    return result


@app.post(
    "/requests",
    summary="Submit a data-subject request",
    status_code=202,
    responses=_responses(
        {202: "Accepted: started", 200: "A duplicate: already known, nothing new started"}, 409, model=intake.Accepted
    ),
)
def create_request(
    # Declared as DsrRequest (the document shows its schema); SkipValidation: checked below, as the EventBridge
    # path checks it, so what arrives here is the JSON object parse_object read.
    request: Annotated[
        DsrRequest, SkipValidation(), Body(title="DsrRequest", description="The request (core/models.py DsrRequest)")
    ],
) -> Response[object]:
    now = utcnow()
    checked = intake.parse_request(request, now=now)
    result = _accept(checked, "api", now)
    return _json(202 if result.status == "accepted" else 200, result.model_dump(mode="json"))


def _bulk_body() -> bytes:
    """POST /requests/bulk's body as bytes: JSON Lines, at most core.bulk.MAX_BATCH_BYTES (read here, not by
    parse_object: it is not one JSON object)."""
    event = app.current_event
    body = event.body or ""
    too_large = intake.InvalidRequest(
        [{"field": "(body)", "message": f"is larger than {bulk.MAX_BATCH_BYTES // (1024 * 1024)} MiB"}]
    )
    if len(body) > 4 * (bulk.MAX_BATCH_BYTES // 3 + 1):
        raise too_large
    if event.is_base64_encoded:
        try:
            raw = base64.b64decode(body, validate=True)
        except (ValueError, binascii.Error):
            raise intake.InvalidRequest([{"field": "(body)", "message": "is not valid base64"}]) from None
    else:
        try:
            raw = body.encode("utf-8")
        except UnicodeEncodeError:
            raise intake.InvalidRequest([{"field": "(body)", "message": "is not valid UTF-8"}]) from None
    if len(raw) > bulk.MAX_BATCH_BYTES:
        raise too_large
    return raw


@app.post(
    "/requests/bulk",
    summary="Submit a batch of requests: JSON Lines, one POST /requests body per line",
    description="The body is JSON Lines (one DsrRequest object per line, at most "
    f"{bulk.MAX_BATCH_LINES} lines and {bulk.MAX_BATCH_BYTES // (1024 * 1024)} MiB). 202 starts the batch; "
    "200: the same body again, nothing new started. A bad line is reported in the result file "
    "(result_key), not here; 400 only when the body as a whole is unusable.",
    status_code=202,
    responses=_responses({202: "Accepted: the batch started", 200: "The same batch again"}, model=bulk.BatchStarted),
)
def create_bulk() -> Response[object]:
    s = settings()
    if not s.bulk_state_machine_arn or not s.bulk_mac_key_id:
        raise intake.DsrError("BULK_STATE_MACHINE_ARN or BULK_MAC_KEY_ID is not set for the intake function")
    raw = _bulk_body()
    try:
        refs = bulk.index_lines(raw)
    except bulk.InvalidBatch as exc:
        raise intake.InvalidRequest(
            [{"field": "(body)", "message": exc.message.removeprefix("bulk: the batch ")}]
        ) from None
    batch_id = bulk.derive_id(bulk.kms_mac(client("kms"), s.bulk_mac_key_id), "api", raw)
    key = f"{bulk.API_PREFIX}{batch_id}.jsonl"
    client("s3").put_object(
        Bucket=s.archive_bucket,
        Key=key,
        Body=raw,
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=s.archive_kms_key_id,
        ContentType="application/x-ndjson",
    )
    started = bulk.start_batch(
        client("stepfunctions"), s.bulk_state_machine_arn, batch_id, s.archive_bucket, key, s.bulk_max_concurrency
    )
    logger.info("bulk batch accepted", extra={"batch_id": batch_id, "lines": len(refs), "started": started})
    answer = bulk.BatchStarted(
        batch_id=batch_id,
        status="accepted" if started else "duplicate",
        execution_arn=bulk.batch_execution_arn(s.bulk_state_machine_arn, batch_id),
        lines=len(refs),
        result_key=bulk.result_key(batch_id),
    )
    return _json(202 if started else 200, answer.model_dump(mode="json"))


@app.get("/requests", summary="List requests", responses=_responses({200: "A page of requests"}))
def list_requests(
    status: Annotated[RequestStatus | None, Query(description="Only requests in this status")] = None,
    due_before: Annotated[
        AwareDatetime | None,
        BeforeValidator(_rfc3339),
        Query(description="Only requests due before this RFC 3339 date-time"),
    ] = None,
    limit: Limit = DEFAULT_PAGE,
    next_token: NextToken = None,
) -> Response[object]:
    page = operations.list_requests(ops(), status=status, due_before=due_before, limit=limit, next_token=next_token)
    return _json(200, page)


@app.get("/requests/<request_id>", summary="A request's status", responses=_responses({200: "The request"}, 404))
def get_request(request_id: RequestId) -> Response[object]:
    return _json(200, operations.describe(ops(), request_id))


@app.get(
    "/requests/<request_id>/audit",
    summary="A request's audit trail",
    responses=_responses({200: "A page of audit events"}, 404),
)
def get_audit(request_id: RequestId, limit: Limit = DEFAULT_PAGE, next_token: NextToken = None) -> Response[object]:
    return _json(200, operations.audit(ops(), request_id, limit=limit, next_token=next_token))


@app.get(
    "/requests/<request_id>/package",
    summary="A link to a request's access package (minted per call, audited)",
    responses=_responses({200: "A presigned link, valid until expires_at"}, 404, 409, 503, model=PackageLink)
    | {
        404: {
            "description": "No request with this id, or it has no access package (none was built, or it expired "
            "with the request data)",
            "content": {"application/json": {"model": Problem}},
        },
        409: {
            "description": "The request is still running: its package is built once its exports finish",
            "content": {"application/json": {"model": Problem}},
        },
    },
)
def get_package(request_id: RequestId) -> Response[object]:
    return _json(200, operations.package(ops(), request_id, principal=_principal()))


_ACTION_ERRORS = (404, 409)


@app.post(
    "/requests/<request_id>/approve",
    summary="Approve what awaits approval (all, or one vendor action)",
    responses=_responses({200: "Approved"}, *_ACTION_ERRORS),
)
def approve(
    request_id: RequestId, body: Annotated[Decision, Body(default_factory=Decision, description="Optional")]
) -> Response[object]:
    return _json(200, operations.approve(ops(), request_id, body, principal=_principal()))


@app.post(
    "/requests/<request_id>/deny",
    summary="Deny what awaits approval (all, or one vendor action)",
    responses=_responses({200: "Denied"}, *_ACTION_ERRORS),
)
def deny(request_id: RequestId, body: Annotated[Denial, Body()]) -> Response[object]:
    return _json(200, operations.deny(ops(), request_id, body, principal=_principal()))


@app.post(
    "/requests/<request_id>/retry",
    summary="Re-run what failed, was withheld or denied",
    status_code=202,
    responses=_responses({202: "Retry started"}, *_ACTION_ERRORS),
)
def retry(
    request_id: RequestId, body: Annotated[RetryBody, Body(default_factory=RetryBody, description="Optional")]
) -> Response[object]:
    return _json(202, operations.retry(ops(), request_id, body, principal=_principal()))


@app.post(
    "/requests/<request_id>/cancel",
    summary="Cancel a request that has not finished",
    responses=_responses({200: "Cancelled"}, *_ACTION_ERRORS),
)
def cancel(
    request_id: RequestId, body: Annotated[CancelBody, Body(default_factory=CancelBody, description="Optional")]
) -> Response[object]:
    return _json(200, operations.cancel(ops(), request_id, body, principal=_principal()))


@app.post(
    "/requests/<request_id>/extend",
    summary="Extend the deadline (GDPR Art. 12(3): at most 60 days in all)",
    responses=_responses({200: "Extended"}, *_ACTION_ERRORS),
)
def extend(request_id: RequestId, body: Annotated[Extension, Body()]) -> Response[object]:
    return _json(200, operations.extend(ops(), request_id, body, principal=_principal()))


# --- answers ------------------------------------------------------------------------------------------------

_WHERE = ("body", "query", "path", "header", "cookie")


def _problems(errors: Sequence[Any]) -> list[dict[str, str]] | None:
    """Powertools' validation errors as the 400's fields, or None when one is about the response (ours)."""
    located: list[dict[str, Any]] = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        if not loc or loc[0] not in _WHERE:
            return None
        msg = err.get("msg", "is not valid")
        if loc == ("body",) and err.get("type") == "missing":
            msg = "must be a JSON object"  # no body where one is required
        located.append({"loc": loc[1:], "msg": msg})
    return intake.error_fields(located)


@app.exception_handler(RequestValidationError)  # type: ignore[untyped-decorator]  # unannotated in Powertools
def invalid_parameters(exc: RequestValidationError) -> Response[object]:
    fields = _problems(exc.errors())
    if fields is None:  # a response that does not match its declaration: ours to fix, not the caller's
        return _internal_error(exc)
    logger.info("request rejected", extra={"fields": [f["field"] for f in fields]})
    return _json(400, {"error": "invalid request", "fields": fields})


@app.exception_handler(intake.InvalidRequest)  # type: ignore[untyped-decorator]  # idem
def invalid_request(exc: intake.InvalidRequest) -> Response[object]:
    logger.info("request rejected", extra={"fields": [f["field"] for f in exc.fields]})
    return _json(400, {"error": "invalid request", "fields": exc.fields})


@app.exception_handler(intake.RequestConflict)  # type: ignore[untyped-decorator]  # idem
def conflict(exc: intake.RequestConflict) -> Response[object]:
    logger.info("request id conflict", extra={"request_id": exc.request_id})
    return _json(409, {"error": "conflict", "message": exc.message})


@app.exception_handler(operations.NotFound)  # type: ignore[untyped-decorator]  # idem
def not_found(exc: operations.NotFound) -> Response[object]:
    return _json(404, {"error": "not found", "message": exc.message})


@app.exception_handler(operations.StateConflict)  # type: ignore[untyped-decorator]  # idem
def state_conflict(exc: operations.StateConflict) -> Response[object]:
    logger.info("state conflict", extra={"error": type(exc).__name__})
    return _json(409, {"error": "conflict", "message": exc.message})


@app.exception_handler(operations.AuditUnavailable)  # type: ignore[untyped-decorator]  # idem
def audit_unavailable(exc: operations.AuditUnavailable) -> Response[object]:
    logger.warning("audit trail unavailable", extra={"error": type(exc).__name__})
    return _json(503, {"error": "unavailable", "message": exc.message})


@app.exception_handler(ServiceError)  # type: ignore[untyped-decorator]  # idem
def service_error(exc: ServiceError) -> Response[object]:
    # Powertools' own answers (404 for an unknown route, ...), kept as Powertools writes them: without this,
    # the catch-all below would turn them into 500s.
    return _json(exc.status_code, {"statusCode": exc.status_code, "message": exc.msg})


@app.exception_handler(Exception)  # type: ignore[untyped-decorator]  # idem
def internal_error(exc: Exception) -> Response[object]:
    return _internal_error(exc)


def _internal_error(exc: Exception) -> Response[object]:
    # Only an internal failure gets here: every problem with the input is an InvalidRequest, a
    # RequestValidationError, NotFound or a conflict. An exception's text may quote the request, so the log
    # carries its type and where it was raised, and the body nothing at all (Powertools would re-raise, or in
    # debug mode answer with the traceback).
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
@metrics.log_metrics
def handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    # API Gateway proxy events have an HTTP method; anything else is treated (and validated) as a CRM event.
    if isinstance(event, dict) and "httpMethod" in event:
        return app.resolve(event, context)
    return _from_eventbridge(event)
