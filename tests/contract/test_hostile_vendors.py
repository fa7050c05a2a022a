"""Hostile vendors, over real loopback HTTP: what a vendor echoes, invents or redirects never reaches a record.

Each connector against its simulator, with the simulator's faults (local/simulators/base.py): error bodies
that echo the subject (plain, upper-case, URL-encoded, JSON-escaped, cut by a 300-character truncation),
the subject inside a status word or an id, undocumented and 300 KB status words and ids, redirects, an HTML
page instead of an archive. The rule under test (core/safe.py): messages, Progress, the Job and archive
names hold fixed wording and validated values only; the vendor's words go to `exc.detail` /
`ctx.vendor_said`. And dry runs: `dry_run()` makes read-only calls only, and a call marked destructive is
refused before it is sent while `http.dry_run` is set.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, quote_plus

import pytest

from connectors import registry
from connectors.base import Action, Archive, Job, JobContext, Progress, Subject
from core.errors import DETAIL_LIMIT, MESSAGE_LIMIT, ArchiveInvalid, DryRunViolation, VendorAuthError, VendorError
from core.safe import UNDOCUMENTED, subject_values
from local.simulators.base import Request, Response, Simulator
from local.simulators.bloomreach import BloomreachSimulator
from local.simulators.data import SAMPLE, UNKNOWN_EMAIL
from local.simulators.elevate import ElevateSimulator
from local.simulators.qualifio import QualifioSimulator

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
HUGE = 300 * 1024  # a 300 KB word or id

# The whole subject: every vendor is asked with all of it, so no vendor can echo a value we do not check.
SUBJECT = Subject(
    email=SAMPLE.email,
    customer_key=SAMPLE.customer_key,
    customer_ids={"registered": SAMPLE.registered, "cookie": SAMPLE.cookie},
)
VALUES = subject_values(SUBJECT)


@pytest.fixture(autouse=True)
def _real_time(monkeypatch):
    monkeypatch.delenv("DSRFLOW_TIME_SCALE", raising=False)


# --- what "no subject value" means ----------------------------------------------------------------------


def forms(value: str) -> set[str]:
    """The forms a vendor echoes a value in."""
    return {
        value,
        value.upper(),
        quote(value, safe=""),
        quote_plus(value),
        "".join(f"%{b:02X}" for b in value.encode()),  # every byte percent-encoded
        json.dumps(value)[1:-1],
        "".join(f"\\u{ord(c):04x}" for c in value),  # every character JSON-escaped
    }


def assert_clean(*records: str) -> None:
    """No subject value, in any form, nor the head a truncation leaves of one, compared without case."""
    for record in records:
        folded = record.casefold()
        for value in VALUES:
            for form in forms(value) | {value[: max(6, len(value) // 2)]}:
                assert form.casefold() not in folded, f"{form!r} leaked into {record[:200]!r}"


def assert_error_clean(exc: BaseException) -> None:
    text = str(exc)
    assert len(text) <= MESSAGE_LIMIT
    assert_clean(text, repr(exc.args))


def said(ctx: JobContext, exc: BaseException | None = None) -> str:
    """Everything kept privately: the context's notes and the error's detail."""
    parts = [text for _, text in ctx.vendor_said]
    if exc is not None and getattr(exc, "detail", None):
        parts.append(exc.detail)  # type: ignore[attr-defined]
    return "\n".join(parts)


def echo_bodies(value: str) -> dict[str, Callable[[Request], bytes]]:
    """Error bodies echoing `value`, one per form (`reject_body` callables)."""

    def as_json(text: str) -> Callable[[Request], bytes]:
        return lambda req: json.dumps({"message": text, "errors": [text], "success": False}).encode()

    escaped = "".join(f"\\u{ord(c):04x}" for c in value)
    return {
        "plain": as_json(f"Invalid identifier '{value}'"),
        "upper-case": as_json(f"INVALID IDENTIFIER '{value.upper()}'"),
        "url-encoded": as_json("Invalid identifier in " + "".join(f"%{b:02X}" for b in value.encode())),
        # Raw JSON text with \u escapes: decoded, it is the plain value again.
        "json-escaped": lambda req: ('{"message": "Invalid identifier ' + escaped + '", "success": false}').encode(),
        # Where a client would cut at 300 characters: the value straddles the cut.
        "truncated": as_json("x" * (300 - len(value) // 2) + value + " is not valid"),
        "text/plain": lambda req: f"Bad Request: identifier {value} is unknown".encode(),
    }


ECHO_FORMS = list(echo_bodies("x"))


def reject_with(sim: Simulator, form: str, value: str, path: str, status: int = 400) -> None:
    f = sim.faults
    f.reject, f.reject_status, f.path_pattern = 1, status, path
    f.reject_body = echo_bodies(value)[form]
    f.reject_content_type = "text/plain" if form == "text/plain" else "application/json"


def rewrite_once(sim: Simulator, path: str, hook: Callable[[Request, Response], Response]) -> None:
    sim.faults.path_pattern, sim.faults.rewrite, sim.faults.rewrites = path, hook, 1


def json_answer(change: Callable[[dict], dict]) -> Callable[[Request, Response], Response]:
    """A rewrite hook that edits the handler's JSON answer."""

    def hook(req: Request, resp: Response) -> Response:
        body = json.loads(resp.body)  # type: ignore[arg-type]
        return Response.json(change(body), resp.status)

    return hook


