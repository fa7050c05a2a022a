"""What connector code imports: the protocol and domain types (defined in core/domain.py, re-exported here)
and the helpers that only connectors need.

The protocol, the domain types and the rules a connector follows (submit / check / collect / dry_run, the
vocabulary it declares, what a Job may hold) are documented in core/domain.py. They live in `core` so that
imports go one way: `connectors` imports `core`, never the reverse (tests/unit/test_layering.py).
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import ValidationError

from core.domain import (
    JOB_ID_LIMIT,
    REASON_LIMIT,
    STATE_LIMIT,
    Action,
    Archive,
    Connector,
    Credentials,
    DryRunPlan,
    Job,
    JobContext,
    Progress,
    Schedule,
    Subject,
)
from core.errors import ConfigError

CredentialsT = TypeVar("CredentialsT", bound=Credentials)


def parse_credentials(vendor: str, model: type[CredentialsT], raw: Any) -> CredentialsT:
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


def new_job(connector: Connector, action: Action, ctx: JobContext, job_id: str | None, **state: Any) -> Job:
    """A Job stamped with the connector's schedule (shared by every connector's `submit`)."""
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
    "new_job",
    "parse_credentials",
]
