"""Elevate connector without the Elevate simulator: schedule, credentials, subject checks, stream checks."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
import requests

from connectors import registry
from connectors.base import Action, JobContext, Subject, new_job
from connectors.elevate import ElevateConnector, ElevateCredentials
from core.errors import ArchiveInvalid, ArchiveTransferError, ConfigError, UnsupportedAction, VendorError
from local.simulators.base import Request, Response, Simulator

NOW = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
KEY = "sk-live-6b1d0c55aa"
PASSWORD = "pw-3e9d71c0"
BASE = {"base_url": "https://c1234.api.esales.apptus.cloud"}


def ctx(key: str | None = "7d3f0c2e-5b1a-4c8e-9f00-000000000001", now: datetime = NOW) -> JobContext:
    return JobContext(request_id="req-1", subject=Subject(customer_key=key), now=now)


def connector(**creds) -> ElevateConnector:
    return registry.build("elevate", {**BASE, "api_key": KEY, **creds})  # type: ignore[return-value]


# --- schedule ---------------------------------------------------------------------------------------


def test_first_check_after_the_archive_window_then_twice_a_day_never_past_the_deadline():
    conn = connector()
    job = new_job(conn, Action.EXPORT, ctx(), "jid-1")
    assert job.next_check_at == NOW + timedelta(days=5)
    assert job.deadline_at == NOW + timedelta(days=14)

    schedule = conn.schedule
    job.checks = 1
    assert schedule.next_check_at(job, job.next_check_at) == NOW + timedelta(days=5, hours=12)
    job.checks = 9  # no backoff: still every 12 hours, not every few minutes
    assert schedule.next_check_at(job, NOW + timedelta(days=9)) == NOW + timedelta(days=9, hours=12)
    assert schedule.next_check_at(job, job.deadline_at - timedelta(hours=1)) == job.deadline_at
    late = job.deadline_at + timedelta(hours=1)
    assert schedule.next_check_at(job, late) == late


def test_time_scale_shrinks_the_schedule_to_seconds(monkeypatch):
    monkeypatch.setenv("DSRFLOW_TIME_SCALE", "86400")
    conn = connector()
    job = new_job(conn, Action.ERASE, ctx(), "jid-1")
    assert job.next_check_at - NOW == timedelta(seconds=5)
    assert job.deadline_at - NOW == timedelta(seconds=14)
    job.checks = 1
    assert conn.schedule.next_check_at(job, job.next_check_at) - NOW == timedelta(seconds=5.5)


# --- credentials ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field", "problem"),
    [
        ({"api_key": KEY}, "base_url", "is missing"),
        ({**BASE}, "api_key", "or username and password must be given"),
        ({**BASE, "api_key": KEY, "username": "cluster", "password": PASSWORD}, "api_key", "cannot be combined"),
        ({**BASE, "api_key": KEY, "password": PASSWORD}, "api_key", "cannot be combined"),
        ({**BASE, "username": "cluster"}, "password", "is needed with username"),
        ({**BASE, "password": PASSWORD}, "username", "is needed with password"),
        ({**BASE, "api_key": KEY, "apikey": PASSWORD}, "apikey", "is not a known field"),
        ({**BASE, "api_key": "   "}, "api_key", "must not be empty"),
        ({**BASE, "api_key": KEY, "api_prefix": "api/v1?x=1"}, "api_prefix", "must be a URL path"),
        ({"base_url": "c1234.api.esales.apptus.cloud", "api_key": KEY}, "base_url", "must start with https://"),
    ],
)
def test_bad_credentials_name_vendor_and_field_never_the_values(raw, field, problem):
    with pytest.raises(ConfigError) as err:
        registry.build("elevate", raw)
    message = str(err.value)
    assert message.startswith(f"elevate: configuration field '{field}' ")
    assert problem in message
    assert err.value.field == field
    assert KEY not in message and PASSWORD not in message


@pytest.mark.parametrize(
    ("raw", "auth"),
    [
        ({**BASE, "api_key": KEY}, {"headers": {"Api-Key": KEY}}),
        (
            {**BASE, "username": "cluster", "password": PASSWORD, "api_prefix": "/api/v1/"},
            {"auth": ("cluster", PASSWORD)},
        ),
    ],
)
def test_each_auth_mode_builds_a_connector_that_keeps_secrets_out_of_reprs(raw, auth):
    conn = registry.build("elevate", raw)
    assert isinstance(conn, ElevateConnector)
    assert conn._auth == auth
    prefix = raw.get("api_prefix", "/api/v2").rstrip("/")
    assert conn._url == f"{BASE['base_url']}{prefix}/event-data"
    assert KEY not in repr(conn.credentials) and PASSWORD not in repr(conn.credentials)


def test_connector_also_accepts_the_raw_json_and_validates_it():
    assert ElevateConnector(f'{{"base_url": "{BASE["base_url"]}", "api_key": "k"}}').credentials.api_key is not None
    with pytest.raises(ConfigError, match="'api_key'"):
        ElevateConnector({**BASE})
    assert isinstance(ElevateConnector.credentials_model.model_validate({**BASE, "api_key": "k"}), ElevateCredentials)


# --- subject ----------------------------------------------------------------------------------------


def test_without_a_customer_key_the_vendor_is_skipped_with_a_reason():
    conn = connector()
    for subject in (Subject(email="ada@example.com"), Subject(customer_key="  ")):
        for action in Action:
            reason = conn.cannot_act_on(subject, action)
            assert reason == "no customer_key given (Elevate identifies people by customerKey)"
    assert conn.cannot_act_on(Subject(customer_key="abc"), Action.ERASE) is None


def test_submit_without_a_customer_key_refuses_before_any_call():
    class NoCalls:
        def request(self, *args, **kwargs):
            raise AssertionError("no HTTP call expected")

    conn = ElevateConnector(ElevateCredentials(**BASE, api_key=KEY), http=NoCalls())  # type: ignore[arg-type]
    with pytest.raises(UnsupportedAction, match="^elevate: cannot submit export: no customer_key"):
        conn.submit(Action.EXPORT, Subject(email="ada@example.com"), ctx(None))


# --- the archive stream -----------------------------------------------------------------------------


class OneResponse:
    """Stands in for VendorHttp: hands back one prepared response."""

    def __init__(self, response: requests.Response):
        self.response = response
        self.calls: list[tuple[str, str, dict]] = []

    def request(self, method: str, url: str, **kwargs) -> requests.Response:
        self.calls.append((method, url, kwargs))
        return self.response


class BreakingBody(io.BytesIO):
    def read(self, size: int = -1) -> bytes:
        if self.tell() >= 4:
            raise requests.ConnectionError("connection reset by peer")
        return super().read(min(size, 4))


def zip_response(body: io.BytesIO, length: int | None, content_type: str = "application/zip") -> requests.Response:
    response = requests.Response()
    response.status_code = 200
    response.headers["Content-Type"] = content_type
    if length is not None:
        response.headers["Content-Length"] = str(length)
    response.raw = body
    return response


def collect(response: requests.Response):
    http = OneResponse(response)
    conn = ElevateConnector(ElevateCredentials(**BASE, api_key=KEY), http=http)  # type: ignore[arg-type]
    job = new_job(conn, Action.EXPORT, ctx(), "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
    return conn.collect(job, ctx()), http


def test_stream_checks_the_byte_count_against_content_length():
    [whole], http = collect(zip_response(io.BytesIO(b"PK" + b"x" * 98), 100))
    assert (whole.length, len(b"".join(whole.chunks))) == (100, 100)
    assert whole.name == "elevate-export-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0.zip"
    method, url, kwargs = http.calls[0]
    assert (method, url) == ("GET", f"{BASE['base_url']}/api/v2/event-data/export-customer-job-result")
    assert kwargs["params"] == {"jid": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"} and kwargs["stream"] is True
    assert kwargs["headers"]["Api-Key"] == KEY and kwargs["headers"]["Accept-Encoding"] == "identity"

    [short], _ = collect(zip_response(io.BytesIO(b"x" * 80), 100))
    with pytest.raises(ArchiveTransferError, match=r"0f1e2d3c… ended after 80 of the announced 100 bytes"):
        b"".join(short.chunks)

    [long], _ = collect(zip_response(io.BytesIO(b"x" * 120), 100))
    with pytest.raises(ArchiveTransferError, match="more than the announced 100 bytes"):
        b"".join(long.chunks)

    [unknown], _ = collect(zip_response(io.BytesIO(b"x" * 120), None))
    assert unknown.length is None and len(b"".join(unknown.chunks)) == 120


def test_a_stream_that_breaks_is_a_transfer_error():
    [archive], _ = collect(zip_response(BreakingBody(b"x" * 100), 100))
    with pytest.raises(ArchiveTransferError, match=r"broke off after 4 bytes \(ConnectionError\)"):
        b"".join(archive.chunks)


def test_an_html_page_instead_of_a_zip_is_refused_unread():
    class Unread(io.BytesIO):
        def read(self, size: int = -1) -> bytes:
            raise AssertionError("the body must stay unread (the download is single-shot)")

    with pytest.raises(ArchiveInvalid, match="answered an HTML page instead of a zip") as err:
        collect(zip_response(Unread(b"<html>maintenance</html>"), 24, "text/html; charset=utf-8"))
    # The vendor's own word is kept privately, never in the message.
    assert "text/html" not in str(err.value) and "text/html; charset=utf-8" in err.value.detail


def test_an_odd_content_type_is_described_in_fixed_words():
    with pytest.raises(ArchiveInvalid) as err:
        collect(zip_response(io.BytesIO(b"x"), 1, "application/x-ada-lovelace"))
    assert "answered an unexpected content type instead of a zip" in str(err.value)
    assert "lovelace" not in str(err.value) and "application/x-ada-lovelace" in err.value.detail


def test_erase_jobs_have_nothing_to_collect():
    conn = connector()
    assert conn.collect(new_job(conn, Action.ERASE, ctx(), "jid-1"), ctx()) == []


class GoneWith404(Simulator):
    """A cluster that answers a spent download with 404 instead of a not_found status document."""

    name = "elevate-404"

    def routes(self):
        return [("GET", r"/api/v2/event-data/export-customer-job-result", self.gone)]

    def gone(self, req: Request) -> Response:
        return Response.json({"message": "Job not found"}, 404)


def test_a_404_download_also_says_the_archive_is_gone(vendor_http):
    with GoneWith404() as sim:
        conn = registry.build("elevate", {"base_url": sim.base_url, "api_key": KEY}, http=vendor_http("elevate"))
        job = new_job(conn, Action.EXPORT, ctx(), "ca24f00d-1111")
        with pytest.raises(VendorError, match=r"^elevate: the export of job ca24f00d… was already downloaded") as err:
            conn.collect(job, ctx())
    assert err.value.status_code == 404


class Redirecting(Simulator):
    name = "elevate-redirect"

    def routes(self):
        return [("GET", r"/api/v2/event-data/job-status", self.moved)]

    def moved(self, req: Request) -> Response:
        return Response(status=302, headers={"Location": "http://127.0.0.1:9/elsewhere"})


def test_a_redirect_is_not_followed_with_the_api_key(vendor_http):
    with Redirecting() as sim:
        conn = registry.build("elevate", {"base_url": sim.base_url, "api_key": KEY}, http=vendor_http("elevate"))
        job = new_job(conn, Action.EXPORT, ctx(), "ca24f00d-1111")
        with pytest.raises(VendorError, match=r"job-status answered a redirect \(HTTP 302\), not followed"):
            conn.check(job, ctx())
    assert [c.path for c in sim.calls] == ["/api/v2/event-data/job-status"]


# --- vocabulary, dry run ----------------------------------------------------------------------------


def test_the_vocabulary_is_elevates_documented_words_and_a_conservative_jid_format():
    from core.safe import safe_id

    assert ElevateConnector.statuses == {"created", "started", "waiting", "running", "done", "not_found", "error"}
    assert ElevateConnector.native_dry_run == frozenset()
    pattern = ElevateConnector.job_id_pattern
    assert safe_id("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", pattern)  # the simulator's UUIDs
    for bad in ("short", "-leading-dash-1234", "has space 12345", "a/b/c/d/e/f/g/h", "x" * 65, "é" * 10):
        assert safe_id(bad, pattern) is None, bad


class Recording:
    """Stands in for VendorHttp: answers every JSON call with `answer`, records the calls."""

    def __init__(self, answer):
        self.answer = answer
        self.calls: list[tuple[str, str, dict]] = []
        self.dry_run = False

    def json(self, method: str, url: str, **kwargs):
        self.calls.append((method, url, kwargs))
        return self.answer


def test_create_calls_are_flagged_and_only_the_removal_is_destructive():
    http = Recording({"jid": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "status": "created"})
    conn = ElevateConnector(ElevateCredentials(**BASE, api_key=KEY), http=http)  # type: ignore[arg-type]
    conn.submit(Action.EXPORT, ctx().subject, ctx())
    conn.submit(Action.ERASE, ctx().subject, ctx())
    (_, export_url, export), (_, remove_url, remove) = http.calls
    assert export_url.endswith("/create-export-customer-job") and remove_url.endswith("/create-remove-customer-job")
    assert (export["call"], export["creates_job"], export["destructive"]) == ("create-export-customer-job", True, False)
    assert (remove["call"], remove["creates_job"], remove["destructive"]) == ("create-remove-customer-job", True, True)
    assert "7d3f0c2e-5b1a-4c8e-9f00-000000000001" in remove["hide"]


def test_dry_run_probes_job_status_with_the_nil_jid_only():
    http = Recording({"jid": "00000000-0000-0000-0000-000000000000", "status": "not_found"})
    creds = ElevateCredentials(**BASE, api_key=KEY, api_prefix="/api/v1")
    conn = ElevateConnector(creds, http=http)  # type: ignore[arg-type]
    plan = conn.dry_run(Action.ERASE, ctx().subject, ctx())
    assert plan.call == "POST /api/v1/event-data/create-remove-customer-job?customerKey={customerKey}"
    assert plan.subject_found is None and plan.verified.startswith("credentials accepted by Elevate")
    [(method, url, kwargs)] = http.calls
    assert (method, url.rsplit("/", 1)[1], kwargs["params"]) == (
        "GET",
        "job-status",
        {"jid": "00000000-0000-0000-0000-000000000000"},
    )
    assert not kwargs.get("destructive") and not kwargs.get("creates_job")


def test_dry_run_refuses_without_a_customer_key_or_for_an_export_before_any_call():
    http = Recording({})
    conn = ElevateConnector(ElevateCredentials(**BASE, api_key=KEY), http=http)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedAction, match="no customer_key"):
        conn.dry_run(Action.ERASE, Subject(email="ada@example.com"), ctx(None))
    with pytest.raises(UnsupportedAction, match="needs no dry run"):
        conn.dry_run(Action.EXPORT, ctx().subject, ctx())
    assert http.calls == []


def test_registry_refuses_a_connector_without_its_vocabulary(monkeypatch):
    import types

    module = types.ModuleType("connectors.vocabless")

    class Vocabless:
        statuses = frozenset({"done"})
        job_id_pattern = "[0-9]+"

        def dry_run(self, *args): ...

    module.Vocabless = Vocabless  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "connectors.vocabless", module)
    monkeypatch.setitem(registry.CONNECTORS, "vocabless", "connectors.vocabless:Vocabless")
    with pytest.raises(ConfigError, match="^vocabless: configuration field 'connector' .*native_dry_run"):
        registry.connector_class("vocabless")
    Vocabless.native_dry_run = frozenset()  # type: ignore[attr-defined]
    assert registry.connector_class("vocabless") is Vocabless
    Vocabless.job_id_pattern = "[unclosed"
    with pytest.raises(ConfigError, match="not a regular expression"):
        registry.connector_class("vocabless")
