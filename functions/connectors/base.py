"""The connector protocol: every vendor is one class with the same three verbs.

    start(action, subject, ctx) -> Job        submit; may finish at once (synchronous vendors)
    check(job, ctx)             -> Progress   pending(next_check_at) | ready | failed(reason) | needs_approval
    fetch(job, ctx)             -> [Archive]  byte streams, never a whole body in memory

Handlers never branch on vendor names. A Job travels through the Step Functions execution history, so it
holds only vendor job ids and timestamps: never an email, a customer key or anything from a secret. Where a
connector needs the subject again (check, fetch) the handler passes it in `ctx`, read from the encrypted
bucket by reference.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum
from typing import Any, ClassVar, Iterator, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.clock import scaled, utcnow
from core.errors import ConfigError


class Action(str, Enum):
    EXPORT = "export"
    ERASE = "erase"


class Subject(BaseModel):
    """Who the request is about. PII: stored encrypted in S3, never in the execution history or logs."""

    model_config = ConfigDict(extra="forbid")

    email: str | None = None
    customer_key: str | None = None
    # Vendor-neutral id types (Bloomreach: registered, cookie, ...). Values are PII too.
    customer_ids: dict[str, str] = Field(default_factory=dict)


class JobContext(BaseModel):
    """What a connector may know about the request besides the subject."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    subject: Subject
    justification: str | None = None
    now: datetime = Field(default_factory=utcnow)
    # Qualifio erasure dry run, etc.: connector-specific switches from the request, no PII.
    dry_run: bool = False


class Job(BaseModel):
    """A submitted vendor job. Serialised into the execution history: ids and times only."""

    model_config = ConfigDict(extra="forbid")

    vendor: str
    action: Action
    job_id: str | None = None  # the vendor's id (Elevate jid, Qualifio rule _id); None when synchronous
    submitted_at: datetime
    next_check_at: datetime  # when the workflow's Wait state should hand back to `check`
    deadline_at: datetime  # after this, the job is failed as DeadlineExceeded
    checks: int = 0  # how many times `check` has run
    # Vendor-specific non-PII bookkeeping (archive id, "already complete", ...). JSON-serialisable only.
    state: dict[str, Any] = Field(default_factory=dict)