class OtherHost(Simulator):
    """Where a redirect points: it must never be asked anything."""

    name = "other-host"

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[dict[str, str]] = []

    def routes(self):
        return [(m, r"/.*", self.answer) for m in ("GET", "POST", "PUT")]

    def answer(self, req: Request) -> Response:
        self.headers.append(req.headers)
        return Response.json({"jid": "0f1e2d3c-0000-4000-8000-000000000000", "status": "done", "success": True})


@pytest.fixture
def other_host():
    with OtherHost() as host:
        yield host


def read(archive: Archive) -> bytes:
    with archive:
        return b"".join(archive.chunks)


def records(job: Job | None = None, progress: Progress | None = None, archives: Iterable[Archive] = ()) -> list[str]:
    out = [a.name for a in archives]
    if job is not None:
        out.append(job.model_dump_json())
    if progress is not None:
        out.append(progress.model_dump_json())
    return out


# === Elevate ============================================================================================


@pytest.fixture
def elevate():
    with ElevateSimulator(vendor_start=T0) as sim:
        yield sim


def elevate_connector(sim: ElevateSimulator, vendor_http):
    return registry.build("elevate", sim.credentials(), http=vendor_http("elevate"))


def elevate_ctx(sim: ElevateSimulator, **kw) -> JobContext:
    return JobContext(request_id="req-hostile", subject=SUBJECT, now=sim.clock.now(), **kw)


def elevate_done_job(sim: ElevateSimulator, conn) -> Job:
    ctx = elevate_ctx(sim)
    job = conn.submit(Action.EXPORT, SUBJECT, ctx)
    sim.clock.advance(timedelta(days=6))
    assert conn.check(job, elevate_ctx(sim)).status == "ready"
    return job


@pytest.mark.parametrize("form", ECHO_FORMS)
def test_elevate_echo_on_submit_stays_out_of_the_message(elevate, vendor_http, form):
    conn = elevate_connector(elevate, vendor_http)
    reject_with(elevate, form, SAMPLE.customer_key, r"/create-export-customer-job$")
    ctx = elevate_ctx(elevate)
    with pytest.raises(VendorError) as err:
        conn.submit(Action.EXPORT, SUBJECT, ctx)
    assert err.value.status_code == 400
    assert_error_clean(err.value)
    assert "Invalid identifier" not in str(err.value) and "Bad Request" not in str(err.value)
    assert err.value.detail  # the vendor's words are kept privately
    assert elevate.jobs_created() == 0


@pytest.mark.parametrize("form", ECHO_FORMS)
def test_elevate_echo_on_check_stays_out_of_the_message(elevate, vendor_http, form):
    conn = elevate_connector(elevate, vendor_http)
    job = conn.submit(Action.EXPORT, SUBJECT, elevate_ctx(elevate))
    reject_with(elevate, form, SAMPLE.customer_key, r"/job-status$")
    with pytest.raises(VendorError) as err:
        conn.check(job, elevate_ctx(elevate))
    assert_error_clean(err.value)
    assert err.value.detail
    assert_clean(*records(job))


@pytest.mark.parametrize("form", ECHO_FORMS)
def test_elevate_echo_on_collect_stays_out_of_the_message(elevate, vendor_http, form):
    conn = elevate_connector(elevate, vendor_http)
    job = elevate_done_job(elevate, conn)
    reject_with(elevate, form, SAMPLE.customer_key, r"/export-customer-job-result$")
    with pytest.raises(VendorError) as err:
        conn.collect(job, elevate_ctx(elevate))
    assert_error_clean(err.value)
    assert err.value.detail
    # Nothing was downloaded: the single-shot archive is still there, and its name holds only the jid.
    [archive] = conn.collect(job, elevate_ctx(elevate))
    assert read(archive)[:2] == b"PK"
    assert_clean(*records(job, archives=[archive]))


