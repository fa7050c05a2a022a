"""The event contracts (schemas/events/): one valid Draft 2020-12 schema per catalogued kind, closed everywhere
(no property beyond the contract, so no personal data can ride along), and core.events.emit sends each kind with
its catalogued detail-type."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from core.events import COMPLETED_DETAIL_TYPE, DETAIL_TYPES, EVENT_SOURCE, UnknownEventKind, emit
from tests.event_schemas import SCHEMAS, EventContractError, schema, validate_event

ROLE = "arn:aws:sts::123456789012:assumed-role/dpo/session-1"
MANIFEST = {"bucket": "dsrflow-dev-archives", "key": "requests/dsr-1/manifest.json"}
GOOD: dict[str, dict[str, Any]] = {
    "received": {
        "request_id": "dsr-1",
        "received_at": "2026-11-23T10:00:00Z",
        "deadline": "2026-12-23T10:00:00+00:00",
        "dry_run": False,
        "source": "api",
        "vendors": ["elevate", "qualifio"],
        "actions": ["export", "erase"],
        "approval": "erase",
    },
    "approval_required": {
        "request_id": "dsr-1",
        "vendor": "qualifio",
        "action": "erase",
        "deadline": "2026-12-23T10:00:00Z",
        "attempt": 1,
    },
    "approved": {
        "request_id": "dsr-1",
        "vendor": "qualifio",
        "action": "erase",
        "by": ROLE,
        "at": "2026-11-24T09:30:00.123456Z",
    },
    "denied": {
        "request_id": "dsr-1",
        "vendor": "elevate",
        "action": "export",
        "by": "arn:aws:iam::123456789012:role/dpo",
        "at": "2026-11-24T09:30:00Z",
    },
    "completed": {
        "request_id": "dsr-1",
        "status": "partially_failed",
        "dry_run": True,
        "counts": {"completed": 2, "planned": 1, "failed": 1, "skipped": 0},
        "manifest": MANIFEST,
        "package": {"available": True, "bytes": 2048, "sha256": "a" * 64, "files": 5},
    },
    "deadline_at_risk": {
        "request_id": "dsr-1",
        "deadline": "2026-12-23T10:00:00Z",
        "days_left": 5,
        "status": "running",
    },
    "deadline_extended": {
        "request_id": "dsr-1",
        "deadline": "2027-02-21T10:00:00Z",
        "original_deadline": "2026-12-23T10:00:00Z",
        "extended_days": 60,
        "by": ROLE,
    },
    "cancelled": {"request_id": "dsr-1", "by": ROLE, "at": "2026-11-25T08:00:00Z", "manifest": MANIFEST},
}
# Per kind: a property with a value of the wrong type.
WRONG_TYPE = {
    "received": ("dry_run", "yes"),
    "approval_required": ("attempt", "1"),
    "approved": ("at", 1732000000),
    "denied": ("vendor", ["elevate"]),
    "completed": ("counts", {"completed": "2", "planned": 1, "failed": 1, "skipped": 0}),
    "deadline_at_risk": ("days_left", 5.5),
    "deadline_extended": ("extended_days", "60"),
    "cancelled": ("manifest", "requests/dsr-1/manifest.json"),
}


def entry(kind: str, detail: Any) -> dict[str, Any]:
    return {"source": "dsrflow", "detail-type": DETAIL_TYPES[kind], "detail": detail}


def test_every_kind_has_exactly_one_schema_and_nothing_else_is_there():
    assert {p.name for p in SCHEMAS.iterdir()} == {f"{kind}.schema.json" for kind in DETAIL_TYPES}
    assert set(GOOD) == set(DETAIL_TYPES) == set(WRONG_TYPE)


def test_the_catalog():
    assert EVENT_SOURCE == "dsrflow"
    assert COMPLETED_DETAIL_TYPE == DETAIL_TYPES["completed"] == "Data Subject Request Completed"
    assert len(set(DETAIL_TYPES.values())) == len(DETAIL_TYPES)
    assert all(t.startswith("Data Subject Request ") for t in DETAIL_TYPES.values())


def _objects(node: Any, where: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        if node.get("type") == "object":
            found.append((where or "(root)", node))
        for key, value in node.items():
            found += _objects(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _objects(value, f"{where}/{i}")
    return found


@pytest.mark.parametrize("kind", DETAIL_TYPES)
def test_schema_is_valid_draft_2020_12_closed_everywhere_and_names_its_detail_type(kind):
    s = schema(kind)
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(s)
    assert s["title"] == s["x-detail-type"] == DETAIL_TYPES[kind]
    objects = _objects(s)
    assert objects and objects[0][0] == "(root)"
    for where, obj in objects:
        assert obj.get("additionalProperties") is False, f"{kind} {where} is open to extra properties"
        assert set(obj.get("required", [])) <= set(obj["properties"]), f"{kind} {where}"


def _leaves(node: dict[str, Any], where: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every property's schema that is not an object: what a value can be."""
    found = []
    for name, prop in node.get("properties", {}).items():
        if prop.get("type") == "object":
            found += _leaves(prop, f"{where}/{name}")
        elif prop.get("type") == "array":
            found.append((f"{where}/{name}[]", prop["items"]))
        else:
            found.append((f"{where}/{name}", prop))
    return found


