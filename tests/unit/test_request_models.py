"""The request model: what intake accepts, and the field it names when it does not."""

from __future__ import annotations

from datetime import UTC, datetime

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
    received = datetime(2026, 1, 31, 10, tzinfo=UTC)
    assert deadline_for(received) == datetime(2026, 3, 2, 10, tzinfo=UTC)


def test_execution_arn_from_state_machine_arn():
    sm = "arn:aws:states:eu-west-1:123456789012:stateMachine:dsr"
    assert execution_arn(sm, "r-1") == "arn:aws:states:eu-west-1:123456789012:execution:dsr:r-1"


# --- strict, bounded intake ------------------------------------------------------------------------------------

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
OK = {"actions": ["export"], "subject": {"email": "ada@example.com"}}


def rejected(raw) -> list[dict[str, str]]:
    with pytest.raises(InvalidRequest) as err:
        parse_request(raw, now=NOW)
    return err.value.fields


def field_names(raw) -> list[str]:
    return [f["field"] for f in rejected(raw)]


def with_subject(**subject):
    return {"actions": ["export"], "subject": subject}


@pytest.mark.parametrize(
    "given, utc",
    [
        ("2026-11-23T10:00:00Z", datetime(2026, 11, 23, 10, tzinfo=UTC)),
        ("2026-11-23t10:00:00z", datetime(2026, 11, 23, 10, tzinfo=UTC)),
        ("2026-11-23 10:00:00Z", datetime(2026, 11, 23, 10, tzinfo=UTC)),
        ("2026-11-23T12:00:00+02:00", datetime(2026, 11, 23, 10, tzinfo=UTC)),
        ("2026-11-23T04:30:00-05:30", datetime(2026, 11, 23, 10, tzinfo=UTC)),
        ("2026-11-23T10:00:00.5Z", datetime(2026, 11, 23, 10, 0, 0, 500000, tzinfo=UTC)),
        ("2026-11-23T10:00:00.123456789Z", datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_received_at_is_an_rfc3339_date_time_with_a_zone(given, utc):
    request = parse_request({**OK, "received_at": given}, now=NOW)
    assert request.received_at == utc and request.received_at.utcoffset().total_seconds() == 0


@pytest.mark.parametrize(
    "given",
    [
        0,  # once guessed as seconds: 1970
        1764590400,
        1764590400000,
        1.5,
        True,
        "1764590400",
        "2026-11-23",  # date only
        "2026-11-23T10:00:00",  # naive
        "2026-11-23T10:00Z",  # no seconds
        "2026-11-23T10:00:00+0100",  # offset without colon
        "2026-11-23T10:00:00 Z",
        "2026-02-30T10:00:00Z",
        "2026-11-23T24:00:00Z",
        "2026-11-23T10:00:60Z",  # a leap second: not representable
        "2026-11-23T10:00:00+24:00",
        "٢٠٢٦-11-23T10:00:00Z",  # digits of another script
        " 2026-11-23T10:00:00Z",
        "2026-11-23T10:00:00Z\n",
        "yesterday",
        ["2026-11-23T10:00:00Z"],
        {"at": "2026-11-23T10:00:00Z"},
    ],
)
def test_received_at_in_any_other_form_is_refused(given):
    fields = rejected({**OK, "received_at": given})
    assert fields == [
        {"field": "received_at", "message": "must be an RFC 3339 date-time with a time zone, e.g. 2026-11-23T10:00:00Z"}
    ]


@pytest.mark.parametrize(
    "given",
    [
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",  # overflows when converted to UTC
        "1970-01-01T00:00:00Z",
        "2100-01-01T00:00:00Z",
        "9999-12-31T00:00:00Z",  # deadline_for overflowed: a 500
        "9999-12-31T23:59:59-23:59",
        "2026-08-31T11:59:59Z",  # 92 days and 1 second ago
        "2026-12-01T12:05:01Z",  # 5 minutes and 1 second ahead
    ],
)
def test_received_at_outside_the_lawful_window_is_refused(given):
    [problem] = rejected({**OK, "received_at": given})
    assert problem["field"] == "received_at"
    assert "92 days" in problem["message"] and "5 minutes" in problem["message"]
    assert "Art. 12(3)" in problem["message"]


@pytest.mark.parametrize("given", ["2026-08-31T12:00:00Z", "2026-12-01T12:05:00Z", "2026-12-01T12:00:00Z"])
def test_received_at_on_the_bounds_is_accepted(given):
    assert parse_request({**OK, "received_at": given}, now=NOW).received_at is not None


def test_received_at_bound_defaults_to_the_clock():
    from core.clock import utcnow

    just_now = utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
    assert parse_request({**OK, "received_at": just_now}).received_at is not None
    with pytest.raises(InvalidRequest):
        parse_request({**OK, "received_at": "2000-01-01T00:00:00Z"})


def test_received_at_bound_comes_from_the_validation_context():
    from core.models import DsrRequest

    raw = {**OK, "received_at": "2020-01-01T00:00:00Z"}
    then = datetime(2020, 1, 2, tzinfo=UTC)
    assert DsrRequest.model_validate(raw, context={"now": then}).received_at.year == 2020


@pytest.mark.parametrize("given", [1, 0, "yes", "off", "true", "false", None, [], {}, 1.0])
def test_dry_run_is_a_json_boolean(given):
    assert field_names({**OK, "dry_run": given}) == ["dry_run"]


def test_dry_run_true_and_false():
    assert parse_request({**OK, "dry_run": True}, now=NOW).dry_run is True
    assert parse_request({**OK, "dry_run": False}, now=NOW).dry_run is False


@pytest.mark.parametrize("given", [[0], [1], [True], ["EXPORT"], ["export "], [None], [["export"]]])
def test_actions_are_the_strings_export_and_erase(given):
    assert field_names({**OK, "actions": given}) == ["actions.0"]


@pytest.mark.parametrize("given", ["export", 1, None, {"export": True}])
def test_actions_is_a_list(given):
    assert field_names({**OK, "actions": given}) == ["actions"]


def test_a_huge_action_list_is_refused_cheaply():
    assert field_names({**OK, "actions": ["export"] * 100_000}) == ["actions"]


def email(local: int, domain: int = 0) -> str:
    host = "d" * max(domain - 3, 1) + ".co"
    return "a" * local + "@" + host


def test_email_limits():
    assert len(email(64, 189)) == 254
    assert parse_request(with_subject(email=email(64, 189)), now=NOW).subject.email == email(64, 189)
    assert rejected(with_subject(email=email(64, 190))) == [
        {"field": "subject.email", "message": "is longer than 254 characters"}
    ]
    assert rejected(with_subject(email=email(65))) == [
        {"field": "subject.email", "message": "has a local part (before the @) longer than 64 characters"}
    ]


def test_a_one_megabyte_email_is_refused():
    assert field_names(with_subject(email="a" * 1_000_000 + "@example.com")) == ["subject.email"]
    assert field_names(with_subject(email="a@" + "b." * 500_000 + "co")) == ["subject.email"]


def test_customer_key_limit():
    assert parse_request(with_subject(customer_key="k" * 128), now=NOW).subject.customer_key == "k" * 128
    assert rejected(with_subject(customer_key="k" * 129)) == [
        {"field": "subject.customer_key", "message": "is longer than 128 characters"}
    ]
    assert field_names(with_subject(customer_key=" ")) == ["subject.customer_key"]


def test_customer_ids_limits():
    ten = {f"type{i}": "v" for i in range(10)}
    assert parse_request(with_subject(customer_ids=ten), now=NOW).subject.customer_ids == ten
    assert rejected(with_subject(customer_ids={**ten, "type10": "v"})) == [
        {"field": "subject.customer_ids", "message": "has more than 10 entries"}
    ]
    assert parse_request(with_subject(customer_ids={"a.b_c-D9": "v" * 256}), now=NOW)
    assert parse_request(with_subject(customer_ids={"t" * 64: "v"}), now=NOW)
    for bad_type in ("", "t" * 65, "has space", "é", "a/b", "a\n", "registered\ud800"):
        assert field_names(with_subject(customer_ids={bad_type: "v"})) == ["subject.customer_ids"], bad_type
    for bad_value in ("v" * 257, 7, None, True, ["v"], {"v": "v"}, "", " ", "a\x00b", "\udfff"):
        assert field_names(with_subject(customer_ids={"registered": bad_value})) == ["subject.customer_ids"]


def test_customer_ids_errors_never_name_the_caller_s_id_types():
    fields = rejected(with_subject(customer_ids={"ada.lovelace@example.com": "x", "ok": 1}))
    assert "ada" not in str(fields)


def test_justification_limit_and_text():
    assert parse_request({**OK, "justification": "j" * 1000}, now=NOW).justification == "j" * 1000
    assert field_names({**OK, "justification": "j" * 1001}) == ["justification"]
    assert parse_request({**OK, "justification": "line 1\r\n\tline 2\n"}, now=NOW).justification
    [problem] = rejected({**OK, "justification": "a\x00b"})
    assert problem["field"] == "justification" and "tab and newline" in problem["message"]
    assert field_names({**OK, "justification": 12}) == ["justification"]


def test_vendor_limits():
    assert parse_request({**OK, "vendors": [f"v{i}" for i in range(20)]}, now=NOW).vendors
    assert field_names({**OK, "vendors": [f"v{i}" for i in range(21)]}) == ["vendors"]
    for bad in ("Elevate", "1vendor", "-x", "v" * 65, "ven dor", "", "qualifio\n", 3, None, "é"):
        assert field_names({**OK, "vendors": [bad]}) == ["vendors.0"], bad
    assert parse_request({**OK, "vendors": ["a" + "b" * 63]}, now=NOW)


def test_a_300_kb_vendor_name_and_3000_vendor_names_are_refused():
    assert field_names({**OK, "vendors": ["v" * 300_000]}) == ["vendors.0"]
    [problem] = rejected({**OK, "vendors": [f"v{i}" for i in range(3000)]})
    assert problem["field"] == "vendors"


@pytest.mark.parametrize("bad", ["\ud800", "\udc00x", "a\x00", "a\x1b[31m", "a\x7f", "a\x85", "a\tb", "a\nb"])
@pytest.mark.parametrize(
    "build, field",
    [
        (lambda s: with_subject(email=f"ada{s}@example.com"), "subject.email"),
        (lambda s: with_subject(customer_key=f"key{s}"), "subject.customer_key"),
        (lambda s: with_subject(customer_ids={"registered": f"crm{s}"}), "subject.customer_ids"),
        (lambda s: {**OK, "vendors": [f"qualifio{s}"]}, "vendors.0"),
        (lambda s: {**OK, "request_id": f"r-1{s}"}, "request_id"),
    ],
)
def test_every_string_must_be_valid_text(build, field, bad):
    [problem] = rejected(build(bad))
    assert problem["field"] == field
    if field != "subject.customer_ids":
        assert problem["message"] == "must be valid text: no control characters and no lone surrogates"
    else:
        assert "valid text" in problem["message"]


@pytest.mark.parametrize("bad", ["\ud800", "\udbff\udbff", "a\x00", "a\x0b", "a\x1f", "a\x9f"])
def test_justification_must_be_valid_text(bad):
    [problem] = rejected({**OK, "justification": f"because{bad}"})
    assert problem["field"] == "justification" and "lone surrogates" in problem["message"]


def test_a_key_that_is_not_text_is_refused_without_naming_it():
    assert rejected({**OK, "\ud800": 1}) == [{"field": "(body)", "message": "has a field name that is not valid text"}]
    assert field_names(with_subject(email="a@b.co", **{"x\ud800": 1})) == ["subject"]


def test_unknown_fields_are_named_only_when_they_look_like_names():
    assert field_names({**OK, "phone": "1"}) == ["phone"]
    fields = rejected({**OK, "ada.lovelace@example.com": "1", "x" * 1000: 1})
    assert [f["field"] for f in fields] == ["(unknown field)", "(unknown field)"]
    assert "ada" not in str(fields) and "xxxx" not in str(fields)


def test_strings_are_strings():
    assert field_names(with_subject(email=12345)) == ["subject.email"]
    assert field_names(with_subject(customer_key=12345)) == ["subject.customer_key"]
    assert field_names({**OK, "request_id": 12345}) == ["request_id"]
    assert field_names({**OK, "vendors": "qualifio"}) == ["vendors"]


def test_deeply_nested_values_are_refused_without_recursion():
    deep: dict = {}
    node = deep
    for _ in range(100_000):
        node["a"] = {}
        node = node["a"]
    assert rejected({**OK, "justification": deep}) == [
        {"field": "(body)", "message": "is nested too deeply (more than 32 levels)"}
    ]
    assert field_names({**OK, "justification": [[[["x"]]]]}) == ["justification"]


SECRETS = [
    ({"subject": {"email": "secret-person@example"}}, "secret-person"),
    ({"subject": {"email": "secret-person" * 30 + "@example.com"}}, "secret-person"),
    ({"subject": {"customer_key": "secret-key" * 20}}, "secret-key"),
    ({"subject": {"customer_ids": {"registered": "secret-id" * 40}}}, "secret-id"),
    ({"subject": {"email": "a@b.co"}, "justification": "secret-why" * 200}, "secret-why"),
    ({"subject": {"email": "a@b.co"}, "justification": "secret-why\x00"}, "secret-why"),
    ({"subject": {"email": "a@b.co"}, "received_at": "secret-when"}, "secret-when"),
    ({"subject": {"email": "a@b.co"}, "received_at": "2099-01-01T00:00:00Z"}, "2099"),
    ({"subject": {"email": "a@b.co"}, "vendors": ["Secret-Vendor"]}, "Secret-Vendor"),
    ({"subject": {"email": "a@b.co"}, "request_id": "secret id"}, "secret id"),
    ({"subject": {"email": "a@b.co"}, "dry_run": "secret-flag"}, "secret-flag"),
]


@pytest.mark.parametrize("raw, secret", SECRETS)
def test_no_message_echoes_the_value(raw, secret):
    assert secret not in str(rejected({"actions": ["export"], **raw}))


def test_fingerprint_is_the_request_as_normalised():
    a = parse_request(
        {"actions": ["erase", "export"], "subject": {"email": " ada@example.com"}, "vendors": ["qualifio", "elevate"]},
        now=NOW,
    )
    b = parse_request(
        {"actions": ["export", "erase"], "subject": {"email": "ada@example.com"}, "vendors": ["elevate", "qualifio"]},
        now=NOW,
    )
    assert a.fingerprint() == b.fingerprint() and len(a.fingerprint()) == 64
    # The request id is the key, not part of what is compared.
    assert parse_request({**OK, "request_id": "r-1"}, now=NOW).fingerprint() == parse_request(OK).fingerprint()


@pytest.mark.parametrize(
    "change",
    [
        {"subject": {"email": "bob@example.com"}},
        {"subject": {"email": "ada@example.com", "customer_key": "k"}},
        {"actions": ["erase"]},
        {"vendors": ["qualifio"]},
        {"justification": "why"},
        {"dry_run": True},
        {"received_at": "2026-11-23T10:00:00Z"},
    ],
)
def test_fingerprint_changes_with_what_was_asked(change):
    assert parse_request({**OK, **change}, now=NOW).fingerprint() != parse_request(OK, now=NOW).fingerprint()


def test_fingerprint_compares_received_at_as_an_instant():
    one = parse_request({**OK, "received_at": "2026-11-23T10:00:00Z"}, now=NOW)
    same = parse_request({**OK, "received_at": "2026-11-23T11:00:00+01:00"}, now=NOW)
    assert one.fingerprint() == same.fingerprint()


def test_deadline_never_overflows_for_an_accepted_request():
    latest = parse_request({**OK, "received_at": "2026-12-01T12:05:00Z"}, now=NOW).received_at
    assert deadline_for(latest) == datetime(2026, 12, 31, 12, 5, tzinfo=UTC)