@pytest.mark.parametrize(
    "word",
    [
        f"held_{SAMPLE.customer_key}",
        f"HELD FOR {SAMPLE.customer_key.upper()}",
        f"held%20{quote(SAMPLE.email, safe='')}",
        "x" * (300 - 10) + SAMPLE.customer_key,
    ],
    ids=["plain", "upper-case", "url-encoded", "truncated"],
)
def test_elevate_subject_inside_a_status_word_is_kept_privately(elevate, vendor_http, word):
    conn = elevate_connector(elevate, vendor_http)
    submit_ctx = elevate_ctx(elevate)
    job = conn.submit(Action.ERASE, SUBJECT, submit_ctx)
    elevate.force_status(job.job_id, word)
    ctx = elevate_ctx(elevate)
    progress = conn.check(job, ctx)
    assert (progress.status, progress.vendor_status) == ("failed", None)
    assert UNDOCUMENTED in progress.reason
    assert_clean(*records(job, progress))
    assert ctx.vendor_said == [("job-status", word)]


def test_elevate_subject_inside_the_create_answers_status_is_kept_privately(elevate, vendor_http):
    conn = elevate_connector(elevate, vendor_http)
    word = f"created for {SAMPLE.customer_key}"
    rewrite_once(elevate, r"/create-export-customer-job$", json_answer(lambda b: {**b, "status": word}))
    ctx = elevate_ctx(elevate)
    job = conn.submit(Action.EXPORT, SUBJECT, ctx)
    assert_clean(*records(job))
    assert ctx.vendor_said == [("job-status", word)]


def test_elevate_a_300_kb_status_word_is_undocumented_and_kept_capped(elevate, vendor_http):
    conn = elevate_connector(elevate, vendor_http)
    job = conn.submit(Action.EXPORT, SUBJECT, elevate_ctx(elevate))
    elevate.force_status(job.job_id, "w" * HUGE)
    ctx = elevate_ctx(elevate)
    progress = conn.check(job, ctx)
    assert (progress.status, progress.vendor_status) == ("failed", None)
    assert UNDOCUMENTED in progress.reason and "ww" not in progress.reason
    [(what, text)] = ctx.vendor_said
    assert what == "job-status" and len(text) <= DETAIL_LIMIT


@pytest.mark.parametrize(
    "jid",
    ["j" * HUGE, SAMPLE.customer_key, f"job-{SAMPLE.customer_key[:40]}", "../../etc/passwd", "", 12345678, None],
    ids=["300KB", "the-customer-key", "key-inside", "path", "empty", "number", "missing"],
)
def test_elevate_a_jid_outside_the_format_or_holding_the_subject_never_enters_a_job(elevate, vendor_http, jid):
    conn = elevate_connector(elevate, vendor_http)
    rewrite_once(elevate, r"/create-export-customer-job$", json_answer(lambda b: {**b, "jid": jid}))
    with pytest.raises(VendorError, match="answered a job id that is not in Elevate's documented format") as err:
        conn.submit(Action.EXPORT, SUBJECT, elevate_ctx(elevate))
    assert_error_clean(err.value)
    assert "jjjj" not in str(err.value) and "passwd" not in str(err.value)
    assert err.value.detail is not None and len(err.value.detail) <= DETAIL_LIMIT
    assert elevate.jobs_created() == 1  # it was created: the message says to ask Elevate


@pytest.mark.parametrize("path", [r"/create-export-customer-job$", r"/job-status$"])
def test_elevate_a_redirect_is_never_followed(elevate, vendor_http, other_host, path):
    conn = elevate_connector(elevate, vendor_http)
    job = conn.submit(Action.EXPORT, SUBJECT, elevate_ctx(elevate)) if "status" in path else None
    elevate.faults.redirect_to, elevate.faults.path_pattern = other_host.base_url, path
    with pytest.raises(VendorError) as err:
        if job is None:
            conn.submit(Action.EXPORT, SUBJECT, elevate_ctx(elevate))
        else:
            conn.check(job, elevate_ctx(elevate))
    assert "redirect" in str(err.value) and "HTTP 307" in str(err.value)
    assert_error_clean(err.value)
    assert other_host.calls == []


