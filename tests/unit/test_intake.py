"""Intake below the handler: the raw API body, planning against this deployment's vendors, and one request per
id (a redelivery is a duplicate, a different request under a used id a conflict)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from connectors import registry
from core import intake
from core.intake import InvalidRequest, RequestConflict, accept, parse_body, parse_request
from core.models import StoredRequest

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ENABLED = ["bloomreach", "elevate", "qualifio"]
EVERYONE = {"email": "ada@example.com", "customer_key": "k-1", "customer_ids": {"registered": "crm-1"}}


def plan(*args, **kwargs) -> StoredRequest:
    """core.intake.plan with the registry the intake handler passes it (core never imports connectors)."""
    return intake.plan(*args, connector_class=registry.connector_class, **kwargs)


def body_error(body, base64_encoded=False) -> dict[str, str]:
    with pytest.raises(InvalidRequest) as err:
        parse_body(body, base64_encoded)
    [problem] = err.value.fields
    assert problem["field"] == "(body)"
    return problem


# --- the raw body ------------------------------------------------------------------------------------------------


def test_body_json_is_parsed():
    assert parse_body('{"a": [1, "x"]}') == {"a": [1, "x"]}
    assert parse_body(base64.b64encode(b'{"a": 1}').decode(), True) == {"a": 1}
    # A lone surrogate written as a JSON escape is valid UTF-8 JSON: the field check refuses it later.
    assert parse_body('{"email": "\\ud800"}') == {"email": "\ud800"}


@pytest.mark.parametrize(
    "body, message",
    [
        (None, "must be a JSON object"),
        ("", "must be a JSON object"),
        ("{not json", "is not JSON"),
        ('{"a": NaN}', "is not JSON"),
        ("Infinity", "is not JSON"),
        ("1" * 5000, "is not JSON"),  # more digits than Python converts
        ("\ufeff{}", "is not JSON"),
        ('"\ud800"', "is not valid UTF-8"),  # a raw surrogate in the event's text cannot be UTF-8
    ],
)
def test_bad_bodies(body, message):
    assert body_error(body)["message"] == message


def test_base64_body_that_is_not_utf8_or_not_base64():
    assert body_error(base64.b64encode(b'{"a": "\xff"}').decode(), True)["message"] == "is not valid UTF-8"
    assert body_error("not base64!", True)["message"] == "is not valid base64"
    assert body_error("é", True)["message"] == "is not valid base64"


def test_body_larger_than_64_kib():
    just = '{"a": "' + "x" * (64 * 1024 - 9) + '"}'
    assert len(just.encode()) == 64 * 1024
    assert parse_body(just)
    too_big = '{"a": "' + "x" * (64 * 1024 - 8) + '"}'
    assert body_error(too_big)["message"] == "is larger than 64 KiB"
    assert body_error('{"a": "' + "é" * 40_000 + '"}')["message"] == "is larger than 64 KiB"  # bytes, not characters
    assert body_error(base64.b64encode(too_big.encode()).decode(), True)["message"] == "is larger than 64 KiB"
    assert body_error("x" * 10_000_000)["message"] == "is larger than 64 KiB"


def test_nesting():
    assert parse_body("[" * 32 + "]" * 32)
    assert body_error("[" * 33 + "]" * 33)["message"] == "is nested too deeply (more than 32 levels)"
    assert body_error('{"a":' * 40 + "1" + "}" * 40)["message"].startswith("is nested too deeply")
    assert body_error("[" * 60_000)["message"].startswith("is nested too deeply")  # was a RecursionError (500)


def test_brackets_inside_strings_do_not_count():
    assert parse_body(json.dumps({"a": "[" * 1000, "b": '\\"[[[[', "c": "{" * 50}))


def test_body_must_be_an_object_after_parsing():
    for value in ([], "x", 1, None, True):
        with pytest.raises(InvalidRequest) as err:
            parse_request(value)
        assert err.value.fields == [{"field": "(body)", "message": "must be a JSON object"}]


# --- planning -------------------------------------------------------------------------------------------------------


def request(**fields):
    return parse_request({"actions": ["export"], "subject": EVERYONE, **fields}, now=NOW)


def test_unknown_vendors_are_refused_naming_the_known_ones():
    with pytest.raises(InvalidRequest) as err:
        plan(request(vendors=["qualifio", "salesforce", "hubspot"]), ENABLED, "api", NOW)
    known = "is not a vendor of this deployment (known: bloomreach, elevate, qualifio)"
    assert err.value.fields == [
        {"field": "vendors.1", "message": known},
        {"field": "vendors.2", "message": known},
    ]


def test_a_vendor_not_enabled_here_is_unknown():
    with pytest.raises(InvalidRequest) as err:
        plan(request(vendors=["elevate"]), ["qualifio"], "eventbridge", NOW, prefix="detail.")
    assert err.value.fields == [
        {"field": "detail.vendors.0", "message": "is not a vendor of this deployment (known: qualifio)"}
    ]


def test_a_subject_no_vendor_can_act_on_is_refused_with_each_reason():
    with pytest.raises(InvalidRequest) as err:
        plan(
            parse_request({"actions": ["export", "erase"], "subject": {"customer_key": "k-1"}}, now=NOW),
            ["bloomreach", "qualifio"],
            "api",
            NOW,
        )
    [problem] = err.value.fields
    assert problem["field"] == "subject"
    assert problem["message"].startswith("no vendor can act on this subject: bloomreach: ")
    assert "qualifio: Qualifio finds profiles by email only" in problem["message"]
    assert problem["message"].count("qualifio:") == 1  # one reason per vendor, not per action
    assert "k-1" not in problem["message"]


def test_some_vendors_skipped_is_still_a_plan():
    stored = plan(
        parse_request({"actions": ["export"], "subject": {"email": "ada@example.com"}}, now=NOW), ENABLED, "api", NOW
    )
    assert [p.vendor for p in stored.plan] == ["qualifio"]
    assert sorted(s.vendor for s in stored.skipped) == ["bloomreach", "elevate"]
    assert stored.fingerprint and stored.received_at == NOW


# --- one request per id -----------------------------------------------------------------------------------------------


class FakeStore:
    def __init__(self):
        self.requests: dict[str, str] = {}

    def create_request(self, stored: StoredRequest) -> bool:
        if stored.request_id in self.requests:
            return False
        self.requests[stored.request_id] = stored.model_dump_json()
        return True

    def load_request(self, request_id: str) -> StoredRequest:
        return StoredRequest.model_validate_json(self.requests[request_id])


class FakeSfn:
    class exceptions:
        class ExecutionAlreadyExists(Exception):
            pass

    def __init__(self):
        self.started: list[str] = []

    def start_execution(self, stateMachineArn, name, input):
        if name in self.started:
            raise self.exceptions.ExecutionAlreadyExists()
        self.started.append(name)
        return {"executionArn": f"arn:aws:states:eu-west-1:1:execution:dsr:{name}"}


SM = "arn:aws:states:eu-west-1:1:stateMachine:dsr"


def run(store, sfn, raw):
    return accept(
        parse_request(raw, now=NOW),
        source="api",
        store=store,
        sfn=sfn,
        state_machine_arn=SM,
        enabled_vendors=ENABLED,
        now=NOW,
        connector_class=registry.connector_class,
    )


def test_same_request_again_is_a_duplicate():
    store, sfn = FakeStore(), FakeSfn()
    raw = {"request_id": "r-1", "actions": ["export"], "subject": EVERYONE}
    assert run(store, sfn, raw).status == "accepted"
    again = run(store, sfn, {**raw, "actions": ["export"], "subject": {**EVERYONE, "email": " ada@example.com "}})
    assert again.status == "duplicate" and sfn.started == ["r-1"]


def test_same_id_with_a_different_request_is_a_conflict_and_starts_nothing():
    store, sfn = FakeStore(), FakeSfn()
    raw = {"request_id": "r-1", "actions": ["export"], "subject": EVERYONE}
    run(store, sfn, raw)
    first = store.requests["r-1"]
    for change in ({"subject": {"email": "bob@example.com"}}, {"actions": ["erase"]}, {"dry_run": True}):
        with pytest.raises(RequestConflict) as err:
            run(store, sfn, {**raw, **change})
        assert str(err.value) == "request id r-1 is already used by a different request; choose another id"
    assert sfn.started == ["r-1"] and store.requests["r-1"] == first


def test_a_record_without_a_fingerprint_is_taken_as_the_same_request():
    store, sfn = FakeStore(), FakeSfn()
    raw = {"request_id": "r-old", "actions": ["export"], "subject": EVERYONE}
    run(store, sfn, raw)
    old = json.loads(store.requests["r-old"])
    del old["fingerprint"]
    store.requests["r-old"] = json.dumps(old)
    again = run(store, sfn, {**raw, "subject": {"email": "bob@example.com"}})
    assert again.status == "duplicate"
    assert store.load_request("r-old").subject.email == "ada@example.com"


def test_invalid_plans_store_and_start_nothing():
    store, sfn = FakeStore(), FakeSfn()
    with pytest.raises(InvalidRequest):
        run(store, sfn, {"request_id": "r-2", "actions": ["export"], "subject": EVERYONE, "vendors": ["nope"]})
    assert store.requests == {} and sfn.started == []


def test_a_request_id_holding_the_subjects_identifiers_is_refused():
    # The id becomes the execution's name: kept in the history and every record, where no PII may be.
    raw = {
        "request_id": "dsr-crm-1001-x",
        "actions": ["export"],
        "subject": {"customer_ids": {"registered": "crm-1001-x"}},
    }
    with pytest.raises(InvalidRequest) as caught:
        parse_request(raw)
    assert caught.value.fields == [
        {"field": "request_id", "message": "must not contain the subject's identifiers (it is kept in every record)"}
    ]
    assert parse_request({**raw, "request_id": "dsr-1"}).request_id == "dsr-1"
