"""The event contracts: every dsrflow event's detail checked against its JSON Schema (schemas/events/).

A helper module, not a test file: `from tests.event_schemas import validate_event`. It takes an event as
EventBridge delivers it ("source", "detail-type", "detail") or as PutEvents takes it ("Source", "DetailType",
"Detail"), the detail as a dict or as its JSON text, finds the schema by detail-type (core.events.DETAIL_TYPES)
and raises on any mismatch.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from core.events import DETAIL_TYPES, EVENT_SOURCE

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas" / "events"
KIND_BY_DETAIL_TYPE = {detail_type: kind for kind, detail_type in DETAIL_TYPES.items()}


class EventContractError(AssertionError):
    """An event that does not match its contract (unknown source or detail-type, or a detail off-schema)."""


def schema_path(kind: str) -> Path:
    return SCHEMAS / f"{kind}.schema.json"


@cache
def schema(kind: str) -> dict[str, Any]:
    return json.loads(schema_path(kind).read_text())


@cache
def validator(kind: str) -> Draft202012Validator:
    return Draft202012Validator(schema(kind), format_checker=FormatChecker())


def _field(entry: dict[str, Any], *names: str) -> Any:
    for name in names:
        if name in entry:
            return entry[name]
    raise EventContractError(f"the event has none of {names}")


def validate_event(entry: dict[str, Any]) -> str:
    """Check one event against its contract; return its kind. Raises EventContractError."""
    source = _field(entry, "source", "Source")
    if source != EVENT_SOURCE:
        raise EventContractError(f"source {source!r} is not {EVENT_SOURCE!r}")
    detail_type = _field(entry, "detail-type", "DetailType")
    kind = KIND_BY_DETAIL_TYPE.get(detail_type)
    if kind is None:
        raise EventContractError(f"detail-type {detail_type!r} is not in core.events.DETAIL_TYPES")
    detail = _field(entry, "detail", "Detail")
    if isinstance(detail, str):
        detail = json.loads(detail)
    errors = sorted(validator(kind).iter_errors(detail), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {'/'.join(map(str, e.absolute_path)) or '(detail)'}: {e.message}" for e in errors]
        raise EventContractError(f"{kind} event does not match {schema_path(kind).name}:\n" + "\n".join(lines))
    return kind


__all__ = ["validate_event", "schema", "schema_path", "EventContractError", "SCHEMAS", "KIND_BY_DETAIL_TYPE"]
