"""A look at a vendor job that was due before its deadline is judged at its due time, however late the busy
workflow runs it (core/tasks.py, judged_when_due); the job's own deadline is never moved for good."""

from __future__ import annotations

from datetime import timedelta

import pytest

from connectors import registry
from connectors.base import Action, JobContext, Subject
from core.http import RetryPolicy, VendorHttp
from core.tasks import judged_when_due

CREDS = {
    "base_url": "http://127.0.0.1:9",  # discard port: Bloomreach's export check makes no call
    "project_token": "proj-7f3a",
    "api_key_id": "key-id-1234",
    "api_secret": "s3cr3t-value-99",
}


@pytest.fixture(autouse=True)
def _demo_time_scale(monkeypatch):
    monkeypatch.setenv("DSRFLOW_TIME_SCALE", "86400")  # a vendor week is 7 real seconds


@pytest.fixture
def connector():
    http = VendorHttp("bloomreach", timeout=(0.5, 0.5), retry=RetryPolicy(attempts=1))
    return registry.build("bloomreach", CREDS, http=http)


def ctx(**kw) -> JobContext:
    return JobContext(request_id="req-1", subject=Subject(customer_ids={"registered": "crm-1"}), **kw)


def test_a_look_due_in_time_is_not_failed_for_running_late(connector):
    c = ctx()
    job = connector.submit(Action.EXPORT, c.subject, c)  # its look is due at once; its deadline 7 s later
    assert job.next_check_at == job.submitted_at and job.deadline_at - job.submitted_at == timedelta(seconds=7)
    busy = ctx(now=job.deadline_at + timedelta(seconds=30))  # the engine got to it 37 s after it was due
    # As the connector judges it at the real time: failed, though the vendor was never slow.
    assert connector.check(job, busy).error == "DeadlineExceeded"
    judged = judged_when_due(job, busy.now)
    assert connector.check(judged, busy).status == "ready"
    # Moved by the lateness only, for this judgement: the job itself keeps its deadline.
    assert judged.deadline_at == job.deadline_at + (busy.now - job.next_check_at)
    assert job.deadline_at - job.submitted_at == timedelta(seconds=7)


def test_the_look_placed_at_the_deadline_is_judged_at_the_real_time(connector):
    c = ctx()
    job = connector.submit(Action.EXPORT, c.subject, c)
    last = job.model_copy(update={"next_check_at": job.deadline_at})  # the schedule's clamp: the final look
    late = ctx(now=job.deadline_at + timedelta(seconds=30))
    assert judged_when_due(last, late.now) == last
    assert connector.check(judged_when_due(last, late.now), late).error == "DeadlineExceeded"


def test_a_look_on_time_or_before_the_deadline_is_left_alone(connector):
    c = ctx()
    job = connector.submit(Action.EXPORT, c.subject, c)
    for now in (job.submitted_at, job.deadline_at - timedelta(seconds=1), job.deadline_at):
        assert judged_when_due(job, now) == job
