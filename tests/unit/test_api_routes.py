"""The API's routes (functions/handlers/intake.py) as API Gateway calls them, with core.operations stubbed: bad
input is a 400 naming the field and never its value, an unknown request 404, a state conflict 409, nothing
about the input a 5xx; the caller's IAM principal is what the operations are told acted."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local.engine import api_gateway_event

PRINCIPAL = "arn:aws:iam::123456789012:role/dpo"
OPS = object()  # what handlers.runtime.ops() gives the routes here
ACTIONS = ("approve", "deny", "retry", "cancel", "extend")
VALID_BODIES = {
    "approve": None,
    "deny": {"reason": "the controller withdrew the request"},
    "retry": None,
    "cancel": None,
    "extend": {"days": 30, "reason": "complex request (Art. 12(3))"},
}


class Context:
    function_name = "dsrflow-intake"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:dsrflow-intake"
    memory_limit_in_mb = 512
    aws_request_id = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


class Calls:
    """Stands in for core.operations' functions: records each call, answers {"called": name}."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from core import operations
        from handlers import intake as routes

        self.made: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.raise_: BaseException | None = None
        self.answer: Any = None
        monkeypatch.setattr(routes, "ops", lambda: OPS)
        for name in ("list_requests", "describe", "audit", "package", *ACTIONS):
            monkeypatch.setattr(operations, name, self._stub(name), raising=False)

    def _stub(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.made.append((name, args, kwargs))
            if self.raise_ is not None:
                raise self.raise_
            return self.answer if self.answer is not None else {"called": name}

        return call

    @property
    def last(self) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        assert self.made, "no operation was called"
        return self.made[-1]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    return Calls(monkeypatch)


def call(
    method: str,
    path: str,
    body: Any = None,
    *,
    query: dict[str, Any] | None = None,
    principal: str = PRINCIPAL,
    base64_encoded: bool = False,
    raw: bool = False,
) -> tuple[int, Any]:
    from handlers.intake import app

    text = body if raw or body is None or isinstance(body, str) else json.dumps(body)
    if base64_encoded and text is not None:
        text = base64.b64encode(text.encode("utf-8", "surrogatepass")).decode()
    event = api_gateway_event(method, path, text, query=query, principal=principal, base64_encoded=base64_encoded)
    out = app.resolve(event, Context())
    return out["statusCode"], json.loads(out["body"]) if out.get("body") else None


def fields_of(status: int, answer: Any) -> list[dict[str, str]]:
    assert status == 400, answer
    assert answer["error"] == "invalid request" and set(answer) == {"error", "fields"}, answer
    return answer["fields"]


# --- the happy paths: what each route hands core.operations ----------------------------------------------------


def test_list_passes_its_query(calls):
    status, body = call(
        "GET", "/requests", query={"status": "awaiting_approval", "due_before": "2026-12-24T00:00:00Z", "limit": "10"}
    )
    assert (status, body) == (200, {"called": "list_requests"})
    name, args, kwargs = calls.last
    assert args == (OPS,)
    assert kwargs == {
        "status": "awaiting_approval",
        "due_before": datetime(2026, 12, 24, tzinfo=UTC),
        "limit": 10,
        "next_token": None,
    }
    call("GET", "/requests")
    assert calls.last[2] == {"status": None, "due_before": None, "limit": 50, "next_token": None}


def test_describe_and_audit(calls):
    assert call("GET", "/requests/r-1") == (200, {"called": "describe"})
    assert calls.last[1] == (OPS, "r-1")
    assert call("GET", "/requests/r-1/audit", query={"limit": "5", "next_token": "abc"})[0] == 200
    assert calls.last[1:] == ((OPS, "r-1"), {"limit": 5, "next_token": "abc"})


def test_package_gets_the_callers_principal(calls):
    assert call("GET", "/requests/r-1/package") == (200, {"called": "package"})
    assert calls.last[1:] == ((OPS, "r-1"), {"principal": PRINCIPAL})
    status, _ = call("GET", "/requests/r-1/package", principal="")
    assert status == 403 and len(calls.made) == 1, "no link without an IAM principal"
    assert fields_of(*call("GET", "/requests/bad.id/package"))[0]["field"] == "request_id"


def test_an_unrecordable_link_is_503_and_hands_out_nothing(calls):
    from core.operations import AuditUnavailable

    calls.raise_ = AuditUnavailable(
        "request r-1: the link could not be recorded in the audit trail; nothing was handed out, try again"
    )
    status, body = call("GET", "/requests/r-1/package")
    assert status == 503 and body == {
        "error": "unavailable",
        "message": "request r-1: the link could not be recorded in the audit trail; nothing was handed out, try again",
    }


@pytest.mark.parametrize("action", ACTIONS)
def test_each_action_gets_its_body_and_the_callers_principal(calls, action):
    from core import operations

    status, body = call("POST", f"/requests/r-1/{action}", VALID_BODIES[action])
    assert (status, body) == (202 if action == "retry" else 200, {"called": action})
    name, args, kwargs = calls.last
    assert name == action and args[:2] == (OPS, "r-1")
    model = {
        "approve": operations.Decision,
        "deny": operations.Denial,
        "retry": operations.RetryBody,
        "cancel": operations.CancelBody,
        "extend": operations.Extension,
    }[action]
    assert type(args[2]) is model
    assert kwargs == {"principal": PRINCIPAL}


@pytest.mark.parametrize("action", ["approve", "retry", "cancel"])
@pytest.mark.parametrize("empty", [None, "", "{}"])
def test_approve_retry_cancel_take_an_empty_body(calls, action, empty):
    status, _ = call("POST", f"/requests/r-1/{action}", empty, raw=True)
    assert status in (200, 202)
    assert calls.last[1][2].model_dump(exclude_none=True) == {}


def test_bodies_are_validated_into_the_models(calls):
    call("POST", "/requests/r-1/approve", {"vendor": "qualifio", "action": "erase", "reason": "checked by DPO"})
    decision = calls.last[1][2]
    assert (decision.vendor, decision.action.value, decision.reason) == ("qualifio", "erase", "checked by DPO")
    call("POST", "/requests/r-1/retry", {"vendors": ["elevate"]})
    assert calls.last[1][2].vendors == ["elevate"]


def test_a_base64_body_is_read(calls):
    status, _ = call("POST", "/requests/r-1/extend", VALID_BODIES["extend"], base64_encoded=True)
    assert status == 200 and calls.last[1][2].days == 30


def test_answers_with_datetimes_are_json(calls):
    calls.answer = {"deadline": datetime(2027, 1, 1, tzinfo=UTC)}
    assert call("GET", "/requests/r-1") == (200, {"deadline": "2027-01-01T00:00:00Z"})


def test_no_iam_principal_is_403(calls):
    status, _ = call("POST", "/requests/r-1/approve", principal="")
    assert status == 403 and not calls.made


# --- bad input: 400 naming the field ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, body, query, field, message",
    [
        ("POST", "/requests/r-1/approve", "{not json", None, "(body)", "is not JSON"),
        ("POST", "/requests/r-1/approve", '{"reason": NaN}', None, "(body)", "is not JSON"),
        ("POST", "/requests/r-1/approve", "[1, 2]", None, "(body)", "must be a JSON object"),
        ("POST", "/requests/r-1/approve", "null", None, "(body)", "must be a JSON object"),
        ("POST", "/requests/r-1/approve", '"text"', None, "(body)", "must be a JSON object"),
        ("POST", "/requests/r-1/approve", "[" * 40 + "]" * 40, None, "(body)", "nested too deeply"),
        ("POST", "/requests/r-1/approve", json.dumps({"reason": "x" * 70_000}), None, "(body)", "64 KiB"),
        ("POST", "/requests/r-1/approve", '{"\\ud800": 1}', None, "(body)", "not valid text"),
        ("POST", "/requests/r-1/approve", {"extra": 1}, None, "extra", "Extra inputs"),
        ("POST", "/requests/r-1/approve", {"action": "delete"}, None, "action", "'export' or 'erase'"),
        ("POST", "/requests/r-1/approve", {"vendor": "Not A Vendor"}, None, "vendor", "pattern"),
        ("POST", "/requests/r-1/approve", {"reason": "x" * 501}, None, "reason", "500 characters"),
        ("POST", "/requests/r-1/approve", {"reason": "a\u0000b"}, None, "reason", "valid text"),
        ("POST", "/requests/r-1/deny", None, None, "(body)", "must be a JSON object"),
        ("POST", "/requests/r-1/deny", {}, None, "reason", "Field required"),
        ("POST", "/requests/r-1/deny", {"reason": 5}, None, "reason", "valid string"),
        ("POST", "/requests/r-1/deny", {"reason": ""}, None, "reason", "at least 1 character"),
        ("POST", "/requests/r-1/retry", {"vendors": []}, None, "vendors", "at least 1 item"),
        ("POST", "/requests/r-1/retry", {"vendors": "elevate"}, None, "vendors", "valid list"),
        ("POST", "/requests/r-1/cancel", {"reason": None, "why": "x"}, None, "why", "Extra inputs"),
        ("POST", "/requests/r-1/extend", {"days": 0, "reason": "r"}, None, "days", "greater than or equal to 1"),
        ("POST", "/requests/r-1/extend", {"days": 61, "reason": "r"}, None, "days", "less than or equal to 60"),
        ("POST", "/requests/r-1/extend", {"days": "30", "reason": "r"}, None, "days", "valid integer"),
        ("POST", "/requests/r-1/extend", {"days": 1.5, "reason": "r"}, None, "days", "valid integer"),
        ("POST", "/requests/r-1/extend", {"days": 30}, None, "reason", "Field required"),
        ("GET", "/requests", None, {"status": "done"}, "status", "'received'"),
        ("GET", "/requests", None, {"due_before": "tomorrow"}, "due_before", "RFC 3339"),
        ("GET", "/requests", None, {"due_before": "2026-12-24"}, "due_before", "RFC 3339"),
        ("GET", "/requests", None, {"due_before": "2026-12-24T00:00:00"}, "due_before", "RFC 3339"),
        ("GET", "/requests", None, {"due_before": "1764590400"}, "due_before", "RFC 3339"),
        ("GET", "/requests", None, {"due_before": "2026-02-30T00:00:00Z"}, "due_before", ""),
        ("GET", "/requests", None, {"limit": "0"}, "limit", "greater than or equal to 1"),
        ("GET", "/requests", None, {"limit": "101"}, "limit", "less than or equal to 100"),
        ("GET", "/requests", None, {"limit": "ten"}, "limit", "valid integer"),
        ("GET", "/requests", None, {"status": ["running", "failed"]}, "status", ""),
        ("GET", "/requests", None, {"next_token": "x" * 2049}, "next_token", "2048 characters"),
        ("GET", "/requests/r-1/audit", None, {"limit": "0"}, "limit", "greater than or equal to 1"),
        ("GET", "/requests/bad id!", None, None, "request_id", "pattern"),
        ("GET", "/requests/" + "x" * 81 + "/audit", None, None, "request_id", "pattern"),
        ("POST", "/requests/bad.id/approve", None, None, "request_id", "pattern"),
        ("POST", "/requests/%2e%2e/extend", {"days": 1, "reason": "r"}, None, "request_id", "pattern"),
    ],
)
def test_bad_input_is_400_naming_the_field(calls, method, path, body, query, field, message):
    found = fields_of(*call(method, path, body, query=query))
    assert found[0]["field"] == field and message in found[0]["message"], found
    assert not calls.made, "nothing may run on a refused request"


