"""The request model: what intake accepts, and the field it names when it does not."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from core.intake import InvalidRequest, execution_arn, parse_request
from core.models import deadline_for


def fields_of(raw) -> list[str]:
    with pytest.raises(InvalidRequest) as err:
        parse_request(raw)
    return [f["field"] for f in err.value.fields]


def test_minimal_request_is_normalised_export_first():
    r = parse_request({"actions": ["erase", "export"], "subject": {"email": " ada@example.com "}})
    assert [a.value for a in r.actions] == ["export", "erase"]
    assert r.subject.email == "ada@example.com"
    assert r.request_id is None and r.vendors is None


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"subject": {"email": "a@b.co"}}, "actions"),
        ({"actions": [], "subject": {"email": "a@b.co"}}, "actions"),
        ({"actions": ["delete"], "subject": {"email": "a@b.co"}}, "actions.0"),
        ({"actions": ["export", "export"], "subject": {"email": "a@b.co"}}, "actions"),
        ({"actions": ["export"]}, "subject"),
        ({"actions": ["export"], "subject": {}}, "subject"),
        ({"actions": ["export"], "subject": {"email": "not-an-email"}}, "subject.email"),
        ({"actions": ["export"], "subject": {"email": "a@b.co", "phone": "1"}}, "subject.phone"),
        ({"actions": ["export"], "subject": {"email": "a@b.co"}, "request_id": "has space"}, "request_id"),
        ({"actions": ["export"], "subject": {"email": "a@b.co"}, "request_id": "x" * 81}, "request_id"),
        ({"actions": ["export"], "subject": {"email": "a@b.co"}, "vendors": []}, "vendors"),
        ({"actions": ["export"], "subject": {"email": "a@b.co"}, "received_at": "yesterday"}, "received_at"),
        ({"actions": ["export"], "subject": {"customer_ids": {"registered": ""}}}, "subject.customer_ids"),
    ],
)
def test_bad_requests_name_the_field(raw, field):
    assert field in fields_of(raw)


def test_error_never_echoes_the_value():
    with pytest.raises(InvalidRequest) as err:
        parse_request({"actions": ["export"], "subject": {"email": "secret-person.example.com"}})
    assert "secret-person" not in str(err.value.fields)


def test_body_must_be_an_object():
    assert fields_of(["export"]) == ["(body)"]


def test_deadline_is_one_month_after_receipt():
    received = datetime(2026, 1, 31, 10, tzinfo=timezone.utc)
    assert deadline_for(received) == datetime(2026, 3, 2, 10, tzinfo=timezone.utc)


def test_execution_arn_from_state_machine_arn():
    sm = "arn:aws:states:eu-west-1:123456789012:stateMachine:dsr"
    assert execution_arn(sm, "r-1") == "arn:aws:states:eu-west-1:123456789012:execution:dsr:r-1"
