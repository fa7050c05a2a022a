"""Voyado Elevate 3 (formerly Apptus eSales 3): GDPR export and removal jobs (VENDORS.md section 1).

    POST {prefix}/event-data/create-export-customer-job?customerKey=   -> {"jid", "status": "created"}
    POST {prefix}/event-data/create-remove-customer-job?customerKey=   -> {"jid", "status": "started" | "created"}
    GET  {prefix}/event-data/job-status?jid=                           -> {"jid", "status"}
    GET  {prefix}/event-data/export-customer-job-result?jid=           -> application/zip, streamed, single-shot

Jobs wait until the day after submission and then work on archived data (a 5-day archive window), so the
schedule looks first after 5 days and then twice a day. The download is single-shot: the vendor removes the
job once a download completes, so the archive is handed over as one verified stream and a later GET is
reported as "already downloaded or removed" (the export must then be requested again).
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any, ClassVar

import requests
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from connectors.base import (
    Action,
    Archive,
    Credentials,
    Job,
    JobContext,
    Progress,
    Schedule,
    Subject,
    new_job,
    parse_credentials,
)
from core.clock import iso_z
from core.errors import UnsupportedAction, VendorError
from core.http import VendorHttp, checked_chunks, content_length

CHUNK_SIZE = 256 * 1024
# A JSON answer where a zip was expected is a short status document; never read more than this of it.
JSON_ANSWER_LIMIT = 64 * 1024
ZIP_TYPES = frozenset({"application/zip", "application/x-zip-compressed", "application/octet-stream"})

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
    def _one_auth_mode(self) -> "ElevateCredentials":
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


class _JobAnswer(BaseModel):
    """What every JSON call answers: a job id and its status word."""

    model_config = ConfigDict(extra="ignore")

    jid: str = Field(min_length=1, max_length=200)
    status: str = Field(min_length=1, max_length=200)


def _short(jid: str) -> str:
    return f"{jid[:8]}…"


def _quote(word: str) -> str:
    return repr(word[:40] + ("…" if len(word) > 40 else ""))


class ElevateConnector:
    name: ClassVar[str] = "elevate"
    actions: ClassVar[frozenset[Action]] = frozenset({Action.EXPORT, Action.ERASE})
    # Waiting until the next day plus the 5-day archive window: nothing to see before day 5, then twice a day.
    schedule: ClassVar[Schedule] = Schedule(
        first_check=timedelta(days=5), interval=timedelta(hours=12), deadline=timedelta(days=14)
    )
    credentials_model: ClassVar[type[Credentials]] = ElevateCredentials

    def __init__(self, credentials: ElevateCredentials | dict | str, http: VendorHttp | None = None):
        if not isinstance(credentials, ElevateCredentials):
            credentials = parse_credentials(self.name, ElevateCredentials, credentials)  # type: ignore[assignment]
        creds: ElevateCredentials = credentials  # type: ignore[assignment]
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

    def start(self, action: Action, subject: Subject, ctx: JobContext) -> Job:
        reason = self.cannot_act_on(subject, action)
        if reason is not None:
            raise UnsupportedAction(f"{self.name}: cannot start {action.value}: {reason}")
        key = subject.customer_key.strip()  # type: ignore[union-attr]
        call = "create-export-customer-job" if action is Action.EXPORT else "create-remove-customer-job"
        answer = self._job_answer("POST", call, {"customerKey": key}, hide=key)
        status = answer.status.lower()
        if status in FAILED:
            raise VendorError(self.name, f"{action.value} job {_short(answer.jid)} was refused: reports {status}")
        # Export answers "created"; removal "started" (older docs) or "created" (newer docs). Anything else
        # is left to `check`, which fails it quoting the word.
        return new_job(self, action, ctx, answer.jid)

    def check(self, job: Job, ctx: JobContext) -> Progress:
        jid = self._jid(job)
        answer = self._job_answer("GET", "job-status", {"jid": jid})
        status = answer.status.lower()
        what = f"{self.name}: job {_short(jid)}"
        if status == DONE:
            done = "export ready to download" if job.action is Action.EXPORT else "customer data removed"
            return Progress.ready(f"{what} is done ({done})", vendor_status=answer.status)
        if status in FAILED:
            return Progress.failed(f"{what} reports {status}: {FAILED[status]}", vendor_status=answer.status)
        if status not in PENDING:
            return Progress.failed(
                f"{what} reports unknown status {_quote(answer.status)}; treated as failed",
                vendor_status=answer.status,
            )
        if ctx.now > job.deadline_at:
            return Progress.failed(
                f"{what} is still {status} past its deadline {iso_z(job.deadline_at)} (DeadlineExceeded after "
                f"{job.checks} checks); ask Elevate about the {job.action.value} job or request it again",
                vendor_status=answer.status,
            )
        return Progress.pending(
            self.schedule.next_check_at(job, ctx.now), f"{what} {PENDING[status]}", vendor_status=answer.status
        )

    def fetch(self, job: Job, ctx: JobContext) -> list[Archive]:
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
                stream=True,
                # Content-Length must count the bytes we read, so no transfer compression.
                headers={"Accept-Encoding": "identity"},
            )
        except VendorError as exc:
            if exc.status_code in (404, 410):
                raise VendorError(self.name, gone, exc.status_code) from None
            raise
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type.endswith("json"):
            # Not an archive: a status document (this is how "no such job" can come back with HTTP 200).
            status = self._read_status(response, jid)
            if status == "not_found":
                raise VendorError(self.name, gone, response.status_code)
            raise VendorError(
                self.name,
                f"download of job {_short(jid)} answered a status document ({_quote(status)}) instead of a zip",
                response.status_code,
            )
        if content_type and content_type not in ZIP_TYPES:
            # Closing without reading leaves the single-shot download unconsumed.
            response.close()
            raise VendorError(
                self.name,
                f"download of job {_short(jid)} answered {_quote(content_type)} instead of a zip",
                response.status_code,
            )
        length = content_length(response)
        return [
            Archive(
                name=f"elevate-export-{_safe(jid)}.zip",
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
            )
        ]

    # --- helpers ------------------------------------------------------------------------------------
    def _call(
        self, method: str, call: str, params: dict[str, str], *, hide: str | None = None, **kwargs: Any
    ) -> requests.Response:
        extra_headers = kwargs.pop("headers", {})
        auth = dict(self._auth)
        auth["headers"] = {**auth.get("headers", {}), **extra_headers}
        # No redirects: an Elevate API call has no reason to leave the cluster. Vendors echo what they were
        # sent, so the client masks the customer key and the secrets in any message.
        response = self.http.request(
            method,
            f"{self._url}/{call}",
            params=params,
            allow_redirects=False,
            hide=tuple(self._secrets(hide)),
            **auth,
            **kwargs,
        )
        if response.is_redirect or 300 <= response.status_code < 400:
            response.close()
            raise VendorError(
                self.name,
                f"{method} {call} answered a redirect (HTTP {response.status_code}), not followed so the "
                "credentials stay with Elevate; check base_url and api_prefix",
                response.status_code,
            )
        return response

    def _job_answer(self, method: str, call: str, params: dict[str, str], *, hide: str | None = None) -> _JobAnswer:
        response = self._call(method, call, params, hide=hide)
        try:
            return _JobAnswer.model_validate(response.json())
        except (ValueError, ValidationError):
            raise VendorError(
                self.name,
                f"{method} {call} answered HTTP {response.status_code} without a usable jid and status",
                response.status_code,
            ) from None
        finally:
            response.close()

    def _read_status(self, response: requests.Response, jid: str) -> str:
        body = b""
        try:
            for chunk in response.iter_content(8192):
                body += chunk
                if len(body) > JSON_ANSWER_LIMIT:
                    break
            answer = json.loads(body)
        except (requests.RequestException, ValueError):
            answer = None
        finally:
            response.close()
        if isinstance(answer, dict) and isinstance(answer.get("status"), str):
            return answer["status"].lower()
        raise VendorError(
            self.name,
            f"download of job {_short(jid)} answered JSON instead of a zip, without a status",
            response.status_code,
        )

    def _jid(self, job: Job) -> str:
        if job.vendor != self.name or not job.job_id:
            raise VendorError(self.name, f"{job.action.value} job has no Elevate jid (vendor {job.vendor!r})")
        return job.job_id

    def _secrets(self, customer_key: str | None) -> list[str]:
        values = [customer_key] if customer_key else []
        if self.credentials.api_key is not None:
            values.append(self.credentials.api_key.get_secret_value())
        if self.credentials.password is not None:
            values.append(self.credentials.password.get_secret_value())
        return values


def _safe(jid: str) -> str:
    """The jid as it may appear in an object key: no path separators or odd characters."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", jid)[:100]
