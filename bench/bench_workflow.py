"""One 3-vendor export + erase request on the embedded cloud: wall time, state transitions, vendor calls, and
what the request lifecycle costs (the approval gate's transitions and invocations, the ledger's DynamoDB units).

The ratio that matters is polling: how many status calls each vendor got, against what a fixed
"every 5 minutes" poller would have made over the same vendor time. The lifecycle's cost is read against the
baseline below: figures printed, never asserted (wall time depends on the machine).
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from unittest import mock

from bench import cost, pace
from core.domain import Schedule
from local.cli import Gatekeeper
from local.engine import LocalCloud
from local.simulators import SIMULATORS, simulator_class
from local.simulators.data import SAMPLE

STATUS_CALLS = {"elevate": r"job-status", "qualifio": r"/v1/gdpr/rules/[^/]+$", "bloomreach": r"$^"}

# The same request before the lifecycle issue (issue 9): the previous bench run, at commit 94e91f7
# (`make bench`, both time scales): 41 state transitions and 19 Lambda invocations (TaskScheduled events).
BASELINE_COMMIT = "94e91f7"
BASELINE_TRANSITIONS = 41
BASELINE_LAMBDA_INVOCATIONS = 19
AIM = 0.25  # the aim: the lifecycle adds under +25% to either

# DynamoDB's billing: on demand, one write request unit per 1 KB of item written (rounded up, at least one),
# one read request unit per 4 KB read strongly consistent (half that eventually consistent; indexes always are).
# A transactional write costs two per item.
WRITE_OPS = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")
READ_OPS = ("GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems")
WRITE_UNIT, READ_UNIT = 1024, 4096


@dataclass
class Figures:
    label: str
    status: str = ""
    wall: float = 0.0
    transitions: int = 0
    history_events: int = 0
    lambda_invocations: int = 0
    api_calls: int = 0  # the intake function's invocations: the request itself, and each approval
    ddb: DynamoMeter | None = None
    s3_calls: Counter[str] = field(default_factory=Counter)
    vendors: list[str] = field(default_factory=list)
    invocations: list[tuple[str, float]] = field(default_factory=list)  # (role, seconds), every Lambda call
    events: int = 0  # EventBridge events the functions put
    stored_bytes: int = 0  # what the request left in the bucket
    looks: int = 0  # entries of the check task: looks at a vendor job, every action's
    s3_by_role: Counter[tuple[str, str]] = field(default_factory=Counter)  # (function role, operation)


def run_once(time_scale: float, require_approval: str = "none") -> Figures:
    gated = require_approval != "none"
    label = f"time scale {time_scale:>9,.0f}x, approval gate {require_approval}" + (" (auto-approved)" if gated else "")
    figures = Figures(label)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_time_invocations(figures.invocations))
        sims = {n: stack.enter_context(simulator_class(n)(time_scale=time_scale)) for n in SIMULATORS}
        cloud = stack.enter_context(
            LocalCloud(
                {n: s.credentials() for n, s in sims.items()}, time_scale=time_scale, require_approval=require_approval
            )
        )
        figures.s3_calls, figures.s3_by_role = _count_s3_calls()
        figures.ddb = DynamoMeter.on_handlers(cloud)
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
        request_id = accepted["request_id"]
        figures.api_calls = 1
        if gated:
            figures.api_calls += _approve_until_done(cloud, request_id)
        execution = cloud.wait(request_id, timeout=600)
        figures.wall = time.perf_counter() - t0
        history = cloud.history(request_id)
        figures.status = json.loads(execution["output"])["status"]
        figures.transitions = sum(1 for e in history if e["type"].endswith("StateEntered"))
        figures.history_events = len(history)
        figures.lambda_invocations = sum(1 for e in history if e["type"] == "TaskScheduled")
        check_state = pace.history.TASKS["check"]
        figures.looks = sum(
            1
            for e in history
            if e["type"] == "TaskStateEntered" and e.get("stateEnteredEventDetails", {}).get("name") == check_state
        )
        figures.events = len(cloud.events())
        listed = cloud.client("s3").get_paginator("list_objects_v2").paginate(Bucket=cloud.bucket)
        figures.stored_bytes = sum(o["Size"] for page in listed for o in page.get("Contents", []))
        for name, sim in sims.items():
            calls = sim.calls
            polls = len(sim.calls_to(STATUS_CALLS[name]))
            span = (max(c.at for c in calls) - min(c.at for c in calls)) if calls else timedelta()
            naive = int(span / timedelta(minutes=5))
            ratio = f"{naive / polls:,.0f}x fewer" if polls else "no polling"
            figures.vendors.append(
                f"{name:<11} {len(calls):3d} HTTP calls, {polls:3d} status polls over "
                f"{span.total_seconds() / 86400:4.1f} vendor days (a 5-minute poller: {naive:,}; {ratio})"
            )
    _print(figures)
    return figures


def _approve_until_done(cloud: LocalCloud, request_id: str, timeout: float = 600.0) -> int:
    """Approve each gate as it opens, through the API as an operator does (local.cli's Gatekeeper, quiet);
    returns how many approve calls were made."""
    keeper = Gatekeeper(cloud, request_id, "approve", say=lambda line: None)
    sfn = cloud.client("stepfunctions")
    end = time.monotonic() + timeout
    while sfn.describe_execution(executionArn=cloud.execution_arn(request_id))["status"] == "RUNNING":
        keeper.poll()
        if time.monotonic() > end:
            raise TimeoutError(f"{request_id} still running after {timeout:.0f}s")
        time.sleep(0.05)
    return len(keeper.answered)


def _print(f: Figures) -> None:
    print(
        f"{f.label}: {f.status}, wall {f.wall:5.1f} s, {f.transitions} state transitions, "
        f"{f.history_events} history events, {f.lambda_invocations} Lambda invocations by the workflow "
        f"(+ {f.api_calls} API call(s) to intake)"
    )
    if f.ddb is not None:
        for line in f.ddb.report():
            print(f"    {line}")
    # The handlers' S3 requests (AWS bills them per request): the erase-safety records (submission.json,
    # outcome reads, vendor-said listings) live here, not in state transitions.
    print("    S3 requests by the tasks: " + ", ".join(f"{op} {n}" for op, n in sorted(f.s3_calls.items())))
    for line in f.vendors:
        print(f"    {line}")


@contextlib.contextmanager
def _time_invocations(into: list[tuple[str, float]]) -> Any:
    """Time every in-process Lambda invocation (local.engine's dispatch, which LocalCloud patches into moto
    when it starts): (function role, seconds the handler ran). What Lambda bills is longer: see bench/cost.py."""
    import local.engine as engine

    real = engine._dispatch

    def timed(backend: Any, function_name: str, *args: Any) -> Any:
        name = function_name.split(":function:")[-1].split(":")[0].removeprefix(f"{engine.PREFIX}-")
        _CURRENT.role = name  # the AWS calls it makes are its (the handler runs in this thread)
        t0 = time.perf_counter()
        try:
            return real(backend, function_name, *args)
        finally:
            into.append((name, time.perf_counter() - t0))
            _CURRENT.role = None

    with mock.patch.object(engine, "_dispatch", timed):
        yield


def usage(f: Figures) -> cost.Usage:
    """One run's counts, as bench/cost.py prices them."""
    ddb = f.ddb or DynamoMeter(None)
    return cost.Usage(
        transitions=f.transitions,
        history_events=f.history_events,
        invocations=tuple(f.invocations),
        s3_calls=f.s3_calls,
        ddb_write_units=ddb.write_units + ddb.index_write_units,
        ddb_read_units=ddb.read_units,
        events=f.events,
        api_calls=f.api_calls,
        stored_bytes=f.stored_bytes,
    )


_CURRENT = threading.local()  # .role: the function whose invocation runs in this thread


def _role() -> str:
    return getattr(_CURRENT, "role", None) or "other"


def _count_s3_calls() -> tuple[Counter[str], Counter[tuple[str, str]]]:
    """Count the S3 operations the in-process handlers make (their cached client, handlers.runtime.client), in
    all and by (function role, operation)."""
    from handlers.runtime import client

    counts: Counter[str] = Counter()
    by_role: Counter[tuple[str, str]] = Counter()

    def count(model: Any, **_: Any) -> None:
        counts[model.name] += 1
        by_role[(_role(), model.name)] += 1

    client("s3").meta.events.register("before-call.s3", count)
    return counts, by_role


# --- DynamoDB: calls and capacity units ---------------------------------------------------------------------


def attribute_size(value: dict[str, Any]) -> int:
    """Bytes of one DynamoDB attribute value (low-level form, {"S": ...}), by DynamoDB's item-size rules."""
    ((kind, v),) = value.items()
    if kind == "S":
        return len(v.encode())
    if kind == "N":
        return _number_size(v)
    if kind == "B":
        return len(v)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in v)
    if kind == "NS":
        return sum(_number_size(n) for n in v)
    if kind == "BS":
        return sum(len(b) for b in v)
    if kind == "L":
        return 3 + sum(1 + attribute_size(x) for x in v)
    if kind == "M":
        return 3 + sum(len(k.encode()) + 1 + attribute_size(x) for k, x in v.items())
    raise ValueError(f"unknown DynamoDB type {kind}")