class Progress(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["pending", "ready", "failed", "needs_approval"]
    next_check_at: datetime | None = None  # set for pending and needs_approval
    reason: str | None = None  # why pending / failed / waiting for approval, in a DPO's words
    vendor_status: str | None = None  # the vendor's own status word, quoted as is

    @classmethod
    def pending(cls, next_check_at: datetime, reason: str, vendor_status: str | None = None) -> "Progress":
        return cls(status="pending", next_check_at=next_check_at, reason=reason, vendor_status=vendor_status)

    @classmethod
    def ready(cls, reason: str | None = None, vendor_status: str | None = None) -> "Progress":
        return cls(status="ready", reason=reason, vendor_status=vendor_status)

    @classmethod
    def failed(cls, reason: str, vendor_status: str | None = None) -> "Progress":
        return cls(status="failed", reason=reason, vendor_status=vendor_status)

    @classmethod
    def needs_approval(cls, next_check_at: datetime, reason: str, vendor_status: str | None = None) -> "Progress":
        return cls(status="needs_approval", next_check_at=next_check_at, reason=reason, vendor_status=vendor_status)


class Archive:
    """One downloadable archive: a name, a content type, and a byte stream read once.

    `length` is the announced Content-Length when the vendor gives one (verified after transfer).
    `close()` releases the underlying connection; callers must call it (or use `with`).
    """

    def __init__(
        self,
        name: str,
        content_type: str,
        chunks: Iterator[bytes],
        length: int | None = None,
        close: Any = None,
    ):
        self.name = name
        self.content_type = content_type
        self.chunks = chunks
        self.length = length
        self._close = close

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Schedule(BaseModel):
    """When a connector looks at a job, in vendor time; the local time-scale shrinks it to real time.

    first_check: after submission; then `interval`, multiplied by `backoff` after each check up to
    `max_interval`; `deadline` caps the whole job.
    """

    model_config = ConfigDict(frozen=True)

    first_check: timedelta
    interval: timedelta
    backoff: float = 1.0
    max_interval: timedelta | None = None
    deadline: timedelta

    def first_check_at(self, submitted_at: datetime) -> datetime:
        return submitted_at + scaled(self.first_check)

    def deadline_at(self, submitted_at: datetime) -> datetime:
        return submitted_at + scaled(self.deadline)

    def next_check_at(self, job: Job, now: datetime) -> datetime:
        """The next look after the `job.checks`-th check, never past the deadline."""
        # Grow step by step and stop once capped: the raw power overflows a timedelta after ~70 checks
        # (an hourly-polled job reaches that within days), and past the cap the answer cannot change.
        cap = min(self.max_interval or self.deadline, self.deadline)
        gap = self.interval
        for _ in range(max(job.checks - 1, 0)):
            if gap >= cap:
                break
            gap = gap * self.backoff
        if self.max_interval is not None:
            gap = min(gap, self.max_interval)
        return min(now + scaled(gap), max(job.deadline_at, now))


class Credentials(BaseModel):
    """Base of every vendor's credentials JSON (one Secrets Manager secret or one local-file object)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    base_url: str

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must start with https:// (or http:// for a local simulator)")
        return value.rstrip("/")


def parse_credentials(vendor: str, model: type[Credentials], raw: Any) -> Credentials:
    """Validate a credentials object; a problem becomes a ConfigError naming vendor and field, never values."""
    if isinstance(raw, (str, bytes)):
        import json

        try:
            raw = json.loads(raw)
        except ValueError:
            raise ConfigError(vendor, "(secret)", "is not valid JSON") from None
    if not isinstance(raw, dict):
        raise ConfigError(vendor, "(secret)", "must be a JSON object")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_input=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "(secret)"
        kind = first["type"]
        if kind == "missing":
            problem = "is missing"
        elif kind == "extra_forbidden":
            problem = "is not a known field"
        else:
            problem = f"is invalid: {first['msg']}"
        raise ConfigError(vendor, field, problem) from None


@runtime_checkable
class Connector(Protocol):
    name: ClassVar[str]
    actions: ClassVar[frozenset[Action]]
    schedule: ClassVar[Schedule]
    credentials_model: ClassVar[type[Credentials]]

    @classmethod
    def cannot_act_on(cls, subject: Subject, action: Action) -> str | None:
        """None if the connector can act on these identifiers; otherwise the reason it is skipped.
        A classmethod: intake decides before any credentials are read."""

    def start(self, action: Action, subject: Subject, ctx: JobContext) -> Job: ...

    def check(self, job: Job, ctx: JobContext) -> Progress:
        """The vendor's view of the job. Past `job.deadline_at` a job the vendor has not finished comes back
        failed with a reason naming DeadlineExceeded; a job that did finish is still ready (collected late)."""

    def fetch(self, job: Job, ctx: JobContext) -> list[Archive]: ...


def new_job(connector: Connector, action: Action, ctx: JobContext, job_id: str | None, **state: Any) -> Job:
    """A Job stamped with the connector's schedule (shared by every connector's `start`)."""
    submitted = ctx.now
    return Job(
        vendor=connector.name,
        action=action,
        job_id=job_id,
        submitted_at=submitted,
        next_check_at=connector.schedule.first_check_at(submitted),
        deadline_at=connector.schedule.deadline_at(submitted),
        state=state,
    )


__all__ = [
    "Action",
    "Archive",
    "Connector",
    "Credentials",
    "Job",
    "JobContext",
    "Progress",
    "Schedule",
    "Subject",
    "new_job",
    "parse_credentials",
]
