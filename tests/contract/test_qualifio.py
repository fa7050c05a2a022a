"""Qualifio connector against the Qualifio simulator over loopback HTTP (VENDORS.md section 3)."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
import requests

from connectors import registry
from connectors.base import Action, Job, JobContext, Progress, Subject
from connectors.qualifio import NO_DATA_REASON, QualifioConnector
from core.errors import ArchiveTransferError, VendorAuthError, VendorError
from local.simulators.base import Request, Response, Simulator
from local.simulators.data import CUSTOMERS, SAMPLE, UNKNOWN_EMAIL
from local.simulators.qualifio import QualifioSimulator

NOW = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
REQUEST_ID = "dsr-2026-11-0042"
PROCESSING = timedelta(minutes=31)  # just past the simulator's 30 vendor minutes


@pytest.fixture(autouse=True)
def _real_time(monkeypatch):
    monkeypatch.delenv("DSRFLOW_TIME_SCALE", raising=False)


@pytest.fixture
def sim():
    with QualifioSimulator() as s:
        yield s


@pytest.fixture
def connect(sim, vendor_http):
    def make(**overrides) -> QualifioConnector:
        return registry.build("qualifio", {**sim.credentials(), **overrides}, http=vendor_http("qualifio"))

    return make


def ctx(email: str | None = SAMPLE.email, now: datetime = NOW, **extra) -> JobContext:
    return JobContext(request_id=REQUEST_ID, subject=Subject(email=email), now=now, **extra)


def check(connector: QualifioConnector, job: Job, now: datetime = NOW) -> tuple[Job, Progress]:
    """As the workflow does: count the check, then ask."""
    job = job.model_copy(update={"checks": job.checks + 1})
    return job, connector.check(job, ctx(now=now))


def sample_ids(sim: QualifioSimulator) -> list:
    return [p["id"] for p in sim.profiles_of(SAMPLE.email)]


def assert_no_pii(job: Job, sim: QualifioSimulator) -> None:
    text = job.model_dump_json()
    assert SAMPLE.email not in text and SAMPLE.last_name not in text
    assert sim.api_token not in text
    assert not any(str(i) in text for i in sample_ids(sim))


def read_all(archive) -> bytes:
    with archive:
        return b"".join(archive.chunks)


# --- export -------------------------------------------------------------------------------------------


def test_export_with_auto_validation_puts_both_profiles_in_one_rule_and_streams_the_zip(sim, connect):
    connector = connect()
    ids = sample_ids(sim)
    assert len(ids) == 2

    job = connector.submit(Action.EXPORT, Subject(email=SAMPLE.email), ctx())

    assert job.vendor == "qualifio" and job.action is Action.EXPORT
    assert job.state == {"profiles": 2, "validated": True}
    assert job.next_check_at == NOW + timedelta(minutes=2)
    assert job.deadline_at == NOW + timedelta(days=20)
    assert_no_pii(job, sim)
    assert len(sim.calls_to(r"/rules/exportData$")) == 1
    rule = sim.rule(job.job_id)
    assert sorted(rule["ruleTypePayload"]["profiles"]) == sorted(ids)
    assert rule["ruleType"] == "GDPR_ExportData"
    assert rule["ruleStatus"]["status"] == "APPROVED"  # validated right after creation
    assert len(sim.calls_to(rf"/rules/{job.job_id}/validate$")) == 1

    job, progress = check(connector, job)
    assert (progress.status, progress.vendor_status) == ("pending", "APPROVED")
    assert progress.next_check_at == NOW + timedelta(minutes=5)

    sim.clock.advance(PROCESSING)
    job, progress = check(connector, job, NOW + PROCESSING)
    assert (progress.status, progress.vendor_status) == ("ready", "FINISHED")

    archives = connector.collect(job, ctx())
    assert len(archives) == 1
    archive = archives[0]
    assert archive.content_type == "application/zip"
    assert archive.name.endswith(".zip") and job.job_id in archive.name
    data = read_all(archive)
    assert archive.length == len(data)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        profiles = [json.loads(zf.read(n)) for n in zf.namelist() if n.startswith("profiles/")]
    assert sorted(p["profile"]["id"] for p in profiles) == sorted(ids)
    assert all(p["profile"]["email"] == SAMPLE.email and p["participations"] for p in profiles)
    # the download went to the URL the archive location named, and Qualifio counted it
    archive_id = sim.rule(job.job_id)["archive"]
    assert sim.archives[archive_id].downloads and len(sim.archives[archive_id].downloads) == 1


def test_every_api_call_carries_the_client_id_and_the_token_never_leaves_in_a_query(sim, connect):
    connector = connect()
    job = connector.submit(Action.EXPORT, Subject(email=SAMPLE.email), ctx())
    sim.clock.advance(PROCESSING)
    check(connector, job)
    read_all(connector.collect(job, ctx())[0])

    api_calls = [c for c in sim.calls if c.path.startswith("/v1/")]
    assert len(api_calls) >= 5
    assert all(c.query.get("clientId") == "4242" for c in api_calls)
    assert all(sim.api_token not in json.dumps(c.query) for c in sim.calls)


def test_no_profile_is_no_data_held_and_creates_no_rule(sim, connect):
    connector = connect()
    job = connector.submit(Action.EXPORT, Subject(email=UNKNOWN_EMAIL), ctx(UNKNOWN_EMAIL))

    assert job.job_id is None
    assert job.state == {"no_profiles": True}
    assert job.next_check_at == NOW  # nothing to wait for
    assert UNKNOWN_EMAIL not in job.model_dump_json()
    job, progress = check(connector, job)
    assert progress.status == "ready"
    assert progress.reason == NO_DATA_REASON
    assert connector.collect(job, ctx(UNKNOWN_EMAIL)) == []
    assert sim.calls_to(r"/rules") == []
    assert [c.path for c in sim.calls] == ["/v1/gdpr/profiles"]


# --- DPO validation -----------------------------------------------------------------------------------


def test_manual_validation_waits_for_a_human_dpo_then_completes(sim, connect):
    connector = connect(auto_validate=False)
    job = connector.submit(Action.EXPORT, Subject(email=SAMPLE.email), ctx())
    assert job.state["validated"] is False
    assert sim.calls_to(r"/validate$") == []

    job, progress = check(connector, job)
    assert progress.status == "needs_approval"
    assert progress.reason == f"waiting for a DPO to validate rule {job.job_id} in Qualifio"
    assert progress.vendor_status == "NEW"
    assert progress.next_check_at == NOW + timedelta(hours=6)

    # a rule nobody validated is never processed, however long it waits
    sim.clock.advance(timedelta(days=2))
    later = NOW + timedelta(days=2)
    job, progress = check(connector, job, later)
    assert progress.status == "needs_approval"
    assert sim.calls_to(r"/validate$") == []  # the connector never validates on the DPO's behalf

    sim.approve(job.job_id)
    job, progress = check(connector, job, later)
    assert (progress.status, progress.vendor_status) == ("pending", "APPROVED")

    sim.clock.advance(PROCESSING)
    job, progress = check(connector, job, later + PROCESSING)
    assert progress.status == "ready"
    assert len(connector.collect(job, ctx())) == 1


def test_validation_failing_transiently_at_submit_is_retried_by_check_without_a_second_rule(sim, connect):
    connector = connect()
    sim.faults.path_pattern, sim.faults.server_errors = r"/validate$", 10
    job = connector.submit(Action.EXPORT, Subject(email=SAMPLE.email), ctx())
    assert job.state["validated"] is False
    assert sim.rule(job.job_id)["ruleStatus"]["status"] == "NEW"

    job, progress = check(connector, job)  # Qualifio still failing: wait, say why, create nothing
    assert progress.status == "pending" and "failed for now" in progress.reason

    sim.faults.server_errors = 0
    job, progress = check(connector, job)
    assert "is validated" in progress.reason
    assert (progress.status, progress.vendor_status) == ("pending", "NEW")
    assert sim.rule(job.job_id)["ruleStatus"]["status"] == "APPROVED"
    assert len(sim.rules) == 1


@pytest.mark.parametrize("status", ["REJECTED", "DENIED", "CANCELLED_BY_DPO"])
def test_denied_or_unknown_status_fails_and_is_kept_privately_not_quoted(sim, connect, status):
    connector = connect(auto_validate=False)
    job = connector.submit(Action.ERASE, Subject(email=SAMPLE.email), ctx())
    sim.deny(job.job_id, status)

    job = job.model_copy(update={"checks": job.checks + 1})
    looking = ctx()
    progress = connector.check(job, looking)
    assert progress.status == "failed"
    assert progress.vendor_status is None  # not a documented word
    assert "an undocumented status" in progress.reason and job.job_id in progress.reason
    assert status not in progress.reason
    assert looking.vendor_said == [("rule-status", status)]
    assert len(sample_ids(sim)) == 2  # a denied erasure deleted nothing


def test_wrong_dpo_user_is_refused_by_qualifio_and_named_without_its_value(sim, connect):
    connector = connect(dpo_user_id=78)
    with pytest.raises(VendorError) as err:
        connector.submit(Action.EXPORT, Subject(email=SAMPLE.email), ctx())
    assert err.value.status_code == 400
    assert str(err.value) == "qualifio: rule creation answered HTTP 400"
    assert "userId" in err.value.detail and "78" not in str(err.value)
    assert sim.rules == {}


def test_simulator_refuses_validation_by_someone_who_is_not_the_dpo(sim, connect):
    job = connect(auto_validate=False).submit(Action.EXPORT, Subject(email=SAMPLE.email), ctx())
    url = f"{sim.base_url}/v1/gdpr/rules/{job.job_id}/validate"
    headers = {"x-api-token": sim.api_token}
    wrong = requests.put(url, params={"clientId": 4242}, json={"dpo": 78}, headers=headers, timeout=5)
    assert wrong.status_code == 403
    assert sim.rule(job.job_id)["ruleStatus"]["status"] == "NEW"
    right = requests.put(url, params={"clientId": 4242}, json={"dpo": 77}, headers=headers, timeout=5)
    assert right.status_code == 200 and right.json()["ruleStatus"]["status"] == "APPROVED"


# --- erasure ------------------------------------------------------------------------------------------


def test_erasure_rule_deletes_the_profiles_and_has_nothing_to_collect(sim, connect):
    connector = connect()
    others = {c.email: len(sim.profiles_of(c.email)) for c in CUSTOMERS if c != SAMPLE}
    job = connector.submit(Action.ERASE, Subject(email=SAMPLE.email), ctx())
    assert job.state == {"profiles": 2, "validated": True, "dry_run": False}
    body = sim.rule(job.job_id)["body"]
    assert body["ruleType"] == "GDPR_ForgottenRight" and "test" not in body
    assert body["justification"] == f"GDPR Art. 17 erasure request {REQUEST_ID}"

    job, progress = check(connector, job)
    assert progress.status == "pending"
    assert len(sample_ids(sim)) == 2  # nothing deleted before the rule ran

    sim.clock.advance(PROCESSING)
    job, progress = check(connector, job, NOW + PROCESSING)
    assert (progress.status, progress.vendor_status) == ("ready", "FINISHED")
    assert "deleted" in progress.reason and "dry run" not in progress.reason
    assert connector.collect(job, ctx()) == []
    assert sim.profiles_of(SAMPLE.email) == []
    assert {e: len(sim.profiles_of(e)) for e in others} == others  # nobody else's profiles

    # asked again, the subject is now unknown to Qualifio
    again = connector.submit(Action.EXPORT, Subject(email=SAMPLE.email), ctx())
    assert again.state == {"no_profiles": True}


def test_erasure_dry_run_sends_test_true_runs_fully_and_deletes_nothing(sim, connect):
    connector = connect()
    job = connector.submit(Action.ERASE, Subject(email=SAMPLE.email), ctx(dry_run=True))
    assert job.state["dry_run"] is True
    assert sim.rule(job.job_id)["body"]["test"] is True

    sim.clock.advance(PROCESSING)
    job, progress = check(connector, job, NOW + PROCESSING)
    assert (progress.status, progress.vendor_status) == ("ready", "FINISHED")
    assert "dry run" in progress.reason and "deleted nothing" in progress.reason
    assert sim.rule(job.job_id)["report"] == {"profiles": 2, "deleted": 0}
    assert len(sample_ids(sim)) == 2


def test_dry_run_does_not_turn_an_export_into_a_test_rule(sim, connect):
    job = connect().submit(Action.EXPORT, Subject(email=SAMPLE.email), ctx(dry_run=True))
    assert "test" not in sim.rule(job.job_id)["body"]


# --- what the rule says -------------------------------------------------------------------------------


def test_justification_from_the_request_and_the_dpo_as_user_id(sim, connect):
    connector = connect()
    job = connector.submit(
        Action.EXPORT,
        Subject(email=SAMPLE.email),
        ctx(justification="Ticket DSR-77: access request received by letter"),
    )
    body = sim.rule(job.job_id)["body"]
    assert body["justification"] == "Ticket DSR-77: access request received by letter"
    assert body["userId"] == 77 and body["clientId"] == 4242
    assert sim.rule(job.job_id)["ruleStatus"]["dpo"] == 77  # validated by the same DPO user


def test_default_export_justification_names_the_request_and_article(sim, connect):
    job = connect().submit(Action.EXPORT, Subject(email=SAMPLE.email), ctx())
    assert sim.rule(job.job_id)["body"]["justification"] == f"GDPR Art. 15/20 access request {REQUEST_ID}"


# --- failures -----------------------------------------------------------------------------------------


def test_wrong_token_is_an_auth_error_that_does_not_quote_any_token(sim, connect):
    connector = connect(api_token="wrong-token-5f2a9c")
    with pytest.raises(VendorAuthError) as err:
        connector.submit(Action.EXPORT, Subject(email=SAMPLE.email), ctx())
    message = str(err.value)
    assert message == "qualifio: profile lookup was refused with HTTP 403; check the vendor credentials"
    assert err.value.detail == "invalid API token"
    assert "wrong-token-5f2a9c" not in message and sim.api_token not in message
    assert SAMPLE.email not in message


def test_wrong_client_id_is_refused_without_quoting_the_email(sim, connect):
    with pytest.raises(VendorError) as err:
        connect(client_id=4343).submit(Action.EXPORT, Subject(email=SAMPLE.email), ctx())
    assert err.value.status_code == 400
    assert str(err.value) == "qualifio: profile lookup answered HTTP 400"
    assert "clientId" in err.value.detail and SAMPLE.email not in str(err.value)
    assert SAMPLE.email not in err.value.detail


def test_429_and_503_are_retried_and_never_create_a_second_rule(sim, connect, sleeps):
    connector = connect()
    sim.faults.rate_limit, sim.faults.retry_after, sim.faults.server_errors = 1, 3, 1
    sim.faults.path_pattern = r"/rules/exportData$"

    job = connector.submit(Action.EXPORT, Subject(email=SAMPLE.email), ctx())

    assert [c.status for c in sim.calls_to(r"/rules/exportData$")] == [429, 503, 201]
    assert sleeps.delays[0] == 3.0 and len(sleeps.delays) == 2
    assert list(sim.rules) == [job.job_id]

    sim.faults.path_pattern, sim.faults.server_errors = r"/rules/[0-9a-f]+$", 2
    job, progress = check(connector, job)
    assert progress.status == "pending"
    assert [c.status for c in sim.calls_to(rf"/rules/{job.job_id}$")] == [503, 503, 200]


def test_deadline_passed_fails_while_the_rule_is_unfinished(sim, connect):
    connector = connect()
    job = connector.submit(Action.EXPORT, Subject(email=SAMPLE.email), ctx())
    late = job.deadline_at + timedelta(seconds=1)

    job, progress = check(connector, job, late)
    assert progress.status == "failed"
    assert progress.reason.startswith("DeadlineExceeded:")
    assert progress.error == "DeadlineExceeded"
    assert job.job_id in progress.reason and progress.vendor_status == "APPROVED"

    # a rule that finished in time is still delivered, even if we look late
    sim.clock.advance(PROCESSING)
    job, progress = check(connector, job, late)
    assert progress.status == "ready"


def test_deadline_while_waiting_for_a_dpo_says_so(sim, connect):
    connector = connect(auto_validate=False)
    job = connector.submit(Action.EXPORT, Subject(email=SAMPLE.email), ctx())
    job, progress = check(connector, job, job.deadline_at + timedelta(minutes=1))
    assert progress.status == "failed"
    assert "no DPO validated it" in progress.reason


def test_a_download_cut_off_mid_stream_is_visible_and_a_second_collect_succeeds(sim, connect):
    connector = connect()
    job = connector.submit(Action.EXPORT, Subject(email=SAMPLE.email), ctx())
    sim.clock.advance(PROCESSING)
    sim.faults.cut_download_after = 100

    archive = connector.collect(job, ctx())[0]
    with pytest.raises(ArchiveTransferError, match=rf"^qualifio: download of export rule {job.job_id} broke off"):
        read_all(archive)

    archive = connector.collect(job, ctx())[0]
    data = read_all(archive)
    assert zipfile.ZipFile(io.BytesIO(data)).testzip() is None
    assert len(sim.archives[sim.rule(job.job_id)["archive"]].downloads) == 2


class FileHost(Simulator):
    """Another host serving the archive (a CDN or pre-signed storage link): records what it was sent."""

    name = "filehost"

    def __init__(self, payload: bytes):
        super().__init__()
        self.payload = payload
        self.headers: list[dict[str, str]] = []

    def routes(self):
        return [("GET", r"/signed/archive\.zip", self.serve)]

    def serve(self, req: Request) -> Response:
        self.headers.append(req.headers)
        return Response(body=self.payload, content_type="application/zip", download=True)


class ForeignLinkQualifio(QualifioSimulator):
    """Qualifio naming a download URL on another host."""

    link = ""

    def archive_location(self, req: Request) -> Response:
        answer = super().archive_location(req)
        if answer.status != 200:
            return answer
        return Response.json({**json.loads(answer.body), "url": self.link})


def test_api_token_is_never_sent_to_a_download_link_on_another_host(vendor_http):
    payload = b"PK\x05\x06" + b"\x00" * 18  # an empty zip
    with FileHost(payload) as host, ForeignLinkQualifio() as sim:
        sim.link = f"{host.base_url}/signed/archive.zip"
        connector = registry.build("qualifio", sim.credentials(), http=vendor_http("qualifio"))
        job = connector.submit(Action.EXPORT, Subject(email=SAMPLE.email), ctx())
        sim.clock.advance(PROCESSING)

        assert read_all(connector.collect(job, ctx())[0]) == payload
        assert len(host.headers) == 1
        assert "x-api-token" not in host.headers[0]
