"""The domain types: what a request, a vendor job and its archives are, and the connector protocol.

They live in `core` so that imports go one way: `connectors` (and `handlers`) import `core`, never the
reverse (tests/unit/test_layering.py keeps it so). `connectors/base.py` re-exports them for connector code,
next to the helpers only connectors need (`new_job`, `parse_credentials`).

Every vendor is one class with the same verbs, named as the tasks and the workflow states name them:

    submit(action, subject, ctx)  -> Job        may finish at once (synchronous vendors)
    check(job, ctx)               -> Progress   pending(next_check_at) | ready | failed(reason) | needs_approval
    collect(job, ctx)             -> [Archive]  byte streams, never a whole body in memory
    dry_run(action, subject, ctx) -> DryRunPlan what a destructive action would send, proven read-only

Every connector also declares the vocabulary that may reach kept records: `statuses` (its documented status
words) and `job_id_pattern` (its documented job id format). A reason (Progress.reason, an error message) is
fixed wording plus those validated values only; anything else the vendor said goes to `ctx.vendor_said`
(kept encrypted per request, see core/vendor_said.py), never into the Job, the Progress or a message.

Dry runs: an action in `native_dry_run` is submitted as usual with `ctx.dry_run` set (the vendor runs it as a
test, e.g. a Qualifio `test: true` rule). Any other destructive action is never submitted in a dry run: the
task layer calls `dry_run` instead, which may make read-only calls only.

Handlers never branch on vendor names. A Job travels through the Step Functions execution history, so it
holds only vendor job ids and timestamps: never an email, a customer key or anything from a secret. Where a
connector needs the subject again (check, collect) the handler passes it in `ctx`, read from the encrypted
bucket by reference.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import ConfigDict, Field, field_validator, model_validator

from core.clock import scaled, utcnow
from core.errors import DETAIL_LIMIT, cap
from core.model import Model
from core.safe import safe_word

# Everything below travels through the execution history (256 KiB per state): caps by construction.
REASON_LIMIT = 500
STATE_LIMIT = 2048  # bytes of JSON in Job.state
JOB_ID_LIMIT = 128


class Action(str, Enum):
    EXPORT = "export"
    ERASE = "erase"


class Subject(Model):
    """Who the request is about. PII: stored encrypted in S3, never in the execution history or logs."""

    model_config = ConfigDict(extra="forbid")

    email: str | None = None
    customer_key: str | None = None
    # Vendor-neutral id types (Bloomreach: registered, cookie, ...). Values are PII too.
    customer_ids: dict[str, str] = Field(default_factory=dict)


class JobContext(Model):
    """What a connector may know about the request besides the subject."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    subject: Subject
    justification: str | None = None
    now: datetime = Field(default_factory=utcnow)
    # The request is a dry run: nothing destructive may reach a vendor (see the module doc).
    dry_run: bool = False
    # An earlier attempt to submit this action may have reached the vendor without an answer (its connection
    # dropped or timed out after sending): a "nothing there" answer now may be that attempt's doing.
    after_uncertain_attempt: bool = False
    # Where the vendor may call when the job is done (core/callbacks.py), for the actions a connector lists in
    # its `callbacks`; None: the deployment has no callback route, or this job is polled only.
    callback_url: str | None = None
    # What the vendor said that is not allow-listed (error bodies, undocumented status words), as
    # (what, text) pairs. The task layer writes it to the encrypted per-request object; it is never
    # serialised with the context.
    vendor_said: list[tuple[str, str]] = Field(default_factory=list, exclude=True)

    def note(self, what: str, text: Any) -> None:
        """Keep a vendor's words privately (e.g. `ctx.note("job-status", raw_status)`)."""
        if text not in (None, ""):
            self.vendor_said.append((what, text if isinstance(text, str) else repr(text)))

    def documented_word(self, raw: str, statuses: frozenset[str], what: str) -> str | None:
        """The vendor's status word when it is one of `statuses` (documented spelling), else None with the raw
        word kept privately: the one gate a status word passes before any record may show it."""
        word = safe_word(raw, statuses)
        if word is None:
            self.note(what, cap(raw, DETAIL_LIMIT))
        return word


class Job(Model):
    """A submitted vendor job. Serialised into the execution history: ids and times only."""

    model_config = ConfigDict(extra="forbid")

    vendor: str = Field(max_length=64)
    action: Action
    # The vendor's id (Elevate jid, Qualifio rule _id), validated by the connector against its
    # job_id_pattern before it gets here; None when synchronous.
    job_id: str | None = Field(default=None, max_length=JOB_ID_LIMIT)
    submitted_at: datetime
    next_check_at: datetime  # when the workflow's Wait state should hand back to `check`
    deadline_at: datetime  # after this, the job is failed as DeadlineExceeded
    checks: int = 0  # how many times `check` has run
    # Vendor-specific non-PII bookkeeping (archive id, "already complete", ...). JSON-serialisable only,
    # flags, counts and validated ids, at most STATE_LIMIT bytes.
    state: dict[str, Any] = Field(default_factory=dict)

    @field_validator("state")
    @classmethod
    def _small_state(cls, value: dict[str, Any]) -> dict[str, Any]:
        import json

        if len(json.dumps(value, default=str)) > STATE_LIMIT:
            raise ValueError(f"job state exceeds {STATE_LIMIT} bytes; it must hold flags, counts and ids only")
        return value


