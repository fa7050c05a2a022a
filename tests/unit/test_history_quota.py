"""The execution history quota (25,000 events per execution) cannot be reached: computed from the real
schedules of every registered connector and the real ASL retries (core/history.py), with the per-state
event counts re-measured on a local run."""

from __future__ import annotations

import ast
import collections
import importlib
import inspect
import json
from datetime import UTC, datetime, timedelta

import pytest

from connectors.base import Action, Job, Schedule
from connectors.qualifio import APPROVAL_WAIT
from connectors.registry import CONNECTORS, connector_class
from core import history
from core.history import BUDGET, QUOTA, Retries, execution_events, worst_case_checks, worst_case_events
from statemachines import ASL_FILE

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
# Waits a connector may choose instead of Schedule.next_check_at for a pending job, by the name its module
# gives them (test_every_pending_answer_takes_its_time_from_the_schedule keeps this list complete).
OTHER_WAITS: dict[str, dict[str, timedelta]] = {"qualifio": {"APPROVAL_WAIT": APPROVAL_WAIT}}


def asl() -> dict:
    return json.loads(ASL_FILE.read_text())


def retries() -> Retries:
    return Retries.from_asl(asl())


def schedule_of(vendor: str) -> Schedule:
    return connector_class(vendor).schedule


def figures() -> dict[str, tuple[int, int]]:
    """{vendor: (worst-case looks per action, worst-case events of its branch)} for every registered connector."""
    r = retries()
    out = {}
    for vendor in CONNECTORS:
        waits = OTHER_WAITS.get(vendor, {}).values()
        out[vendor] = (
            worst_case_checks(schedule_of(vendor), waits),
            worst_case_events(schedule_of(vendor), r, other_waits=waits),
        )
    return out


# --- the model is the ASL --------------------------------------------------------------------------------


def test_the_states_counted_are_exactly_the_states_of_the_asl():
    assert history.asl_states(asl()) == history.STATES


def test_retries_are_the_sum_of_each_task_states_max_attempts():
    states = {name: state for name, state in _walk(asl()["States"]) if state["Type"] == "Task"}
    total = {name: sum(r.get("MaxAttempts", 3) for r in state.get("Retry", [])) for name, state in states.items()}
    assert retries() == Retries(
        submit=total["Submit vendor job"],
        check=total["Check vendor job"],
        collect=total["Collect archives"],
        finalize=total["Finalize manifest"],
        package=total["Build access package"],
        ask=total["Ask for approval"],
        hold=total["Await approval"],
        record=total["Record outcome"],
        park=total["Wait for a vendor slot"],
    )
    # The figures below assume at least today's retries: fewer would not make them wrong, more would show.
    assert retries().check >= 11 and retries().finalize >= 14


def _walk(states: dict):
    for name, state in states.items():
        yield name, state
        for nested in (state.get("ItemProcessor"), *state.get("Branches", [])):
            if nested:
                yield from _walk(nested["States"])


# --- the budget ------------------------------------------------------------------------------------------


def test_every_connector_running_both_actions_in_one_execution_stays_within_the_budget():
    found = figures()
    total = execution_events([events for _, events in found.values()], retries())
    detail = ", ".join(f"{v}: {n} looks/action, {e} events" for v, (n, e) in found.items())
    assert total <= BUDGET < QUOTA, f"worst case {total} events ({detail})"


def test_the_worst_cases_per_connector():
    """The figures SECURITY/OPERATIONS readers can quote; a schedule change that moves them shows here."""
    assert figures() == {
        "elevate": (20, 3538),
        "bloomreach": (19, 3454),
        "qualifio": (107, 10846),
    }
    # With the approval gate held as long as it can be (asked again after each of the 3 extensions) and every
    # action ending in a recorded failure: 14,962, up from 12,852 before the gate; 17,926 with every wait our own
    # vendor limits allow (core/limits.py: two slot waits and MAX_PACE_WAITS pace waits per action).
    assert execution_events([e for _, e in figures().values()], retries()) == 17926
    # Without a single retry (what a normal run costs at most):
    plain = [
        worst_case_events(schedule_of(v), Retries.none(), other_waits=OTHER_WAITS.get(v, {}).values())
        for v in CONNECTORS
    ]
    assert execution_events(plain, Retries.none()) == 3631