@pytest.mark.parametrize("kind", DETAIL_TYPES)
def test_no_free_text_fits_anywhere(kind):
    """Every string is an enum or matches an anchored pattern (ids, names, times, ARNs, keys): no field could
    carry an email address, a name or a vendor's words."""
    for where, leaf in _leaves(schema(kind)):
        assert leaf["type"] in ("string", "integer", "boolean"), f"{kind} {where}: {leaf['type']}"
        if leaf["type"] == "string":
            assert "enum" in leaf or (leaf["pattern"].startswith("^") and leaf["pattern"].endswith("$")), where
    # An email address fails every string pattern (the ARN pattern aside, for the IAM user that acted).
    for where, leaf in _leaves(schema(kind)):
        if "pattern" in leaf and "arn:aws" not in leaf["pattern"]:
            bad = copy.deepcopy(GOOD[kind])
            with pytest.raises(EventContractError):
                _set(bad, where, "jane.doe@example.com")
                validate_event(entry(kind, bad))


def _set(detail: dict[str, Any], where: str, value: Any) -> None:
    parts = where.strip("/").split("/")
    node = detail
    for part in parts[:-1]:
        node = node[part]
    last = parts[-1]
    if last.endswith("[]"):
        node[last[:-2]] = [value]
    else:
        node[last] = value


@pytest.mark.parametrize("kind", DETAIL_TYPES)
def test_a_good_detail_passes_as_dict_or_json_and_as_a_put_events_entry(kind):
    assert validate_event(entry(kind, GOOD[kind])) == kind
    assert validate_event(entry(kind, json.dumps(GOOD[kind]))) == kind
    put_entry = {"Source": "dsrflow", "DetailType": DETAIL_TYPES[kind], "Detail": json.dumps(GOOD[kind])}
    assert validate_event(put_entry) == kind


@pytest.mark.parametrize("kind", DETAIL_TYPES)
def test_an_extra_property_is_refused_at_every_level(kind):
    with pytest.raises(EventContractError, match="email"):
        validate_event(entry(kind, {**GOOD[kind], "email": "jane.doe@example.com"}))
    for name, value in GOOD[kind].items():
        if isinstance(value, dict):
            nested = copy.deepcopy(GOOD[kind])
            nested[name]["customer_key"] = "ck-1"
            with pytest.raises(EventContractError, match="customer_key"):
                validate_event(entry(kind, nested))


@pytest.mark.parametrize("kind", DETAIL_TYPES)
def test_a_wrong_type_is_refused(kind):
    name, value = WRONG_TYPE[kind]
    with pytest.raises(EventContractError, match=name if name != "counts" else "completed"):
        validate_event(entry(kind, {**GOOD[kind], name: value}))