class Progress(Model):
    model_config = ConfigDict(extra="forbid")

    status: Literal["pending", "ready", "failed", "needs_approval"]
    next_check_at: datetime | None = None  # set for pending and needs_approval
    # Why pending / failed / waiting for approval, in a DPO's words: fixed wording plus allow-listed values.
    reason: str | None = None
    # The vendor's status word, only when it is one of the connector's documented `statuses` (the task
    # layer drops any other; the connector notes the raw word in ctx.vendor_said).
    vendor_status: str | None = None
    # For a failure: the error name it is recorded under: DeadlineExceeded when the connector says so
    # (Progress.deadline_exceeded), else VendorError (set by the task layer). "Record vendor failure" keeps it.
    error: Literal["VendorError", "DeadlineExceeded"] | None = None

    @field_validator("reason", "vendor_status")
    @classmethod
    def _capped(cls, value: str | None, info: Any) -> str | None:
        # Truncated rather than refused: a check must not crash on a long word; the allow-list does the rest.
        limit = REASON_LIMIT if info.field_name == "reason" else 40
        return value if value is None or len(value) <= limit else value[: limit - 1] + "…"

    @classmethod
    def pending(cls, next_check_at: datetime, reason: str, vendor_status: str | None = None) -> Progress:
        return cls(status="pending", next_check_at=next_check_at, reason=reason, vendor_status=vendor_status)

    @classmethod
    def ready(cls, reason: str | None = None, vendor_status: str | None = None) -> Progress:
        return cls(status="ready", reason=reason, vendor_status=vendor_status)

    @classmethod
    def failed(cls, reason: str, vendor_status: str | None = None) -> Progress:
        return cls(status="failed", reason=reason, vendor_status=vendor_status)

    @classmethod
    def deadline_exceeded(cls, reason: str, vendor_status: str | None = None) -> Progress:
        """The job did not finish before its deadline: a failure named DeadlineExceeded."""
        return cls(status="failed", reason=reason, vendor_status=vendor_status, error="DeadlineExceeded")

    @classmethod
    def needs_approval(cls, next_check_at: datetime, reason: str, vendor_status: str | None = None) -> Progress:
        return cls(status="needs_approval", next_check_at=next_check_at, reason=reason, vendor_status=vendor_status)


class Archive:
    """One downloadable archive: a name, a content type, and a byte stream read once.

    `length` is the announced Content-Length when the vendor gives one (verified after transfer).
    `kind` is what the vendor documents the content to be, verified before the archive counts as stored
    (core/verify.py): "zip" (opens, every member's CRC right), "json" (one complete JSON document whose top
    level says success: true), or "bytes" (no documented format: length only).
    `close()` releases the underlying connection; callers must call it (or use `with`).
    """

    def __init__(
        self,
        name: str,
        content_type: str,
        chunks: Iterator[bytes],
        length: int | None = None,
        close: Any = None,
        kind: Literal["zip", "json", "bytes"] = "bytes",
    ):
        self.name = name
        self.content_type = content_type
        self.chunks = chunks
        self.length = length
        self.kind = kind
        self._close = close

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


MIN_REAL_DEADLINE = timedelta(seconds=5)