def test_elevate_html_instead_of_the_zip_is_invalid_and_the_job_survives(elevate, vendor_http):
    conn = elevate_connector(elevate, vendor_http)
    job = elevate_done_job(elevate, conn)
    elevate.faults.html_instead = 1
    with pytest.raises(ArchiveInvalid, match="answered an HTML page instead of a zip") as err:
        conn.collect(job, elevate_ctx(elevate))
    assert "text/html" not in str(err.value) and "text/html" in err.value.detail
    [archive] = conn.collect(job, elevate_ctx(elevate))
    assert archive.kind == "zip" and read(archive)[:2] == b"PK"


def test_elevate_a_content_type_or_status_document_echoing_the_subject_is_kept_privately(elevate, vendor_http):
    conn = elevate_connector(elevate, vendor_http)
    job = elevate_done_job(elevate, conn)

    def odd_type(req: Request, resp: Response) -> Response:
        return Response(body=b"PK", content_type=f"application/x-{SAMPLE.customer_key}")

    rewrite_once(elevate, r"/export-customer-job-result$", odd_type)
    with pytest.raises(ArchiveInvalid) as err:
        conn.collect(job, elevate_ctx(elevate))
    assert_error_clean(err.value)
    assert SAMPLE.customer_key in err.value.detail

    word = f"queued:{SAMPLE.customer_key}"
    rewrite_once(
        elevate, r"/export-customer-job-result$", lambda req, resp: Response.json({"jid": "x", "status": word})
    )
    with pytest.raises(VendorError, match=rf"status document \({UNDOCUMENTED}\) instead of a zip") as err2:
        conn.collect(job, elevate_ctx(elevate))
    assert_error_clean(err2.value)
    assert word in err2.value.detail


def test_elevate_dry_run_proves_the_credentials_with_read_only_calls(elevate, vendor_http):
    conn = elevate_connector(elevate, vendor_http)
    conn.http.dry_run = True  # as the task layer sets it for a dry-run request
    ctx = elevate_ctx(elevate, dry_run=True)
    plan = conn.dry_run(Action.ERASE, SUBJECT, ctx)
    assert plan.call == "POST /api/v2/event-data/create-remove-customer-job?customerKey={customerKey}"
    assert plan.subject_found is None and "credentials accepted by Elevate" in plan.verified
    assert elevate.destructive_calls() == [] and elevate.jobs_created() == 0
    assert [(c.path, c.query) for c in elevate.calls] == [
        ("/api/v2/event-data/job-status", {"jid": "00000000-0000-0000-0000-000000000000"})
    ]
    assert_clean(plan.model_dump_json())


def test_elevate_dry_run_with_wrong_credentials_is_an_auth_error(vendor_http):
    with ElevateSimulator(vendor_start=T0) as sim:
        conn = registry.build("elevate", {**sim.credentials(), "api_key": "wrong"}, http=vendor_http("elevate"))
        with pytest.raises(VendorAuthError):
            conn.dry_run(Action.ERASE, SUBJECT, elevate_ctx(sim, dry_run=True))
        assert sim.destructive_calls() == []


def test_elevate_removal_is_refused_before_sending_in_a_dry_run(elevate, vendor_http):
    conn = elevate_connector(elevate, vendor_http)
    conn.http.dry_run = True
    with pytest.raises(DryRunViolation):
        conn.submit(Action.ERASE, SUBJECT, elevate_ctx(elevate, dry_run=True))
    assert elevate.calls == [] and elevate.destructive_calls() == []
    # The export is not destructive: it still runs in a dry run.
    assert conn.submit(Action.EXPORT, SUBJECT, elevate_ctx(elevate, dry_run=True)).job_id is not None


# === Bloomreach =========================================================================================


@pytest.fixture
def bloomreach():
    with BloomreachSimulator() as sim:
        yield sim


def bloomreach_connector(sim: BloomreachSimulator, vendor_http):
    return registry.build("bloomreach", sim.credentials(), http=vendor_http("bloomreach"))


def bloomreach_ctx(subject: Subject = SUBJECT, **kw) -> JobContext:
    return JobContext(request_id="req-hostile", subject=subject, **kw)


