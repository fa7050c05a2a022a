"""Bloomreach connector pieces that need no vendor: models, credentials, schedule, progress, the JSON peek."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from connectors import registry
from connectors.base import Action, JobContext, Subject
from connectors.bloomreach import (
    NO_IDS_REASON,
    BloomreachConnector,
    BulkExportOptions,
    top_level_summary,
)
from core.errors import ConfigError, UnsupportedAction
from core.http import RetryPolicy, VendorHttp

CREDS = {
    "base_url": "http://127.0.0.1:9",  # discard port: any call fails, so "makes no call" is checked
    "project_token": "proj-7f3a",
    "api_key_id": "key-id-1234",
    "api_secret": "s3cr3t-value-99",
}


@pytest.fixture(autouse=True)
def _real_time_scale(monkeypatch):
    monkeypatch.setenv("DSRFLOW_TIME_SCALE", "1")


@pytest.fixture
def connector() -> BloomreachConnector:
    http = VendorHttp("bloomreach", timeout=(0.5, 0.5), retry=RetryPolicy(attempts=1))
    return registry.build("bloomreach", CREDS, http=http)  # type: ignore[return-value]


def ctx(ids: dict[str, str] | None = None, **kw) -> JobContext:
    return JobContext(request_id="req-1", subject=Subject(customer_ids=ids or {"registered": "crm-1"}), **kw)


# --- bulk export options ------------------------------------------------------------------------------------


def test_options_require_a_known_format():
    with pytest.raises(ValidationError) as err:
        BulkExportOptions()  # type: ignore[call-arg]
    assert err.value.errors()[0]["loc"] == ("format",)
    with pytest.raises(ValidationError):
        BulkExportOptions(format="xlsx")  # type: ignore[arg-type]
    assert BulkExportOptions(format="native_json").format == "native_json"


def test_options_defaults_are_every_attribute_of_every_customer_in_utc():
    assert BulkExportOptions(format="csv").to_body() == {
        "format": "csv",
        "attributes": {"type": "properties_and_ids"},
        "filter": {"type": "all"},
        "timezone": "UTC",
    }


def test_options_parse_the_documented_body():
    body = {
        "format": "table_json",
        "attributes": {
            "type": "some",
            "list": [{"type": "id", "id": "registered"}, {"type": "property", "property": "email"}],
        },
        "filter": {"type": "segment", "segmentation_id": "seg-1", "segment_index": -1},
        "execution_time": 1_790_000_000,
        "timezone": "America/Argentina/Buenos_Aires",
    }
    assert BulkExportOptions.model_validate(body).to_body() == body


@pytest.mark.parametrize(
    "tz", ["Europe", "europe/prague", "Europe/Prague ", "Europe/Prague\n", "Mars/Olympus Mons", "+02:00", ""]
)
def test_options_reject_a_timezone_that_is_not_continent_city(tz):
    with pytest.raises(ValidationError, match="Continent/City"):
        BulkExportOptions(format="csv", timezone=tz)


@pytest.mark.parametrize("tz", ["UTC", "Africa/Lagos", "Etc/GMT+1", "America/Port-au-Prince"])
def test_options_accept_tz_database_names(tz):
    assert BulkExportOptions(format="csv", timezone=tz).timezone == tz


@pytest.mark.parametrize("index, ok", [(-1, True), (0, True), (7, True), (-2, False), ("0", False), (True, False)])
def test_options_segment_index(index, ok):
    spec = {"type": "segment", "segmentation_id": "seg-1", "segment_index": index}
    if ok:
        assert BulkExportOptions(format="csv", filter=spec).filter.segment_index == index  # type: ignore[union-attr]
    else:
        with pytest.raises(ValidationError):
            BulkExportOptions(format="csv", filter=spec)


@pytest.mark.parametrize(
    "field, value",
    [
        ("execution_time", 1.5),
        ("execution_time", -1),
        ("execution_time", 2**31),  # the vendor documents int32
        ("attributes", {"type": "some", "list": []}),
        ("attributes", {"type": "some", "list": [{"type": "expression", "id": "x"}]}),
        ("filter", {"type": "segment", "segment_index": 0}),
        ("unknown_field", 1),
    ],
)
def test_options_reject_what_the_vendor_does_not_document(field, value):
    with pytest.raises(ValidationError):
        BulkExportOptions.model_validate({"format": "csv", field: value})


# --- credentials --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, field, problem",
    [
        ({"api_secret": None}, "api_secret", "is missing"),
        ({"project_token": None}, "project_token", "is missing"),
        ({"project_token": "proj/../other"}, "project_token", "is invalid"),
        ({"api_key_id": "id:with-colon"}, "api_key_id", "is invalid"),
        ({"api_secret": ""}, "api_secret", "is invalid"),
        ({"base_url": "ftp://api.exponea.com"}, "base_url", "is invalid"),
        ({"region": "eu"}, "region", "is not a known field"),
    ],
)
def test_credentials_problems_name_vendor_and_field_never_values(change, field, problem):
    raw = {k: v for k, v in {**CREDS, **change}.items() if v is not None}
    with pytest.raises(ConfigError) as err:
        registry.build("bloomreach", raw)
    message = str(err.value)
    assert message.startswith(f"bloomreach: configuration field '{field}' {problem}")
    for value in (*CREDS.values(), *(v for v in change.values() if v)):
        assert str(value) not in message


def test_the_secret_does_not_show_in_reprs(connector):
    assert CREDS["api_secret"] not in repr(connector.credentials)
    assert CREDS["api_secret"] not in str(connector.credentials.model_dump())


# --- identifiers, schedule, progress ------------------------------------------------------------------------


def test_cannot_act_without_customer_ids(connector):
    assert connector.cannot_act_on(Subject(email="ada@example.com"), Action.EXPORT) == NO_IDS_REASON
    assert connector.cannot_act_on(Subject(customer_ids={"cookie": "ck-1"}), Action.ERASE) is None
    reason = connector.cannot_act_on(Subject(customer_ids={"registered": " "}), Action.EXPORT)
    assert reason is not None and "'registered'" in reason
    with pytest.raises(UnsupportedAction, match="bloomreach: no customer_ids given"):
        connector.submit(Action.ERASE, Subject(email="ada@example.com"), ctx())


def test_export_submit_makes_no_call_and_asks_for_a_check_at_once(connector):
    c = ctx()
    job = connector.submit(Action.EXPORT, c.subject, c)  # the discard port would fail any call
    assert job.next_check_at == job.submitted_at == c.now
    assert job.deadline_at == c.now + timedelta(days=7)
    assert job.job_id is None and job.state == {}
    assert connector.check(job, c).status == "ready"


def test_schedule_is_that_of_a_synchronous_vendor(connector):
    c = ctx()
    job = connector.submit(Action.EXPORT, c.subject, c).model_copy(update={"checks": 3})
    assert connector.schedule.first_check == timedelta(0)
    assert connector.schedule.next_check_at(job, c.now) == c.now + timedelta(minutes=1)
    # never past the deadline
    late = job.deadline_at - timedelta(seconds=30)
    assert connector.schedule.next_check_at(job, late) == job.deadline_at


def test_time_scale_shrinks_the_deadline(connector, monkeypatch):
    monkeypatch.setenv("DSRFLOW_TIME_SCALE", "86400")
    c = ctx()
    job = connector.submit(Action.EXPORT, c.subject, c)
    assert job.deadline_at - job.submitted_at == timedelta(seconds=7)
    # Never below a few real seconds: a loaded machine must not fail a local job that had no time to run.
    monkeypatch.setenv("DSRFLOW_TIME_SCALE", str(86400 * 7))
    job = connector.submit(Action.EXPORT, c.subject, c)
    assert job.deadline_at - job.submitted_at == timedelta(seconds=5)


def test_export_not_collected_by_its_deadline_fails(connector):
    c = ctx()
    job = connector.submit(Action.EXPORT, c.subject, c)
    later = ctx(now=job.deadline_at + timedelta(seconds=1))
    progress = connector.check(job, later)
    assert progress.status == "failed" and progress.reason.startswith("DeadlineExceeded: ")
    assert progress.error == "DeadlineExceeded"  # a named error, not a word in the reason
    assert connector.check(job, ctx(now=job.deadline_at)).status == "ready"


def test_erase_accepted_stays_ready_after_the_deadline(connector):
    c = ctx()
    job = connector.submit(Action.EXPORT, c.subject, c).model_copy(
        update={"action": Action.ERASE, "state": {"accepted": True}}
    )
    progress = connector.check(job, ctx(now=job.deadline_at + timedelta(days=3)))
    assert (progress.status, progress.reason) == (
        "ready",
        "anonymization accepted by vendor; Bloomreach offers no completion status",
    )
    assert connector.check(job.model_copy(update={"state": {}}), c).status == "failed"


# --- vocabulary ---------------------------------------------------------------------------------------------


def test_bloomreach_has_no_status_words_and_no_job_ids(connector):
    from core.safe import safe_id

    assert connector.statuses == frozenset() and connector.native_dry_run == frozenset()
    for anything in ("crm-1", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "a", "bulk-1234abcd"):
        assert safe_id(anything, connector.job_id_pattern) is None


def test_the_json_reader_is_the_one_archive_verification_uses():
    from core import verify

    assert top_level_summary is verify.top_level_summary


def test_dry_run_refuses_an_export_or_a_subject_without_ids_before_any_call(connector):
    with pytest.raises(UnsupportedAction, match="needs no dry run"):
        connector.dry_run(Action.EXPORT, ctx().subject, ctx())  # the discard port would fail any call
    with pytest.raises(UnsupportedAction, match="no customer_ids"):
        connector.dry_run(Action.ERASE, Subject(email="ada@example.com"), ctx())
