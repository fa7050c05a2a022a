"""Bloomreach Engagement: synchronous GDPR calls on the customer data API (VENDORS.md section 2).

    export  submit makes no call: Bloomreach answers export-one at once, and that answer (PII) must not ride
            in the Job through the execution history. check is ready at once; collect POSTs export-one,
            spools the answer (memory, then /tmp), checks `success`, then streams the spooled bytes on.
    erase   submit POSTs anonymize. The vendor queues the work and offers no status endpoint, so
            "accepted by vendor" is the completion we can prove.
    bulk    export_all(BulkExportOptions) streams the whole-project (or one segment's) export.

Bloomreach reports some failures as HTTP 200 with {"success": false, "errors": [...]}: success is HTTP 200
*and* `success: true`, checked before anything is handed on. Customers are identified by `customer_ids`
(registered, cookie, ...), never guessed from an email.

Kept records: Bloomreach has no job ids and no status words (`statuses` is empty, `job_id_pattern` matches
nothing), so reasons and messages are fixed wording; its `errors` text goes to the error's `detail` only.
anonymize is flagged `destructive` (refused in a dry run); `dry_run` probes with export-one (read-only),
streamed and discarded, to say whether the customer exists.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import tempfile
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import IO, TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, SecretStr, StrictInt, field_validator

from connectors.base import (
    Action,
    Archive,
    Credentials,
    DryRunPlan,
    Job,
    JobContext,
    Progress,
    Schedule,
    Subject,
    new_job,
    parse_credentials,
)
from core.clock import iso_z
from core.errors import ArchiveInvalid, ArchiveTransferError, UnsupportedAction, VendorError
from core.model import Model
from core.verify import top_level_summary  # bounded-memory JSON top level; re-exported for callers

# The vendor HTTP client (core.http, requests) is imported in the methods that call the vendor: intake and
# bulk_item load this module only to ask the class what a subject lacks (cannot_act_on), and never call it.
if TYPE_CHECKING:
    import requests

    from core.http import VendorHttp

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
# export-one answers are spooled: in memory up to this size, then in a temp file (Lambda /tmp).
SPOOL_MEMORY_BYTES = 4 * 1024 * 1024
# Lambda's /tmp is 512 MiB by default; refuse clearly before filling it.
EXPORT_ONE_MAX_BYTES = 400 * 1024 * 1024
# A bulk export's error answer is a few hundred bytes; this much of the head is enough to recognise one.
BULK_PEEK_BYTES = 64 * 1024

NO_IDS_REASON = "no customer_ids given (Bloomreach identifies customers by ids such as 'registered')"
NO_CUSTOMER = "customer does not exist"  # Bloomreach's 404 text for export-one / anonymize
ERASE_ACCEPTED = "anonymization accepted by vendor; Bloomreach offers no completion status"
# After an attempt whose answer was lost: the customer is gone now, most likely anonymized by that attempt.
ERASE_ACCEPTED_EARLIER = "anonymized by an earlier attempt whose answer was lost: Bloomreach no longer knows these ids"
ERASE_NO_CUSTOMER = "no data held: Bloomreach has no customer with these ids, so there is nothing to anonymize"
ANONYMIZE_CALL = "POST /data/v2/projects/{projectToken}/customers/anonymize"
DRY_RUN_FOUND = "credentials accepted; the customer exists at Bloomreach"
DRY_RUN_NOT_FOUND = (
    "credentials accepted; Bloomreach has no customer with these ids, so there would be nothing to anonymize"
)
EXPORT_READY = "Bloomreach answers at once: the export is read when the archive is collected"


class BloomreachCredentials(Credentials):
    # The token is a path segment: only the characters real tokens use, so it cannot re-route a call.
    project_token: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+$")
    # Basic auth joins id and secret with ':', so the id cannot contain one.
    api_key_id: str = Field(min_length=1, pattern=r"^[^:\s]+$")
    api_secret: SecretStr = Field(min_length=1)


# --- bulk export body (every documented field) ------------------------------------------------------------


class _Strict(Model):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class IdAttribute(_Strict):
    type: Literal["id"] = "id"
    id: str = Field(min_length=1)


class PropertyAttribute(_Strict):
    type: Literal["property"] = "property"
    property: str = Field(min_length=1)


Attribute = Annotated[IdAttribute | PropertyAttribute, Field(discriminator="type")]


class SomeAttributes(_Strict):
    """Only these columns, in this order (the CSV header follows it)."""

    type: Literal["some"] = "some"
    items: tuple[Attribute, ...] = Field(alias="list", min_length=1)


class AllAttributes(_Strict):
    type: Literal["properties_and_ids"] = "properties_and_ids"


class SegmentFilter(_Strict):
    type: Literal["segment"] = "segment"
    segmentation_id: str = Field(min_length=1)
    segment_index: StrictInt = Field(ge=-1)  # -1: customers in no segment of the segmentation


class AllFilter(_Strict):
    type: Literal["all"] = "all"


# Continent/City (and deeper, e.g. America/Argentina/Buenos_Aires, Etc/GMT+1), or UTC.
_TIMEZONE = re.compile(r"^(UTC|[A-Z][A-Za-z]+(/[A-Za-z0-9][A-Za-z0-9_+-]*)+)$")


class BulkExportOptions(_Strict):
    """The body of `export` (export all customers)."""

    format: Literal["csv", "table_json", "native_json"]  # native_json: what older clients send
    attributes: Annotated[SomeAttributes | AllAttributes, Field(discriminator="type")] = AllAttributes()
    filter: Annotated[SegmentFilter | AllFilter, Field(discriminator="type")] = AllFilter()
    # When filter and attributes are evaluated (unix seconds; the vendor documents int32). None: now.
    execution_time: StrictInt | None = Field(default=None, ge=0, le=2**31 - 1)
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _continent_city(cls, value: str) -> str:
        if not _TIMEZONE.fullmatch(value):
            raise ValueError("must be a tz database name like 'Africa/Lagos' (Continent/City) or 'UTC'")
        return value

    def to_body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --- the connector --------------------------------------------------------------------------------------


class BloomreachConnector:
    name: ClassVar[str] = "bloomreach"
    actions: ClassVar[frozenset[Action]] = frozenset({Action.EXPORT, Action.ERASE})
    # Synchronous vendor: look at once. The deadline only guards a workflow stuck (throttled, paused) for a week.
    # check never answers pending, so later looks do not happen; the slow phase still bounds them by the
    # schedule alone (the execution's history quota, core/history.py): every minute for 10, then daily.
    schedule: ClassVar[Schedule] = Schedule(
        first_check=timedelta(0),
        interval=timedelta(minutes=1),
        slow_after=timedelta(minutes=10),
        slow_interval=timedelta(days=1),
        deadline=timedelta(days=7),
    )
    credentials_model: ClassVar[type[Credentials]] = BloomreachCredentials
    # Synchronous calls: no job ids, no status words. The pattern matches nothing.
    statuses: ClassVar[frozenset[str]] = frozenset()
    job_id_pattern: ClassVar[str] = r"(?!)"
    native_dry_run: ClassVar[frozenset[Action]] = frozenset()

    spool_memory_bytes: int = SPOOL_MEMORY_BYTES
    export_one_max_bytes: int = EXPORT_ONE_MAX_BYTES

    def __init__(self, credentials: BloomreachCredentials | dict[str, Any], http: VendorHttp | None = None):
        from core.http import VendorHttp

        if not isinstance(credentials, BloomreachCredentials):
            credentials = parse_credentials(self.name, BloomreachCredentials, credentials)
        self.credentials: BloomreachCredentials = credentials
        self.http = http or VendorHttp(self.name)
        # Paths hold the project token (part of the secret): the client shows a placeholder instead.
        self.http.redact[f"/projects/{credentials.project_token}/"] = "/projects/{projectToken}/"

    # --- protocol ---------------------------------------------------------------------------------------

    @classmethod
    def cannot_act_on(cls, subject: Subject, action: Action) -> str | None:
        if action not in cls.actions:
            return f"Bloomreach does not offer the '{action.value}' action"
        if not subject.customer_ids:
            return NO_IDS_REASON
        empty = sorted(kind for kind, value in subject.customer_ids.items() if not value.strip())
        if empty:
            return f"customer id(s) {', '.join(repr(k) for k in empty)} are empty"
        return None

    def submit(self, action: Action, subject: Subject, ctx: JobContext) -> Job:
        reason = self.cannot_act_on(subject, action)
        if reason is not None:
            raise UnsupportedAction(f"{self.name}: {reason}")
        if action is Action.EXPORT:
            # No call now: the answer would be the customer's data, and the Job goes into the execution
            # history. collect makes the call and streams the answer straight to the archive store.
            return new_job(self, action, ctx, None)

        try:
            # creates_job: after a timeout the vendor may have anonymized already; a blind in-call retry would
            # then meet "Customer does not exist" and report no data held for a customer it just erased.
            body = self._post_json(
                "anonymize",
                {"customer_ids": dict(subject.customer_ids)},
                call="anonymize",
                destructive=True,
                creates_job=True,
            )
        except VendorError as exc:
            if _customer_missing(exc):
                if ctx.after_uncertain_attempt:
                    log.info("bloomreach: anonymized by the earlier attempt", extra={"vendor": self.name})
                    return new_job(self, action, ctx, None, accepted_earlier=True)
                log.info("bloomreach: no customer to anonymize", extra={"vendor": self.name})
                return new_job(self, action, ctx, None, no_customer=True)
            raise
        self._require_success("anonymize", body)
        log.info("bloomreach: anonymization accepted", extra={"vendor": self.name})
        return new_job(self, action, ctx, None, accepted=True)

    def check(self, job: Job, ctx: JobContext) -> Progress:
        if job.action is Action.ERASE:
            if job.state.get("no_customer"):
                return Progress.ready(ERASE_NO_CUSTOMER)
            if job.state.get("accepted"):
                return Progress.ready(ERASE_ACCEPTED)
            if job.state.get("accepted_earlier"):
                return Progress.ready(ERASE_ACCEPTED_EARLIER)
            return Progress.failed(
                "the erase job holds no record that Bloomreach accepted the anonymization; submit it again"
            )
        # Export is done only once collected; a day without collecting means the workflow stalled.
        if ctx.now > job.deadline_at:
            return Progress.deadline_exceeded(
                f"DeadlineExceeded: the Bloomreach export was not collected before its deadline "
                f"{iso_z(job.deadline_at)}"
            )
        return Progress.ready(EXPORT_READY)

    def collect(self, job: Job, ctx: JobContext) -> list[Archive]:
        if job.action is not Action.EXPORT:
            return []  # anonymization has no deliverable
        reason = self.cannot_act_on(ctx.subject, job.action)
        if reason is not None:
            raise UnsupportedAction(f"{self.name}: {reason}")
        try:
            response = self._post(
                "export-one", {"customer_ids": dict(ctx.subject.customer_ids)}, call="export-one", stream=True
            )
        except VendorError as exc:
            if _customer_missing(exc):
                log.info("bloomreach: no customer with these ids", extra={"vendor": self.name})
                return []  # "no data held": a success with nothing to store
            raise

        spool, size = self._spool(response)
        try:
            # HTTP 200 is not success yet: the body must say `success: true`.
            spool.seek(0)
            try:
                summary = top_level_summary(spool.read)
            except ValueError:
                # Arrived whole but not the documented JSON (a login page, a cut document): nothing is stored.
                raise ArchiveInvalid(
                    f"{self.name}: export-one answered HTTP 200 with a body that is not a JSON object; "
                    "nothing was stored"
                ) from None
            self._require_success("export-one", summary)
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return [
            Archive(
                name="bloomreach-export-one.json",
                content_type="application/json",
                chunks=_read_chunks(spool),
                length=size,  # exactly what was received and checked
                close=spool.close,
                kind="json",
            )
        ]

    def dry_run(self, action: Action, subject: Subject, ctx: JobContext) -> DryRunPlan:
        """The anonymization's plan. export-one is read-only: its answer (the customer's data) is streamed,
        checked for `success: true` with bounded memory and discarded; a 404 "customer does not exist" means
        there would be nothing to anonymize."""
        from core.http import checked_chunks, content_length

        reason = self.cannot_act_on(subject, action)
        if reason is not None:
            raise UnsupportedAction(f"{self.name}: {reason}")
        if action is not Action.ERASE:
            raise UnsupportedAction(f"{self.name}: {action.value} changes nothing at Bloomreach; it needs no dry run")
        try:
            response = self._post(
                "export-one", {"customer_ids": dict(subject.customer_ids)}, call="export-one", stream=True
            )
        except VendorError as exc:
            if _customer_missing(exc):
                return DryRunPlan(call=ANONYMIZE_CALL, verified=DRY_RUN_NOT_FOUND, subject_found=False)
            raise
        try:
            pieces = checked_chunks(response, f"{self.name}: the export-one answer", content_length(response), CHUNK)
            try:
                summary = top_level_summary(_reader(pieces))
            except ValueError:
                raise VendorError(
                    self.name, "export-one answered HTTP 200 with a body that is not a JSON object", 200
                ) from None
        finally:
            response.close()
        self._require_success("export-one", summary)
        return DryRunPlan(call=ANONYMIZE_CALL, verified=DRY_RUN_FOUND, subject_found=True)

    # --- bulk export --------------------------------------------------------------------------------------

    def export_all(self, options: BulkExportOptions) -> Archive:
        """Every customer of the project (or of one segment), streamed: it can be very large."""
        import requests

        from core.http import checked, content_length

        response = self._post("export", options.to_body(), call="bulk export", stream=True)
        try:
            pieces = response.iter_content(CHUNK)
            head, ended = _peek(pieces, BULK_PEEK_BYTES)
            self._check_bulk_head(b"".join(head), ended, options)
        except requests.RequestException:
            response.close()
            raise ArchiveTransferError(f"{self.name}: the bulk export broke off before its first bytes") from None
        except BaseException:
            response.close()
            raise
        log.info(
            "bloomreach: bulk export streaming",
            extra={"vendor": self.name, "format": options.format, "filter": options.filter.type},
        )
        csv = options.format == "csv"
        length = content_length(response)
        return Archive(
            name="bloomreach-export-all." + ("csv" if csv else "json"),
            content_type="text/csv" if csv else "application/json",
            chunks=checked(itertools.chain(head, pieces), f"{self.name}: the bulk export", length),
            length=length,
            close=response.close,
            kind="bytes",  # CSV or a table: no documented envelope to verify
        )

    def _check_bulk_head(self, head: bytes, ended: bool, options: BulkExportOptions) -> None:
        if not head.lstrip().startswith(b"{") or not ended:
            # CSV data, or a body longer than any error answer: data.
            return
        try:
            body = json.loads(head)
        except ValueError:
            if options.format == "csv":
                return  # odd CSV, but CSV: the DPO reads it
            raise VendorError(self.name, "export answered HTTP 200 with a body that is not valid JSON", 200) from None
        if isinstance(body, dict) and ("success" in body or "errors" in body):
            self._require_success("export", body)

    # --- helpers ------------------------------------------------------------------------------------------

    def _url(self, suffix: str) -> str:
        c = self.credentials
        return f"{c.base_url}/data/v2/projects/{c.project_token}/customers/{suffix}"

    def _args(self, body: dict[str, Any]) -> dict[str, Any]:
        c = self.credentials
        # The subject's ids (PII) and our credentials are masked should the vendor echo them in an error.
        ids = tuple((body.get("customer_ids") or {}).values())
        return {
            "json": body,
            "auth": (c.api_key_id, c.api_secret.get_secret_value()),
            "headers": {"Accept": "application/json, text/csv"},
            "hide": (*ids, c.api_key_id, c.api_secret.get_secret_value()),
        }

    def _post(self, suffix: str, body: dict[str, Any], *, call: str, stream: bool = False) -> requests.Response:
        return self.http.request("POST", self._url(suffix), call=call, stream=stream, **self._args(body))

    def _post_json(
        self, suffix: str, body: dict[str, Any], *, call: str, destructive: bool = False, creates_job: bool = False
    ) -> Any:
        """A short JSON answer (the client caps its size)."""
        return self.http.json(
            "POST", self._url(suffix), call=call, destructive=destructive, creates_job=creates_job, **self._args(body)
        )

    def _spool(self, response: requests.Response) -> tuple[IO[bytes], int]:
        from core.http import checked_chunks, content_length

        # Not a with-block: the spool outlives this call (it is the archive handed on), closed by its owner.
        spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=self.spool_memory_bytes)  # noqa: SIM115
        size = 0
        what = f"{self.name}: the export-one answer"
        try:
            for piece in checked_chunks(response, what, content_length(response), CHUNK):
                size += len(piece)
                if size > self.export_one_max_bytes:
                    raise VendorError(
                        self.name,
                        f"the export-one answer exceeds {self.export_one_max_bytes // (1024 * 1024)} MiB, more "
                        f"than can be checked in this function's temporary storage; raise its ephemeral storage",
                    )
                spool.write(piece)
        except BaseException:
            spool.close()
            raise
        finally:
            response.close()
        return spool, size

    def _require_success(self, call: str, body: Any) -> None:
        if isinstance(body, dict) and body.get("success") is True:
            return
        # The vendor's `errors` text may echo the customer: detail only.
        if isinstance(body, dict) and body.get("success") is False:
            raise VendorError(self.name, f"{call} answered HTTP 200 with success false", 200, detail=_errors(body))
        raise VendorError(self.name, f"{call} answered HTTP 200 without 'success: true'", 200, detail=_errors(body))


# --- module helpers ---------------------------------------------------------------------------------------


def _customer_missing(exc: VendorError) -> bool:
    # The client has already read and closed the 404 body; the vendor's words (in `detail`) are what tells
    # "customer does not exist" (no data held) from "project not found" (a configuration error).
    return exc.status_code == 404 and NO_CUSTOMER in (exc.detail or exc.message).lower()


def _errors(body: Any, limit: int = 2000) -> str:
    errors = body.get("errors") if isinstance(body, dict) else None
    if not errors:
        return "the vendor gave no error message"
    if isinstance(errors, (list, tuple)):
        text = "; ".join(e if isinstance(e, str) else json.dumps(e, sort_keys=True) for e in errors)
    else:
        text = errors if isinstance(errors, str) else json.dumps(errors, sort_keys=True)
    text = " ".join(text.split())
    return text[:limit] + ("…" if len(text) > limit else "")


def _reader(pieces: Iterator[bytes]) -> Callable[[int], bytes]:
    """A read(n) over a stream of non-empty pieces (n is a hint; a piece comes whole), for top_level_summary."""
    return lambda _size: next(pieces, b"")


def _read_chunks(fileobj: IO[bytes]) -> Iterator[bytes]:
    while piece := fileobj.read(CHUNK):
        yield piece


def _peek(pieces: Iterator[bytes], limit: int) -> tuple[list[bytes], bool]:
    """The first pieces, up to `limit` bytes, and whether the body ended within them."""
    head: list[bytes] = []
    size = 0
    for piece in pieces:
        head.append(piece)
        size += len(piece)
        if size >= limit:
            return head, False
    return head, True