@pytest.mark.parametrize("form", ECHO_FORMS)
def test_bloomreach_echo_on_anonymize_stays_out_of_the_message(bloomreach, vendor_http, form):
    conn = bloomreach_connector(bloomreach, vendor_http)
    reject_with(bloomreach, form, SAMPLE.registered, r"/anonymize$")
    with pytest.raises(VendorError) as err:
        conn.submit(Action.ERASE, SUBJECT, bloomreach_ctx())
    assert_error_clean(err.value)
    assert err.value.detail
    assert bloomreach.record_of(SAMPLE)["anonymized"] is False


@pytest.mark.parametrize("form", ECHO_FORMS)
def test_bloomreach_echo_on_export_one_stays_out_of_the_message(bloomreach, vendor_http, form):
    conn = bloomreach_connector(bloomreach, vendor_http)
    ctx = bloomreach_ctx()
    job = conn.submit(Action.EXPORT, SUBJECT, ctx)
    progress = conn.check(job, ctx)  # Bloomreach's check makes no call: nothing to echo
    reject_with(bloomreach, form, SAMPLE.cookie, r"/export-one$")
    with pytest.raises(VendorError) as err:
        conn.collect(job, ctx)
    assert_error_clean(err.value)
    assert err.value.detail
    assert_clean(*records(job, progress))


@pytest.mark.parametrize("suffix", ["export-one", "anonymize"])
def test_bloomreach_success_false_echoing_the_subject_is_kept_privately(bloomreach, vendor_http, suffix):
    conn = bloomreach_connector(bloomreach, vendor_http)
    words = [f"Customer {SAMPLE.registered} ({SAMPLE.email}) is locked", "x" * 290 + SAMPLE.email]
    bloomreach.fail_next(suffix, errors=words)
    ctx = bloomreach_ctx()
    with pytest.raises(VendorError) as err:
        if suffix == "anonymize":
            conn.submit(Action.ERASE, SUBJECT, ctx)
        else:
            conn.collect(conn.submit(Action.EXPORT, SUBJECT, ctx), ctx)
    assert str(err.value) == f"bloomreach: {suffix} answered HTTP 200 with success false"
    assert SAMPLE.registered in err.value.detail and "is locked" in err.value.detail


def test_bloomreach_html_instead_of_the_json_export_is_invalid(bloomreach, vendor_http):
    conn = bloomreach_connector(bloomreach, vendor_http)
    ctx = bloomreach_ctx()
    job = conn.submit(Action.EXPORT, SUBJECT, ctx)
    bloomreach.faults.html_instead = 1
    with pytest.raises(ArchiveInvalid, match="not a JSON object"):
        conn.collect(job, ctx)
    [archive] = conn.collect(job, ctx)
    assert archive.kind == "json" and json.loads(read(archive))["success"] is True
    assert_clean(archive.name)


@pytest.mark.parametrize("suffix", ["export-one", "anonymize"])
def test_bloomreach_a_redirect_is_never_followed(bloomreach, vendor_http, other_host, suffix):
    conn = bloomreach_connector(bloomreach, vendor_http)
    bloomreach.faults.redirect_to, bloomreach.faults.path_pattern = other_host.base_url, rf"/{suffix}$"
    ctx = bloomreach_ctx()
    with pytest.raises(VendorError) as err:
        if suffix == "anonymize":
            conn.submit(Action.ERASE, SUBJECT, ctx)
        else:
            conn.collect(conn.submit(Action.EXPORT, SUBJECT, ctx), ctx)
    assert_error_clean(err.value)
    assert other_host.calls == []  # neither the credentials nor the customer ids went there
    assert bloomreach.record_of(SAMPLE)["anonymized"] is False


def test_bloomreach_dry_run_finds_the_customer_with_read_only_calls(bloomreach, vendor_http):
    conn = bloomreach_connector(bloomreach, vendor_http)
    conn.http.dry_run = True
    plan = conn.dry_run(Action.ERASE, SUBJECT, bloomreach_ctx(dry_run=True))
    assert plan.call == "POST /data/v2/projects/{projectToken}/customers/anonymize"
    assert plan.subject_found is True and plan.verified == "credentials accepted; the customer exists at Bloomreach"
    assert bloomreach.destructive_calls() == [] and bloomreach.jobs_created() == 0
    assert [c.path.rsplit("/", 1)[1] for c in bloomreach.calls] == ["export-one"]
    assert bloomreach.record_of(SAMPLE)["anonymized"] is False
    assert_clean(plan.model_dump_json())


