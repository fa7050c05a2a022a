"""Intake never crashes: generated API bodies and EventBridge events through the real handler, against moto.

For any input: the API answers 200, 202, 400 or 409, never a 5xx, and never raises; the EventBridge path
returns or raises InvalidRequest / RequestConflict, nothing else. Whatever is refused starts no execution;
whatever is accepted starts exactly one (a duplicate none). Executions are recorded by moto, not run.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from unittest import mock

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as observe
from hypothesis import strategies as st
from moto import mock_aws

from core.intake import InvalidRequest, RequestConflict
from local.engine import api_gateway_event

REGION = "eu-west-1"
VENDORS = ["bloomreach", "elevate", "qualifio"]
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure here is reproducible, never flaky
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
# Unique request ids and event ids across examples: a reused id with another request is a (correct) 409.
_serial = itertools.count()


class Context:
    function_name = "dsrflow-intake"
    function_version = "$LATEST"
    invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:dsrflow-intake"
    memory_limit_in_mb = 512
    aws_request_id = "req"
    log_group_name = "/aws/lambda/dsrflow-intake"
    log_stream_name = "test"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


class Deployment:
    def __init__(self) -> None:
        from handlers.intake import handler

        self.handler = handler
        self.sfn = boto3.client("stepfunctions", region_name=REGION)
        self.state_machine_arn = ""

    @contextlib.contextmanager
    def example(self) -> Iterator[None]:
        """A state machine of its own for one example: counting its executions stays cheap (moto serialises
        the whole list on every call, which made a shared one quadratic)."""
        from core import settings as deployment_settings

        self.state_machine_arn = self.sfn.create_state_machine(
            name=f"dsr-{next(_serial)}",
            definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
            roleArn="arn:aws:iam::123456789012:role/dsr",
        )["stateMachineArn"]
        os.environ["STATE_MACHINE_ARN"] = self.state_machine_arn
        deployment_settings.settings.cache_clear()
        try:
            yield
        finally:
            self.sfn.delete_state_machine(stateMachineArn=self.state_machine_arn)

    def executions(self) -> int:
        return len(self.sfn.list_executions(stateMachineArn=self.state_machine_arn)["executions"])

    def api(self, body: Any, base64_encoded: bool = False, method: str = "POST", path: str = "/requests") -> Any:
        event = api_gateway_event(method, path, body, base64_encoded=base64_encoded)
        return self.handler(event, Context())


@contextlib.contextmanager
def deployment() -> Iterator[Deployment]:
    from core import settings as deployment_settings
    from handlers import runtime
    from handlers.observability import logger

    env = {
        "AWS_DEFAULT_REGION": REGION,
        "ARCHIVE_BUCKET": "dsrflow-property-archives",
        "VENDOR_SECRETS": json.dumps({"elevate": "x", "bloomreach": "y", "qualifio": "z"}),
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    level = logger.log_level
    with mock.patch.dict(os.environ, env), mock_aws():
        key = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["Arn"]
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket=env["ARCHIVE_BUCKET"], CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        os.environ["ARCHIVE_KMS_KEY_ID"] = key
        from local.engine import create_ledger_table

        create_ledger_table(boto3.client("dynamodb", region_name=REGION), "dsrflow-property-ledger")
        os.environ["LEDGER_TABLE"] = "dsrflow-property-ledger"
        runtime.reset()
        deployment_settings.settings.cache_clear()
        logger.setLevel("ERROR")  # thousands of "request rejected" lines would only slow the run
        try:
            yield Deployment()
        finally:
            logger.setLevel(level)
            runtime.reset()
            deployment_settings.settings.cache_clear()


@pytest.fixture(scope="module")
def aws():
    with deployment() as d:
        yield d


# --- strategies ------------------------------------------------------------------------------------------------------

MARK = "SECRET-"  # starts every hostile string: no answer may quote it back
ANY_CHAR = st.characters(codec=None, exclude_categories=())  # incl. lone surrogates and control characters
SAFE_CHAR = st.characters(categories=["L", "N", "P", "S"])  # text: no controls, no separators, no surrogates
BIG = ["x" * 300_000, "v" * 70_000, "a" * 1_000_000 + "@example.com"]
big_strings = st.integers(min_value=0, max_value=len(BIG) - 1).map(BIG.__getitem__)  # sampled_from's repr: 1 MB

hostile_strings = st.one_of(
    st.text(ANY_CHAR, max_size=40).map(lambda s: MARK + s),
    st.sampled_from(["\ud800", "\udfff", "\x00", "\x1b[31m", "\u0085", "\t", "\n", "", " "]).map(lambda s: MARK + s),
    big_strings,
    st.sampled_from(
        ["9999-12-31T00:00:00Z", "0001-01-01T00:00:00+01:00", "2026-11-23", "2100-01-01T00:00:00Z", "yes", "off"]
    ),
)
# Never valid where one line of text is expected: each holds a control character or a lone surrogate.
not_text = st.tuples(
    st.text(ANY_CHAR, max_size=20),
    st.sampled_from(["\ud800", "\udfff", "\x00", "\x1b", "\x85", "\x7f", "\t", "\n"]),
    st.text(ANY_CHAR, max_size=20),
).map(lambda parts: MARK + "".join(parts))
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(ANY_CHAR, max_size=30),
    hostile_strings,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(ANY_CHAR, max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def deep(n: int, leaf: Any = 1) -> Any:
    for _ in range(n):
        leaf = [leaf]
    return leaf


emails = st.from_regex(r"[a-z0-9._%+-]{1,30}@[a-z0-9-]{1,30}\.[a-z]{2,6}", fullmatch=True)
keys = st.text(SAFE_CHAR, min_size=1, max_size=128)
id_types = st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True)
id_values = st.text(SAFE_CHAR, min_size=1, max_size=256)


@st.composite
def received_ats(draw: Any) -> str:
    ago = draw(st.integers(min_value=0, max_value=90 * 86400))
    moment = datetime.now(UTC) - timedelta(seconds=ago)
    minutes = draw(st.sampled_from([0, 60, -300, 330, 23 * 60 + 59, -(23 * 60 + 59)]))
    local = moment.astimezone(timezone(timedelta(minutes=minutes)))
    zone = "Z" if minutes == 0 and draw(st.booleans()) else local.strftime("%z")
    zone = zone if zone == "Z" else zone[:3] + ":" + zone[3:]
    sep = draw(st.sampled_from(["T", " "]))
    fraction = draw(st.sampled_from(["", ".5", ".123456", ".123456789"]))
    return local.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + fraction + zone


@st.composite
def valid_requests(draw: Any) -> dict[str, Any]:
    """A request every enabled vendor can act on (the subject has all three identifiers)."""
    request: dict[str, Any] = {
        "actions": draw(st.sampled_from([["export"], ["erase"], ["export", "erase"], ["erase", "export"]])),
        "subject": {
            "email": draw(emails),
            "customer_key": draw(keys),
            "customer_ids": draw(st.dictionaries(id_types, id_values, min_size=1, max_size=3)),
        },
    }
    if draw(st.booleans()):
        request["request_id"] = f"prop-{next(_serial)}"
    if draw(st.booleans()):
        request["vendors"] = draw(st.lists(st.sampled_from(VENDORS), min_size=1, max_size=3, unique=True))
    if draw(st.booleans()):
        request["justification"] = draw(st.text(st.one_of(SAFE_CHAR, st.sampled_from("\t\n\r ")), max_size=200))
    if draw(st.booleans()):
        request["dry_run"] = draw(st.booleans())
    if draw(st.booleans()):
        request["received_at"] = draw(received_ats())
    return request


# (field as the error names it, values that field can never take)
DEFINITELY_INVALID: list[tuple[str, Any]] = [
    # None of the hostile strings is an RFC 3339 date-time within the window.
    ("received_at", st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), hostile_strings)),
    ("dry_run", st.one_of(st.integers(), st.text(max_size=5), st.none(), st.lists(st.booleans(), max_size=2))),
    ("actions", st.one_of(st.just([]), st.lists(st.integers(), min_size=1, max_size=2), st.just(["shred"]))),
    ("request_id", st.one_of(not_text, st.integers(), st.just("x" * 81), st.just("has space"))),
    (
        "vendors",
        st.one_of(
            st.just([]),
            st.just(["salesforce"]),
            st.just([f"v{i}" for i in range(3000)]),
            st.just(["v" * 300_000]),
            st.lists(st.one_of(not_text, hostile_strings), min_size=1, max_size=3),  # unknown or not a name
            st.integers(),
        ),
    ),
    ("justification", st.one_of(st.just("j" * 1001), st.integers(), st.just(MARK + "\x00"), st.just(MARK + "\ud800"))),
    ("subject.email", st.one_of(not_text, big_strings, st.integers(), st.just("a" * 65 + "@b.co"))),
    ("subject.customer_key", st.one_of(st.just("k" * 129), st.integers(), st.just(MARK + "\x07"))),
    (
        "subject.customer_ids",
        st.one_of(
            st.just({f"t{i}": "v" for i in range(11)}),
            st.just({MARK + "bad key": "v"}),
            st.just({"registered": MARK + "\ud800"}),
            st.just({"registered": 7}),
            st.just({"registered": "v" * 257}),
        ),
    ),
]


@st.composite
def broken_requests(draw: Any) -> tuple[dict[str, Any], str]:
    """A valid request with exactly one field set to a value it can never take; returns it and that field."""
    request = draw(valid_requests())
    field, values = draw(st.sampled_from(DEFINITELY_INVALID))
    value = draw(values)
    if field.startswith("subject."):
        request["subject"][field.split(".", 1)[1]] = value
    else:
        request[field] = value
    return request, field


@st.composite
def mutated_requests(draw: Any) -> Any:
    """A valid request with one field replaced, added or removed: valid or not, no oracle."""
    request = draw(valid_requests())
    where = request["subject"] if draw(st.booleans()) else request
    choice = draw(st.sampled_from(["replace", "add", "remove"]))
    if choice == "replace" and where:
        where[draw(st.sampled_from(sorted(where)))] = draw(json_values)
    elif choice == "add":
        where[draw(st.text(ANY_CHAR, max_size=12))] = draw(json_values)
    elif where:
        del where[draw(st.sampled_from(sorted(where)))]
    return request


def dumps(value: Any, ensure_ascii: bool) -> str:
    # allow_nan: NaN/Infinity bodies are exactly what the API must refuse with a 400.
    return json.dumps(value, ensure_ascii=ensure_ascii)


raw_bodies = st.one_of(
    st.none(),
    st.text(ANY_CHAR, max_size=60),  # raw surrogates make a body that cannot be UTF-8
    st.integers(min_value=1, max_value=100_000).map(lambda n: "[" * n),
    st.integers(min_value=1, max_value=40).map(lambda n: '{"a":' * n + "1" + "}" * n),
    big_strings.map(lambda s: json.dumps({"actions": ["export"], "subject": {"email": s}})),
    st.binary(max_size=60).map(lambda b: b.decode("latin-1")),
)


@st.composite
def api_bodies(draw: Any) -> tuple[Any, bool]:
    """(body, isBase64Encoded) as API Gateway would deliver them."""
    kind = draw(st.sampled_from(["json", "request", "mutated", "raw", "deep"]))
    if kind == "json":
        body = dumps(draw(json_values), draw(st.booleans()))
    elif kind == "request":
        body = dumps(draw(valid_requests()), draw(st.booleans()))
    elif kind == "mutated":
        body = dumps(draw(mutated_requests()), draw(st.booleans()))
    elif kind == "deep":
        n = draw(st.integers(min_value=30, max_value=20_000))
        body = '{"actions": ["export"], "subject": ' + "[" * n + "1" + "]" * n + "}"
    else:
        body = draw(raw_bodies)
    if body is not None and draw(st.integers(min_value=0, max_value=4)) == 0:
        if draw(st.booleans()):
            return base64.b64encode(body.encode("utf-8", "surrogatepass")).decode(), True
        return base64.b64encode(draw(st.binary(max_size=80))).decode(), True
    return body, False


# --- the API path -----------------------------------------------------------------------------------------------------


def call_api(aws: Deployment, body: Any, base64_encoded: bool = False) -> tuple[int, Any, int]:
    before = aws.executions()
    out = aws.api(body, base64_encoded)  # raising at all is a failure
    started = aws.executions() - before
    status = out["statusCode"]
    assert status in (200, 202, 400, 409), (status, out.get("body"))
    answer = json.loads(out["body"])
    # Seen with --hypothesis-show-statistics: how the examples split between answers.
    observe(f"HTTP {status}" + (f" {answer['fields'][0]['field']}" if status == 400 else ""))
    if status == 202:
        assert started == 1
    else:
        assert started == 0, (status, answer)
    if status == 400:
        assert answer["error"] == "invalid request" and answer["fields"]
        assert all(set(f) == {"field", "message"} for f in answer["fields"])
        assert MARK not in out["body"]  # (an accepted request id may hold it: it is the caller's id)
    return status, answer, started


@SETTINGS
@given(api_bodies())
def test_api_never_fails_on_any_body(aws, generated):
    with aws.example():
        body, base64_encoded = generated
        call_api(aws, body, base64_encoded)


@SETTINGS
@given(valid_requests())
def test_api_accepts_every_valid_request_once(aws, request):
    with aws.example():
        status, answer, _ = call_api(aws, json.dumps(request))
        assert status == 202, answer
        if "request_id" in request:
            again, _, _ = call_api(aws, json.dumps(request))
            assert again == 200


@SETTINGS
@given(broken_requests())
def test_api_refuses_a_request_with_one_field_broken(aws, generated):
    with aws.example():
        request, field = generated
        status, answer, _ = call_api(aws, json.dumps(request))
        assert status == 400, answer
        assert answer["fields"][0]["field"].startswith(field) or answer["fields"][0]["field"] == "(body)", answer


@SETTINGS
@given(st.text(ANY_CHAR, max_size=100))
def test_status_endpoint_never_fails(aws, request_id):
    with aws.example():
        out = aws.api(None, method="GET", path=f"/requests/{request_id}")
        assert out["statusCode"] in (200, 400, 404), out


# --- the EventBridge path ---------------------------------------------------------------------------------------------


def envelope(detail: Any, time: str | None = None) -> dict[str, Any]:
    return {
        "version": "0",
        "id": f"prop-{next(_serial)}",
        "detail-type": "Data Subject Request",
        "source": "crm",
        "account": "123456789012",
        "time": time or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [],
        "detail": detail,
    }


@st.composite
def events(draw: Any) -> Any:
    kind = draw(st.sampled_from(["valid", "broken", "mutated", "envelope", "anything"]))
    if kind == "valid":
        return envelope(draw(valid_requests()), draw(received_ats()).replace(" ", "T"))
    if kind == "broken":
        return envelope(draw(broken_requests())[0])
    if kind == "mutated":
        return envelope(draw(mutated_requests()))
    if kind == "anything":
        return draw(json_values)
    event = envelope(draw(valid_requests()))
    for key in draw(st.lists(st.sampled_from(sorted(event)), min_size=1, max_size=3, unique=True)):
        if draw(st.booleans()):
            del event[key]
        else:
            event[key] = draw(st.one_of(json_values, st.just(deep(100_000))))
    return event


def call_event(aws: Deployment, event: Any) -> tuple[Any, int]:
    before = aws.executions()
    try:
        result: Any = aws.handler(event, Context())
    except InvalidRequest as exc:
        result = exc
        assert MARK not in str(exc) and MARK not in json.dumps(exc.fields)
    except RequestConflict as exc:
        result = exc
    started = aws.executions() - before
    observe(type(result).__name__ if not isinstance(result, dict) else result["status"])
    if isinstance(result, dict) and result.get("status") == "accepted":
        assert started == 1
    else:
        assert started == 0, result
    return result, started


@SETTINGS
@given(events())
def test_eventbridge_raises_only_named_errors(aws, event):
    with aws.example():
        result, _ = call_event(aws, event)
        if isinstance(result, dict):
            assert result["status"] in ("accepted", "duplicate")


@SETTINGS
@given(valid_requests(), received_ats())
def test_eventbridge_accepts_every_valid_event_once(aws, request, time):
    with aws.example():
        event = envelope(request, time.replace(" ", "T"))
        first, started = call_event(aws, event)
        assert isinstance(first, dict) and first["status"] == "accepted" and started == 1, first
        again, started = call_event(aws, event)  # a redelivery: same id, same time, same detail
        assert isinstance(again, dict) and again["status"] == "duplicate" and started == 0
