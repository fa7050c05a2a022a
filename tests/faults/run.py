"""Running one cell of the fault matrix (tests/faults/matrix.py) through the real ASL, and judging it.

    observed = run_cell("cut_once-elevate", mp, capture)   # "S" or "F"; raises CellFailed when judged wrong
    result = run_isolated("cut_once-elevate")              # never raises: Result(observed, seconds, error)

A cell runs the faulted vendor alone when it should survive, and with the other two vendors when it should
fail (they must complete). The request is export + erase of the sample subject. Everything is gathered
inside the run (the summary, every S3 object version, open uploads, the history, the logs, the vendor's
jobs) and then judged:

- survived: the request completed; the export's archive in S3 is byte for byte what the simulator served;
- clearly failed: the action failed with the cell's `error` and `step`, its reason starts "<vendor> <step>:"
  and names the cause; an erase after a failed export was withheld (nothing destructive reached the vendor);
  the other vendors completed, their archives byte-identical;
- always: no open multipart upload and no partial object (every archive object, every version, is listed in
  the manifest and is exactly the served bytes); no more vendor jobs than actions, unless a duplicate is
  marked `possible_duplicate`; no subject value (nor a credential) in the manifest, the proof/ copy, the
  other kept records (outcome, submission), the execution history or the logs;
- last, what a DPO reads: every failure names its error and starts "<vendor> <step>:", and no completed
  action says "no data held" (the sample subject has data at every vendor). Last, so that a known bug
  there (matrix.Bug, xfail) cannot hide a broken invariant.

`Pool` runs cells in worker processes: each cell mostly sleeps (Waits, retries), so several at once finish
the matrix in a fraction of the time, and each worker has its own moto and simulators.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from local.simulators.data import SAMPLE
from tests.faults.matrix import READ_TIMEOUT, VENDORS, Cell, Fault, lookup
from tests.workflow.conftest import FAST, local_run, sample_subject

# Vendor jobs one action creates (Bloomreach's export is a synchronous read: no job).
JOBS = {
    "elevate": {"export": 1, "erase": 1},
    "bloomreach": {"export": 0, "erase": 1},
    "qualifio": {"export": 1, "erase": 1},
}
RUN_TIMEOUT = 90.0  # seconds for one execution
OUR_LOGGERS = ("dsrflow", "connectors", "core", "handlers")


# --- the two phases of injection --------------------------------------------------------------------------------


@dataclass
class Setup:
    """Before the simulators and the local cloud exist."""

    vendor: str
    stack: contextlib.ExitStack
    creds: dict[str, dict[str, Any]] = field(default_factory=dict)  # local_run creds_override
    sim_options: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Arm:
    """Once everything runs, before the request is submitted (and again for the cell's own checks)."""

    vendor: str
    cloud: Any
    sims: dict[str, Any]
    mp: pytest.MonkeyPatch
    request_id: str
    counters: dict[str, list[int]] = field(default_factory=dict)

    @property
    def sim(self) -> Any:
        return self.sims[self.vendor]

    def history(self) -> list[dict[str, Any]]:
        return self.cloud.history(self.request_id)


@dataclass
class Result:
    cell_id: str
    observed: str  # S, F, or ? (the run itself broke)
    seconds: float
    error: str | None = None  # the failed assertion, formatted


class CellFailed(AssertionError):
    def __init__(self, message: str, observed: str):
        super().__init__(message)
        self.observed = observed


# --- what must never be in a kept record ----------------------------------------------------------------------


def forbidden(sims: dict[str, Any]) -> list[str]:
    """The subject's values in the forms a vendor echoes them (any case is compared), half an email (what a
    truncation leaves), the subject's name and cookie (vendors hold them), and every credential."""
    values = {SAMPLE.email, SAMPLE.customer_key, SAMPLE.registered, SAMPLE.cookie, SAMPLE.last_name}
    values.add(f"{SAMPLE.first_name} {SAMPLE.last_name}")
    values.add(SAMPLE.email[: len(SAMPLE.email) // 2 + 2])
    for sim in sims.values():
        for key, value in sim.credentials().items():
            if key != "base_url" and isinstance(value, str):
                values.add(value)
    forms: set[str] = set()
    for value in values:
        forms |= {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]}
    return sorted(forms)


def is_record(key: str) -> bool:
    """dsrflow's own objects under requests/{id}/: everything else there is an archive."""
    name = key.rsplit("/", 1)[-1]
    return name in ("request.json", "manifest.json", "outcome.json", "submission.json") or "/vendor-said/" in key


def kept_records(cloud: Any, request_id: str) -> dict[str, str]:
    """Every record kept about the request but the three meant to hold personal data (request.json, the
    archives, the private vendor-said/ objects)."""
    records = {}
    for key in cloud.objects(request_id):
        if is_record(key) and not key.endswith("/request.json") and "/vendor-said/" not in key:
            records[key] = cloud.read(key).decode()
    proof = f"proof/{request_id}/manifest.json"
    records[proof] = cloud.read(proof).decode()
    return records


# --- capturing the logs ----------------------------------------------------------------------------------------


class _Records(logging.Handler):
    """Every record of our loggers, with its extras and exception text, whatever level is configured."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = {k: v for k, v in vars(record).items() if k not in ("exc_info",)}
        fields["message"] = record.getMessage()
        if record.exc_info:
            fields["exc_text"] = logging.Formatter().formatException(record.exc_info)
        self.lines.append(json.dumps(fields, default=str))


@contextlib.contextmanager
def log_records(mp: pytest.MonkeyPatch) -> Iterator[_Records]:
    handler = _Records()
    mp.setenv("POWERTOOLS_LOG_LEVEL", "DEBUG")  # the local engine passes it on to the functions
    loggers = [logging.getLogger(name) for name in OUR_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)


class FdCapture:
    """What the process writes to file descriptors 1 and 2 (a worker process's stand-in for capfd)."""

    def __enter__(self) -> FdCapture:
        sys.stdout.flush()
        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        self._saved = [os.dup(1), os.dup(2)]
        os.dup2(self._file.fileno(), 1)
        os.dup2(self._file.fileno(), 2)
        return self

    def text(self) -> str:
        sys.stdout.flush()
        sys.stderr.flush()
        self._file.seek(0)
        return self._file.read().decode("utf-8", errors="replace")

    def __exit__(self, *exc: Any) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in zip((1, 2), self._saved, strict=True):
            os.dup2(saved, fd)
            os.close(saved)
        self._file.close()


# --- the vendor's expected archive ------------------------------------------------------------------------------


def freeze_archives(sims: dict[str, Any]) -> dict[str, bytes]:
    """Before the run: fix the bytes the simulators will serve where they build them on the fly."""
    served: dict[str, bytes] = {}
    if "elevate" in sims:
        # Elevate builds its zip at download time (with the time in it): serve one built now instead.
        sim = sims["elevate"]
        sim.download_override = sim._archive(SAMPLE.customer_key)
        served["elevate"] = sim.download_override
    if "bloomreach" in sims:
        # export-one answers the customer's record, exactly as the simulator serialises it.
        record = sims["bloomreach"].record_of(SAMPLE)
        body = {"success": True, "ids": record["ids"], "properties": record["properties"], "events": record["events"]}
        served["bloomreach"] = json.dumps(body).encode()
    return served


def served_bytes(vendor: str, name: str, sims: dict[str, Any], frozen: dict[str, bytes]) -> bytes | None:
    """What the simulator sent for the archive stored as `name` (None: it never sent such an archive)."""
    if vendor == "elevate" and re.fullmatch(r"elevate-export-[0-9a-f-]{36}\.zip", name):
        return frozen["elevate"]
    if vendor == "bloomreach" and name == "bloomreach-export-one.json":
        return frozen["bloomreach"]
    match = re.fullmatch(r"qualifio-export-([0-9a-f]{24})-([0-9a-f]{24})\.zip", name)
    if vendor == "qualifio" and match:
        archive = sims["qualifio"].archives.get(match.group(2))
        return archive.data if archive is not None and archive.rule_id == match.group(1) else None
    return None


# --- running a cell ------------------------------------------------------------------------------------------


def short_read_timeout(mp: pytest.MonkeyPatch, seconds: float) -> None:
    """Every connector gets a vendor client with this read timeout (deployed: VendorHttp's 30 s default)."""
    from connectors import registry
    from core.http import VendorHttp

    real = registry.build

    def build(vendor: str, credentials: Any, http: VendorHttp | None = None, **kwargs: Any) -> Any:
        return real(vendor, credentials, http or VendorHttp(vendor, timeout=(2.0, seconds)), **kwargs)

    mp.setattr(registry, "build", build)


def time_scale(vendors: tuple[str, ...]) -> float:
    """FAST (4 vendor days a second) shrinks Elevate's 5-day wait to about a second. Bloomreach never waits,
    and at FAST its 7-day export deadline would be 1.75 s, less than a couple of workflow retries: alone, it
    runs at one vendor day a second."""
    return 86400.0 if vendors == ("bloomreach",) else FAST


def observed_outcome(summary: dict[str, Any] | None, vendor: str) -> str:
    if summary is None:
        return "?"
    statuses = {o["status"] for o in summary["outcomes"] if o["vendor"] == vendor}
    if statuses == {"completed"}:
        return "S"
    return "F" if "failed" in statuses else "?"


def run_cell(cell_id: str, mp: pytest.MonkeyPatch, capture: Any) -> str:
    """Run and judge one cell; returns the observed outcome, or raises CellFailed."""
    fault, vendor, cell = lookup(cell_id)
    assert cell.outcome != "-", cell.na
    vendors = (vendor,) if cell.outcome == "S" else VENDORS
    request_id = f"dsr-{fault.id.replace('_', '-')}-{vendor}"
    if fault.slow_vendor:
        short_read_timeout(mp, READ_TIMEOUT)
    with contextlib.ExitStack() as stack:
        setup = Setup(vendor, stack)
        if cell.setup:
            cell.setup(setup)
        records = stack.enter_context(log_records(mp))
        cloud, sims = stack.enter_context(
            local_run(time_scale(vendors), vendors=vendors, sim_options=setup.sim_options, creds_override=setup.creds)
        )
        arm = Arm(vendor, cloud, sims, mp, request_id)
        frozen = freeze_archives(sims)
        if cell.arm:
            cell.arm(arm)
        accepted = cloud.submit({"request_id": request_id, "actions": ["export", "erase"], "subject": sample_subject()})
        assert accepted["status"] == "accepted", accepted
        execution = cloud.wait(request_id, timeout=RUN_TIMEOUT, poll=0.05)
        summary = json.loads(execution["output"]) if execution["status"] == "SUCCEEDED" else None
        evidence = gather(arm, execution, summary, frozen)
        observed = observed_outcome(summary, vendor)
        try:
            if cell.check:
                cell.check(arm)
        except AssertionError as exc:
            raise CellFailed(f"the fault did not fire as designed: {exc}", observed) from exc
    evidence["logs"] = capture.text() + "\n".join(records.lines)
    try:
        judge(fault, vendor, cell, evidence)
    except AssertionError as exc:
        raise CellFailed(str(exc), observed) from exc
    return observed


def gather(
    arm: Arm, execution: dict[str, Any], summary: dict[str, Any] | None, frozen: dict[str, bytes]
) -> dict[str, Any]:
    cloud, sims, request_id = arm.cloud, arm.sims, arm.request_id
    s3 = cloud.client("s3")
    versions: dict[str, list[bytes]] = {}
    markers: list[str] = []
    for page in s3.get_paginator("list_object_versions").paginate(
        Bucket=cloud.bucket, Prefix=f"requests/{request_id}/"
    ):
        for version in page.get("Versions", []):
            body = s3.get_object(Bucket=cloud.bucket, Key=version["Key"], VersionId=version["VersionId"])["Body"]
            versions.setdefault(version["Key"], []).append(body.read())
        markers += [m["Key"] for m in page.get("DeleteMarkers", [])]
    served = {
        key: served_bytes(vendor, key.rsplit("/", 1)[-1], sims, frozen)
        for key in versions
        if not is_record(key) and "/package/" not in key  # the access package is ours, not a vendor's
        for vendor in [key.split("/")[2]]
    }
    evidence: dict[str, Any] = {
        "execution": {k: execution.get(k) for k in ("status", "error", "cause")},
        "summary": summary,
        "versions": versions,
        "delete_markers": markers,
        "served": served,
        "uploads": s3.list_multipart_uploads(Bucket=cloud.bucket).get("Uploads", []),
        "history": json.dumps(cloud.history(request_id), default=str),
        "jobs": {name: sim.jobs_created() for name, sim in sims.items()},
        "destructive": {name: len(sim.destructive_calls()) for name, sim in sims.items()},
        "forbidden": forbidden(sims),
        "vendors": sorted(sims),
    }
    if summary is not None:
        evidence["manifest"] = json.loads(cloud.read(f"requests/{request_id}/manifest.json"))
        evidence["kept"] = kept_records(cloud, request_id)
    return evidence


# --- judging ---------------------------------------------------------------------------------------------------


def outcome_of(summary: dict[str, Any], vendor: str, action: str) -> dict[str, Any]:
    found = [o for o in summary["outcomes"] if o["vendor"] == vendor and o["action"] == action]
    assert len(found) == 1, f"{vendor} {action}: {len(found)} outcomes"
    return found[0]


def brief(outcome: dict[str, Any]) -> str:
    keys = ("vendor", "action", "status", "step", "error", "reason", "possible_duplicate", "job_ids")
    return json.dumps({k: outcome.get(k) for k in keys})


def assert_archive(evidence: dict[str, Any], outcome: dict[str, Any]) -> None:
    """A completed export: its one archive is in S3, exactly the bytes the simulator served."""
    where = f"{outcome['vendor']} export"
    assert len(outcome["archives"]) == 1, f"{where}: {len(outcome['archives'])} archives"
    archive = outcome["archives"][0]
    stored = evidence["versions"].get(archive["key"])
    assert stored, f"{where}: {archive['key']} is not in S3"
    served = evidence["served"][archive["key"]]
    assert served is not None, f"{where}: the simulator never served {archive['key']}"
    assert stored[0] == served, f"{where}: S3 holds {len(stored[0])} bytes, not the {len(served)} served"
    assert archive["bytes"] == len(served) and archive["sha256"] == hashlib.sha256(served).hexdigest(), archive


def assert_completed(evidence: dict[str, Any], vendor: str) -> None:
    summary = evidence["summary"]
    for action in ("export", "erase"):
        done = outcome_of(summary, vendor, action)
        assert done["status"] == "completed", f"{vendor} {action} did not complete: {brief(done)}"
    assert_archive(evidence, outcome_of(summary, vendor, "export"))


def judge(fault: Fault, vendor: str, cell: Cell, evidence: dict[str, Any]) -> None:
    """Every property of the cell; the reporting checks (error name, reason wording) come last, so a known
    reporting bug (matrix.Bug) cannot hide a broken invariant."""
    summary = evidence["summary"]
    assert summary is not None, f"the execution did not succeed: {evidence['execution']}"
    assert evidence["manifest"] == summary, "the manifest in S3 is not the execution's output"
    assert json.loads(evidence["kept"][summary["proof_key"]]) == summary, "the proof/ copy differs"

    if cell.outcome == "S":
        assert summary["status"] == "completed", f"expected survived: {[brief(o) for o in summary['outcomes']]}"
        assert_completed(evidence, vendor)
        export = outcome_of(summary, vendor, "export")
        assert export["possible_duplicate"] is cell.duplicate, (
            f"possible_duplicate should be {cell.duplicate}: {brief(export)}"
        )
        assert outcome_of(summary, vendor, "erase")["possible_duplicate"] is False
    else:
        failed = outcome_of(summary, vendor, cell.action)
        assert failed["status"] == "failed", f"expected clearly failed: {brief(failed)}"
        assert failed.get("step") == cell.step, f"step should be {cell.step}: {brief(failed)}"
        assert cell.cause and re.search(cell.cause, failed.get("reason") or ""), (
            f"the reason should name the cause /{cell.cause}/: {brief(failed)}"
        )
        if cell.action == "export":
            assert failed["archives"] == [], brief(failed)
            erase = outcome_of(summary, vendor, "erase")
            assert erase["status"] == "failed" and erase.get("error") == "ErasureWithheld", (
                f"the erase was not withheld: {brief(erase)}"
            )
            assert erase.get("step") == "submit", brief(erase)
            assert evidence["destructive"][vendor] == 0, f"{evidence['destructive'][vendor]} destructive call(s) sent"
        assert summary["status"] == "partially_failed", summary["status"]
        for other in VENDORS:
            if other != vendor:
                assert_completed(evidence, other)

    assert evidence["uploads"] == [], f"open multipart uploads: {[u['Key'] for u in evidence['uploads']]}"
    assert_no_partial_objects(evidence)
    assert_jobs(evidence)
    assert_no_subject_value(evidence)
    assert_reporting(vendor, cell, summary)


def assert_reporting(vendor: str, cell: Cell, summary: dict[str, Any]) -> None:
    """What a DPO reads: every failure names its error and starts "<vendor> <step>:"; the sample subject has
    data at every vendor, so no completed action may say there was none."""
    problems = []
    for o in summary["outcomes"]:
        if o["status"] == "failed":
            faulted = cell.outcome == "F" and o["vendor"] == vendor and o["action"] == cell.action
            if faulted and o.get("error") != cell.error:
                problems.append(f"error is {o.get('error')}, not {cell.error}")
            elif not o.get("error"):
                problems.append(f"{o['vendor']} {o['action']} failed without an error name")
            prefix = f"{o['vendor']} {o.get('step')}:"
            if not (o.get("reason") or "").startswith(prefix):
                problems.append(f"reason does not start '{prefix}': {o.get('reason')!r}")
        elif "no data held" in (o.get("reason") or ""):
            problems.append(
                f"{o['vendor']} {o['action']} says 'no data held' for a subject it holds data of: {brief(o)}"
            )
    assert not problems, "reporting: " + "; ".join(problems)


def assert_no_partial_objects(evidence: dict[str, Any]) -> None:
    listed = {a["key"] for o in evidence["summary"]["outcomes"] for a in o["archives"]}
    package = evidence["summary"].get("package") or {}
    packages = [k for k in evidence["versions"] if "/package/" in k]
    # The access package is there exactly when the manifest records it built.
    assert packages == ([package["key"]] if package.get("status") == "built" else []), (packages, package)
    for key, served in evidence["served"].items():
        assert key in listed, f"{key} is in S3 but in no outcome (a partial or stray object)"
        assert all(body == served for body in evidence["versions"][key]), (
            f"{key} has a version that is not the served bytes"
        )
    stray = [k for k in evidence["delete_markers"] if not is_record(k)]
    assert not stray, f"archive objects deleted after being written: {stray}"


def assert_jobs(evidence: dict[str, Any]) -> None:
    """No more vendor jobs than actions submitted (a withheld erase submitted nothing), plus one per action
    marked possible_duplicate."""
    for vendor in evidence["vendors"]:
        outcomes = [o for o in evidence["summary"]["outcomes"] if o["vendor"] == vendor]
        allowed = sum(
            0 if o.get("error") == "ErasureWithheld" else JOBS[vendor][o["action"]] + int(o["possible_duplicate"])
            for o in outcomes
        )
        assert evidence["jobs"][vendor] <= allowed, (
            f"{vendor}: {evidence['jobs'][vendor]} vendor jobs for {allowed} allowed: {[brief(o) for o in outcomes]}"
        )


def assert_no_subject_value(evidence: dict[str, Any]) -> None:
    texts = {**evidence["kept"], "execution history": evidence["history"], "logs": evidence["logs"]}
    for where, text in texts.items():
        folded = text.casefold()
        for form in evidence["forbidden"]:
            assert form.casefold() not in folded, f"{form!r} found in {where}"


# --- isolation: one cell per call, in this process or in a worker ---------------------------------------------


def run_isolated(cell_id: str, capfd: Any = None) -> Result:
    """Run a cell with its own monkeypatch and log capture; never raises (the result says what failed)."""
    start = time.monotonic()
    observed = "?"
    error = None
    with pytest.MonkeyPatch.context() as mp:
        try:
            if capfd is not None:
                observed = run_cell(cell_id, mp, _Capfd(capfd))
            else:
                with FdCapture() as capture:
                    observed = run_cell(cell_id, mp, capture)
        except CellFailed as exc:
            observed, error = exc.observed, str(exc)
        except BaseException as exc:  # the run broke: show where
            error = "".join(traceback.format_exception(exc)).rstrip()
            if isinstance(exc, KeyboardInterrupt):
                raise
    return Result(cell_id, observed, time.monotonic() - start, error)


class _Capfd:
    def __init__(self, capfd: Any):
        self.capfd = capfd

    def text(self) -> str:
        out, err = self.capfd.readouterr()
        return out + err


def _worker_init() -> None:
    # A fresh interpreter: the same never-real-AWS environment as tests/conftest.py, quiet streams.
    os.environ.update(
        {
            "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "eu-west-1"),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SECURITY_TOKEN": "testing",
            "AWS_SESSION_TOKEN": "testing",
        }
    )
    os.environ.pop("AWS_PROFILE", None)


class Pool:
    """Cells run in `workers` processes, started in the order given; `result` waits for one."""

    def __init__(self, cell_ids: list[str], workers: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self._executor = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init
        )
        self._futures = {cell_id: self._executor.submit(run_isolated, cell_id) for cell_id in cell_ids}

    def __contains__(self, cell_id: str) -> bool:
        return cell_id in self._futures

    def result(self, cell_id: str) -> Result:
        return self._futures[cell_id].result()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