def test_several_wrong_fields_are_all_named(calls):
    found = fields_of(*call("POST", "/requests/r-1/extend", {"days": 0, "reason": 7, "extra": True}))
    assert {f["field"] for f in found} == {"days", "reason", "extra"}


def test_base64_that_is_not_base64_or_utf8(calls):
    from handlers.intake import app

    for raw, message in (("not base64!", "is not valid base64"), (base64.b64encode(b"\xff").decode(), "UTF-8")):
        event = api_gateway_event("POST", "/requests/r-1/approve", raw, base64_encoded=True)
        out = app.resolve(event, Context())
        assert out["statusCode"] == 400
        assert message in json.loads(out["body"])["fields"][0]["message"]


def test_a_form_or_multipart_content_type_is_still_read_as_json(calls):
    from handlers.intake import app

    for content_type in ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain"):
        event = api_gateway_event("POST", "/requests/r-1/extend", "days=3&reason=x")
        event["headers"] = {"Content-Type": content_type}
        out = app.resolve(event, Context())
        assert out["statusCode"] == 400, (content_type, out)
        assert json.loads(out["body"])["fields"] == [{"field": "(body)", "message": "is not JSON"}]


def test_refusals_never_quote_the_value(calls):
    secret = "ada.lovelace@example.com"
    for body in (
        {"reason": 5, secret: 1},
        {"vendor": secret},
        {"action": secret},
        {"reason": secret * 50},
        {"reason": secret + "\u0007"},
    ):
        status, answer = call("POST", "/requests/r-1/approve", body)
        assert status == 400 and secret not in json.dumps(answer), answer
    status, answer = call("GET", "/requests", query={"status": secret, "due_before": secret, "limit": secret})
    assert status == 400 and secret not in json.dumps(answer), answer
    assert {f["field"] for f in answer["fields"]} == {"status", "due_before", "limit"}


