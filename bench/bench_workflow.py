"""One 3-vendor export + erase request on the embedded cloud: wall time, state transitions, vendor calls.

The ratio that matters is polling: how many status calls each vendor got, against what a fixed
"every 5 minutes" poller would have made over the same vendor time.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from datetime import timedelta
from typing import Any

from local.engine import LocalCloud
from local.simulators import SIMULATORS, simulator_class
from local.simulators.data import SAMPLE

STATUS_CALLS = {"elevate": r"job-status", "qualifio": r"/v1/gdpr/rules/[^/]+$", "bloomreach": r"$^"}


def run_once(time_scale: float) -> None:
    with contextlib.ExitStack() as stack:
        sims = {n: stack.enter_context(simulator_class(n)(time_scale=time_scale)) for n in SIMULATORS}
        cloud = stack.enter_context(LocalCloud({n: s.credentials() for n, s in sims.items()}, time_scale=time_scale))
        s3_calls = _count_s3_calls()
        t0 = time.perf_counter()
        accepted = cloud.submit(
            {
                "actions": ["export", "erase"],
                "subject": {
                    "email": SAMPLE.email,
                    "customer_key": SAMPLE.customer_key,
                    "customer_ids": {"registered": SAMPLE.registered},
                },
            }
        )
        execution = cloud.wait(accepted["request_id"], timeout=600)
        wall = time.perf_counter() - t0
        history = cloud.history(accepted["request_id"])
        summary = json.loads(execution["output"])
        transitions = sum(1 for e in history if e["type"].endswith("StateEntered"))
        lambda_calls = sum(1 for e in history if e["type"] == "TaskScheduled")
        print(
            f"time scale {time_scale:>9,.0f}x: {summary['status']}, wall {wall:5.1f} s, "
            f"{transitions} state transitions, {len(history)} history events, {lambda_calls} Lambda invocations"
        )
        # The handlers' S3 requests (AWS bills them per request): the erase-safety records (submission.json,
        # outcome reads, vendor-said listings) live here, not in state transitions.
        print("    S3 requests by the tasks: " + ", ".join(f"{op} {n}" for op, n in sorted(s3_calls.items())))
        for name, sim in sims.items():
            calls = sim.calls
            polls = len(sim.calls_to(STATUS_CALLS[name]))
            span = (max(c.at for c in calls) - min(c.at for c in calls)) if calls else timedelta()
            naive = int(span / timedelta(minutes=5))
            ratio = f"{naive / polls:,.0f}x fewer" if polls else "no polling"
            print(
                f"    {name:<11} {len(calls):3d} HTTP calls, {polls:3d} status polls over "
                f"{span.total_seconds() / 86400:4.1f} vendor days (a 5-minute poller: {naive:,}; {ratio})"
            )


def _count_s3_calls() -> Counter[str]:
    """Count the S3 operations the in-process handlers make (their cached client, core.runtime.client)."""
    from core.runtime import client

    counts: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        counts[model.name] += 1

    client("s3").meta.events.register("before-call.s3", count)
    return counts


def main() -> None:
    for scale in (86400.0, 4 * 86400.0):
        run_once(scale)
