"""Vendor jobs end by the request's GDPR deadline (core/tasks.py, "vendor jobs within the request's deadline"):
the cap, the room an export leaves for its erase, extensions moving it, late retries, and the early refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.domain import Action, Job, Schedule
from core.errors import DeadlineUnreachable
from core.models import StepState
from core.tasks import CAPPED, _capped, _ensure_reachable

DAY = timedelta(days=1)
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
# Qualifio's shape: first results after 2 minutes, a 20-day job deadline.
QUALIFIO = Schedule(first_check=timedelta(minutes=2), interval=timedelta(minutes=5), deadline=20 * DAY)
# Elevate's: nothing before 5 days, a 14-day job deadline.
ELEVATE = Schedule(first_check=5 * DAY, interval=timedelta(hours=12), deadline=14 * DAY)


@pytest.fixture(autouse=True)
def _real_time(monkeypatch):
    monkeypatch.delenv("DSRFLOW_TIME_SCALE", raising=False)


def task(action: Action = Action.EXPORT, actions: tuple[Action, ...] = (Action.EXPORT, Action.ERASE)) -> StepState:
    return StepState(request_id="r1", vendor="qualifio", action=action, actions=list(actions))


def job(schedule: Schedule, submitted: datetime = NOW) -> Job:
    return Job(
        vendor="qualifio",
        action=Action.EXPORT,
        job_id="j1",
        submitted_at=submitted,
        next_check_at=submitted + schedule.first_check,
        deadline_at=schedule.deadline_at(submitted),
    )


class Connector:
    def __init__(self, schedule: Schedule):
        self.schedule = schedule


def test_a_job_whose_own_deadline_comes_first_is_left_alone():
    j = job(QUALIFIO)
    assert _capped(task(), j, QUALIFIO, NOW + 30 * DAY, NOW) == j


def test_an_export_late_in_the_month_ends_early_enough_for_its_erase():
    deadline = NOW + 10 * DAY  # received 20 days ago
    capped = _capped(task(), job(QUALIFIO), QUALIFIO, deadline, NOW)
    # The request's deadline less the erase's earliest completion (2 minutes), not day 20 of the job.
    assert capped.deadline_at == deadline - timedelta(minutes=2)
    assert capped.state[CAPPED] == "2026-12-12T12:00:00Z"
    # The erase itself may run to the deadline.
    erase = _capped(task(Action.ERASE), job(QUALIFIO), QUALIFIO, deadline, NOW)
    assert erase.deadline_at == deadline
    # An export no erase follows may run to the deadline too.
    alone = _capped(task(actions=(Action.EXPORT,)), job(QUALIFIO), QUALIFIO, deadline, NOW)
    assert alone.deadline_at == deadline


def test_an_extension_moves_the_cap_but_never_past_the_jobs_own_deadline():
    deadline = NOW + 10 * DAY
    capped = _capped(task(), job(QUALIFIO), QUALIFIO, deadline, NOW)
    later = NOW + 3 * DAY
    moved = _capped(task(), capped, QUALIFIO, deadline + 5 * DAY, later)
    assert moved.deadline_at == capped.deadline_at + 5 * DAY and moved.state[CAPPED] == "2026-12-17T12:00:00Z"
    # A second check with no new extension changes nothing.
    assert _capped(task(), moved, QUALIFIO, deadline + 5 * DAY, later + DAY) == moved
    # 60 days more: the job's own 20 days bind again.
    far = _capped(task(), capped, QUALIFIO, deadline + 60 * DAY, later)
    assert far.deadline_at == NOW + 20 * DAY


def test_a_late_retry_keeps_the_connectors_own_deadline():
    j = job(QUALIFIO)
    assert _capped(task(), j, QUALIFIO, NOW - DAY, NOW) == j


def test_a_vendor_that_cannot_answer_before_the_deadline_is_refused_before_anything_is_sent():
    with pytest.raises(DeadlineUnreachable, match="nothing was submitted. Extend the deadline") as caught:
        _ensure_reachable(task(actions=(Action.EXPORT,)), Connector(ELEVATE), NOW + 3 * DAY, NOW)
    assert "5 days" in caught.value.message and "2026-12-05T12:00:00Z" in caught.value.message
    # With an erase to follow, the export needs its 5 days plus the erase's 5.
    with pytest.raises(DeadlineUnreachable, match="before its erase"):
        _ensure_reachable(task(), Connector(ELEVATE), NOW + 8 * DAY, NOW)
    _ensure_reachable(task(), Connector(ELEVATE), NOW + 11 * DAY, NOW)  # room for both
    _ensure_reachable(task(), Connector(ELEVATE), NOW - DAY, NOW)  # a late retry: the operator's call


def test_at_a_local_time_scale_the_cap_shrinks_like_the_schedules_with_a_real_floor(monkeypatch):
    monkeypatch.setenv("DSRFLOW_TIME_SCALE", "86400")  # one vendor day per second
    j = Job(
        vendor="qualifio",
        action=Action.EXPORT,
        submitted_at=NOW,
        next_check_at=NOW,
        deadline_at=QUALIFIO.deadline_at(NOW),  # 20 s
    )
    capped = _capped(task(), j, QUALIFIO, NOW + 10 * DAY, NOW)
    assert capped.deadline_at == NOW + timedelta(seconds=10) - timedelta(minutes=2) / 86400
    tight = _capped(task(), j, QUALIFIO, NOW + timedelta(hours=1), NOW)
    assert tight.deadline_at == NOW + timedelta(seconds=5), "never shorter than a real step"
