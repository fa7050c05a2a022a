"""Voyado Elevate 3 (formerly Apptus eSales 3): GDPR export and removal jobs (VENDORS.md section 1).

    POST {prefix}/event-data/create-export-customer-job?customerKey=   -> {"jid", "status": "created"}
    POST {prefix}/event-data/create-remove-customer-job?customerKey=   -> {"jid", "status": "started" | "created"}
    GET  {prefix}/event-data/job-status?jid=                           -> {"jid", "status"}
    GET  {prefix}/event-data/export-customer-job-result?jid=           -> application/zip, streamed, single-shot

Jobs wait until the day after submission and then work on archived data (a 5-day archive window), so the
schedule looks first after 5 days and then twice a day. The download is single-shot: the vendor removes the
job once a download completes, so the archive is handed over as one verified stream and a later GET is
reported as "already downloaded or removed" (the export must then be requested again).

Kept records: a jid enters a Job, a reason or an archive name only when it matches `job_id_pattern` (the jid
format is undocumented; the documented examples and the simulator are UUIDs), a status word only when it is
one of `statuses`. Anything else Elevate says (error bodies, odd words, content types) goes to the error's
`detail` or `ctx.vendor_said`. Both create calls are flagged `creates_job` (never blindly retried), the
removal `destructive` (refused in a dry run). Elevate has no read-only customer lookup, so `dry_run` proves
only the credentials, with a job-status probe for the nil jid.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, cast

from pydantic import SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

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
from core.errors import DETAIL_LIMIT, ArchiveInvalid, UnsupportedAction, VendorError, cap
from core.safe import UNDOCUMENTED, holds_subject, safe_id, safe_word, shown_word

# The vendor HTTP client (core.http, requests) is imported in the methods that call the vendor: intake and
# bulk_item load this module only to ask the class what a subject lacks (cannot_act_on), and never call it.
if TYPE_CHECKING:
    import requests

    from core.http import VendorHttp

CHUNK_SIZE = 256 * 1024
# A JSON status document where a zip was expected is short; never read more than this of it.
JSON_ANSWER_LIMIT = 64 * 1024
ZIP_TYPES = frozenset({"application/zip", "application/x-zip-compressed", "application/octet-stream"})

STATUSES = frozenset({"created", "started", "waiting", "running", "done", "not_found", "error"})
# Undocumented format (the documented examples and the simulator use UUIDs): a conservative id alphabet.
JID_PATTERN = r"[0-9A-Za-z][0-9A-Za-z_-]{7,63}"
# A jid no job has: job-status answers it with not_found, which proves the credentials and touches nothing.
NIL_JID = "00000000-0000-0000-0000-000000000000"

PENDING = {
    "created": "is created and queued",
    "started": "is started",
    "waiting": "is waiting (Elevate starts every job the day after it was created)",
    "running": "is running over archived data (plan 5-7 days from submission)",
}
DONE = "done"
FAILED = {
    "not_found": "the vendor has no job with that id (expired, already downloaded, or never created)",
    "error": "the vendor could not complete the job",
}
DRY_RUN_VERIFIED = (
    "credentials accepted by Elevate; Elevate offers no read-only customer lookup, so whether it holds data "
    "for this customer key is not known until the export"
)


class ElevateCredentials(Credentials):
    """Either `api_key` (v2, header `Api-Key`) or `username` + `password` (v1 clusters, HTTP basic auth)."""

    api_key: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    api_prefix: str = "/api/v2"

    @field_validator("api_key", "username", "password")
    @classmethod
    def _not_blank(cls, value: Any) -> Any:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if raw is not None and not raw.strip():
            raise PydanticCustomError("blank", "must not be empty")
        return value

    @field_validator("api_prefix")
    @classmethod
    def _path_prefix(cls, value: str) -> str:
        if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+/?", value):
            raise PydanticCustomError("api_prefix", "must be a URL path such as /api/v2 or /api/v1")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_auth_mode(self) -> ElevateCredentials:
        # Raised as a ValidationError carrying the field's location, so parse_credentials names the field
        # (a plain ValueError here would have an empty location and be reported as "(secret)").
        basic = self.username is not None or self.password is not None
        problem: tuple[str, str] | None = None
        if self.api_key is not None and basic:
            problem = ("api_key", "cannot be combined with username/password: choose one auth mode")
        elif self.api_key is None and not basic:
            problem = ("api_key", "or username and password must be given (Api-Key or v1 basic auth)")
        elif basic and self.username is None:
            problem = ("username", "is needed with password for basic auth")
        elif basic and self.password is None:
            problem = ("password", "is needed with username for basic auth")
        if problem is not None:
            field, message = problem
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [InitErrorDetails(type=PydanticCustomError("auth_mode", message), loc=(field,), input=None)],
            )
        return self


def _short(jid: str) -> str:
    return f"{jid[:8]}…"


def _kind_of(content_type: str) -> str:
    """A fixed description of a content type that is not a zip (the raw value is kept privately)."""
    if content_type in ("text/html", "application/xhtml+xml"):
        return "an HTML page"
    if content_type.startswith("text/"):
        return "a text document"
    return "an unexpected content type"


class ElevateConnector:
    name: ClassVar[str] = "elevate"
    actions: ClassVar[frozenset[Action]] = frozenset({Action.EXPORT, Action.ERASE})
    # Waiting until the next day plus the 5-day archive window: nothing to see before day 5, then twice a day.
    schedule: ClassVar[Schedule] = Schedule(
        first_check=timedelta(days=5), interval=timedelta(hours=12), deadline=timedelta(days=14)
    )
    credentials_model: ClassVar[type[Credentials]] = ElevateCredentials
    statuses: ClassVar[frozenset[str]] = STATUSES
    job_id_pattern: ClassVar[str] = JID_PATTERN
    native_dry_run: ClassVar[frozenset[Action]] = frozenset()

    def __init__(self, credentials: ElevateCredentials | dict[str, Any] | str, http: VendorHttp | None = None):
        from core.http import VendorHttp

        if not isinstance(credentials, ElevateCredentials):
            credentials = parse_credentials(self.name, ElevateCredentials, credentials)
        creds: ElevateCredentials = credentials
        self.credentials = creds
        self.http = http or VendorHttp(self.name)
        self._url = f"{creds.base_url}{creds.api_prefix}/event-data"
        if creds.api_key is not None:
            self._auth: dict[str, Any] = {"headers": {"Api-Key": creds.api_key.get_secret_value()}}
        else:  # the model guarantees username and password together
            assert creds.username is not None and creds.password is not None
            self._auth = {"auth": (creds.username, creds.password.get_secret_value())}

    # --- protocol -----------------------------------------------------------------------------------
    @classmethod
    def cannot_act_on(cls, subject: Subject, action: Action) -> str | None:
        if action not in cls.actions:
            return f"{action.value} is not offered by Elevate"
        if not (subject.customer_key or "").strip():
            return "no customer_key given (Elevate identifies people by customerKey)"
        return None

    def submit(self, action: Action, subject: Subject, ctx: JobContext) -> Job:
        reason = self.cannot_act_on(subject, action)
        if reason is not None:
            raise UnsupportedAction(f"{self.name}: cannot submit {action.value}: {reason}")
        key = subject.customer_key.strip()  # type: ignore[union-attr]  # cannot_act_on refused a missing key
        endpoint = "create-export-customer-job" if action is Action.EXPORT else "create-remove-customer-job"
        answer = self._job_answer(
            "POST",
            endpoint,
            {"customerKey": key},
            call=endpoint,
            hide=key,
            creates_job=True,
            destructive=action is Action.ERASE,
        )
        jid = safe_id(answer.get("jid"), JID_PATTERN)
        if jid is None or holds_subject(jid, subject):
            raise VendorError(
                self.name,
                f"{endpoint} answered a job id that is not in Elevate's documented format; a job may have been "
                "created: ask Elevate before requesting it again",
                detail=f"jid: {_text(answer.get('jid'))}",
                acted=True,
            )
        raw = answer["status"]
        word = ctx.documented_word(raw, STATUSES, "job-status")
        if word in FAILED:
            raise VendorError(
                self.name, f"{action.value} job {_short(jid)} was refused: reports {shown_word(word, STATUSES)}"
            )
        # Export answers "created"; removal "started" (older docs) or "created" (newer docs). Anything else
        # is left to `check`, which fails it.
        return new_job(self, action, ctx, jid)

    def check(self, job: Job, ctx: JobContext) -> Progress:
        jid = self._jid(job)
        key = (ctx.subject.customer_key or "").strip() or None
        raw = self._job_answer("GET", "job-status", {"jid": jid}, call="job-status", hide=key)["status"]
        word = ctx.documented_word(raw, STATUSES, "job-status")
        what = f"{self.name}: job {_short(jid)}"
        if word == DONE:
            done = "export ready to download" if job.action is Action.EXPORT else "customer data removed"
            return Progress.ready(f"{what} is done ({done})", vendor_status=word)
        if word in FAILED:
            return Progress.failed(f"{what} reports {shown_word(word, STATUSES)}: {FAILED[word]}", vendor_status=word)
        if word not in PENDING:
            return Progress.failed(f"{what} reports {UNDOCUMENTED}; treated as failed")
        if ctx.now > job.deadline_at:
            return Progress.deadline_exceeded(
                f"{what} is still {shown_word(word, STATUSES)} past its deadline {iso_z(job.deadline_at)} "
                f"(DeadlineExceeded after {job.checks} checks); ask Elevate about the {job.action.value} job "
                "or request it again",
                vendor_status=word,
            )
        next_at = self.schedule.next_check_at(job, ctx.now)
        return Progress.pending(next_at, f"{what} {PENDING[word]}", vendor_status=word)

    def collect(self, job: Job, ctx: JobContext) -> list[Archive]:
        from core.http import checked_chunks, content_length

        if job.action is Action.ERASE:
            return []  # a removal job leaves nothing to download
        jid = self._jid(job)
        gone = (
            f"the export of job {_short(jid)} was already downloaded or removed by the vendor (Elevate allows "
            "one download, within about a week of done); request the export again"
        )
        try:
            response = self._call(
                "GET",
                "export-customer-job-result",
                {"jid": jid},
                call="export download",
                hide=(ctx.subject.customer_key or "").strip() or None,
                stream=True,
                # Content-Length must count the bytes we read, so no transfer compression.
                headers={"Accept-Encoding": "identity"},
            )
        except VendorError as exc:
            if exc.status_code in (404, 410):
                raise VendorError(self.name, gone, exc.status_code, detail=exc.detail) from None
            raise
        raw_type = response.headers.get("Content-Type", "")
        content_type = raw_type.split(";")[0].strip().lower()
        if content_type.endswith("json"):
            # Not an archive: a status document (this is how "no such job" can come back with HTTP 200).
            status = self._read_status(response, jid)
            if safe_word(status, STATUSES) == "not_found":
                raise VendorError(self.name, gone, response.status_code)
            raise VendorError(
                self.name,
                f"download of job {_short(jid)} answered a status document "
                f"({shown_word(status, STATUSES)}) instead of a zip",
                response.status_code,
                detail=f"status: {_text(status)}",
            )
        if content_type and content_type not in ZIP_TYPES:
            # Closing without reading leaves the single-shot download unconsumed.
            response.close()
            raise ArchiveInvalid(
                f"{self.name}: download of job {_short(jid)} answered {_kind_of(content_type)} instead of a "
                "zip; nothing was read, so the job can still be downloaded",
                detail=f"Content-Type: {_text(raw_type)}",
            )
        length = content_length(response)
        return [
            Archive(
                name=f"elevate-export-{jid}.zip",  # jid matched JID_PATTERN: a safe key segment
                content_type="application/zip",
                chunks=checked_chunks(
                    response,
                    f"{self.name}: download of export job {_short(jid)}",
                    length,
                    CHUNK_SIZE,
                    "Retry soon: a cut-off download is usually repeatable, a completed one is not",
                ),
                length=length,
                close=response.close,
                kind="zip",
            )
        ]

    def dry_run(self, action: Action, subject: Subject, ctx: JobContext) -> DryRunPlan:
        """The removal's plan. The only read-only call Elevate offers is job-status: asked for the nil jid it
        answers not_found with HTTP 200, which proves the credentials (401/403 is VendorAuthError)."""
        reason = self.cannot_act_on(subject, action)
        if reason is not None:
            raise UnsupportedAction(f"{self.name}: cannot plan {action.value}: {reason}")
        if action is not Action.ERASE:
            raise UnsupportedAction(f"{self.name}: {action.value} changes nothing at Elevate; it needs no dry run")
        raw = self._job_answer("GET", "job-status", {"jid": NIL_JID}, call="job-status")["status"]
        ctx.documented_word(raw, STATUSES, "job-status")
        prefix = self.credentials.api_prefix
        return DryRunPlan(
            call=f"POST {prefix}/event-data/create-remove-customer-job?customerKey={{customerKey}}",
            verified=DRY_RUN_VERIFIED,
            subject_found=None,
        )

    # --- helpers ------------------------------------------------------------------------------------
    def _args(self, hide: str | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Auth, extra headers, and what the client masks in errors (the customer key, our secrets)."""
        extra_headers = kwargs.pop("headers", {})
        auth = dict(self._auth)
        auth["headers"] = {**auth.get("headers", {}), **extra_headers}
        # No redirects: an Elevate API call has no reason to leave the cluster (the client refuses them too).
        return {**auth, **kwargs, "allow_redirects": False, "hide": tuple(self._secrets(hide))}

    def _call(
        self, method: str, endpoint: str, params: dict[str, str], *, call: str, hide: str | None = None, **kwargs: Any
    ) -> requests.Response:
        response = self.http.request(
            method, f"{self._url}/{endpoint}", call=call, params=params, **self._args(hide, kwargs)
        )
        if response.is_redirect or 300 <= response.status_code < 400:
            # Defence in depth: VendorHttp refuses redirects itself; a stand-in client might not.
            response.close()
            raise VendorError(
                self.name,
                f"{call} answered a redirect (HTTP {response.status_code}), not followed so the "
                "credentials stay with Elevate; check base_url and api_prefix",
                response.status_code,
            )
        return response

    def _job_answer(
        self, method: str, endpoint: str, params: dict[str, str], *, call: str, hide: str | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """The JSON answer of a job call (the client caps its size): a dict whose `status` is a non-empty
        string. The jid is the caller's to validate."""
        body = self.http.json(method, f"{self._url}/{endpoint}", call=call, params=params, **self._args(hide, kwargs))
        if not isinstance(body, dict) or not isinstance(body.get("status"), str) or not body["status"]:
            raise VendorError(self.name, f"{call} answered without a usable status", detail=f"answer: {_text(body)}")
        return body

    def _read_status(self, response: requests.Response, jid: str) -> str:
        answer = _bounded_json(response)
        if isinstance(answer, dict) and isinstance(answer.get("status"), str):
            return cast(str, answer["status"])  # checked just above
        raise VendorError(
            self.name,
            f"download of job {_short(jid)} answered JSON instead of a zip, without a status",
            response.status_code,
        )

    def _jid(self, job: Job) -> str:
        if job.vendor != self.name or not job.job_id:
            raise VendorError(self.name, f"the {job.action.value} job has no Elevate jid")
        jid = safe_id(job.job_id, JID_PATTERN)
        if jid is None:
            raise VendorError(self.name, f"the {job.action.value} job holds a jid that is not in Elevate's format")
        return jid

    def _secrets(self, customer_key: str | None) -> list[str]:
        values = [customer_key] if customer_key else []
        if self.credentials.api_key is not None:
            values.append(self.credentials.api_key.get_secret_value())
        if self.credentials.password is not None:
            values.append(self.credentials.password.get_secret_value())
        return values


_NOT_JSON: Any = object()


def _bounded_json(response: requests.Response) -> Any:
    """The body parsed as JSON, reading at most JSON_ANSWER_LIMIT bytes; _NOT_JSON when it is not JSON (or
    longer: no status document is). Always closes the response."""
    import requests

    body = b""
    try:
        for chunk in response.iter_content(64 * 1024):
            body += chunk
            if len(body) > JSON_ANSWER_LIMIT:
                return _NOT_JSON
        return json.loads(body)
    except (requests.RequestException, ValueError):
        return _NOT_JSON
    finally:
        response.close()


def _text(value: Any) -> str:
    """A vendor value as private detail text, capped."""
    return cap(value if isinstance(value, str) else json.dumps(value, default=str), DETAIL_LIMIT)
