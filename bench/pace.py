"""A request at a realistic pace: how many times each vendor job is looked at when it takes as long as the vendor
says (issue 11, "make bench tells the truth").

The local run compresses vendor days into seconds (86,400x and more), and every Wait then lasts at least one
real second, so each action gets about one look: its figures undercount. This module re-prices that run:

- DURATIONS: how long each vendor takes per action, documented or observed, with its source (the one table);
- `looks`: how many checks a job of that duration gets from its connector's own Schedule (first check,
  interval, back-off, slow phase, deadline), by the rule the connector uses (Schedule.gap);
- `poll_cycle`: the states one more look enters, read from the ASL (the shortest cycle through the check task:
  today Wait, Check, Choice), so a state added to the loop changes the figures;
- `at_pace`: the measured run's counts, with each action's measured looks replaced by its looks at pace: every
  state outside the loop (a Choice added after Submit, a callback wait) stays as the run measured it.

Figures only: nothing here asserts.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from bench import cost
from core import history
from core.domain import Schedule


@dataclass(frozen=True)
class Duration:
    vendor_time: timedelta  # from submission to the job being done, at the vendor
    source: str


# How long each vendor takes to finish a job, per action: the one table. Replace an assumption when a vendor
# documents its pace or production shows another.
DURATIONS: dict[tuple[str, str], Duration] = {
    ("elevate", "export"): Duration(
        timedelta(days=6),
        "documented: a job waits for the next day, then archiving takes 5 days by default (5-7 days; VENDORS.md)",
    ),
    ("elevate", "erase"): Duration(timedelta(days=6), "documented: as the export (VENDORS.md, 'The 5-7 day wait')"),
    ("bloomreach", "export"): Duration(timedelta(0), "documented: synchronous, the answer is the data"),
    ("bloomreach", "erase"): Duration(timedelta(0), "documented: synchronous (anonymize)"),
    ("qualifio", "export"): Duration(
        timedelta(minutes=30),
        "assumed: undocumented; about 30 min once auto-validated (the issue's about 5 looks per action)",
    ),
    ("qualifio", "erase"): Duration(timedelta(minutes=30), "assumed: as the export"),
}


def looks(schedule: Schedule, took: timedelta) -> int:
    """How many checks a job done `took` after submission gets: looks at first_check and then every gap the
    schedule gives, until the first one at or after `took` (which sees it done), or the deadline's."""
    elapsed, checks = schedule.first_check, 1
    while elapsed < took and elapsed < schedule.deadline:
        elapsed = min(elapsed + schedule.gap(checks, elapsed), schedule.deadline)
        checks += 1
    return checks


def _graph(states: Mapping[str, Any]) -> dict[str, list[str]]:
    """Each state's successors, a Choice's Default (the "not yet" branch of a poll) before its rules."""
    edges: dict[str, list[str]] = {}
    for name, state in states.items():
        nexts = [state.get("Next"), state.get("Default"), *(c.get("Next") for c in state.get("Choices", []))]
        nexts += [c.get("Next") for c in state.get("Catch", [])]
        edges[name] = list(dict.fromkeys(n for n in nexts if n))
    return edges


def _holding(states: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    """The States object `name` is defined in, however deeply nested."""
    if name in states:
        return states
    for state in states.values():
        for nested in (state.get("ItemProcessor"), state.get("Iterator"), *state.get("Branches", [])):
            found = _holding(nested["States"], name) if nested else None
            if found is not None:
                return found
    return None


def poll_cycle(definition: Mapping[str, Any], check: str = history.TASKS["check"]) -> list[tuple[str, str]]:
    """(name, type) of the states one more look at a job enters: the shortest cycle from the check task back to
    it, in the ASL (found wherever the task is nested)."""
    states = _holding(definition["States"], check)
    if states is None:
        raise ValueError(f"the ASL has no state {check!r}: update bench/pace.py")
    edges = _graph(states)
    paths = [[check]]
    while paths:
        path = paths.pop(0)
        for n in edges.get(path[-1], []):
            if n == check:
                return [(s, states[s]["Type"]) for s in path]
            if n not in path:
                paths.append([*path, n])
    raise ValueError(f"the ASL's {check!r} is in no loop: update bench/pace.py")


def cycle_events(cycle: list[tuple[str, str]]) -> int:
    """History events of one look: each state's entered/exited, and the task's one attempt."""
    return sum(history.TASK_STATE + history.TASK_ATTEMPT if kind == "Task" else 2 for _, kind in cycle)


@dataclass(frozen=True)
class CheckCost:
    """What one check invocation spent in the measured run, on average: AWS calls and time."""

    seconds: float
    s3_calls: Mapping[str, float]  # operation -> calls per look
    ddb_write_units: float
    ddb_read_units: float


def at_pace(
    measured: cost.Usage,
    measured_looks: int,
    paced_looks: int,
    cycle: list[tuple[str, str]],
    check: CheckCost,
) -> cost.Usage:
    """`measured` with its `measured_looks` replaced by `paced_looks` (every action's, summed)."""
    more = paced_looks - measured_looks
    invocations = list(measured.invocations)
    if more >= 0:
        invocations += [("check", check.seconds)] * more
    else:
        for _ in range(-more):
            invocations.remove(next(i for i in invocations if i[0] == "check"))
    s3 = Counter(measured.s3_calls)
    for op, n in check.s3_calls.items():
        s3[op] = max(0, round(s3[op] + n * more))
    return replace(
        measured,
        transitions=measured.transitions + more * len(cycle),
        history_events=measured.history_events + more * cycle_events(cycle),
        invocations=tuple(invocations),
        s3_calls=s3,
        ddb_write_units=max(0.0, measured.ddb_write_units + check.ddb_write_units * more),
        ddb_read_units=max(0.0, measured.ddb_read_units + check.ddb_read_units * more),
    )


def asl() -> dict[str, Any]:
    from statemachines import ASL_FILE

    loaded: dict[str, Any] = json.loads(ASL_FILE.read_text())
    return loaded


__all__ = ["DURATIONS", "CheckCost", "Duration", "at_pace", "cycle_events", "looks", "poll_cycle"]
