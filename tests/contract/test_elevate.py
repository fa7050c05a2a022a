"""The Elevate connector against the Elevate simulator over real loopback HTTP (VENDORS.md section 1)."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
import requests

from connectors import registry
from connectors.base import Action, Job, JobContext, Progress, Subject
from connectors.elevate import ElevateConnector
from core.errors import ArchiveTransferError, VendorAuthError, VendorError
from local.simulators.data import CUSTOMERS, SAMPLE
from local.simulators.elevate import ElevateSimulator

# 10:00 UTC: the "waiting until the next day" step is well clear of midnight.
T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
EXPECTED_FILES = {"view": "recent_views.jsonl", "add_to_cart": "recent_atc.jsonl", "purchase": "recent_purchases.jsonl"}


@pytest.fixture
def sim():
    with ElevateSimulator(vendor_start=T0) as s:
        yield s


def connect(sim: ElevateSimulator, vendor_http, **overrides) -> ElevateConnector:
    creds = {**sim.credentials(), **overrides}
    return registry.build("elevate", json.dumps(creds), http=vendor_http("elevate"))  # type: ignore[return-value]


def ctx_for(sim: ElevateSimulator, key: str | None) -> JobContext:
    return JobContext(request_id="req-1", subject=Subject(customer_key=key), now=sim.clock.now())


def check(conn: ElevateConnector, job: Job, sim: ElevateSimulator, key: str | None = None) -> Progress:
    job.checks += 1  # the workflow counts checks before calling
    return conn.check(job, ctx_for(sim, key))


def download(conn: ElevateConnector, job: Job, sim: ElevateSimulator) -> tuple[str, bytes]:
    [archive] = conn.collect(job, ctx_for(sim, None))
    with archive:
        body = b"".join(archive.chunks)
    assert archive.length == len(body)
    assert archive.content_type == "application/zip"
    return archive.name, body


def run_to_done(conn, job, sim) -> Progress:
    sim.clock.advance(timedelta(days=6))
    return check(conn, job, sim)


def test_export_walks_created_waiting_running_done_and_downloads_the_customers_jsonl(sim, vendor_http):
    conn = connect(sim, vendor_http)
    ctx = ctx_for(sim, SAMPLE.customer_key)
    job = conn.submit(Action.EXPORT, ctx.subject, ctx)

    assert job.vendor == "elevate" and job.job_id == next(iter(sim.jobs))
    assert job.next_check_at == ctx.now + timedelta(days=5)
    assert job.deadline_at == ctx.now + timedelta(days=14)
    assert SAMPLE.customer_key not in job.model_dump_json()  # the job goes into the execution history

    seen = [check(conn, job, sim)]
    sim.clock.advance(timedelta(hours=2))  # 12:00: queued, waits for the next day
    seen.append(check(conn, job, sim))
    sim.clock.advance(timedelta(hours=13))  # 01:00 the next day: working on archived data
    job.checks += 1
    third = ctx_for(sim, None)
    seen.append(conn.check(job, third))
    assert [(p.status, p.vendor_status) for p in seen] == [
        ("pending", "created"),
        ("pending", "waiting"),
        ("pending", "running"),
    ]
    assert "waiting" in seen[1].reason and job.job_id[:8] in seen[1].reason
    assert seen[2].next_check_at == third.now + timedelta(hours=12)  # then twice a day

    sim.clock.advance(timedelta(days=4))  # 4 days 15 hours after creation: not yet
    assert check(conn, job, sim).vendor_status == "running"
    sim.clock.advance(timedelta(hours=10))
    done = check(conn, job, sim)
    assert (done.status, done.vendor_status) == ("ready", "done")

    name, body = download(conn, job, sim)
    assert name == f"elevate-export-{job.job_id}.zip"
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.testzip() is None
        rows = {n: [json.loads(line) for line in zf.read(n).splitlines()] for n in zf.namelist()}
    expected_files = {EXPECTED_FILES.get(e["type"], "recent_other_events.jsonl") for e in SAMPLE.events}
    assert set(rows) == expected_files
    exported = sorted((r["productKey"], r["eventType"]) for file_rows in rows.values() for r in file_rows)
    assert exported == sorted((e["product_id"], e["type"]) for e in SAMPLE.events)
    assert {r["customerKey"] for file_rows in rows.values() for r in file_rows} == {SAMPLE.customer_key}

    # Every call carried the key in a header, under the v2 prefix, with the documented parameters.
    assert [(c.method, c.path.rsplit("/", 1)[1], sorted(c.query)) for c in sim.calls] == [
        ("POST", "create-export-customer-job", ["customerKey"]),
        *[("GET", "job-status", ["jid"])] * 5,
        ("GET", "export-customer-job-result", ["jid"]),
    ]
    assert all(c.path.startswith("/api/v2/event-data/") for c in sim.calls)
    # Single-shot: the vendor forgot the job once it was downloaded.
    assert sim.status_of(job.job_id) == "not_found"


def test_visitor_key_of_another_customer_exports_only_that_customer(sim, vendor_http):
    other = CUSTOMERS[2]
    conn = connect(sim, vendor_http)
    ctx = ctx_for(sim, other.visitor_key)
    job = conn.submit(Action.EXPORT, ctx.subject, ctx)
    assert run_to_done(conn, job, sim).status == "ready"
    _, body = download(conn, job, sim)
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        products = {json.loads(line)["productKey"] for n in zf.namelist() for line in zf.read(n).splitlines()}
    assert products == {e["product_id"] for e in other.events}


def test_unknown_key_downloads_a_zip_with_only_empty_txt(sim, vendor_http):
    conn = connect(sim, vendor_http)
    ctx = ctx_for(sim, str(uuid.uuid4()))
    job = conn.submit(Action.EXPORT, ctx.subject, ctx)
    assert run_to_done(conn, job, sim).status == "ready"
    _, body = download(conn, job, sim)
    assert zipfile.ZipFile(io.BytesIO(body)).namelist() == ["empty.txt"]


@pytest.mark.parametrize("initial", ["started", "created"])
def test_removal_job_accepts_both_documented_first_statuses_and_erases(vendor_http, initial):
    with ElevateSimulator(vendor_start=T0, removal_initial_status=initial) as sim:
        conn = connect(sim, vendor_http)
        ctx = ctx_for(sim, SAMPLE.customer_key)
        job = conn.submit(Action.ERASE, ctx.subject, ctx)
        assert sim.calls[0].path == "/api/v2/event-data/create-remove-customer-job"
        first = check(conn, job, sim)
        assert (first.status, first.vendor_status) == ("pending", initial)

        done = run_to_done(conn, job, sim)
        assert (done.status, done.vendor_status) == ("ready", "done")
        assert "removed" in done.reason
        assert conn.collect(job, ctx) == []
        assert [c.path.rsplit("/", 1)[1] for c in sim.calls].count("export-customer-job-result") == 0

        # The vendor no longer holds the customer's events: a new export comes back empty.
        export = conn.submit(Action.EXPORT, ctx.subject, ctx_for(sim, SAMPLE.customer_key))
        assert run_to_done(conn, export, sim).status == "ready"
        _, body = download(conn, export, sim)
        assert zipfile.ZipFile(io.BytesIO(body)).namelist() == ["empty.txt"]


def test_basic_auth_on_a_v1_cluster(vendor_http):
    with ElevateSimulator(vendor_start=T0, auth_mode="basic", api_prefix="/api/v1") as sim:
        creds = sim.credentials()
        assert set(creds) == {"base_url", "api_prefix", "username", "password"}
        conn = connect(sim, vendor_http)
        ctx = ctx_for(sim, SAMPLE.customer_key)
        job = conn.submit(Action.EXPORT, ctx.subject, ctx)
        assert run_to_done(conn, job, sim).status == "ready"
        _, body = download(conn, job, sim)
        assert "recent_views.jsonl" in zipfile.ZipFile(io.BytesIO(body)).namelist()
        assert all(c.path.startswith("/api/v1/event-data/") and c.status == 200 for c in sim.calls)

        # An Api-Key is not what a basic-auth cluster accepts.
        keyed = registry.build(
            "elevate", {"base_url": sim.base_url, "api_prefix": "/api/v1", "api_key": "sim-elevate-key"}
        )
        with pytest.raises(VendorAuthError):
            keyed.submit(Action.EXPORT, ctx.subject, ctx)


@pytest.mark.parametrize(
    ("sim_options", "bad"),
    [
        ({}, {"api_key": "wrong-key-7f3a9c"}),
        ({"auth_mode": "basic"}, {"password": "wrong-pass-7f3a9c"}),
    ],
)
def test_wrong_credentials_fail_at_once_without_quoting_them(vendor_http, sim_options, bad):
    with ElevateSimulator(vendor_start=T0, **sim_options) as sim:
        conn = connect(sim, vendor_http, **bad)
        ctx = ctx_for(sim, SAMPLE.customer_key)
        with pytest.raises(VendorAuthError) as err:
            conn.submit(Action.EXPORT, ctx.subject, ctx)
    message = str(err.value)
    assert message == "elevate: create-export-customer-job was refused with HTTP 403; check the vendor credentials"
    # The vendor's own explanation is kept privately, never in the message.
    assert err.value.detail in ("Invalid or missing Api-Key", "Invalid cluster credentials")
    for value in (*bad.values(), SAMPLE.customer_key):
        assert value not in message and value not in err.value.detail
    assert len(sim.calls) == 1  # a 403 is not retried


def test_invalid_customer_key_is_a_400_with_the_vendor_message_kept_privately_never_the_key(sim, vendor_http):
    conn = connect(sim, vendor_http)
    key = "crm-1001-not-a-uuid"
    ctx = ctx_for(sim, key)
    with pytest.raises(VendorError) as err:
        conn.submit(Action.EXPORT, ctx.subject, ctx)
    assert err.value.status_code == 400
    assert str(err.value) == "elevate: create-export-customer-job answered HTTP 400"
    # The vendor's words go to detail, and even there the echoed key is masked.
    assert err.value.detail.startswith("Invalid customerKey")
    assert key not in str(err.value) and key not in err.value.detail
    assert key in sim.calls[0].query["customerKey"]  # the simulator did echo it: the connector scrubbed it


def test_simulator_answers_400_for_missing_arguments(sim):
    headers = {"Api-Key": "sim-elevate-key"}
    url = sim.base_url + "/api/v2/event-data/"
    created = requests.post(url + "create-export-customer-job", headers=headers, timeout=5)
    status = requests.get(url + "job-status", headers=headers, timeout=5)
    assert (created.status_code, created.json()) == (400, {"message": "Missing required argument: customerKey"})
    assert (status.status_code, status.json()) == (400, {"message": "Missing required argument: jid"})
    no_key = requests.get(url + "job-status", params={"jid": "x"}, timeout=5)
    assert (no_key.status_code, no_key.json()) == (403, {"message": "Invalid or missing Api-Key"})


def test_not_found_and_error_statuses_fail_with_the_job_named(sim, vendor_http):
    conn = connect(sim, vendor_http)
    ctx = ctx_for(sim, SAMPLE.customer_key)
    stranger = Job(
        vendor="elevate",
        action=Action.EXPORT,
        job_id="ca24f00d-0000-4000-8000-000000000000",
        submitted_at=ctx.now,
        next_check_at=ctx.now,
        deadline_at=ctx.now + timedelta(days=14),
    )
    gone = check(conn, stranger, sim)
    assert (gone.status, gone.vendor_status) == ("failed", "not_found")
    assert gone.reason.startswith("elevate: job ca24f00d… reports 'not_found'")

    job = conn.submit(Action.EXPORT, ctx.subject, ctx)
    sim.clock.advance(timedelta(days=2))
    sim.fail_job(job.job_id)
    failed = check(conn, job, sim)
    assert (failed.status, failed.vendor_status) == ("failed", "error")
    assert failed.reason.startswith(f"elevate: job {job.job_id[:8]}… reports 'error'")


def test_an_undocumented_status_fails_and_is_kept_privately_not_quoted(sim, vendor_http):
    conn = connect(sim, vendor_http)
    ctx = ctx_for(sim, SAMPLE.customer_key)
    job = conn.submit(Action.ERASE, ctx.subject, ctx)
    sim.force_status(job.job_id, "paused_by_operator")
    later = ctx_for(sim, SAMPLE.customer_key)
    progress = conn.check(job, later)
    assert (progress.status, progress.vendor_status) == ("failed", None)
    assert "an undocumented status" in progress.reason and job.job_id[:8] in progress.reason
    assert "paused" not in progress.reason
    assert later.vendor_said == [("job-status", "paused_by_operator")]


def test_second_download_says_the_archive_is_gone_and_must_be_requested_again(sim, vendor_http):
    conn = connect(sim, vendor_http)
    ctx = ctx_for(sim, SAMPLE.customer_key)
    job = conn.submit(Action.EXPORT, ctx.subject, ctx)
    run_to_done(conn, job, sim)
    download(conn, job, sim)
    with pytest.raises(VendorError) as err:
        conn.collect(job, ctx)
    message = str(err.value)
    assert message.startswith(f"elevate: the export of job {job.job_id[:8]}… was already downloaded or removed")
    assert "request the export again" in message
    # The simulator's documented answer: HTTP 200 with a not_found status document, not a zip.
    assert sim.calls[-1].status == 200


def test_cut_off_download_is_a_transfer_error_and_the_next_download_is_whole(vendor_http):
    with ElevateSimulator(vendor_start=T0, chunk_size=64) as sim:
        conn = connect(sim, vendor_http)
        ctx = ctx_for(sim, SAMPLE.customer_key)
        job = conn.submit(Action.EXPORT, ctx.subject, ctx)
        run_to_done(conn, job, sim)
        sim.faults.cut_download_after = 300

        [archive] = conn.collect(job, ctx)
        received = bytearray()
        with archive, pytest.raises(ArchiveTransferError) as err:
            for chunk in archive.chunks:
                received += chunk
        assert archive.length is not None and archive.length > 300
        assert len(received) <= 300
        assert f"job {job.job_id[:8]}… broke off" in str(err.value)
        assert sim.status_of(job.job_id) == "done"  # a cut-off download does not consume the job

        name, body = download(conn, job, sim)
        assert len(body) == archive.length and zipfile.ZipFile(io.BytesIO(body)).testzip() is None
        assert sim.status_of(job.job_id) == "not_found"


def test_rate_limit_is_retried_after_the_vendors_retry_after(sim, vendor_http, sleeps):
    conn = connect(sim, vendor_http)
    ctx = ctx_for(sim, SAMPLE.customer_key)
    job = conn.submit(Action.EXPORT, ctx.subject, ctx)
    sim.faults.rate_limit, sim.faults.retry_after, sim.faults.path_pattern = 2, 3, r"/job-status$"
    progress = check(conn, job, sim)
    assert (progress.status, progress.vendor_status) == ("pending", "created")
    assert sleeps.delays == [3.0, 3.0]
    assert [c.status for c in sim.calls_to("job-status")] == [429, 429, 200]


def test_a_job_still_running_past_its_deadline_fails_but_a_done_one_is_collected(sim, vendor_http):
    conn = connect(sim, vendor_http)
    ctx = ctx_for(sim, SAMPLE.customer_key)
    job = conn.submit(Action.EXPORT, ctx.subject, ctx)
    sim.clock.advance(timedelta(days=1))
    late = JobContext(request_id="req-1", subject=ctx.subject, now=job.deadline_at + timedelta(seconds=1))
    job.checks = 7
    progress = conn.check(job, late)
    assert (progress.status, progress.vendor_status) == ("failed", "running")
    assert "DeadlineExceeded" in progress.reason and job.job_id[:8] in progress.reason
    assert progress.error == "DeadlineExceeded"

    sim.clock.advance(timedelta(days=5))
    assert conn.check(job, late).status == "ready"
