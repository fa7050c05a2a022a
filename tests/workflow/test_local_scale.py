"""Many requests at once on the local engine, at the demo's time scale: each its own subject, export + erase on
every vendor. Every one completes (no partial outcome: no vendor deadline fails because the engine was busy,
core/tasks.py judged_when_due), executions beyond the engine's limit wait their turn (local/engine.py,
ExecutionGate), and the threads stay under the bound the limit sets. `make bench` runs the same at N=200
(bench/bench_scale.py)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from local.cli import DEMO_TIME_SCALE
from local.engine import LocalCloud
from local.simulators import SIMULATORS, simulator_class
from local.simulators.data import many_customers

pytestmark = pytest.mark.slow

REQUESTS = 12
RUNNING = 4  # below REQUESTS, so that most of them queue
SUBMITTERS = 8


def test_many_requests_at_once_all_complete_within_the_thread_bound():
    subjects = many_customers(REQUESTS)
    peak = [threading.active_count()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], threading.active_count())

    with contextlib.ExitStack() as stack:
        sims = {n: stack.enter_context(simulator_class(n)(time_scale=DEMO_TIME_SCALE)) for n in SIMULATORS}
        for sim in sims.values():
            sim.seed(subjects)
        cloud = stack.enter_context(
            LocalCloud(
                {n: s.credentials() for n, s in sims.items()},
                time_scale=DEMO_TIME_SCALE,
                max_running_executions=RUNNING,
            )
        )
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        before = threading.active_count()

        def submit(i: int) -> str:
            c = subjects[i]
            subject = {"email": c.email, "customer_key": c.customer_key, "customer_ids": {"registered": c.registered}}
            body = cloud.submit({"request_id": f"many-{i:03d}", "actions": ["export", "erase"], "subject": subject})
            return str(body["request_id"])

        with ThreadPoolExecutor(max_workers=SUBMITTERS) as pool:
            ids = list(pool.map(submit, range(REQUESTS)))
        sfn = cloud.client("stepfunctions")
        outcomes: dict[str, str] = {}
        end = time.monotonic() + 240
        while len(outcomes) < len(ids):
            assert time.monotonic() < end, f"{len(ids) - len(outcomes)} requests still running"
            for request_id in ids:
                if request_id in outcomes:
                    continue
                execution = sfn.describe_execution(executionArn=cloud.execution_arn(request_id))
                if execution["status"] == "SUCCEEDED":
                    summary = json.loads(execution["output"])
                    outcomes[request_id] = (
                        summary["status"]
                        + " "
                        + ", ".join(f"{o['vendor']} {o['action']} {o['status']}" for o in summary["outcomes"])
                    )
                elif execution["status"] != "RUNNING":
                    outcomes[request_id] = execution["status"]
            time.sleep(0.3)
        stop.set()
        sampler.join()
        gate = cloud.gate
        # What ran before the requests (simulators, sampler, main), the engine's bound and the submitters.
        bound = before + cloud.thread_bound() + SUBMITTERS

    not_completed = {k: v for k, v in outcomes.items() if not v.startswith("completed ")}
    assert not not_completed, not_completed
    assert all(v.count(" completed") == 2 * len(SIMULATORS) for v in outcomes.values()), outcomes
    assert gate.peak_running == RUNNING and gate.peak_queued > 0, (gate.peak_running, gate.peak_queued)
    assert peak[0] <= bound, (peak[0], bound)
    # Each subject's own data was erased at every vendor: the simulators saw one subject per request.
    assert sims["elevate"].jobs_created("remove") == REQUESTS
    assert sims["bloomreach"].customers_anonymized() == REQUESTS
