"""Per-vendor limits across executions (core/limits.py) on real parts: the real ASL in moto, the slots in the
ledger's table (moto's DynamoDB), Qualifio's simulator on loopback running only 2 rules at once.

Without the limit, the simulator refuses the third rule in progress with 429 (refused_busy counts them): the
assertions on `refused_busy` and `peak_open` are what fails if the limit stops holding."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.workflow.conftest import local_run, sample_subject, summary_of

pytestmark = pytest.mark.slow

REQUESTS = 50
JOBS = 2
# 8,640x: so the 30-day GDPR deadline is 300 s real. At the suite's usual
# 345,600x it is 7.5 s, and 50 requests through 2 slots take longer than that on 2 cores: they would run late.
SCALE = 8640.0


def _submit(cloud: Any, request_id: str, actions: list[str]) -> None:
    status, body = cloud.api(
        "POST", "/requests", {"request_id": request_id, "actions": actions, "subject": sample_subject()}
    )
    assert status == 202, body


def _entered(cloud: Any, request_id: str, state: str) -> int:
    return sum(
        1
        for e in cloud.history(request_id)
        if e["type"].endswith("StateEntered") and e["stateEnteredEventDetails"]["name"] == state
    )


def test_fifty_requests_against_a_vendor_that_runs_two_jobs_at_once_all_complete():
    limits = {"qualifio": {"jobs": JOBS}}
    sim = {"qualifio": {"max_open_rules": JOBS}}
    with local_run(time_scale=SCALE, vendors=("qualifio",), vendor_limits=limits, sim_options=sim) as (cloud, sims):
        qualifio = sims["qualifio"]
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda n: _submit(cloud, f"limit-{n:02d}", ["export"]), range(REQUESTS)))
        summaries = [summary_of(cloud, f"limit-{n:02d}", timeout=300) for n in range(REQUESTS)]
        elapsed = time.monotonic() - started

        assert [s["status"] for s in summaries] == ["completed"] * REQUESTS, [
            (s["request_id"], s["status"]) for s in summaries if s["status"] != "completed"
        ]
        assert qualifio.refused_busy == 0, "a rule was created while the vendor already ran its limit"
        assert qualifio.peak_open == JOBS
        assert qualifio.jobs_created() == REQUESTS  # one rule per request: a queued submit sent nothing

        # Some requests waited for a slot, and were woken by a freed slot (not by their wait's timeout).
        waited = [n for n in range(REQUESTS) if _entered(cloud, f"limit-{n:02d}", "Wait for a vendor slot")]
        assert len(waited) >= REQUESTS - JOBS - 8, waited
        for n in waited[:5]:
            history = cloud.history(f"limit-{n:02d}")
            assert not any(e["type"] == "TaskTimedOut" for e in history)
            audit = cloud.ledger().audit(f"limit-{n:02d}")
            waiting = [e for e in audit if e.get("event") == "waiting"]
            assert waiting and "at most 2 qualifio jobs run at once" in waiting[0]["reason"]

        # Nothing is left holding a slot or waiting once every request ended.
        leftover = cloud.client("dynamodb").query(
            TableName=cloud.ledger_table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": "LIMIT#qualifio"}},
        )["Items"]
        assert leftover == []
        print(f"\n{REQUESTS} requests, {JOBS} Qualifio jobs at once: {elapsed:.1f} s")


def test_a_lost_wake_up_is_repeated_by_the_deadline_watch():
    """A waiter handed a slot whose waker died before waking it: the hourly deadline watch wakes it."""
    from core.limits import Limits, VendorLimit

    with local_run(vendors=("qualifio",), vendor_limits={"qualifio": {"jobs": 1}}) as (cloud, sims):
        limits = Limits(
            cloud.client("dynamodb"),
            cloud.ledger_table,
            {"qualifio": VendorLimit(jobs=1)},
            sfn=cloud.client("stepfunctions"),
        )
        # Someone else holds the only slot: the request queues and parks.
        from datetime import UTC, datetime, timedelta

        assert limits.acquire("qualifio", "other#1#export", datetime.now(UTC) + timedelta(days=1))
        _submit(cloud, "lost-wake", ["export"])
        for _ in range(100):
            if _entered(cloud, "lost-wake", "Wait for a vendor slot"):
                break
            time.sleep(0.1)
        time.sleep(0.5)  # let the park task write its waiter
        # The holder's release dies after handing over the slot and before the wake-up: no settle here.
        limits.release("qualifio", "other#1#export", settle=False)
        items = cloud.client("dynamodb").query(
            TableName=cloud.ledger_table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": "LIMIT#qualifio"}},
        )["Items"]
        waiter = next(i for i in items if i["sk"]["S"].startswith("WAIT#"))
        assert limits._take("qualifio", "SLOT#0000", waiter["holder"]["S"], int(time.time()) + 86400, int(time.time()))
        time.sleep(1.0)
        assert (
            cloud.client("stepfunctions").describe_execution(executionArn=cloud.execution_arn("lost-wake"))["status"]
            == "RUNNING"
        )
        from local.engine import scheduled_event

        cloud.invoke("sweep", scheduled_event())
        assert summary_of(cloud, "lost-wake", timeout=60)["status"] == "completed"
        # Woken by the watch, not by its wait's own timeout (which would also have let it go on).
        assert not any(e["type"] == "TaskTimedOut" for e in cloud.history("lost-wake"))