@pytest.mark.parametrize("kind", DETAIL_TYPES)
def test_every_required_property_is_required(kind):
    for name in schema(kind)["required"]:
        detail = {k: v for k, v in GOOD[kind].items() if k != name}
        with pytest.raises(EventContractError, match=name):
            validate_event(entry(kind, detail))


def test_the_completed_event_says_whether_a_package_exists_and_never_carries_a_link():
    detail = copy.deepcopy(GOOD["completed"])
    validate_event(entry("completed", {**detail, "package": {"available": False}}))
    for bad in (
        {"available": True, "url": "https://b.s3.amazonaws.com/k?X-Amz-Signature=x"},
        {"available": True, "key": "requests/dsr-1/package/x.zip"},
        {"bytes": 1},
    ):
        with pytest.raises(EventContractError):
            validate_event(entry("completed", {**detail, "package": bad}))


def test_the_completed_event_takes_the_optional_attempt_and_new_counts():
    detail = copy.deepcopy(GOOD["completed"])
    detail["attempt"] = 2
    detail["counts"].update(denied=1, cancelled=0)
    detail["status"] = "cancelled"
    validate_event(entry("completed", detail))
    for bad in ({"attempt": 0}, {"status": "done"}, {"counts": {**detail["counts"], "failed": -1}}):
        with pytest.raises(EventContractError):
            validate_event(entry("completed", {**detail, **bad}))


@pytest.mark.parametrize(
    ("kind", "bad"),
    [
        ("received", {"request_id": "dsr 1"}),
        ("received", {"request_id": "x" * 81}),
        ("received", {"source": "email"}),
        ("received", {"actions": ["export", "delete"]}),
        ("received", {"actions": []}),
        ("received", {"approval": "some"}),
        ("received", {"vendors": ["Elevate"]}),
        ("received", {"deadline": "23/12/2026"}),
        ("approval_required", {"attempt": 0}),
        ("approved", {"by": "jane.doe@example.com"}),
        ("approved", {"by": "arn:aws:iam::12345:role/dpo"}),
        ("denied", {"at": "2026-11-24"}),
        ("deadline_extended", {"extended_days": 0}),
        ("deadline_extended", {"extended_days": 61}),
        ("deadline_at_risk", {"status": "Jane Doe"}),
        ("cancelled", {"manifest": {"bucket": "dsrflow-dev-archives", "key": "requests/dsr-1/request.json"}}),
        ("cancelled", {"manifest": {"bucket": "Not_A_Bucket", "key": "requests/dsr-1/manifest.json"}}),
    ],
)
def test_values_outside_the_contract_are_refused(kind, bad):
    with pytest.raises(EventContractError):
        validate_event(entry(kind, {**GOOD[kind], **bad}))


def test_unknown_source_or_detail_type_is_refused():
    with pytest.raises(EventContractError, match="source"):
        validate_event({**entry("completed", GOOD["completed"]), "source": "acme.crm"})
    with pytest.raises(EventContractError, match="detail-type"):
        validate_event({**entry("completed", GOOD["completed"]), "detail-type": "Privacy Request"})


class RecordingEvents:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # boto3's parameter name
        self.entries += Entries
        return {"FailedEntryCount": 0, "Entries": [{"EventId": "e-1"}]}


@pytest.mark.parametrize("kind", DETAIL_TYPES)
def test_emit_sends_the_catalogued_detail_type_from_dsrflow(kind):
    client = RecordingEvents()
    emit(client, "crm-bus", kind, GOOD[kind])  # type: ignore[arg-type]  # a stand-in for the boto3 client
    (sent,) = client.entries
    assert (
        sent["Source"] == "dsrflow" and sent["DetailType"] == DETAIL_TYPES[kind] and sent["EventBusName"] == "crm-bus"
    )
    assert validate_event(sent) == kind


def test_emit_refuses_an_unknown_kind_before_sending():
    client = RecordingEvents()
    for error in (KeyError, ValueError, UnknownEventKind):
        with pytest.raises(error, match="unknown dsrflow event kind"):
            emit(client, "crm-bus", "Data Subject Request Completed", {})  # type: ignore[arg-type]
    assert client.entries == []