def _number_size(text: str) -> int:
    digits = text.lstrip("-").replace(".", "").lstrip("0").rstrip("0") or "0"
    return 1 + math.ceil(len(digits) / 2)


def item_size(item: dict[str, Any] | None) -> int:
    return sum(len(name.encode()) + attribute_size(v) for name, v in (item or {}).items())


class DynamoMeter:
    """Every DynamoDB call one client makes, through botocore's events on it, with the capacity units DynamoDB
    bills for it: a write costs the larger of the item before and after, which an uncounted client of the same
    tables (`peek`) reads around the call. Index writes (the ledger's two GSIs) are counted apart."""

    def __init__(self, peek: Any):
        self.peek = peek
        self.lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.write_units = 0
        self.index_write_units = 0
        self.read_units = 0.0
        self.largest_item = 0
        self.units_by_role: Counter[str] = Counter()  # write units (table and indexes) by function role
        self.read_units_by_role: dict[str, float] = {}
        self._schemas: dict[str, tuple[list[str], list[tuple[str, ...]]]] = {}

    @classmethod
    def on_handlers(cls, cloud: LocalCloud) -> DynamoMeter:
        """Meter the in-process handlers' cached client (handlers.runtime.client), the ledger's only client."""
        from handlers.runtime import client

        meter = cls(cloud.client("dynamodb"))
        events = client("dynamodb").meta.events
        events.register("before-parameter-build.dynamodb", meter._before)
        events.register("after-call.dynamodb", meter._after)
        return meter

    # The items a write touches: (table, key, item written or None, transactional).
    def _targets(
        self, op: str, params: dict[str, Any]
    ) -> list[tuple[str, dict[str, Any], dict[str, Any] | None, bool]]:
        if op == "PutItem":
            return [(params["TableName"], self._key(params["TableName"], params["Item"]), params["Item"], False)]
        if op in ("UpdateItem", "DeleteItem"):
            return [(params["TableName"], params["Key"], None, False)]
        found = []
        if op == "BatchWriteItem":
            for table, requests in params["RequestItems"].items():
                for r in requests:
                    if "PutRequest" in r:
                        item = r["PutRequest"]["Item"]
                        found.append((table, self._key(table, item), item, False))
                    else:
                        found.append((table, r["DeleteRequest"]["Key"], None, False))
        elif op == "TransactWriteItems":
            for entry in params["TransactItems"]:
                ((kind, body),) = entry.items()
                item = body.get("Item")
                key = self._key(body["TableName"], item) if kind == "Put" else body["Key"]
                found.append((body["TableName"], key, item, True))
        return found

    def _before(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        if model.name in WRITE_OPS:
            context["bench.ddb"] = [
                (table, key, written, transactional, self._get(table, key))
                for table, key, written, transactional in self._targets(model.name, params)
            ]
        elif model.name in READ_OPS:
            context["bench.ddb.read"] = params

    def _after(self, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        op = model.name
        units, index_units, read_units, largest = 0, 0, 0.0, 0
        for table, key, _written, transactional, before in context.get("bench.ddb", []):
            after = self._get(table, key)  # what the write left (unchanged when its condition failed)
            size = max(item_size(before), item_size(after))
            largest = max(largest, size)
            units += max(1, math.ceil(size / WRITE_UNIT)) * (2 if transactional else 1)
            index_units += self._index_writes(table, before, after)
        if op in READ_OPS:
            params = context.get("bench.ddb.read") or {}
            eventual = 0.5 if "IndexName" in params or not params.get("ConsistentRead") else 1.0
            if op == "GetItem":
                items = [parsed.get("Item")]
            elif op in ("Query", "Scan"):
                items = [parsed.get("Items") or []]  # one unit count over all the items a page returned
            else:
                items = [r.get("Item") for r in parsed.get("Responses", [])] if op == "TransactGetItems" else []
            for got in items:
                size = sum(item_size(i) for i in got) if isinstance(got, list) else item_size(got)
                read_units += max(1, math.ceil(size / READ_UNIT)) * eventual
        with self.lock:
            self.calls[op] += 1
            self.write_units += units
            self.index_write_units += index_units
            self.read_units += read_units
            self.largest_item = max(self.largest_item, largest)
            self.units_by_role[_role()] += units + index_units
            self.read_units_by_role[_role()] = self.read_units_by_role.get(_role(), 0.0) + read_units

    def _index_writes(self, table: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> int:
        """A GSI with all attributes projected is written when an item in it changes: a put, a delete, or both
        when its index key changed."""
        if before == after:
            return 0
        units = 0
        for index_key in self._schema(table)[1]:
            was = before is not None and all(k in before for k in index_key)
            now = after is not None and all(k in after for k in index_key)
            moved = was and now and any((before or {}).get(k) != (after or {}).get(k) for k in index_key)
            for present, item in ((was and (moved or not now), before), (now, after)):
                if present:
                    units += max(1, math.ceil(item_size(item) / WRITE_UNIT))
        return units

    def _schema(self, table: str) -> tuple[list[str], list[tuple[str, ...]]]:
        if table not in self._schemas:
            t = self.peek.describe_table(TableName=table)["Table"]
            indexes = [tuple(k["AttributeName"] for k in i["KeySchema"]) for i in t.get("GlobalSecondaryIndexes", [])]
            self._schemas[table] = ([k["AttributeName"] for k in t["KeySchema"]], indexes)
        return self._schemas[table]

    def _key(self, table: str, item: dict[str, Any]) -> dict[str, Any]:
        return {name: item[name] for name in self._schema(table)[0]}

    def _get(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        item: dict[str, Any] | None = self.peek.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
        return item

    def report(self) -> list[str]:
        writes = {op: n for op, n in self.calls.items() if op in WRITE_OPS}
        reads = {op: n for op, n in self.calls.items() if op in READ_OPS}
        total_writes = sum(writes.values())

        def listed(ops: dict[str, int]) -> str:
            return ", ".join(f"{op} {n}" for op, n in sorted(ops.items())) or "none"

        return [
            f"DynamoDB (request ledger) per request: {total_writes} writes ({listed(writes)}) = "
            f"{self.write_units} write units on the table + {self.index_write_units} on its indexes "
            f"(largest item {self.largest_item:,} bytes)",
            f"    and {sum(reads.values())} reads ({listed(reads)}) = {self.read_units:g} read units",
        ]


def _ratio(value: int, baseline: int) -> str:
    return f"{(value - baseline) / baseline:+.1%}"


def compare(runs: list[Figures]) -> None:
    print(
        f"against the baseline ({BASELINE_TRANSITIONS} state transitions, {BASELINE_LAMBDA_INVOCATIONS} Lambda "
        f"invocations: the previous bench run, commit {BASELINE_COMMIT}); the aim: under {AIM:+.0%}"
    )
    for f in runs:
        t, n = f.transitions, f.lambda_invocations
        within = t < BASELINE_TRANSITIONS * (1 + AIM) and n < BASELINE_LAMBDA_INVOCATIONS * (1 + AIM)
        ddb = f.ddb
        units = f", {ddb.write_units + ddb.index_write_units} DynamoDB write units" if ddb else ""
        approvals = f" + {f.api_calls - 1} approve call(s) to intake" if f.api_calls > 1 else ""
        print(
            f"    {f.label.split(', ', 1)[1]}: {t} transitions ({_ratio(t, BASELINE_TRANSITIONS)}), "
            f"{n} Lambda invocations ({_ratio(n, BASELINE_LAMBDA_INVOCATIONS)}){approvals}{units}: "
            f"{'within' if within else 'OVER'} the {AIM:+.0%} aim"
        )


def worst_cases() -> None:
    """The stuck-job worst case per connector (core/history.py): a job looked at until its deadline."""
    from connectors.qualifio import APPROVAL_WAIT
    from connectors.registry import CONNECTORS, connector_class
    from core import history
    from statemachines import ASL_FILE

    retries = history.Retries.from_asl(json.loads(ASL_FILE.read_text()))
    none = history.Retries.none()
    print("stuck-job worst case per connector (every look its schedule allows until the deadline; gate asked 4x)")
    print(
        f"  {'connector':<11} {'looks/action':>12} {'transitions e+e':>16} {'USD':>8} {'with every retry':>17} {'USD':>8}"
    )
    for vendor in CONNECTORS:
        schedule = connector_class(vendor).schedule
        waits = [APPROVAL_WAIT] if vendor == "qualifio" else []
        looks = history.worst_case_checks(schedule, waits)
        plain = history.worst_case_transitions(schedule, none, other_waits=waits)
        spent = history.worst_case_transitions(schedule, retries, other_waits=waits)
        price = cost.SFN_PER_1K_TRANSITIONS / 1000
        print(f"  {vendor:<11} {looks:>12} {plain:>16} {plain * price:>8.4f} {spent:>17} {spent * price:>8.4f}")


def paced(f: Figures, vendors: list[str] | None = None) -> tuple[cost.Usage, list[str]]:
    """The run `f` re-priced at a realistic pace (bench/pace.py): each action looked at as often as its
    connector's schedule asks over the vendor's documented or assumed duration; and what that table says."""
    from connectors.registry import connector_class

    cycle = pace.poll_cycle(pace.asl())
    checks = [seconds for role, seconds in f.invocations if role == "check"]
    n = max(len(checks), 1)
    ddb = f.ddb or DynamoMeter(None)
    per_check = pace.CheckCost(
        seconds=sum(checks) / n,
        s3_calls={op: c / n for (role, op), c in f.s3_by_role.items() if role == "check"},
        ddb_write_units=ddb.units_by_role.get("check", 0) / n,
        ddb_read_units=ddb.read_units_by_role.get("check", 0.0) / n,
    )
    lines = [
        f"realistic pace: looks per action from each connector's Schedule over the vendor's duration "
        f"(bench/pace.py DURATIONS); one more look enters {' + '.join(name for name, _ in cycle)} "
        f"({len(cycle)} transitions, from the ASL)",
        f"  {'vendor':<11} {'action':<7} {'vendor time':>12} {'looks':>6}  source",
    ]
    paced_looks = 0
    for (vendor, action), took in pace.DURATIONS.items():
        if vendors is not None and vendor not in vendors:
            continue
        looks = pace.looks(connector_class(vendor).schedule, took.vendor_time)
        paced_looks += looks
        lines.append(f"  {vendor:<11} {action:<7} {str(took.vendor_time):>12} {looks:>6}  {took.source}")
    lines.append(
        f"  looks per request: {f.looks} in the local run, {paced_looks} at pace; a look costs "
        f"{per_check.seconds * 1000:.0f} ms of check in process, "
        f"{sum(per_check.s3_calls.values()):.1f} S3 and {per_check.ddb_write_units:.1f} DynamoDB write units"
    )
    polled = pace.at_pace(usage(f), f.looks, paced_looks, cycle, per_check)
    # The vendor's callback (core/callbacks.py, on by default): a job that calls back is looked at once when it is
    # done (a look of the 6-hour fallback only if it takes longer); its wait is a task where polling has a Wait,
    # the same transition count, plus one invocation of park per wait.
    from core.tasks import CALLBACK_FALLBACK

    awaited_looks, parks = paced_looks, 0
    for (vendor, action), took in pace.DURATIONS.items():
        connector = connector_class(vendor)
        if (vendors is not None and vendor not in vendors) or action not in {
            a.value for a in getattr(connector, "callbacks", ())
        }:
            continue
        polled_here = pace.looks(connector.schedule, took.vendor_time)
        fallback = Schedule(
            first_check=CALLBACK_FALLBACK, interval=CALLBACK_FALLBACK, backoff=1, deadline=connector.schedule.deadline
        )
        awaited_here = 1 if took.vendor_time <= CALLBACK_FALLBACK else pace.looks(fallback, took.vendor_time)
        awaited_looks += awaited_here - polled_here
        parks += awaited_here
        lines.append(
            f"  with its callback (callbacks=true, the default): {vendor} {action} looked at {awaited_here} time(s) "
            f"instead of {polled_here}"
        )
    if parks:
        awaited = pace.at_pace(usage(f), f.looks, awaited_looks, cycle, per_check)
        saved = polled.transitions - awaited.transitions
        lines.append(
            f"  callbacks save {saved} transitions per DSR ({polled.transitions} -> {awaited.transitions}; "
            f"{saved * cost.PER:,} per {cost.PER:,} DSRs), and add {parks} park invocation(s) per DSR: "
            f"${cost.total(polled) * cost.PER:.2f} -> ${cost.total(awaited) * cost.PER:.2f} per {cost.PER:,} "
            "before the park invocations"
        )
    return polled, lines


def summary(u: cost.Usage, label: str) -> list[str]:
    """Per DSR and per cost.PER DSRs: transitions, invocations, GB-seconds, AWS API calls, USD."""
    tier1, tier2 = cost.s3_requests(u.s3_calls)
    gbs = cost.gb_seconds(u.invocations)
    gbs_floor = cost.gb_seconds(u.invocations, cost.CONSERVATIVE_SECONDS)
    aws_calls = len(u.invocations) + tier1 + tier2 + u.events + u.api_calls
    usd, usd_floor = cost.total(u), cost.total(u, cost.CONSERVATIVE_SECONDS)
    per = cost.PER
    return [
        f"{label}: per DSR | per {per:,} DSRs",
        f"  state transitions        {u.transitions:>10} | {u.transitions * per:>12,}",
        f"  Lambda invocations       {len(u.invocations):>10} | {len(u.invocations) * per:>12,}",
        f"  Lambda GB-s (in process) {gbs:>10.3f} | {gbs * per:>12,.0f}",
        f"  Lambda GB-s (>= {cost.CONSERVATIVE_SECONDS:g} s each) {gbs_floor:>6.1f} | {gbs_floor * per:>12,.0f}",
        f"  AWS API calls            {aws_calls:>10} | {aws_calls * per:>12,}  (Lambda invokes, S3, events, API "
        "Gateway; DynamoDB below in units)",
        f"  USD                      {usd:>10.6f} | {usd * per:>12.2f}  ({usd_floor * per:.2f} with Lambda billed "
        f">= {cost.CONSERVATIVE_SECONDS:g} s each)",
    ]


def main() -> None:
    worst_cases()
    print()
    runs = [run_once(86400.0), run_once(4 * 86400.0)]
    gated = run_once(4 * 86400.0, require_approval="erase")
    compare([runs[-1], gated])
    for f in (runs[-1], gated):
        print()
        for line in cost.report(usage(f), f.label.split(", ", 1)[1] + ", as run locally (about one look per action)"):
            print(line)
    for f in (runs[-1], gated):
        print()
        at_pace, notes = paced(f)
        label = f.label.split(", ", 1)[1] + ", at a realistic pace"
        for line in [*notes, *summary(at_pace, label), *cost.report(at_pace, label)]:
            print(line)
