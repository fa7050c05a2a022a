"""Models at every boundary of the workflow: the request (API, EventBridge, CLI), task input/output, manifest.

What travels through Step Functions (ExecutionInput, StepState, ActionOutcome, Summary) carries ids,
vendor names, statuses and S3 keys only. The subject and the free-text justification live in
`StoredRequest`, which is written to the encrypted bucket and read back by reference.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from core.archive_store import StoredArchive
from core.clock import utcnow
from core.domain import Action, Job, Progress, Subject
from core.model import Model

# --- What intake accepts (anything beyond is a 400 naming the field) ------------------------------------
# Step Functions execution names: 1-80 of letters, digits, '-' and '_' (the request id is the name).
REQUEST_ID_PATTERN = r"^[A-Za-z0-9_-]{1,80}$"
MAX_EMAIL_CHARS = 254  # RFC 5321: the longest forward path
MAX_EMAIL_LOCAL_CHARS = 64  # RFC 5321: the longest local part
MAX_CUSTOMER_KEY_CHARS = 128
MAX_CUSTOMER_IDS = 10
ID_TYPE_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
MAX_ID_VALUE_CHARS = 256
MAX_JUSTIFICATION_CHARS = 1000
MAX_VENDORS = 20
VENDOR_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
# received_at lies in [now - 92 days, now + 5 minutes]. 92 days is the longest lawful answer time (one month,
# plus the two-month extension of GDPR Art. 12(3)): an older request is past any deadline and is handled by
# hand. The 5 minutes allow for clock skew. Both bounds keep every deadline computable.
RECEIVED_AT_MAX_AGE = timedelta(days=92)
RECEIVED_AT_MAX_AHEAD = timedelta(minutes=5)
# The raw API body, checked before it is parsed.
MAX_BODY_BYTES = 64 * 1024
MAX_NESTING = 32  # JSON objects/arrays inside one another; a request needs 3

# Deliberately simple: a real address has one '@', something before it and a dotted domain after it.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_ID_TYPE = re.compile(ID_TYPE_PATTERN)
# Not text: C0 and C1 control characters, DEL, and lone surrogates (they cannot be encoded as UTF-8, so the
# request could be validated but never stored).
_NOT_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_NOT_MULTILINE_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")  # tab, CR, LF allowed
NOT_TEXT = "must be valid text: no control characters and no lone surrogates"
NOT_MULTILINE_TEXT = "must be valid text: no control characters other than tab and newline, and no lone surrogates"
# RFC 3339 date-time: a zone is required; 'T' or a space between date and time; an optional fraction.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:[Zz]|([+-])(\d{2}):(\d{2}))",
    re.ASCII,  # \d is 0-9 only, not every script's digits
)
RECEIVED_AT_FORMAT = "must be an RFC 3339 date-time with a time zone, e.g. 2026-11-23T10:00:00Z"
RECEIVED_AT_RANGE = (
    "must be no later than 5 minutes from now and no earlier than 92 days ago (the longest GDPR answer time, "
    "one month plus the Art. 12(3) extension of two months; an older request is handled by hand)"
)

GDPR_RESPONSE_DAYS = 30
# GDPR Art. 12(3): the deadline may be extended "by two further months"; dsrflow allows 60 days in total, in
# at most this many extensions (each one re-arms the approval gate's wait: core/history.py bounds it).
MAX_EXTENSION_DAYS = 60
MAX_EXTENSIONS = 3
# Vendors one request can plan for: intake accepts only this deployment's vendors, so this is a ceiling.
MAX_PLANNED_VENDORS = 20


def is_text(value: str) -> bool:
    """No control characters and no lone surrogates (the rule for every string of a request but one)."""
    return _NOT_TEXT.search(value) is None


def _text(value: Any) -> Any:
    # Before the type check: a non-string is left to it ("should be a valid string").
    if isinstance(value, str) and _NOT_TEXT.search(value):
        raise ValueError(NOT_TEXT)
    return value


def _multiline_text(value: Any) -> Any:
    if isinstance(value, str) and _NOT_MULTILINE_TEXT.search(value):
        raise ValueError(NOT_MULTILINE_TEXT)
    return value


# Strict strings (a number is not a string) that are valid text; the check runs before length and pattern.
Text = Annotated[StrictStr, BeforeValidator(_text)]
RequestId = Annotated[StrictStr, Field(pattern=REQUEST_ID_PATTERN), BeforeValidator(_text)]
VendorName = Annotated[StrictStr, Field(pattern=VENDOR_NAME_PATTERN), BeforeValidator(_text)]
Justification = Annotated[StrictStr, Field(max_length=MAX_JUSTIFICATION_CHARS), BeforeValidator(_multiline_text)]


def parse_received_at(value: Any, now: datetime) -> datetime:
    """An RFC 3339 date-time string with a zone, within [now - 92 days, now + 5 minutes], as UTC.

    ValueError (a message that never quotes the value) for anything else: numbers, date-only, naive times.
    """
    match = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(RECEIVED_AT_FORMAT)
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    offset = timedelta(0)
    if sign:
        if int(off_h) > 23 or int(off_m) > 59:
            raise ValueError(RECEIVED_AT_FORMAT)
        offset = timedelta(hours=int(off_h), minutes=int(off_m)) * (-1 if sign == "-" else 1)
    micro = int((fraction or "0").ljust(6, "0")[:6])
    try:
        local = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=timezone(offset)
        )
    except ValueError:  # February 30th, hour 24, a leap second
        raise ValueError(RECEIVED_AT_FORMAT) from None
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    try:
        moment = local.astimezone(UTC)  # year 1 at +01:00 overflows here
    except OverflowError:
        raise ValueError(RECEIVED_AT_RANGE) from None
    if not now - RECEIVED_AT_MAX_AGE <= moment <= now + RECEIVED_AT_MAX_AHEAD:
        raise ValueError(RECEIVED_AT_RANGE)
    return moment


class RequestSubject(Subject):
    """The subject as a request gives it: at least one identifier, each within its limit and valid text
    (email: <= 254 characters, local part <= 64; customer_key <= 128; customer_ids: <= 10 entries, id type names
    of 1-64 letters, digits, '_', '.', '-', values of <= 256 characters)."""

    email: Text | None = None
    customer_key: Text | None = None
    customer_ids: dict[StrictStr, StrictStr] = Field(default_factory=dict)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None:
            value = value.strip()
            # Length first: the pattern below is never run on a long string.
            if len(value) > MAX_EMAIL_CHARS:
                raise ValueError(f"is longer than {MAX_EMAIL_CHARS} characters")
            if not _EMAIL.match(value):
                raise ValueError("is not an email address")
            if len(value.rsplit("@", 1)[0]) > MAX_EMAIL_LOCAL_CHARS:
                raise ValueError(f"has a local part (before the @) longer than {MAX_EMAIL_LOCAL_CHARS} characters")
        return value

    @field_validator("customer_key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None:
            value = value.strip()
            if not value:
                raise ValueError("must not be empty")
            if len(value) > MAX_CUSTOMER_KEY_CHARS:
                raise ValueError(f"is longer than {MAX_CUSTOMER_KEY_CHARS} characters")
        return value

    @field_validator("customer_ids", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> Any:
        # Before pydantic's own checks, so that no error's location carries an id type the caller wrote.
        if not isinstance(value, dict):
            return value  # pydantic: "should be a valid dictionary"
        if len(value) > MAX_CUSTOMER_IDS:
            raise ValueError(f"has more than {MAX_CUSTOMER_IDS} entries")
        for id_type, id_value in value.items():
            if not isinstance(id_type, str) or not _ID_TYPE.fullmatch(id_type):
                raise ValueError("id type names must be 1-64 letters, digits, '_', '.' or '-'")
            if not isinstance(id_value, str):
                raise ValueError("id values must be strings")
            if _NOT_TEXT.search(id_value):
                raise ValueError(f"id values {NOT_TEXT}")
            if not id_value.strip():
                raise ValueError("id types and values must not be empty")
            if len(id_value) > MAX_ID_VALUE_CHARS:
                raise ValueError(f"id values must be at most {MAX_ID_VALUE_CHARS} characters")
        return value

    @model_validator(mode="after")
    def _some_identifier(self) -> RequestSubject:
        if not (self.email or self.customer_key or self.customer_ids):
            raise ValueError("needs at least one of email, customer_key, customer_ids")
        return self


class DsrRequest(Model):
    """A data-subject request, the same for the API body, the EventBridge detail and the CLI.

    Strict: strings are JSON strings, `dry_run` a JSON boolean, `actions` the strings "export"/"erase", and
    every string is valid text (no control characters, no lone surrogates; the justification may hold tabs and
    newlines). The limits are the constants at the top of this module.

    `received_at` (when the controller received the request; default: when intake runs) is an RFC 3339
    date-time with a zone (`Z` or ±hh:mm), no later than 5 minutes from now and no earlier than 92 days ago:
    92 days is the longest lawful answer time (one month plus the two-month extension of GDPR Art. 12(3)), so an
    older request is past any deadline and is handled by hand. "Now" is `context["now"]` when validated with
    `model_validate(raw, context={"now": ...})`, else the clock.
    """

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    request_id: RequestId | None = None
    actions: list[Action] = Field(min_length=1, max_length=2)
    subject: RequestSubject
    vendors: list[VendorName] | None = Field(default=None, min_length=1, max_length=MAX_VENDORS)
    justification: Justification | None = None
    received_at: datetime | None = None
    # Qualifio's "test" rules: the whole erasure process runs, nothing is deleted.
    dry_run: StrictBool = False

    @field_validator("actions")
    @classmethod
    def _actions(cls, value: list[Action]) -> list[Action]:
        if len(set(value)) != len(value):
            raise ValueError("must not repeat an action")
        # Export always runs before erase for the same vendor, whatever order the caller wrote.
        return sorted(value, key=lambda a: 0 if a == Action.EXPORT else 1)

    @field_validator("vendors")
    @classmethod
    def _vendors(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("must not repeat a vendor")
        return value

    @field_validator("received_at", mode="before")
    @classmethod
    def _received_at(cls, value: Any, info: ValidationInfo) -> datetime | None:
        if value is None:
            return None
        now = info.context.get("now") if isinstance(info.context, dict) else None
        return parse_received_at(value, now or utcnow())

    def fingerprint(self) -> str:
        """sha256 (hex) of what the caller asked, to tell a redelivery from a different request reusing an id.

        Canonical JSON of the normalised actions, subject, vendors (sorted), justification and dry_run, and
        received_at only when given (otherwise it is the time intake ran, which differs on every retry).
        """
        asked = self.model_dump(mode="json", include={"actions", "subject", "vendors", "justification", "dry_run"})
        if asked["vendors"] is not None:
            asked["vendors"] = sorted(asked["vendors"])
        if self.received_at is not None:
            asked["received_at"] = self.received_at.astimezone(UTC).isoformat()
        canonical = json.dumps(asked, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class VendorPlan(Model):
    """One vendor's share of a request: `actions` is everything asked of it, `run` what this attempt runs
    (a retry re-runs only what failed, was withheld or denied; an erase still checks the export of `actions`)."""

    vendor: str
    actions: list[Action]
    run: list[Action] = Field(default_factory=list)

    @model_validator(mode="after")
    def _run_defaults_to_actions(self) -> VendorPlan:
        if not self.run:
            self.run = list(self.actions)
        return self


class Skipped(Model):
    vendor: str
    action: Action
    reason: str


class StoredRequest(Model):
    """The normalised request, written encrypted to requests/{id}/request.json. Holds PII."""

    request_id: str
    actions: list[Action]
    subject: Subject
    justification: str | None = None
    dry_run: bool = False
    received_at: datetime
    deadline: datetime
    plan: list[VendorPlan]
    skipped: list[Skipped] = Field(default_factory=list)
    source: Literal["api", "eventbridge", "cli", "bulk"] = "api"
    # DsrRequest.fingerprint() of the request as first received; None in records written before it existed.
    fingerprint: str | None = None


ApprovalGate = Literal["none", "erase", "all"]  # which actions wait for a person's decision (REQUIRE_APPROVAL)


class ExecutionInput(Model):
    """The state machine's input: no PII, only what the Map and the console need. Bounded by construction
    (intake accepts only this deployment's vendors), so no state can approach Step Functions' 256 KiB.

    `attempt` is 1 for the execution intake starts (named after the request id) and counts up with each
    retry (POST /requests/{id}/retry), which runs under the same request id, receipt date and deadline."""

    request_id: str
    received_at: datetime
    deadline: datetime
    plan: list[VendorPlan] = Field(max_length=MAX_PLANNED_VENDORS)
    skipped: list[Skipped] = Field(default_factory=list, max_length=2 * MAX_PLANNED_VENDORS)
    dry_run: bool = False
    approval: ApprovalGate = "none"
    attempt: int = Field(default=1, ge=1)


class Approval(Model):
    """A person's decision on one vendor action, as POST /requests/{id}/approve hands it to the workflow."""

    by: str  # the approver's IAM principal (ARN), as API Gateway passes it
    at: datetime
    reason: str | None = None


class ApprovalWait(Model):
    """How long the approval gate holds: until `until` (real time), the request's deadline `deadline` at
    scale 1; `seconds` is the Task's TimeoutSecondsPath."""

    seconds: int = Field(ge=1)
    until: datetime
    deadline: datetime  # the request's deadline when the wait was set: an extension moves `until` on
    timed_out: bool = False


class Queued(Model):
    """A vendor action waiting for our own per-vendor limit (core/limits.py) before its job is submitted: on a
    free slot (jobs in flight) or on the pace (calls per second). Never a failure."""

    on: Literal["slot", "pace"]
    since: datetime  # first queued: its place in the line across wake-ups
    waits: int = Field(default=1, ge=1)
    until: datetime  # the end of the slot's lease once handed over (the job's own deadline)


class StepState(Model):
    """The one state a vendor action carries through its branch of the workflow: every job task (approval,
    submit, check) takes it and returns it. `next_check_at` is when the Wait state wakes the next check
    (whole seconds, never early: the Wait's TimestampPath); the job holds the connector's own schedule."""

    model_config = ConfigDict(extra="ignore")  # the ASL adds Catch results ($.error) beside it

    request_id: str
    vendor: str
    action: Action
    actions: list[Action] = Field(default_factory=list)  # everything asked of this vendor
    attempt: int = Field(default=1, ge=1)
    approval_gate: ApprovalGate = "none"
    deadline: datetime | None = None  # the request's deadline as the execution started (the ledger's may be later)
    job: Job | None = None
    progress: Progress | None = None
    next_check_at: str | None = None
    approval: Approval | None = None
    approval_wait: ApprovalWait | None = None
    approval_timed_out: dict[str, Any] | None = None  # the gate's States.Timeout, until ask_approval looked at it
    queued: Queued | None = None  # submit found no free slot / pace: "Wait for a vendor slot" parks the branch
    wait_seconds: int | None = None  # a parked wait's fallback (its TimeoutSecondsPath), whole seconds >= 1
    # What the branch waits on next (the ASL's Choices read it): our limit's slot or pace (nothing was sent), or
    # the vendor's callback (core/callbacks.py); None: the vendor's schedule (a Wait state).
    wait_on: Literal["slot", "pace", "callback"] | None = None


Step = Literal["approval", "submit", "check", "collect"]
# denied: a person refused the action (not a failure); cancelled: the request was cancelled before it ended.
OutcomeStatus = Literal["completed", "planned", "failed", "skipped", "denied", "cancelled"]
OUTCOME_STATUSES: tuple[OutcomeStatus, ...] = ("completed", "planned", "failed", "skipped", "denied", "cancelled")


class AttemptOutcome(Model):
    """What one attempt (execution) did with a vendor action: the manifest keeps every attempt."""

    attempt: int
    status: OutcomeStatus
    error: str | None = None
    finished_at: datetime | None = None


class ActionOutcome(Model):
    """One vendor action's result, as the Map iteration returns it and the manifest records it.

    Every text here is allow-listed (see core/safe.py): fixed wording, names, counts, validated ids and
    documented status words. What the vendor itself said is in the `vendor_said` objects (encrypted, under
    requests/, expiring with the request data), which this record only points to.
    """

    model_config = ConfigDict(extra="ignore")

    vendor: str
    action: Action
    # planned: a dry run; nothing destructive was sent (the plan says what would have been).
    status: OutcomeStatus
    job_id: str | None = None
    reason: str | None = None
    error: str | None = None  # the named error type when a task failed
    step: Step | None = None  # where it failed
    archives: list[StoredArchive] = Field(default_factory=list)
    submitted_at: datetime | None = None
    completed_at: datetime | None = None
    checks: int | None = None
    # At most one more vendor job per action: set when an earlier submission may have created a job whose
    # answer never arrived; `job_ids` lists every id the vendor did return.
    possible_duplicate: bool = False
    job_ids: list[str] = Field(default_factory=list)
    planned_call: str | None = None  # dry run: method and path template of the destructive call not sent
    vendor_said: list[str] = Field(default_factory=list)  # keys of the private objects with the vendor's words
    approved_by: str | None = None  # the IAM principal who approved it (the approval gate)
    approved_at: datetime | None = None
    attempt: int = 1  # the attempt this outcome comes from
    attempts: list[AttemptOutcome] = Field(default_factory=list)  # every attempt, oldest first

    @field_validator("reason")
    @classmethod
    def _short(cls, value: str | None) -> str | None:
        return value if value is None or len(value) <= 700 else value[:699] + "…"


class PackageRef(Model):
    """The access package as the manifest and the ledger record it (core/package.py builds it): ids, sizes and a
    digest, never a file name from the package (a vendor's member names can hold the subject's values).

    built: s3://<bucket>/<key> holds the zip; `GET /requests/{id}/package` mints a link to it.
    not_built: nothing to package (no export asked, or no export completed): `reason` says which.
    failed: the Package step failed (`error` names the type, `reason` is fixed wording); the request's
    outcomes stand, the operator can retry the request to try again.
    """

    model_config = ConfigDict(extra="forbid")

    status: Literal["built", "not_built", "failed"]
    key: str | None = None
    bytes: int | None = Field(default=None, ge=0)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    files: int | None = Field(default=None, ge=0)  # files in the zip, index.html and manifest.json included
    systems: list[str] = Field(default_factory=list)  # vendors whose data is in it
    built_at: datetime | None = None
    attempt: int = Field(default=1, ge=1)  # the attempt that built it
    reason: str | None = None
    error: str | None = None


class Manifest(Model):
    """The proof: requests/{id}/manifest.json and the execution's output."""

    request_id: str
    status: Literal["completed", "partially_failed", "failed", "cancelled"]
    dry_run: bool = False  # a dry run: erase outcomes are `planned`, nothing destructive reached a vendor
    received_at: datetime
    deadline: datetime  # extended where the DPO extended it (original_deadline then holds the first one)
    original_deadline: datetime | None = None
    attempt: int = 1  # the latest attempt (execution) merged into this manifest
    cancelled_by: str | None = None
    finished_at: datetime
    within_deadline: bool
    counts: dict[str, int]
    outcomes: list[ActionOutcome]
    manifest_key: str  # beside the archives; expires with the request data
    proof_key: str  # the same record under proof/, kept longer (no personal data in it)
    # The access package (None: a manifest from before packages, or a cancelled request that never built one).
    package: PackageRef | None = None

    def summary(self) -> dict[str, Any]:
        """The execution output: the same record, readable in the console."""
        return self.model_dump(mode="json")


def deadline_for(received_at: datetime) -> datetime:
    # GDPR Art. 12(3): "without undue delay and in any event within one month of receipt". received_at is
    # bounded at intake (RECEIVED_AT_MAX_AHEAD), so this cannot overflow.
    return received_at + timedelta(days=GDPR_RESPONSE_DAYS)
