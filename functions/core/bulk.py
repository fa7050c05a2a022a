"""Bulk intake: one JSON Lines file, one request per line, through the same validation and start as POST /requests.

A batch is one execution of statemachines/bulk.asl.json (a Step Functions Distributed Map):

    prepare   the file (bulk/incoming/<name>.jsonl dropped in the bucket, or bulk/api/<batch>.jsonl written by
              POST /requests/bulk) is indexed: bulk/work/<batch>/index.json lists each non-blank line as
              {"line", "start", "end"} (byte offsets). Numbers only: the Map's items, its child executions' input
              and the execution history never hold a line's text (it holds an email).
    item      one child execution per line (MaxConcurrency: the rate): the line is read back by a ranged GET,
              validated exactly as POST /requests validates a body (core.intake.parse_object, parse_request) and
              started with core.intake.accept. Its row (line number, request id or the fields that are wrong, in
              intake's fixed wording) goes to bulk/work/<batch>/rows/<line>.json.
    finish    bulk/results/<batch>.jsonl: one row per line, in line order; a line whose item step failed
              (counted against ToleratedFailurePercentage) is listed "not processed".

Idempotency: a line without a request id gets one derived from what it asks (DsrRequest.fingerprint, keyed
with the deployment's KMS HMAC key: not guessable from an email), so a re-submitted batch, the same line in
another batch, or two identical lines in one batch start one request; the others answer "already started"
(intake's duplicate detection; within one batch, the first such line is the one listed "started"). A line that reuses a request id for a different request answers "conflict".
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from core.errors import DsrError
from core.intake import Accepted, InvalidRequest, RequestConflict, parse_object, parse_request
from core.model import Model
from core.models import MAX_BODY_BYTES, DsrRequest

BULK_PREFIX = "bulk/"
INCOMING_PREFIX = "bulk/incoming/"  # files put here start a batch (S3 -> EventBridge rule, infra/bulk.py)
API_PREFIX = "bulk/api/"  # POST /requests/bulk bodies (no trigger: the route starts the batch itself)
WORK_PREFIX = "bulk/work/"  # index.json and rows/, per batch
RESULTS_PREFIX = "bulk/results/"  # the result files

MAX_BATCH_BYTES = 5 * 1024 * 1024  # under Lambda's 6 MB synchronous payload, so POST and a dropped file agree
MAX_BATCH_LINES = 10_000
MAX_LINE_BYTES = MAX_BODY_BYTES  # a line is one POST /requests body
ID_CHARS = 26  # base32 characters of the MAC in a derived id (130 bits)
_SAFE_FIELD = re.compile(r"[A-Za-z0-9_.() -]{1,80}")  # intake's names, "(unknown field)" included

Status = Literal["started", "already started", "invalid", "conflict", "not processed"]


class InvalidBatch(DsrError):
    """The batch as a whole is unusable (too large, too many lines, no line at all): nothing is started."""

    def __init__(self, message: str):
        super().__init__(f"bulk: the batch {message}")


class LineRef(Model):
    line: int = Field(ge=1)  # 1-based, physical lines (blank ones count)
    start: int = Field(ge=0)
    end: int = Field(ge=0)  # exclusive


class Item(Model):
    """One Map item as the ASL's ItemSelector builds it: references only."""

    batch_id: str
    bucket: str
    key: str
    line: int = Field(ge=1)
    start: int = Field(ge=0)
    end: int = Field(ge=0)


class FieldError(Model):
    field: str
    message: str


class Row(Model):
    """One line of the result file. Never a value from the line: ids, a status and intake's fixed wording."""

    line: int
    status: Status
    request_id: str | None = None
    errors: list[FieldError] = Field(default_factory=list)


def derive_id(mac: Callable[[bytes], bytes], kind: str, data: bytes) -> str:
    """`bulk-` and 26 base32 characters of the deployment's HMAC over `kind` and `data`: deterministic per
    deployment, and holding nothing that can be traced back to `data` without the key."""
    digest = mac(kind.encode() + b"\n" + data)
    return "bulk-" + base64.b32encode(digest).decode().lower().rstrip("=")[:ID_CHARS]


def index_lines(data: bytes) -> list[LineRef]:
    """Each non-blank line's byte range (a trailing CR is left out). InvalidBatch when the file is larger than
    MAX_BATCH_BYTES, holds more than MAX_BATCH_LINES lines, or none."""
    if len(data) > MAX_BATCH_BYTES:
        raise InvalidBatch(f"is larger than {MAX_BATCH_BYTES // (1024 * 1024)} MiB")
    refs: list[LineRef] = []
    start = 0
    number = 0
    while start < len(data):
        cut = data.find(b"\n", start)
        stop = len(data) if cut < 0 else cut
        number += 1
        end = stop - 1 if stop > start and data[stop - 1 : stop] == b"\r" else stop
        if data[start:end].strip():
            refs.append(LineRef(line=number, start=start, end=end))
            if len(refs) > MAX_BATCH_LINES:
                raise InvalidBatch(f"has more than {MAX_BATCH_LINES} lines")
        start = stop + 1
    if not refs:
        raise InvalidBatch("has no line (one JSON object per line is expected)")
    return refs


def _line_errors(fields: Iterable[dict[str, str]]) -> list[FieldError]:
    """intake's field errors for a line: "(body)" is "(line)" here; a field name that is not one of ours is
    not repeated (intake already names unknown keys only when they look like names)."""
    out = []
    for f in fields:
        name = "(line)" if f["field"] == "(body)" else f["field"]
        out.append(FieldError(field=name if _SAFE_FIELD.fullmatch(name) else "(line)", message=f["message"][:200]))
    return out