def test_bloomreach_dry_run_for_an_unknown_customer_says_nothing_would_be_anonymized(bloomreach, vendor_http):
    conn = bloomreach_connector(bloomreach, vendor_http)
    conn.http.dry_run = True
    nobody = Subject(customer_ids={"registered": "crm-does-not-exist"})
    plan = conn.dry_run(Action.ERASE, nobody, bloomreach_ctx(nobody, dry_run=True))
    assert plan.subject_found is False and "nothing to anonymize" in plan.verified
    assert bloomreach.destructive_calls() == []


def test_bloomreach_dry_run_reads_a_large_export_in_bounded_memory_and_checks_success(bloomreach, vendor_http):
    conn = bloomreach_connector(bloomreach, vendor_http)
    big = {"success": True, "ids": {}, "events": [{"type": "view", "n": i} for i in range(200_000)]}  # ~5 MB
    rewrite_once(bloomreach, r"/export-one$", lambda req, resp: Response.json(big))
    assert conn.dry_run(Action.ERASE, SUBJECT, bloomreach_ctx(dry_run=True)).subject_found is True

    rewrite_once(bloomreach, r"/export-one$", lambda req, resp: Response.json({"success": False, "errors": ["no"]}))
    with pytest.raises(VendorError, match="export-one answered HTTP 200 with success false"):
        conn.dry_run(Action.ERASE, SUBJECT, bloomreach_ctx(dry_run=True))
    assert bloomreach.destructive_calls() == []


def test_bloomreach_anonymize_is_refused_before_sending_in_a_dry_run(bloomreach, vendor_http):
    conn = bloomreach_connector(bloomreach, vendor_http)
    conn.http.dry_run = True
    with pytest.raises(DryRunViolation):
        conn.submit(Action.ERASE, SUBJECT, bloomreach_ctx(dry_run=True))
    assert bloomreach.calls == [] and bloomreach.destructive_calls() == []
    assert bloomreach.record_of(SAMPLE)["anonymized"] is False


# === Qualifio ===========================================================================================

PROCESSING = timedelta(minutes=31)


@pytest.fixture
def qualifio():
    with QualifioSimulator() as sim:
        yield sim


def qualifio_connector(sim: QualifioSimulator, vendor_http, **overrides):
    return registry.build("qualifio", {**sim.credentials(), **overrides}, http=vendor_http("qualifio"))


def qualifio_ctx(subject: Subject = SUBJECT, **kw) -> JobContext:
    return JobContext(request_id="req-hostile", subject=subject, now=T0, **kw)


def qualifio_finished_job(sim: QualifioSimulator, conn) -> Job:
    job = conn.submit(Action.EXPORT, SUBJECT, qualifio_ctx())
    sim.clock.advance(PROCESSING)
    return job


@pytest.mark.parametrize("form", ECHO_FORMS)
def test_qualifio_echo_on_submit_stays_out_of_the_message(qualifio, vendor_http, form):
    conn = qualifio_connector(qualifio, vendor_http)
    reject_with(qualifio, form, SAMPLE.email, r"/v1/gdpr/profiles$")
    with pytest.raises(VendorError) as err:
        conn.submit(Action.ERASE, SUBJECT, qualifio_ctx())
    assert_error_clean(err.value)
    assert err.value.detail
    assert qualifio.rules == {}


@pytest.mark.parametrize("form", ECHO_FORMS)
def test_qualifio_echo_on_rule_creation_stays_out_of_the_message(qualifio, vendor_http, form):
    conn = qualifio_connector(qualifio, vendor_http)
    reject_with(qualifio, form, SAMPLE.email, r"/rules/exportData$")
    with pytest.raises(VendorError) as err:
        conn.submit(Action.EXPORT, SUBJECT, qualifio_ctx())
    assert_error_clean(err.value)
    assert err.value.detail
    assert qualifio.rules == {}


@pytest.mark.parametrize("form", ECHO_FORMS)
def test_qualifio_echo_on_check_stays_out_of_the_message(qualifio, vendor_http, form):
    conn = qualifio_connector(qualifio, vendor_http)
    job = conn.submit(Action.EXPORT, SUBJECT, qualifio_ctx())
    reject_with(qualifio, form, SAMPLE.email, r"/rules/[0-9a-f]+$")
    with pytest.raises(VendorError) as err:
        conn.check(job, qualifio_ctx())
    assert_error_clean(err.value)
    assert err.value.detail
    assert_clean(*records(job))