def test_an_unknown_key_that_is_not_a_name_is_not_repeated(calls):
    found = fields_of(*call("POST", "/requests/r-1/approve", {"$where: 1=1": 1}))
    assert found == [{"field": "(unknown field)", "message": "Extra inputs are not permitted"}]


# --- what core.operations refuses --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("GET", "/requests/r-1", None),
        ("GET", "/requests/r-1/audit", None),
        ("GET", "/requests/r-1/package", None),
        *[("POST", f"/requests/r-1/{a}", VALID_BODIES[a]) for a in ACTIONS],
    ],
)
def test_not_found_is_404_and_state_conflict_409(calls, method, path, body):
    from core.operations import NotFound, StateConflict

    calls.raise_ = NotFound("no request with id r-1")
    assert call(method, path, body) == (404, {"error": "not found", "message": "no request with id r-1"})
    calls.raise_ = StateConflict("r-1 is completed: nothing awaits approval")
    assert call(method, path, body) == (
        409,
        {"error": "conflict", "message": "r-1 is completed: nothing awaits approval"},
    )


def test_an_undecodable_next_token_is_400(calls):
    from core.intake import InvalidRequest

    calls.raise_ = InvalidRequest([{"field": "next_token", "message": "is not a token this API gave"}])
    found = fields_of(*call("GET", "/requests", query={"next_token": "garbage"}))
    assert found == [{"field": "next_token", "message": "is not a token this API gave"}]