def process_line(
    text: bytes,
    line: int,
    *,
    now: datetime,
    mac: Callable[[bytes], bytes],
    accept: Callable[[DsrRequest], Accepted],
) -> Row:
    """Validate one line as POST /requests validates a body, and start it (`accept`: core.intake.accept bound
    to the deployment). A bad line is a row, never an exception; an internal failure (S3, KMS, Step Functions)
    raises, for the workflow to retry."""
    if len(text) > MAX_LINE_BYTES:
        return Row(line=line, status="invalid", errors=[FieldError(field="(line)", message="is larger than 64 KiB")])
    try:
        body = text.decode("utf-8")
    except UnicodeDecodeError:
        return Row(line=line, status="invalid", errors=[FieldError(field="(line)", message="is not valid UTF-8")])
    request: DsrRequest | None = None
    try:
        request = parse_request(parse_object(body), now=now)
        if request.request_id is None:
            derived = derive_id(mac, "request", request.fingerprint().encode())
            request = request.model_copy(update={"request_id": derived})
        accepted = accept(request)
    except InvalidRequest as exc:
        return Row(line=line, status="invalid", errors=_line_errors(exc.fields))
    except RequestConflict:
        assert request is not None
        message = "is already used by a different request; choose another id"
        return Row(
            line=line,
            status="conflict",
            request_id=request.request_id,
            errors=[FieldError(field="request_id", message=message)],
        )
    status: Status = "started" if accepted.status == "accepted" else "already started"
    return Row(line=line, status=status, request_id=accepted.request_id)


def result_rows(refs: Iterable[LineRef], rows: dict[int, Row]) -> list[Row]:
    """Every indexed line in order: its row, or "not processed" where its item step failed.

    Lines of one batch that ask the same request run at once, so which of them started it is a race: one row
    says "started", the others "already started". The file says it in line order, whatever the race: the
    first such line "started", the later ones "already started" (one request was started either way)."""
    out = [rows.get(ref.line) or Row(line=ref.line, status="not processed") for ref in refs]
    started = {row.request_id for row in out if row.status == "started" and row.request_id is not None}
    first: set[str] = set()
    for i, row in enumerate(out):
        if row.request_id is not None and row.request_id in started and row.status in ("started", "already started"):
            status: Status = "already started" if row.request_id in first else "started"
            first.add(row.request_id)
            if status != row.status:
                out[i] = row.model_copy(update={"status": status})
    return out


def summary(rows: Iterable[Row]) -> dict[str, int]:
    counts = {"lines": 0, "started": 0, "already_started": 0, "invalid": 0, "conflict": 0, "not_processed": 0}
    for row in rows:
        counts["lines"] += 1
        counts[row.status.replace(" ", "_")] += 1
    return counts


def as_jsonl(rows: Iterable[Row]) -> bytes:
    return b"".join(row.model_dump_json(exclude_defaults=False).encode() + b"\n" for row in rows)


# --- keys -----------------------------------------------------------------------------------------------------


def index_key(batch_id: str) -> str:
    return f"{WORK_PREFIX}{batch_id}/index.json"


def row_key(batch_id: str, line: int) -> str:
    return f"{WORK_PREFIX}{batch_id}/rows/{line:06d}.json"


def rows_prefix(batch_id: str) -> str:
    return f"{WORK_PREFIX}{batch_id}/rows/"


def result_key(batch_id: str) -> str:
    return f"{RESULTS_PREFIX}{batch_id}.jsonl"


def batch_input(batch_id: str, bucket: str, key: str, max_concurrency: int) -> dict[str, Any]:
    """The bulk execution's input (its name is the batch id): references and the rate, never a line."""
    return {"batch_id": batch_id, "bucket": bucket, "key": key, "max_concurrency": max_concurrency}


def parse_rows(blobs: Iterable[bytes]) -> dict[int, Row]:
    rows = {}
    for blob in blobs:
        row = Row.model_validate(json.loads(blob))
        rows[row.line] = row
    return rows


# --- starting a batch -------------------------------------------------------------------------------------------


def kms_mac(kms: Any, key_id: str) -> Callable[[bytes], bytes]:
    """HMAC-SHA-256 by KMS GenerateMac with the deployment's HMAC key (the key never leaves KMS)."""

    def mac(message: bytes) -> bytes:
        out: bytes = kms.generate_mac(KeyId=key_id, MacAlgorithm="HMAC_SHA_256", Message=message)["Mac"]
        return out

    return mac


class BatchStarted(Model):
    """202 of POST /requests/bulk (200: the same batch again, nothing new started)."""

    batch_id: str
    status: Literal["accepted", "duplicate"]
    execution_arn: str
    lines: int
    result_key: str = Field(description="Where the result file will be (one row per line)")


def start_batch(sfn: Any, state_machine_arn: str, batch_id: str, bucket: str, key: str, max_concurrency: int) -> bool:
    """Start the batch's execution (name = batch id); False when it already exists (nothing new started)."""
    try:
        sfn.start_execution(
            stateMachineArn=state_machine_arn,
            name=batch_id,
            input=json.dumps(batch_input(batch_id, bucket, key, max_concurrency)),
        )
    except sfn.exceptions.ExecutionAlreadyExists:
        return False
    return True


def batch_execution_arn(state_machine_arn: str, batch_id: str) -> str:
    head, name = state_machine_arn.split(":stateMachine:")
    return f"{head}:execution:{name}:{batch_id}"