@pytest.mark.parametrize("form", ECHO_FORMS)
@pytest.mark.parametrize("path", [r"/archive/[0-9a-f]+$", r"^/archives/"], ids=["location", "download"])
def test_qualifio_echo_on_collect_stays_out_of_the_message(qualifio, vendor_http, form, path):
    conn = qualifio_connector(qualifio, vendor_http)
    job = qualifio_finished_job(qualifio, conn)
    reject_with(qualifio, form, SAMPLE.email, path)
    with pytest.raises(VendorError) as err:
        conn.collect(job, qualifio_ctx())
    assert_error_clean(err.value)
    assert err.value.detail
    [archive] = conn.collect(job, qualifio_ctx())
    assert read(archive)[:2] == b"PK"
    assert_clean(*records(job, archives=[archive]))


@pytest.mark.parametrize(
    "word",
    [
        f"DENIED_{SAMPLE.email}",
        f"denied for {SAMPLE.email.upper()}",
        f"DENIED%20{quote(SAMPLE.email, safe='')}",
        "X" * HUGE,
    ],
    ids=["plain", "upper-case", "url-encoded", "300KB"],
)
def test_qualifio_an_undocumented_status_word_is_kept_privately(qualifio, vendor_http, word):
    conn = qualifio_connector(qualifio, vendor_http, auto_validate=False)
    job = conn.submit(Action.ERASE, SUBJECT, qualifio_ctx())
    qualifio.deny(job.job_id, word)
    ctx = qualifio_ctx()
    progress = conn.check(job, ctx)
    assert (progress.status, progress.vendor_status) == ("failed", None)
    assert UNDOCUMENTED in progress.reason and "XX" not in progress.reason
    assert_clean(*records(job, progress))
    [(what, text)] = ctx.vendor_said
    assert what == "rule-status" and text == word[: DETAIL_LIMIT - 1] + ("…" if len(word) >= DETAIL_LIMIT else "")
    assert len(qualifio.profiles_of(SAMPLE.email)) == 2


@pytest.mark.parametrize(
    "rule_id",
    ["f" * HUGE, "65F0C0DE0000000000000001", SAMPLE.email, "65f0c0de00000000000000010", 42],
    ids=["300KB", "upper-case", "the-email", "25-hex", "number"],
)
def test_qualifio_a_rule_id_outside_the_format_never_enters_a_job(qualifio, vendor_http, rule_id):
    conn = qualifio_connector(qualifio, vendor_http)
    rewrite_once(qualifio, r"/rules/exportData$", json_answer(lambda b: {**b, "_id": rule_id}))
    with pytest.raises(VendorError, match="answered a rule id that is not in Qualifio's documented format") as err:
        conn.submit(Action.EXPORT, SUBJECT, qualifio_ctx())
    assert_error_clean(err.value)
    assert "ffff" not in str(err.value)
    assert err.value.detail is not None and len(err.value.detail) <= DETAIL_LIMIT
    assert qualifio.jobs_created() == 1  # created, and the message says to review it
    assert qualifio.calls_to(r"/validate$") == []  # an id we cannot trust is never validated


def test_qualifio_an_archive_id_outside_the_format_is_kept_privately(qualifio, vendor_http):
    conn = qualifio_connector(qualifio, vendor_http)
    job = qualifio_finished_job(qualifio, conn)
    rewrite_once(qualifio, r"/rules/[0-9a-f]+$", json_answer(lambda b: {**b, "archive": "a" * HUGE}))
    with pytest.raises(VendorError, match="names an archive id that is not in Qualifio's documented format") as err:
        conn.check(job, qualifio_ctx())
    assert_error_clean(err.value)
    assert "aaaa" not in str(err.value)


def test_qualifio_a_shape_complaint_names_the_field_only(qualifio, vendor_http):
    conn = qualifio_connector(qualifio, vendor_http)
    job = conn.submit(Action.EXPORT, SUBJECT, qualifio_ctx())
    rewrite_once(qualifio, r"/rules/[0-9a-f]+$", json_answer(lambda b: {**b, "ruleStatus": {"status": [SAMPLE.email]}}))
    with pytest.raises(VendorError) as err:
        conn.check(job, qualifio_ctx())
    assert str(err.value) == f"qualifio: rule {job.job_id} has an unexpected shape (field 'ruleStatus.status')"
    assert "valid string" in err.value.detail


