"""Qualifio connector: schedule, credentials, subject checks, and the lookup safety filter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from connectors import registry
from connectors.base import Action, Job, JobContext, Subject, parse_credentials
from connectors.qualifio import QualifioConnector, QualifioCredentials
from core.errors import ConfigError, UnsupportedAction
from local.simulators.base import Request, Response
from local.simulators.data import CUSTOMERS, SAMPLE
from local.simulators.qualifio import QualifioSimulator

NOW = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
TOKEN = "tok-9d8e7f6a5b4c"
GOOD = {
    "base_url": "https://api.qualif.io/",
    "api_token": TOKEN,
    "client_id": 4242,
    "dpo_user_id": 77,
    "auto_validate": False,
}


@pytest.fixture(autouse=True)
def _real_time(monkeypatch):
    monkeypatch.delenv("DSRFLOW_TIME_SCALE", raising=False)


def job_after(checks: int, submitted: datetime = NOW) -> Job:
    schedule = QualifioConnector.schedule
    return Job(
        vendor="qualifio",
        action=Action.EXPORT,
        job_id="65f0c0de0000000000000001",
        submitted_at=submitted,
        next_check_at=schedule.first_check_at(submitted),
        deadline_at=schedule.deadline_at(submitted),
        checks=checks,
    )


# --- schedule -----------------------------------------------------------------------------------------


def test_first_check_two_minutes_after_submission_and_deadline_twenty_days():
    schedule = QualifioConnector.schedule
    assert schedule.first_check_at(NOW) == NOW + timedelta(minutes=2)
    assert schedule.deadline_at(NOW) == NOW + timedelta(days=20)


def test_interval_backs_off_by_half_from_five_minutes_up_to_an_hour():
    schedule = QualifioConnector.schedule
    gaps = [schedule.next_check_at(job_after(n), NOW) - NOW for n in range(1, 10)]
    assert gaps[:4] == [
        timedelta(minutes=5),
        timedelta(minutes=7.5),
        timedelta(minutes=11.25),
        timedelta(minutes=16.875),
    ]
    assert gaps == sorted(gaps)
    assert gaps[-1] == timedelta(hours=1)
    # polled hourly for 20 days, a job is checked ~480 times: the backoff must not overflow
    assert schedule.next_check_at(job_after(500), NOW) - NOW == timedelta(hours=1)


def test_next_check_never_lands_past_the_deadline():
    job = job_after(40)
    almost = job.deadline_at - timedelta(minutes=10)
    assert QualifioConnector.schedule.next_check_at(job, almost) == job.deadline_at


def test_time_scale_shrinks_the_schedule(monkeypatch):
    monkeypatch.setenv("DSRFLOW_TIME_SCALE", "60")  # one vendor minute per real second
    schedule = QualifioConnector.schedule
    assert schedule.first_check_at(NOW) == NOW + timedelta(seconds=2)
    assert schedule.deadline_at(NOW) == NOW + timedelta(days=20) / 60


@pytest.fixture
def manual_sim():
    with QualifioSimulator(auto_validate=False) as sim:
        yield sim


def _waiting_job(sim: QualifioSimulator, vendor_http) -> tuple[QualifioConnector, Job]:
    connector = registry.build("qualifio", sim.credentials(), http=vendor_http("qualifio"))
    ctx = JobContext(request_id="dsr-1", subject=Subject(email=SAMPLE.email), now=NOW)
    job = connector.submit(Action.EXPORT, Subject(email=SAMPLE.email), ctx)
    return connector, job.model_copy(update={"checks": 1})


def test_waiting_for_a_dpo_looks_again_in_six_hours_not_minutes(manual_sim, vendor_http):
    connector, job = _waiting_job(manual_sim, vendor_http)
    ctx = JobContext(request_id="dsr-1", subject=Subject(email=SAMPLE.email), now=NOW)
    progress = connector.check(job, ctx)
    assert progress.status == "needs_approval"
    assert progress.next_check_at == NOW + timedelta(hours=6)


def test_approval_wait_is_capped_by_the_deadline_and_scaled(manual_sim, vendor_http, monkeypatch):
    connector, job = _waiting_job(manual_sim, vendor_http)
    near_end = job.deadline_at - timedelta(hours=1)
    progress = connector.check(job, JobContext(request_id="dsr-1", subject=Subject(email=SAMPLE.email), now=near_end))
    assert progress.next_check_at == job.deadline_at

    monkeypatch.setenv("DSRFLOW_TIME_SCALE", "3600")  # one vendor hour per real second
    progress = connector.check(job, JobContext(request_id="dsr-1", subject=Subject(email=SAMPLE.email), now=NOW))
    assert progress.next_check_at == NOW + timedelta(seconds=6)


# --- credentials --------------------------------------------------------------------------------------


def test_good_credentials_build_a_connector_and_hide_the_token():
    connector = registry.build("qualifio", GOOD)
    assert isinstance(connector, QualifioConnector)
    assert connector.credentials.base_url == "https://api.qualif.io"
    assert connector.credentials.client_id == 4242 and connector.credentials.auto_validate is False
    assert TOKEN not in repr(connector.credentials) and TOKEN not in str(connector.credentials)


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"api_token": None}, "api_token", "is missing"),
        ({"client_id": None}, "client_id", "is missing"),
        ({"dpo_user_id": None}, "dpo_user_id", "is missing"),
        ({"auto_validate": None}, "auto_validate", "is missing"),
        ({"client_id": "acme-4242"}, "client_id", "is invalid"),
        ({"dpo_user_id": -3}, "dpo_user_id", "is invalid"),
        ({"auto_validate": "false"}, "auto_validate", "is invalid"),  # never a truthy string
        ({"api_token": ""}, "api_token", "is invalid"),
        ({"base_url": "ftp://api.qualif.io"}, "base_url", "is invalid"),
        ({"password": "hunter2-secret"}, "password", "is not a known field"),
    ],
)
def test_bad_credentials_are_a_config_error_naming_vendor_and_field_not_values(change, field, problem):
    raw = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(ConfigError) as err:
        parse_credentials("qualifio", QualifioCredentials, raw)
    message = str(err.value)
    assert message.startswith(f"qualifio: configuration field '{field}' {problem}")
    assert err.value.field == field
    for value in (TOKEN, "acme-4242", "hunter2-secret", "ftp://api.qualif.io"):
        assert value not in message


def test_credentials_as_secret_text_are_accepted():
    import json

    connector = registry.build("qualifio", json.dumps(GOOD))
    assert connector.credentials.dpo_user_id == 77


# --- subject ------------------------------------------------------------------------------------------


def test_cannot_act_without_an_email_and_submit_refuses_before_any_call():
    # base_url on a closed port: any HTTP attempt would surface as a transient error instead
    connector = registry.build("qualifio", {**GOOD, "base_url": "http://127.0.0.1:9"})
    for subject in (Subject(customer_key="abc"), Subject(email="  ")):
        for action in (Action.EXPORT, Action.ERASE):
            reason = connector.cannot_act_on(subject, action)
            assert reason and "email" in reason
    assert connector.cannot_act_on(Subject(email=SAMPLE.email), Action.ERASE) is None
    ctx = JobContext(request_id="dsr-1", subject=Subject(customer_key="abc"), now=NOW)
    with pytest.raises(UnsupportedAction, match="^qualifio: .*email"):
        connector.submit(Action.ERASE, Subject(customer_key="abc"), ctx)


# --- lookup safety ------------------------------------------------------------------------------------


class LooseLookupQualifio(QualifioSimulator):
    """A lookup that also answers near matches and repeats a profile: only exact matches may be erased."""

    def find_profiles(self, req: Request) -> Response:
        answer = super().find_profiles(req)
        import json

        found = json.loads(answer.body)
        other = CUSTOMERS[1]
        stranger = next(p for p in self.profiles.values() if p["email"] == other.email)
        extra = {k: v for k, v in stranger.items() if k != "participations"}
        return Response.json(found + [found[0], extra])


def test_profiles_with_another_email_or_repeated_never_enter_the_rule(vendor_http):
    with LooseLookupQualifio() as sim:
        connector = registry.build("qualifio", sim.credentials(), http=vendor_http("qualifio"))
        subject = Subject(email=SAMPLE.email.upper())  # case does not matter for email matching
        ctx = JobContext(request_id="dsr-1", subject=subject, now=NOW)
        job = connector.submit(Action.ERASE, subject, ctx)
        profiles = sim.rule(job.job_id)["ruleTypePayload"]["profiles"]
        assert sorted(profiles) == sorted(p["id"] for p in sim.profiles_of(SAMPLE.email))
        assert job.state["profiles"] == 2


def test_manual_approval_mode_overrides_auto_validate():
    from connectors import registry

    creds = {
        "base_url": "https://api.qualif.io",
        "api_token": "t",
        "client_id": 1,
        "dpo_user_id": 2,
        "auto_validate": True,
    }
    assert registry.build("qualifio", creds).credentials.auto_validate is True
    assert registry.build("qualifio", creds, manual_approval=True).credentials.auto_validate is False
    # Vendors without a DPO step are untouched.
    elevate = {"base_url": "https://c.example", "api_key": "k"}
    assert registry.build("elevate", elevate, manual_approval=True).name == "elevate"


# --- vocabulary ---------------------------------------------------------------------------------------


def test_the_vocabulary_is_the_documented_statuses_and_object_ids():
    from core.safe import safe_id, safe_word

    assert QualifioConnector.statuses == {"NEW", "APPROVED", "FINISHED"}
    assert QualifioConnector.native_dry_run == {Action.ERASE}  # a test: true rule
    pattern = QualifioConnector.job_id_pattern
    assert safe_id("65f0c0de0000000000000001", pattern) == "65f0c0de0000000000000001"
    for bad in ("65F0C0DE0000000000000001", "65f0c0de000000000000001", "65f0c0de00000000000000010", "g" * 24):
        assert safe_id(bad, pattern) is None, bad
    assert safe_word("REJECTED", QualifioConnector.statuses) is None


def test_dry_run_refuses_an_export_or_a_subject_without_email_before_any_call():
    connector = registry.build("qualifio", {**GOOD, "base_url": "http://127.0.0.1:9"})
    ctx = JobContext(request_id="dsr-1", subject=Subject(email=SAMPLE.email), now=NOW)
    with pytest.raises(UnsupportedAction, match="needs no dry run"):
        connector.dry_run(Action.EXPORT, ctx.subject, ctx)
    with pytest.raises(UnsupportedAction, match="email"):
        connector.dry_run(Action.ERASE, Subject(customer_key="abc"), ctx)
