"""The workflow's task logic, one function per Lambda task; handlers only parse, call and return.

Every function takes a `Runtime` (store, connectors, clock) so tests can run it without Lambda.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

from connectors.base import Action, Connector, Job, JobContext, Progress
from core.archive_store import StoredArchive, store_archive
from core.clock import iso_z, utcnow
from core.errors import DsrError
from core.models import ActionOutcome, ActionTask, ExecutionInput, Manifest, StoredRequest
from core.store import Store, archive_key, manifest_key, outcome_key, proof_key


class ErasureWithheld(DsrError):
    """Erase was asked together with export, and the export did not complete: erasing now would destroy the
    data the subject asked to receive."""


@dataclass
class Runtime:
    store: Store
    connector_for: Callable[[str], Connector]
    now: Callable[[], datetime] = utcnow
    events: Any = None  # boto3 events client, for the completion event
    event_bus_name: str | None = None


# --- the job loop -----------------------------------------------------------------------------------------


def _context(rt: Runtime, request: StoredRequest) -> JobContext:
    return JobContext(
        request_id=request.request_id,
        subject=request.subject,
        justification=request.justification,
        dry_run=request.dry_run,
        now=rt.now(),
    )


def _wait_until(moment: datetime, now: datetime) -> str:
    """The Wait state's TimestampPath: whole seconds, never early.

    Due now: this second (no wait). Later: rounded up, plus one second, because a Wait counts whole seconds
    (moto truncates the remaining time) and at a local time-scale one early wake-up is a vendor day early.
    """
    if moment <= now:
        return iso_z(now)
    whole = moment.replace(microsecond=0) + timedelta(seconds=2 if moment.microsecond else 1)
    return iso_z(whole)


def _with_job(task: ActionTask, job: Job, progress: Progress | None, now: datetime) -> dict[str, Any]:
    out = task.model_copy(update={"job": job, "progress": progress}).model_dump(mode="json")
    out["wait_until"] = _wait_until(job.next_check_at, now)
    return out


def submit(task: ActionTask, rt: Runtime) -> dict[str, Any]:
    request = rt.store.load_request(task.request_id)
    if task.action == Action.ERASE and Action.EXPORT in task.actions:
        export = rt.store.get_json(outcome_key(task.request_id, task.vendor, Action.EXPORT.value))
        if not export or export.get("status") != "completed":
            raise ErasureWithheld(
                f"{task.vendor}: erase withheld because the export for this request did not complete; "
                f"erasing first would destroy the data the subject asked for. Fix the export, then re-run"
            )
    connector = rt.connector_for(task.vendor)
    ctx = _context(rt, request)
    job = connector.start(task.action, request.subject, ctx)
    return _with_job(task, job, None, ctx.now)


def check(task: ActionTask, rt: Runtime) -> dict[str, Any]:
    assert task.job is not None, "check needs the submitted job"
    request = rt.store.load_request(task.request_id)
    ctx = _context(rt, request)
    job = task.job.model_copy(update={"checks": task.job.checks + 1})
    # Deadlines are the connector's call: a job that finished late is still collected.
    progress = rt.connector_for(task.vendor).check(job, ctx)
    if progress.status in ("pending", "needs_approval"):
        next_at = progress.next_check_at or ctx.now
        job = job.model_copy(update={"next_check_at": max(next_at, ctx.now)})
    return _with_job(task, job, progress, ctx.now)


def collect(task: ActionTask, rt: Runtime) -> dict[str, Any]:
    assert task.job is not None, "collect needs the finished job"
    request = rt.store.load_request(task.request_id)
    ctx = _context(rt, request)
    archives = rt.connector_for(task.vendor).fetch(task.job, ctx)
    stored: list[StoredArchive] = []
    try:
        for archive in archives:
            key = archive_key(task.request_id, task.vendor, task.action.value, archive.name)
            stored.append(store_archive(rt.store.s3, rt.store.bucket, key, rt.store.kms_key_id, archive))
    finally:
        for archive in archives:  # release any connection a failure left open
            archive.close()
    outcome = ActionOutcome(
        vendor=task.vendor,
        action=task.action,
        status="completed",
        job_id=task.job.job_id,
        reason=task.progress.reason if task.progress else None,
        archives=stored,
        submitted_at=task.job.submitted_at,
        completed_at=rt.now(),
        checks=task.job.checks,
    )
    payload = outcome.model_dump(mode="json")
    rt.store.put_json(outcome_key(task.request_id, task.vendor, task.action.value), payload)
    return payload


# --- finalize ---------------------------------------------------------------------------------------------


def failure_reason(error: dict[str, Any] | None) -> tuple[str | None, str]:
    """(error name, message) from a Catch's {"Error", "Cause"}; a Lambda error's Cause is its JSON payload."""
    if not error:
        return None, "failed without a recorded reason"
    name = error.get("Error")
    cause = error.get("Cause") or ""
    try:
        parsed = json.loads(cause)
    except (TypeError, ValueError):
        parsed = None
    if isinstance(parsed, dict) and parsed.get("errorMessage"):
        return parsed.get("errorType") or name, str(parsed["errorMessage"])
    return name, cause or f"{name} without a message"


def _outcome(raw: dict[str, Any]) -> ActionOutcome:
    if raw.get("status") == "failed" and raw.get("error") is not None and not isinstance(raw["error"], str):
        name, message = failure_reason(raw["error"])
        raw = {**raw, "error": name, "reason": raw.get("reason") or message}
    return ActionOutcome.model_validate(raw)


def finalize(payload: dict[str, Any], rt: Runtime) -> dict[str, Any]:
    execution = ExecutionInput.model_validate(payload)
    outcomes = [_outcome(r) for vendor_results in payload.get("results", []) for r in vendor_results]
    outcomes += [
        ActionOutcome(vendor=s.vendor, action=s.action, status="skipped", reason=s.reason) for s in execution.skipped
    ]
    outcomes.sort(key=lambda o: (o.vendor, 0 if o.action == Action.EXPORT else 1))
    counts = {k: sum(1 for o in outcomes if o.status == k) for k in ("completed", "failed", "skipped")}
    if outcomes and counts["completed"] == len(outcomes):
        status = "completed"
    elif counts["completed"] == 0:
        status = "failed"
    else:
        status = "partially_failed"
    finished = rt.now()
    manifest = Manifest(
        request_id=execution.request_id,
        status=status,
        received_at=execution.received_at,
        deadline=execution.deadline,
        finished_at=finished,
        within_deadline=finished <= execution.deadline,
        counts=counts,
        outcomes=outcomes,
        manifest_key=manifest_key(execution.request_id),
        proof_key=proof_key(execution.request_id),
    )
    rt.store.put_manifest(manifest)
    if rt.events is not None and rt.event_bus_name:
        rt.events.put_events(
            Entries=[
                {
                    "Source": "dsrflow",
                    "DetailType": "Data Subject Request Completed",
                    "EventBusName": rt.event_bus_name,
                    "Detail": json.dumps(
                        {
                            "request_id": manifest.request_id,
                            "status": manifest.status,
                            "counts": manifest.counts,
                            "manifest": {"bucket": rt.store.bucket, "key": manifest.manifest_key},
                        }
                    ),
                }
            ]
        )
    return manifest.summary()


__all__ = ["Runtime", "submit", "check", "collect", "finalize", "ErasureWithheld"]