@pytest.mark.parametrize("path", [r"/v1/gdpr/profiles$", r"/rules/[0-9a-f]+$", r"/archive/[0-9a-f]+$"])
def test_qualifio_a_redirect_is_never_followed(qualifio, vendor_http, other_host, path):
    conn = qualifio_connector(qualifio, vendor_http)
    job = None if "profiles" in path else qualifio_finished_job(qualifio, conn)
    qualifio.faults.redirect_to, qualifio.faults.path_pattern = other_host.base_url, path
    with pytest.raises(VendorError) as err:
        if job is None:
            conn.submit(Action.EXPORT, SUBJECT, qualifio_ctx())
        elif "archive" in path:
            conn.collect(job, qualifio_ctx())
        else:
            conn.check(job, qualifio_ctx())
    assert_error_clean(err.value)
    assert other_host.calls == []


@pytest.mark.parametrize(
    "link",
    ["ftp://127.0.0.1/archive.zip", "file:///etc/passwd", "javascript:alert(1)", "https:///archive.zip"],
    ids=str,
)
def test_qualifio_a_download_link_that_is_not_http_is_refused_before_any_connection(qualifio, vendor_http, link):
    conn = qualifio_connector(qualifio, vendor_http)
    job = qualifio_finished_job(qualifio, conn)
    qualifio.archive_url = link
    with pytest.raises(VendorError, match="^qualifio: archive download link") as err:
        conn.collect(job, qualifio_ctx())
    assert "passwd" not in str(err.value) and "127.0.0.1" not in str(err.value)
    assert qualifio.calls_to(r"^/archives/") == []


def test_qualifio_a_download_redirected_elsewhere_never_carries_the_token(qualifio, vendor_http, other_host):
    # Download links may redirect (pre-signed storage); the client checks each hop and keeps the API token
    # on Qualifio's own origin. The other host answers JSON, not a zip: refused, nothing stored.
    conn = qualifio_connector(qualifio, vendor_http)
    job = qualifio_finished_job(qualifio, conn)
    qualifio.faults.redirect_to, qualifio.faults.path_pattern = other_host.base_url, r"^/archives/"
    with pytest.raises(ArchiveInvalid, match="answered a JSON document instead of a zip"):
        conn.collect(job, qualifio_ctx())
    assert len(other_host.headers) == 1 and "x-api-token" not in other_host.headers[0]
    assert qualifio.api_token not in json.dumps(other_host.headers)


def test_qualifio_html_instead_of_the_zip_is_invalid(qualifio, vendor_http):
    conn = qualifio_connector(qualifio, vendor_http)
    job = qualifio_finished_job(qualifio, conn)
    qualifio.faults.html_instead = 1
    with pytest.raises(ArchiveInvalid, match="answered an HTML page instead of a zip; nothing was stored") as err:
        conn.collect(job, qualifio_ctx())
    assert "text/html" not in str(err.value) and "text/html" in err.value.detail
    [archive] = conn.collect(job, qualifio_ctx())
    assert archive.kind == "zip" and archive.content_type == "application/zip" and read(archive)[:2] == b"PK"


def test_qualifio_dry_run_looks_the_subject_up_with_read_only_calls(qualifio, vendor_http):
    conn = qualifio_connector(qualifio, vendor_http)
    conn.http.dry_run = True
    plan = conn.dry_run(Action.ERASE, SUBJECT, qualifio_ctx(dry_run=True))
    assert plan.call == "POST /v1/gdpr/rules/forgottenRight?clientId={clientId}"
    assert plan.subject_found is True and "2 profile(s)" in plan.verified
    assert qualifio.destructive_calls() == [] and qualifio.rules == {}
    assert [c.path for c in qualifio.calls] == ["/v1/gdpr/profiles"]
    assert_clean(plan.model_dump_json())

    nobody = Subject(email=UNKNOWN_EMAIL)
    plan = conn.dry_run(Action.ERASE, nobody, qualifio_ctx(nobody, dry_run=True))
    assert plan.subject_found is False and "nothing to erase" in plan.verified


def test_qualifio_a_real_erasure_rule_is_refused_before_sending_but_a_test_rule_is_not(qualifio, vendor_http):
    conn = qualifio_connector(qualifio, vendor_http)
    conn.http.dry_run = True
    with pytest.raises(DryRunViolation):
        conn.submit(Action.ERASE, SUBJECT, qualifio_ctx())  # a request context without dry_run: a real rule
    assert qualifio.destructive_calls() == [] and qualifio.rules == {}

    job = conn.submit(Action.ERASE, SUBJECT, qualifio_ctx(dry_run=True))  # the native dry run: test: true
    assert qualifio.rule(job.job_id)["body"]["test"] is True
    assert qualifio.destructive_calls() == [] and qualifio.jobs_created("forgottenRight") == 1
