"""Models at every boundary of the workflow: the request (API, EventBridge, CLI), task input/output, manifest.

What travels through Step Functions (ExecutionInput, ActionTask, ActionOutcome, Summary) carries ids,
vendor names, statuses and S3 keys only. The subject and the free-text justification live in
`StoredRequest`, which is written to the encrypted bucket and read back by reference.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.base import Action, Job, Progress, Subject
from core.archive_store import StoredArchive

# Step Functions execution names: 1-80 of letters, digits, '-' and '_' (the request id is the name).
REQUEST_ID_PATTERN = r"^[A-Za-z0-9_-]{1,80}$"
# Deliberately simple: a real address has one '@', something before it and a dotted domain after it.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

GDPR_RESPONSE_DAYS = 30


class RequestSubject(Subject):
    """The subject as a request gives it: at least one identifier, an email that looks like one."""

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None:
            value = value.strip()
            if not _EMAIL.match(value):
                raise ValueError("is not an email address")
        return value

    @field_validator("customer_key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value.strip() if value else value

    @field_validator("customer_ids")
    @classmethod
    def _ids(cls, value: dict[str, str]) -> dict[str, str]:
        for id_type, id_value in value.items():
            if not id_type.strip() or not str(id_value).strip():
                raise ValueError("id types and values must not be empty")
        return value

    @model_validator(mode="after")
    def _some_identifier(self) -> "RequestSubject":
        if not (self.email or self.customer_key or self.customer_ids):
            raise ValueError("needs at least one of email, customer_key, customer_ids")
        return self


class DsrRequest(BaseModel):
    """A data-subject request, the same for the API body, the EventBridge detail and the CLI."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    request_id: str | None = Field(default=None, pattern=REQUEST_ID_PATTERN)
    actions: list[Action] = Field(min_length=1, max_length=2)
    subject: RequestSubject
    vendors: list[str] | None = Field(default=None, min_length=1)
    justification: str | None = Field(default=None, max_length=1000)
    received_at: datetime | None = None
    # Qualifio's "test" rules: the whole erasure process runs, nothing is deleted.
    dry_run: bool = False

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

    @field_validator("received_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class VendorPlan(BaseModel):
    vendor: str
    actions: list[Action]


class Skipped(BaseModel):
    vendor: str
    action: Action
    reason: str


class StoredRequest(BaseModel):
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
    source: Literal["api", "eventbridge", "cli"] = "api"


class ExecutionInput(BaseModel):
    """The state machine's input: no PII, only what the Map and the console need."""

    request_id: str
    received_at: datetime
    deadline: datetime
    vendors: list[VendorPlan]
    skipped: list[Skipped] = Field(default_factory=list)


class ActionTask(BaseModel):
    """Input of submit/check/collect: one vendor, one action, and the job once submitted."""

    model_config = ConfigDict(extra="ignore")

    request_id: str
    vendor: str
    action: Action
    actions: list[Action] = Field(default_factory=list)  # everything asked of this vendor
    job: Job | None = None
    progress: Progress | None = None


class ActionOutcome(BaseModel):
    """One vendor action's result, as the Map iteration returns it and the manifest records it."""

    model_config = ConfigDict(extra="ignore")

    vendor: str
    action: Action
    status: Literal["completed", "failed", "skipped"]
    job_id: str | None = None
    reason: str | None = None
    error: str | None = None  # the named error type when a task failed
    archives: list[StoredArchive] = Field(default_factory=list)
    submitted_at: datetime | None = None
    completed_at: datetime | None = None
    checks: int | None = None


class Manifest(BaseModel):
    """The proof: requests/{id}/manifest.json and the execution's output."""

    request_id: str
    status: Literal["completed", "partially_failed", "failed"]
    received_at: datetime
    deadline: datetime
    finished_at: datetime
    within_deadline: bool
    counts: dict[str, int]
    outcomes: list[ActionOutcome]
    manifest_key: str  # beside the archives; expires with the request data
    proof_key: str  # the same record under proof/, kept longer (no personal data in it)

    def summary(self) -> dict[str, Any]:
        """The execution output: the same record, readable in the console."""
        return self.model_dump(mode="json")


def deadline_for(received_at: datetime) -> datetime:
    # GDPR Art. 12(3): "without undue delay and in any event within one month of receipt".
    return received_at + timedelta(days=GDPR_RESPONSE_DAYS)
