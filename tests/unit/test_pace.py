"""bench/pace.py, the realistic-pace model behind `make bench`: looks from a connector's own Schedule, and the
states of one more look read from the ASL (so a state added to the loop changes the figures)."""

from __future__ import annotations

import copy
from datetime import timedelta

from bench import cost, pace
from connectors.registry import connector_class


def test_looks_follow_the_schedule_until_the_job_is_done():
    qualifio = connector_class("qualifio").schedule  # 2 min, then 5 min x 1.5 ...
    assert pace.looks(qualifio, timedelta(0)) == 1
    assert pace.looks(qualifio, timedelta(minutes=2)) == 1
    assert pace.looks(qualifio, timedelta(minutes=7)) == 2  # 2, then 2 + 5
    assert pace.looks(qualifio, timedelta(minutes=30)) == 5  # 2, 7, 14.5, 25.75, 42.6
    elevate = connector_class("elevate").schedule
    assert pace.looks(elevate, timedelta(days=6)) == 3  # day 5, 5.5, 6
    assert pace.looks(elevate, timedelta(days=400)) == pace.looks(elevate, elevate.deadline)  # never past it


def test_one_more_look_is_the_asls_poll_cycle():
    definition = pace.asl()
    assert [name for name, _ in pace.poll_cycle(definition)] == ["Check vendor job", "Job finished?", "Wait for vendor"]
    # A state added to the loop is counted.
    changed = copy.deepcopy(definition)
    states = pace._holding(changed["States"], "Check vendor job")
    assert states is not None
    states["Check vendor job"]["Next"] = "Extra"
    states["Extra"] = {"Type": "Pass", "Next": "Job finished?"}
    assert [name for name, _ in pace.poll_cycle(changed)] == [
        "Check vendor job",
        "Extra",
        "Job finished?",
        "Wait for vendor",
    ]


def test_at_pace_adds_each_more_look_as_one_cycle():
    cycle = [("Check vendor job", "Task"), ("Job finished?", "Choice"), ("Wait for vendor", "Wait")]
    measured = cost.Usage(
        transitions=50,
        history_events=200,
        invocations=(("check", 0.2), ("submit", 0.3)),
        s3_calls={"GET": 4},
        events=1,
        api_calls=1,
        ddb_write_units=10.0,
        ddb_read_units=2.0,
        stored_bytes=0,
    )
    check = pace.CheckCost(seconds=0.2, s3_calls={"GET": 1}, ddb_write_units=7.0, ddb_read_units=0.5)
    more = pace.at_pace(measured, 1, 4, cycle, check)
    assert more.transitions == 50 + 3 * 3
    assert [r for r, _ in more.invocations].count("check") == 4
    assert more.s3_calls["GET"] == 7
    fewer = pace.at_pace(measured, 1, 1, cycle, check)
    assert fewer.transitions == 50