def test_qualifio_polled_hourly_for_its_whole_deadline_would_not_fit():
    """Why the slow phase exists: the old schedule, polled hourly for 20 days, alone takes ~41,000 events."""
    old = Schedule(
        first_check=timedelta(minutes=2),
        interval=timedelta(minutes=5),
        backoff=1.5,
        max_interval=timedelta(hours=1),
        deadline=timedelta(days=20),
    )
    assert worst_case_checks(old) == 487
    assert worst_case_events(old, retries()) > QUOTA


# --- the cap is enforced: every look comes from the schedule, which ends at the deadline ----------------


@pytest.mark.parametrize("vendor", list(CONNECTORS))
@pytest.mark.parametrize("scale", ["1", "86400"])
def test_a_job_looked_at_whenever_its_schedule_says_gets_no_more_looks_than_counted(vendor, scale, monkeypatch):
    """Drive Schedule.next_check_at itself, as the connectors do for a job that stays pending, from the first
    look until the connector would fail it (now past the deadline), at production and at local time-scale."""
    monkeypatch.setenv("DSRFLOW_TIME_SCALE", scale)
    schedule = schedule_of(vendor)
    job = Job(
        vendor=vendor,
        action=Action.EXPORT,
        submitted_at=NOW,
        next_check_at=schedule.first_check_at(NOW),
        deadline_at=schedule.deadline_at(NOW),
    )
    now, looks = job.next_check_at, 0
    while now <= job.deadline_at:  # the connector fails the job once now is past it (DeadlineExceeded)
        looks += 1
        job = job.model_copy(update={"checks": looks})
        following = schedule.next_check_at(job, now)
        assert following <= job.deadline_at or following == now, "a look past the deadline"
        # A Wait ends on a whole second, never early (core/tasks._wait_until): at least a second later.
        now = max(following, now + timedelta(seconds=1))
        assert looks <= 10 * worst_case_checks(schedule), "runaway"
    assert looks <= worst_case_checks(schedule, OTHER_WAITS.get(vendor, {}).values())


@pytest.mark.parametrize("vendor", ["qualifio", "bloomreach"])
def test_after_the_slow_phase_begins_every_look_is_slow_interval_apart(vendor):
    schedule = schedule_of(vendor)
    assert schedule.slow_after is not None and schedule.slow_interval is not None
    for checks in (1, 5, 50, 500):
        job = Job(
            vendor=vendor,
            action=Action.EXPORT,
            submitted_at=NOW,
            next_check_at=NOW,
            deadline_at=schedule.deadline_at(NOW),
            checks=checks,
        )
        later = NOW + schedule.slow_after
        assert schedule.next_check_at(job, later) == later + schedule.slow_interval
        # ...and before it, the fast rhythm the connector's own tests pin.
        assert schedule.next_check_at(job, NOW) - NOW <= (schedule.max_interval or schedule.interval)


def test_qualifio_looks_within_minutes_hourly_through_the_first_day_then_every_six_hours():
    schedule = schedule_of("qualifio")
    assert (schedule.first_check, schedule.interval, schedule.max_interval) == (
        timedelta(minutes=2),
        timedelta(minutes=5),
        timedelta(hours=1),
    )
    assert (schedule.slow_after, schedule.slow_interval) == (timedelta(days=1), timedelta(hours=6))
    assert schedule.slow_interval == APPROVAL_WAIT  # the same rhythm as a rule waiting for its DPO


@pytest.mark.parametrize(
    "fields, problem",
    [
        ({"slow_after": timedelta(days=1)}, "go together"),
        ({"slow_after": timedelta(days=1), "slow_interval": timedelta(minutes=1)}, "must not be shorter"),
        ({"backoff": 0.5}, "backoff"),
        ({"interval": timedelta(0)}, "positive interval"),
    ],
)
def test_a_schedule_that_could_not_be_bounded_is_refused(fields, problem):
    base = {"first_check": timedelta(0), "interval": timedelta(minutes=5), "deadline": timedelta(days=1)}
    with pytest.raises(ValueError, match=problem):
        Schedule(**{**base, **fields})