class Schedule(Model):
    """When a connector looks at a job, in vendor time; the local time-scale shrinks it to real time.

    first_check: after submission; then `interval`, multiplied by `backoff` after each check up to
    `max_interval`; once `slow_after` has passed since submission, every `slow_interval` instead; `deadline`
    caps the whole job (no look is ever scheduled past it, and the connector fails a job still unfinished
    after it with DeadlineExceeded).

    The slow phase keeps the execution history within its quota by construction. Every vendor's job loop runs
    in ONE execution, and Step Functions keeps at most 25,000 history events per execution: each look costs
    9 events (Wait, Check task, Choice), up to 42 when every retry of the Check task is spent. Polled hourly
    for its whole 20-day deadline, a Qualifio job alone could take ~21,000. A job not done after `slow_after`
    waits on something slow (a DPO's validation, a vendor backlog); looking as often as in its first hours
    only spends the budget. With it, how many looks a job can get is a function of its Schedule alone
    (`core/history.py` computes it, `tests/unit/test_history_quota.py` keeps the sum over every connector
    and action under 20,000). A cap on the number of checks would do it too, but it ends a job at a count
    instead of at its deadline: a vendor slower than we guessed would be failed early, and the count would
    have to be kept in step with every interval by hand. Here the deadline stays the only end.
    """

    model_config = ConfigDict(frozen=True)

    first_check: timedelta
    interval: timedelta
    backoff: float = 1.0
    max_interval: timedelta | None = None
    slow_after: timedelta | None = None
    slow_interval: timedelta | None = None
    deadline: timedelta

    @model_validator(mode="after")
    def _sound(self) -> Schedule:
        if self.interval <= timedelta(0) or self.backoff < 1 or self.deadline <= timedelta(0):
            raise ValueError("a schedule needs a positive interval and deadline and a backoff of at least 1")
        if (self.slow_after is None) != (self.slow_interval is None):
            raise ValueError("slow_after and slow_interval go together")
        if self.slow_interval is not None and self.slow_interval < (self.max_interval or self.interval):
            raise ValueError("slow_interval must not be shorter than the interval it replaces")
        return self

    def first_check_at(self, submitted_at: datetime) -> datetime:
        return submitted_at + scaled(self.first_check)

    def deadline_at(self, submitted_at: datetime) -> datetime:
        # Never less than a few real seconds: at a local time scale a vendor week can shrink below the time
        # a loaded machine takes between two steps (in production, scale 1, the floor never applies).
        return submitted_at + max(scaled(self.deadline), MIN_REAL_DEADLINE)

    def gap(self, checks: int, elapsed: timedelta) -> timedelta:
        """Vendor time from the `checks`-th look, made `elapsed` (vendor time) after submission, to the next
        one, before the deadline clamp. The one rule next_check_at and core/history.py both use."""
        if self.slow_after is not None and self.slow_interval is not None and elapsed >= self.slow_after:
            return self.slow_interval
        # Grow step by step and stop once capped: the raw power overflows a timedelta after ~70 checks
        # (an hourly-polled job reaches that within days), and past the cap the answer cannot change.
        cap = min(self.max_interval or self.deadline, self.deadline)
        gap = self.interval
        for _ in range(max(checks - 1, 0)):
            if gap >= cap:
                break
            gap = gap * self.backoff
        if self.max_interval is not None:
            gap = min(gap, self.max_interval)
        return gap

    def next_check_at(self, job: Job, now: datetime) -> datetime:
        """The next look after the `job.checks`-th check, never past the deadline."""
        elapsed = timedelta(seconds=(now - job.submitted_at) / scaled(timedelta(seconds=1)))  # vendor time
        return min(now + scaled(self.gap(job.checks, elapsed)), max(job.deadline_at, now))


class Credentials(Model):
    """Base of every vendor's credentials JSON (one Secrets Manager secret or one local-file object)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    base_url: str

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must start with https:// (or http:// for a local simulator)")
        return value.rstrip("/")


class DryRunPlan(Model):
    """What a destructive action would have sent, for a dry run's `planned` outcome. No values: the call is a
    method and a path template ("POST /api/v2/event-data/create-remove-customer-job?customerKey={customerKey}"),
    `verified` says what the read-only probe proved, in fixed wording."""

    model_config = ConfigDict(extra="forbid")

    call: str = Field(max_length=300)
    verified: str = Field(max_length=REASON_LIMIT)
    subject_found: bool | None = None  # None: the vendor offers no read-only way to look the subject up


@runtime_checkable
class Connector(Protocol):
    name: ClassVar[str]
    actions: ClassVar[frozenset[Action]]
    schedule: ClassVar[Schedule]
    credentials_model: ClassVar[type[Credentials]]
    # The vocabulary allowed into kept records (see the module doc).
    statuses: ClassVar[frozenset[str]]
    job_id_pattern: ClassVar[str]
    # Destructive actions the vendor can itself run as a test that changes nothing.
    native_dry_run: ClassVar[frozenset[Action]]

    @classmethod
    def cannot_act_on(cls, subject: Subject, action: Action) -> str | None:
        """None if the connector can act on these identifiers; otherwise the reason it is skipped.
        A classmethod: intake decides before any credentials are read."""

    def submit(self, action: Action, subject: Subject, ctx: JobContext) -> Job: ...

    def check(self, job: Job, ctx: JobContext) -> Progress:
        """The vendor's view of the job. Past `job.deadline_at` a job the vendor has not finished comes back
        failed with a reason naming DeadlineExceeded; a job that did finish is still ready (collected late)."""

    def collect(self, job: Job, ctx: JobContext) -> list[Archive]: ...

    def dry_run(self, action: Action, subject: Subject, ctx: JobContext) -> DryRunPlan:
        """A destructive action's plan, with at most read-only calls (credentials, subject lookup)."""


__all__ = [
    "JOB_ID_LIMIT",
    "REASON_LIMIT",
    "STATE_LIMIT",
    "Action",
    "Archive",
    "Connector",
    "Credentials",
    "DryRunPlan",
    "Job",
    "JobContext",
    "Progress",
    "Schedule",
    "Subject",
]
