"""The local engine under N concurrent requests (issue 11): each with its own subject, seeded into every
simulator, export + erase on every vendor, at the demo's time scale (local/cli.py, 86,400x).

Run in a child process, so that its peak RSS is its own (ru_maxrss of the child): `python -m bench scale`, or
`DSRFLOW_BENCH_SCALE_N=40 python -m bench scale` for another N. Prints each target next to its measured
value: no failed or partially failed request, under 2 GB peak RSS, threads under the engine's bound
(local/engine.py, `thread_bound`), and the wall time, intake latency and peak thread count as measured.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
N_ENV = "DSRFLOW_BENCH_SCALE_N"
DEFAULT_N = 200
RSS_TARGET_MB = 2048
SUBMITTERS = 16  # client threads submitting the N requests (counted in the threads sampled)
FAILURES: Counter[str] = Counter()  # "<vendor> <action> <error>" of the outcomes of requests not completed


class ThreadSampler:
    """The highest threading.active_count() seen, sampled every `every` seconds in its own thread."""

    def __init__(self, every: float = 0.05):
        self.every = every
        self.peak = threading.active_count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="thread-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, threading.active_count())

    def __enter__(self) -> ThreadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def run(n: int, time_scale: float | None = None, timeout: float = 1800.0) -> dict[str, Any]:
    """N requests at once on one LocalCloud; the figures as a dict (what the child prints as JSON)."""
    import contextlib

    from local.cli import DEMO_TIME_SCALE
    from local.engine import LocalCloud
    from local.simulators import SIMULATORS, simulator_class
    from local.simulators.data import many_customers

    scale = DEMO_TIME_SCALE if time_scale is None else time_scale
    subjects = many_customers(n)
    with contextlib.ExitStack() as stack, ThreadSampler() as sampler:
        sims = {name: stack.enter_context(simulator_class(name)(time_scale=scale)) for name in SIMULATORS}
        for sim in sims.values():
            sim.seed(subjects)
        cloud = stack.enter_context(LocalCloud({k: s.credentials() for k, s in sims.items()}, time_scale=scale))
        intake: list[float] = []

        def submit(i: int) -> str:
            c = subjects[i]
            t0 = time.perf_counter()
            accepted = cloud.submit(
                {
                    "request_id": f"scale-{i:04d}",
                    "actions": ["export", "erase"],
                    "subject": {
                        "email": c.email,
                        "customer_key": c.customer_key,
                        "customer_ids": {"registered": c.registered},
                    },
                }
            )
            intake.append(time.perf_counter() - t0)
            return str(accepted["request_id"])

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=min(SUBMITTERS, n)) as pool:
            ids = list(pool.map(submit, range(n)))
        outcomes = _await_all(cloud, ids, timeout)
        wall = time.perf_counter() - t0
        bound = cloud.thread_bound() + SUBMITTERS + 2  # + the submitters, the sampler and the main thread
        gate = {"peak_running": cloud.gate.peak_running, "peak_queued": cloud.gate.peak_queued}
    return {
        "n": n,
        "time_scale": scale,
        "wall_s": round(wall, 1),
        "intake_p50_s": round(percentile(intake, 50), 3),
        "intake_p95_s": round(percentile(intake, 95), 3),
        "peak_threads": sampler.peak,
        "thread_bound": bound,
        "max_running_executions": cloud.max_running_executions,
        **gate,
        "statuses": dict(Counter(outcomes.values())),
        "failures": dict(FAILURES),
        "not_completed": sorted(k for k, v in outcomes.items() if v != "completed")[:10],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def _await_all(cloud: Any, ids: list[str], timeout: float) -> dict[str, str]:
    """Each request's manifest status ("completed", "partially_failed", ...), or the execution's status
    when it did not succeed; polled from one thread."""
    sfn = cloud.client("stepfunctions")
    left, out = set(ids), {}
    end = time.monotonic() + timeout
    while left:
        for request_id in sorted(left):
            execution = sfn.describe_execution(executionArn=cloud.execution_arn(request_id))
            if execution["status"] == "RUNNING":
                continue
            left.discard(request_id)
            if execution["status"] == "SUCCEEDED":
                summary = json.loads(execution["output"])
                out[request_id] = summary["status"]
                if summary["status"] != "completed":
                    # What went wrong, by vendor, action and error name (ids and a fixed vocabulary only).
                    FAILURES.update(
                        f"{o['vendor']} {o['action']} {o.get('error') or o['status']}"
                        for o in summary.get("outcomes", [])
                        if o["status"] != "completed"
                    )
            else:
                out[request_id] = f"execution {execution['status']}"
        if left and time.monotonic() > end:
            out.update({request_id: "still running" for request_id in left})
            break
        time.sleep(0.5)
    return out


def report(f: dict[str, Any]) -> list[str]:
    statuses = f["statuses"]
    done = statuses.get("completed", 0)
    bad = f["n"] - done
    rows = [
        ("requests completed", f"{f['n']} of {f['n']}", f"{done} of {f['n']}", bad == 0),
        ("failed or partially failed", "0", f"{bad} {statuses}", bad == 0),
        ("peak RSS", f"< {RSS_TARGET_MB} MB", f"{f['peak_rss_mb']} MB", f["peak_rss_mb"] < RSS_TARGET_MB),
        (
            "peak threads",
            f"<= {f['thread_bound']} (bound)",
            str(f["peak_threads"]),
            f["peak_threads"] <= f["thread_bound"],
        ),
        ("wall time", "reported", f"{f['wall_s']} s", True),
        ("intake latency p50 / p95", "reported", f"{f['intake_p50_s']} s / {f['intake_p95_s']} s", True),
    ]
    lines = [
        f"{f['n']} concurrent export+erase requests, each its own subject, on every vendor, at "
        f"{f['time_scale']:,.0f}x, at most {f['max_running_executions']} executions running at once "
        f"(the rest queued)"
    ]
    for name, target, measured, ok in rows:
        lines.append(f"    {name:<28} target {target:<22} measured {measured:<28} {'ok' if ok else 'MISSED'}")
    if f["failures"]:
        lines.append(f"    outcomes not completed: {f['failures']}")
    if f["not_completed"]:
        lines.append(f"    not completed (first 10): {', '.join(f['not_completed'])}")
    return lines


def main() -> None:
    n = int(os.environ.get(N_ENV, DEFAULT_N))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "functions"), str(ROOT)])}
    child = subprocess.run(
        [sys.executable, "-m", "bench.bench_scale", str(n)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if child.returncode != 0:
        print(child.stdout[-4000:], child.stderr[-4000:], sep="\n")
        raise SystemExit(f"bench_scale: the child process failed (exit {child.returncode})")
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    for line in report(figures):
        print(line)


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_N)), flush=True)