def test_every_pending_answer_takes_its_time_from_the_schedule():
    """The bound holds only if a pending job's next look comes from Schedule.next_check_at (or a wait listed in
    OTHER_WAITS), and a connector that answers pending fails a job past its deadline. Checked in the source
    of every registered connector."""
    for vendor, target in CONNECTORS.items():
        module = importlib.import_module(target.split(":")[0])
        source = inspect.getsource(module)
        pending = []  # (the time argument, the local assignments of the function it is in)
        for function in ast.walk(ast.parse(source)):
            if not isinstance(function, ast.FunctionDef):
                continue
            local = {
                target.id: ast.unparse(node.value)
                for node in ast.walk(function)
                if isinstance(node, ast.Assign)
                for target in node.targets
                if isinstance(target, ast.Name)
            }
            for node in ast.walk(function):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "Progress"
                    and node.func.attr in ("pending", "needs_approval")
                ):
                    when = (
                        node.args[0] if node.args else next(k.value for k in node.keywords if k.arg == "next_check_at")
                    )
                    pending.append((when, local))
        allowed = ("self.schedule.next_check_at(", *OTHER_WAITS.get(vendor, {}))
        for when, local in pending:
            text = ast.unparse(when)
            text = local.get(text, text) if isinstance(when, ast.Name) else text  # next_at = ...; pending(next_at)
            assert any(a in text for a in allowed), f"{vendor}: a pending answer waits {text}"
            # An other wait is clamped to the deadline like the schedule's.
            if "self.schedule.next_check_at(" not in text:
                assert "job.deadline_at" in text, f"{vendor}: {text} is not clamped to the deadline"
        if pending:
            assert "ctx.now > job.deadline_at" in source, f"{vendor} answers pending but never fails a late job"
    for vendor, waits in OTHER_WAITS.items():
        module = importlib.import_module(CONNECTORS[vendor].split(":")[0])
        for name, value in waits.items():
            assert getattr(module, name) == value


# --- the per-state counts are measured, not guessed -----------------------------------------------------


@pytest.mark.slow
def test_the_event_counts_are_those_of_a_local_run():
    """All three vendors, export and erase, two Lambda service failures of the check task (retried): the
    execution's history has exactly as many events as core/history.py counts for those looks and retries."""
    from tests.workflow.conftest import local_run, sample_subject

    with local_run() as (cloud, _):
        cloud.inject_lambda_error("check", "ServiceException", times=2)
        accepted = cloud.submit({"request_id": "quota-1", "actions": ["export", "erase"], "subject": sample_subject()})
        execution = cloud.wait(accepted["request_id"], timeout=120)
        assert execution["status"] == "SUCCEEDED", execution.get("cause")
        events = cloud.history("quota-1")
    summary = json.loads(execution["output"])
    outcomes = summary["outcomes"]
    assert len(outcomes) == 6 and all(o["status"] == "completed" for o in outcomes), outcomes
    by_vendor = collections.defaultdict(list)
    for o in outcomes:
        by_vendor[o["vendor"]].append(o["checks"])
    none = Retries.none()
    vendors = [
        history.MAP_ITERATION
        + history.MAP_STATE
        + sum(history.action_events(n, none, asks=0, failed=False, queued=False) for n in looks)
        for looks in by_vendor.values()
    ]
    # The run ends well: no "Package not built" Pass, no Fail state; plus the two failed check attempts.
    expected = execution_events(vendors, none) - history.PASS_STATE - history.FAIL_STATE + 2 * history.TASK_ATTEMPT
    kinds = collections.Counter(e["type"] for e in events)
    assert kinds["TaskFailed"] == 2
    assert len(events) == expected, dict(kinds)
    # Transitions: every state entered, and each retry one more (billed, though the history shows no entry).
    entered = sum(n for kind, n in kinds.items() if kind.endswith("StateEntered"))
    branches = [
        1 + sum(history.action_transitions(n, none, asks=0, failed=False, queued=False) for n in looks)
        for looks in by_vendor.values()
    ]
    # The run ends well (no "Package not built" Pass, no Fail state); its 2 retries are billed on top.
    assert entered == history.execution_transitions(branches, none) - 2


def test_awaiting_a_callback_costs_no_more_events_than_polling():
    """A connector's callback actions are looked at every CALLBACK_FALLBACK at most, plus the look the callback
    wakes; with the park task in each look that must stay within the polling worst case the budget counts."""
    from core.history import callback_action_events, callback_checks
    from core.tasks import CALLBACK_FALLBACK

    r = retries()
    found = 0
    for vendor in CONNECTORS:
        connector = connector_class(vendor)
        if not getattr(connector, "callbacks", None):
            continue
        found += 1
        waits = OTHER_WAITS.get(vendor, {}).values()
        polled = history.action_events(worst_case_checks(connector.schedule, waits), r)
        awaited = callback_action_events(callback_checks(connector.schedule, CALLBACK_FALLBACK), r)
        assert awaited <= polled, (vendor, awaited, polled)
    assert found == 1  # Qualifio's exports
