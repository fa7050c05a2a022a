"""How many history events one execution can take, at worst: the arithmetic behind the 25,000-event quota.

Step Functions keeps at most 25,000 events in one execution's history; an execution that needs more fails.
Every vendor's job loop runs inside the same execution (an inline Map over vendors, then one over export and
erase), so the budget is shared by all of them. This module counts, from the connectors' Schedules and the
ASL's Retry rules, the most events an execution can possibly record; tests/unit/test_history_quota.py keeps
that sum, over every registered connector and both actions, below 20,000.

The per-state counts were measured from the real ASL running in the local engine (moto's interpreter,
`LocalCloud.history`), and match the event types AWS documents for each state type;
test_history_quota.py re-measures them on a local run, so a change in the workflow that adds events fails
there. The worst case assumes every task attempt spends every retry its state allows, every vendor job is
looked at as often as its Schedule can ever ask (until its deadline), and every action ends on its longest
path (Submit, the Wait/Check/Choice loop, Collect, Succeed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from core.domain import Schedule
from core.limits import MAX_PACE_WAITS, SLOT_WAITS
from core.models import MAX_EXTENSIONS

QUOTA = 25_000  # Step Functions standard workflows: history events per execution
# What we allow ourselves: room for a vendor more, and for AWS counting an event we did not.
BUDGET = 20_000
ACTIONS = 2  # export, then erase, in one vendor branch

# --- events per state (measured; see the module doc) -------------------------------------------------------
EXECUTION = 2  # ExecutionStarted, ExecutionSucceeded (or ExecutionFailed)
MAP_STATE = 4  # MapStateEntered, MapStateStarted, MapStateSucceeded, MapStateExited
MAP_ITERATION = 2  # MapIterationStarted, MapIterationSucceeded: per item
TASK_STATE = 2  # TaskStateEntered, TaskStateExited: once per entry, however many attempts
TASK_ATTEMPT = 3  # TaskScheduled, TaskStarted, TaskSucceeded or TaskFailed: per attempt (a retry is one more)
WAIT_STATE = 2  # WaitStateEntered, WaitStateExited
CHOICE_STATE = 2  # ChoiceStateEntered, ChoiceStateExited
PASS_STATE = 2  # PassStateEntered, PassStateExited (the "Record ... failure" states)
SUCCEED_STATE = 2  # SucceedStateEntered, SucceedStateExited
FAIL_STATE = 1  # FailStateEntered (the execution then ends with ExecutionFailed)

# The states this arithmetic models, by name and type (statemachines/dsr.asl.json); the test compares them
# with the ASL, so a new state makes it fail until it is counted here.
STATES: dict[str, str] = {
    "For each vendor": "Map",
    "For each action (export, then erase)": "Map",
    "Needs approval?": "Choice",
    "Ask for approval": "Task",
    "Await approval": "Task",
    "Submit vendor job": "Task",
    "Submitted?": "Choice",
    "Wait for a vendor slot": "Task",
    "Wait for the vendor's call rate": "Wait",
    "Wait for vendor": "Wait",
    "Await the vendor's callback": "Task",
    "Check vendor job": "Task",
    "Job finished?": "Choice",
    "Wait for DPO approval": "Wait",
    "Collect archives": "Task",
    "Vendor action done": "Succeed",
    "Record vendor failure": "Pass",
    "Record submit failure": "Pass",
    "Record check failure": "Pass",
    "Record collect failure": "Pass",
    "Record approval failure": "Pass",
    "Record denial": "Pass",
    "Record outcome": "Task",
    "Outcome not recorded": "Pass",
    "Build access package": "Task",
    "Package not built": "Pass",
    "Finalize manifest": "Task",
    "Manifest not written": "Fail",
    "Completion event not delivered": "Fail",
}
TASKS = {
    "submit": "Submit vendor job",
    "check": "Check vendor job",
    "collect": "Collect archives",
    "ask": "Ask for approval",
    "hold": "Await approval",
    "record": "Record outcome",
    "park": "Wait for a vendor slot",
}
# The approval gate asks again each time it times out after the deadline was extended: at most once per
# extension (core.models.MAX_EXTENSIONS), plus the first ask.
APPROVAL_ASKS = 1 + MAX_EXTENSIONS
FINALIZE = "Finalize manifest"
PACKAGE = "Build access package"
ASL_DEFAULT_MAX_ATTEMPTS = 3  # a Retrier without MaxAttempts


@dataclass(frozen=True)
class Retries:
    """The most retries one entry of each task state can make: the sum of its Retriers' MaxAttempts (each
    Retrier counts its own attempts, so an entry failing on different errors can spend them all)."""

    submit: int
    check: int
    collect: int
    finalize: int
    package: int = 0
    ask: int = 0
    hold: int = 0
    record: int = 0
    park: int = 0

    @classmethod
    def none(cls) -> Retries:
        return cls(0, 0, 0, 0)

    @classmethod
    def from_asl(cls, definition: Mapping[str, Any]) -> Retries:
        found = {name: _max_retries(state) for name, state in _walk(definition["States"]) if state["Type"] == "Task"}
        missing = {*TASKS.values(), FINALIZE, PACKAGE} - set(found)
        if missing:
            raise ValueError(f"the ASL has no task state {', '.join(sorted(missing))}: update core/history.py")
        return cls(
            **{role: found[name] for role, name in TASKS.items()}, finalize=found[FINALIZE], package=found[PACKAGE]
        )


def _walk(states: Mapping[str, Any]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    for name, state in states.items():
        yield name, state
        for nested in (state.get("ItemProcessor"), state.get("Iterator"), *state.get("Branches", [])):
            if nested:
                yield from _walk(nested["States"])


def _max_retries(state: Mapping[str, Any]) -> int:
    return sum(int(r.get("MaxAttempts", ASL_DEFAULT_MAX_ATTEMPTS)) for r in state.get("Retry", []))


def asl_states(definition: Mapping[str, Any]) -> dict[str, str]:
    """{state name: type} of every state, nested ones included."""
    return {name: state["Type"] for name, state in _walk(definition["States"])}


def task_events(retries: int) -> int:
    """One entry of a task state whose attempts all run: entered, exited, and every attempt."""
    return TASK_STATE + TASK_ATTEMPT * (1 + retries)


def worst_case_checks(schedule: Schedule, other_waits: Iterable[timedelta] = ()) -> int:
    """The most looks one vendor job can get: every gap as short as the schedule (or any other wait the
    connector may choose instead, e.g. Qualifio's wait for a DPO) allows, from the first check to the
    deadline; plus the look at the deadline itself (every gap is clamped to it) and the one just after,
    where the connector fails the job (DeadlineExceeded). Waits only ever end later than asked (whole
    seconds, rounded up), so real jobs get fewer."""
    waits = list(other_waits)
    elapsed, checks = schedule.first_check, 0
    while elapsed < schedule.deadline:
        checks += 1
        gap = min([schedule.gap(checks, elapsed), *waits])
        if gap <= timedelta(0):
            raise ValueError("a schedule whose next look is not later than the last cannot be bounded")
        elapsed += gap
    return checks + 2


def queue_events(retries: Retries) -> int:
    """What our own per-vendor limit can add to one action (core/limits.py): SLOT_WAITS times "Wait for a vendor
    slot" and MAX_PACE_WAITS times "Wait for the vendor's call rate", each followed by Submit and its Choice."""
    again = task_events(retries.submit) + CHOICE_STATE
    return SLOT_WAITS * (task_events(retries.park) + again) + MAX_PACE_WAITS * (WAIT_STATE + again)


def queue_transitions(retries: Retries) -> int:
    again = task_transitions(retries.submit) + 1
    return SLOT_WAITS * (task_transitions(retries.park) + again) + MAX_PACE_WAITS * (1 + again)


def action_events(
    checks: int, retries: Retries, *, asks: int = APPROVAL_ASKS, failed: bool | None = None, queued: bool = True
) -> int:
    """One action (an item of the inner Map) on its longest path: the approval Choice, `asks` times the gate
    (Ask, Await; 0 without a gate), Submit and its Choice, every wait our own limits allow (queue_events),
    `checks` times Wait + Check + Choice, Collect, then Succeed, or (`failed`) a "Record ... failure" Pass,
    Record outcome and its fallback Pass. `failed=None`: the longer; `queued=False`: no wait for our limits."""
    loop = WAIT_STATE + task_events(retries.check) + CHOICE_STATE
    gate = asks * (task_events(retries.ask) + task_events(retries.hold))
    succeeded = SUCCEED_STATE
    recorded = PASS_STATE + task_events(retries.record) + PASS_STATE
    tail = max(succeeded, recorded) if failed is None else recorded if failed else succeeded
    return (
        MAP_ITERATION
        + CHOICE_STATE
        + gate
        + task_events(retries.submit)
        + CHOICE_STATE
        + (queue_events(retries) if queued else 0)
        + checks * loop
        + task_events(retries.collect)
        + tail
    )


def worst_case_events(
    schedule: Schedule, retries: Retries, *, other_waits: Iterable[timedelta] = (), actions: int = ACTIONS
) -> int:
    """One vendor's branch at worst: its item of the outer Map, the inner Map, and `actions` actions each
    looked at as often as `schedule` allows."""
    checks = worst_case_checks(schedule, other_waits)
    return MAP_ITERATION + MAP_STATE + actions * action_events(checks, retries)


def execution_events(vendor_events: Iterable[int], retries: Retries) -> int:
    """The whole execution: start and end, the outer Map, every vendor's branch, the Package step with all its
    retries and its "Package not built" Pass, Finalize with all its retries, and the Fail state it may end in."""
    package = task_events(retries.package) + PASS_STATE
    return EXECUTION + MAP_STATE + sum(vendor_events) + package + task_events(retries.finalize) + FAIL_STATE


# --- state transitions (what Step Functions bills: $0.025 per 1,000 at list price) --------------------------
#
# A transition is one state entered, and every retry of a task is one more. The history shows the first as
# its `*StateEntered` events (what `make bench` counts) but not the second, so a run with retries is billed
# more transitions than its history shows entries. Map iterations are not states.


def task_transitions(retries: int) -> int:
    return 1 + retries


def action_transitions(
    checks: int, retries: Retries, *, asks: int = APPROVAL_ASKS, failed: bool | None = None, queued: bool = True
) -> int:
    """One action on its longest path, as action_events walks it: the approval Choice, `asks` times Ask and
    Await, Submit and its Choice, the waits of our own limits, `checks` times Wait + Check + Choice, Collect,
    then Succeed or (`failed`) the Record Pass, Record outcome and its fallback Pass."""
    loop = 1 + task_transitions(retries.check) + 1
    gate = asks * (task_transitions(retries.ask) + task_transitions(retries.hold))
    recorded = 1 + task_transitions(retries.record) + 1
    tail = max(1, recorded) if failed is None else recorded if failed else 1
    return (
        1
        + gate
        + task_transitions(retries.submit)
        + 1
        + (queue_transitions(retries) if queued else 0)
        + checks * loop
        + task_transitions(retries.collect)
        + tail
    )


def worst_case_transitions(
    schedule: Schedule, retries: Retries, *, other_waits: Iterable[timedelta] = (), actions: int = ACTIONS
) -> int:
    """One vendor's branch at worst: the inner Map state and `actions` actions looked at as often as
    `schedule` allows (the branch's item of the outer Map is no state)."""
    checks = worst_case_checks(schedule, other_waits)
    return 1 + actions * action_transitions(checks, retries)


def execution_transitions(vendor_transitions: Iterable[int], retries: Retries) -> int:
    """The whole execution: the outer Map, every vendor's branch, the Package step (with its Pass when it
    fails), Finalize, and the Fail state it may end in."""
    package = task_transitions(retries.package) + 1
    return 1 + sum(vendor_transitions) + package + task_transitions(retries.finalize) + 1


# --- a job awaiting its vendor's callback (core/callbacks.py) -----------------------------------------------
#
# Each look then waits in "Await the vendor's callback" (a task, not retried: a failed park falls back to the plain
# "Wait for vendor") instead of the Wait, and looks come no sooner than every `fallback`, plus the one the callback
# wakes (once per job). tests/unit/test_history_quota.py checks that this costs no more events than polling the
# same connector, so the worst case above (polling) bounds both.


def callback_checks(schedule: Schedule, fallback: timedelta) -> int:
    slow = Schedule(first_check=fallback, interval=fallback, backoff=1, deadline=schedule.deadline)
    return worst_case_checks(slow) + 1


def callback_action_events(checks: int, retries: Retries) -> int:
    """An action awaiting callbacks, on its longest path: as action_events, each look's Wait replaced by the park
    task (no retries) and, when it fails, the Wait as well."""
    extra = task_events(0)  # the park, besides the fallback Wait the loop counts
    return action_events(checks, retries) + checks * extra


def checks_for(events: int, retries: Retries, actions: int = ACTIONS) -> int:
    """The most looks per action that fit in `events` for one vendor (a planning aid for a new connector)."""
    per_action = (events - MAP_ITERATION - MAP_STATE) / actions
    loop = WAIT_STATE + task_events(retries.check) + CHOICE_STATE
    return max(0, math.floor((per_action - action_events(0, retries)) / loop))


__all__ = [
    "BUDGET",
    "QUOTA",
    "Retries",
    "action_events",
    "asl_states",
    "action_transitions",
    "checks_for",
    "execution_events",
    "execution_transitions",
    "worst_case_transitions",
    "task_events",
    "worst_case_checks",
    "worst_case_events",
]