def test_an_internal_failure_is_500_naming_nothing(calls):
    calls.raise_ = RuntimeError("ddb said: ada.lovelace@example.com")
    status, body = call("POST", "/requests/r-1/approve")
    assert status == 500
    assert body == {"error": "internal error", "message": "the request was not processed; it is safe to retry"}


def test_unknown_routes_and_methods_are_powertools_404s(calls):
    assert call("GET", "/requests/r-1/approve")[0] == 404
    assert call("DELETE", "/requests/r-1")[0] == 404
    assert call("POST", "/requests/r-1/unknown")[0] == 404
    assert not calls.made


def test_the_body_reader_is_in_place():
    """Powertools keeps its request validation at app._request_validation_middleware (3.x): if an upgrade moves
    it, bodies would be read by Powertools again (500s for bad base64 or deep nesting): this fails first."""
    from handlers.intake import _JsonBody, app

    assert type(app._request_validation_middleware) is _JsonBody


# --- nothing about the input is ever a 5xx -----------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
fields = st.sampled_from(["vendor", "action", "reason", "vendors", "days", "x"])
bodies = st.one_of(
    st.none(),
    st.text(max_size=60),
    json_values.map(json.dumps),
    st.dictionaries(fields, json_values, max_size=4).map(json.dumps),
)
queries = st.dictionaries(
    st.sampled_from(["status", "due_before", "limit", "next_token", "other"]),
    st.one_of(st.text(max_size=30), st.lists(st.text(max_size=10), min_size=1, max_size=3)),
    max_size=4,
)
paths = st.one_of(
    st.sampled_from(
        [
            "/requests",
            "/requests/r-1",
            "/requests/r-1/audit",
            "/requests/r-1/package",
            *[f"/requests/r-1/{a}" for a in ACTIONS],
        ]
    ),
    st.builds(
        lambda rid, tail: f"/requests/{rid}{tail}",
        st.text(max_size=90),
        st.sampled_from(["", "/audit", "/package", *[f"/{a}" for a in ACTIONS]]),
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "POST"]), path=paths, body=bodies, query=queries, b64=st.booleans())
def test_no_input_is_a_5xx(calls, method, path, body, query, b64):
    status, answer = call(method, path, body, query=query, base64_encoded=b64 and body is not None, raw=True)
    assert status in (200, 202, 400, 404), (status, answer)
    if status == 400:
        assert answer["error"] == "invalid request" and answer["fields"]
