"""The workflow's task logic, one function per Lambda task; handlers only parse, call and return.

Every function takes a `Runtime` (store, connectors, clock) so tests can run it without Lambda.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from core import vendor_said
from core.archive_store import StoredArchive, store_archive
from core.callbacks import Callbacks
from core.clock import iso_z, utcnow
from core.domain import MIN_REAL_DEADLINE, Action, Connector, Job, JobContext, Progress, Schedule
from core.errors import (
    MESSAGE_LIMIT,
    ApprovalTimedOut,
    ConfigError,
    DeadlineUnreachable,
    DsrError,
    SubmissionUncertain,
    VendorError,
    VendorTransientError,
    cap,
)
from core.events import emit
from core.ledger import Ledger
from core.limits import MAX_PACE_WAITS, Limits, VendorBusy, holder_of
from core.models import (
    OUTCOME_STATUSES,
    ActionOutcome,
    ApprovalWait,
    AttemptOutcome,
    ExecutionInput,
    Manifest,
    PackageRef,
    Queued,
    StepState,
    StoredRequest,
)
from core.safe import holds_subject, safe_id, safe_word, scrub, subject_values
from core.store import Store, archive_key, manifest_key, outcome_key, proof_key, submission_key
from core.store import prefix as request_prefix

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient


log = logging.getLogger(__name__)


class ErasureWithheld(DsrError):
    """Erase was asked together with export, and the export did not complete: erasing now would destroy the
    data the subject asked to receive."""


@dataclass
class Runtime:
    store: Store
    connector_for: Callable[[str], Connector]
    now: Callable[[], datetime] = utcnow
    events: EventBridgeClient | None = None  # for the completion event
    event_bus_name: str | None = None
    ledger: Ledger | None = None  # the request ledger (core/ledger.py); None where LEDGER_TABLE is unset
    limits: Limits | None = None  # per-vendor limits across executions (core/limits.py); None: unlimited
    callbacks: Callbacks | None = None  # vendor callbacks (core/callbacks.py); None: every job is polled
    callback_base_url: str | None = None  # <API>/callbacks/: the route a vendor calls (CALLBACK_BASE_URL)


# --- the job loop -----------------------------------------------------------------------------------------
#
# Premises checked before anything destructive reaches a vendor (DESIGN: "destroying safely"):
# - a dry run never starts a destructive action the vendor cannot itself run as a test: `dry_run()` plans it
#   with read-only calls, and the connector's HTTP client refuses any call marked destructive anyway;
# - an erase asked with an export runs only when that export's outcome is `completed`, which collect
#   writes only after every archive was verified (core/verify.py) and stored;
# - a job-creating call is made at most twice per action: the intent is recorded before the call
#   (submission.json) and a retry reconciles with it.
#
# What the vendor said that is not allow-listed (error bodies, odd status words) is kept only in the
# request's private vendor-said objects (core/vendor_said.py); every record returned here goes through the
# subject backstop (core/safe.scrub).

STEP_NAMES = ("submit", "check", "collect")


def _context(rt: Runtime, request: StoredRequest) -> JobContext:
    return JobContext(
        request_id=request.request_id,
        subject=request.subject,
        justification=request.justification,
        dry_run=request.dry_run,
        now=rt.now(),
    )


def _connector(rt: Runtime, vendor: str, request: StoredRequest, *, pace_wait: float = 0.0) -> Connector:
    connector = rt.connector_for(vendor)
    http = getattr(connector, "http", None)
    if http is not None:
        # The second lock on the door: even a connector bug cannot send a destructive call in a dry run.
        http.dry_run = request.dry_run
        limits = rt.limits
        if limits is not None and limits.paced(vendor):
            # Every call to this vendor waits its turn in the pace shared by all executions (core/limits.py).
            http.pace = lambda: limits.pace(vendor, _pace_wait(pace_wait))
    return connector


PACE_WAIT = 20.0  # seconds a submit or check may sleep for its turn in a vendor's pace; then it waits in the workflow
COLLECT_PACE_WAIT = 300.0
PACE_RETRY = timedelta(seconds=15)  # real time before a paced-out submit tries again, doubling each time
PACE_RETRY_MAX = timedelta(minutes=15)


def _pace_wait(wanted: float) -> float:
    """What a call may sleep for its turn: `wanted`, but never into the invocation's last minute."""
    from core.http import remaining_seconds

    left = remaining_seconds()
    return wanted if left is None else max(min(wanted, left - 60.0), 0.0)


def _holder(task: StepState) -> str:
    return holder_of(task.request_id, task.attempt, task.action.value)


def _release(rt: Runtime, task: StepState) -> None:
    _release_slot(rt, task.vendor, _holder(task))


def _release_slot(rt: Runtime, vendor: str, holder: str) -> None:
    """Give a vendor slot back (a no-op without a limit); never fails the step: a slot not given back expires
    with its lease."""
    if rt.limits is None or rt.limits.jobs(vendor) is None:
        return
    try:
        rt.limits.release(vendor, holder)
    except Exception as exc:
        log.warning("vendor slot not released", extra={"error": type(exc).__name__, "vendor": vendor})


def _wait_until(moment: datetime, now: datetime) -> str:
    """The Wait state's TimestampPath: whole seconds, never early.

    Due now: this second (no wait). Later: rounded up, plus one second, because a Wait counts whole seconds
    (moto truncates the remaining time) and at a local time-scale one early wake-up is a vendor day early.
    """
    if moment <= now:
        return iso_z(now)
    whole = moment.replace(microsecond=0) + timedelta(seconds=2 if moment.microsecond else 1)
    return iso_z(whole)


CALLBACK = "callback"  # Job.state: the id of the job's callback item (core/callbacks.py)
CALLBACK_FALLBACK = timedelta(hours=6)  # vendor time between looks while a callback is awaited (the fallback)


def _callback_look(job: Job, at: datetime, now: datetime) -> datetime:
    """A callback-awaited job's next look: its schedule's, but no sooner than the fallback interval."""
    from core.clock import scaled

    return max(at, min(now + scaled(CALLBACK_FALLBACK), max(job.deadline_at, now)))


def _with_job(
    task: StepState, job: Job, progress: Progress | None, now: datetime, request: StoredRequest
) -> dict[str, Any]:
    import math

    awaits = isinstance(job.state.get(CALLBACK), str) and (
        progress is None or progress.status in ("pending", "needs_approval")
    )
    next_at = _wait_until(job.next_check_at, now)
    seconds = (datetime.fromisoformat(next_at) - now).total_seconds()
    state = task.model_copy(
        update={
            "job": job,
            "progress": progress,
            "next_check_at": next_at,
            "queued": None,
            "wait_on": "callback" if awaits else None,
            "wait_seconds": max(math.ceil(seconds), 1) if awaits else None,
        }
    )
    return scrub(state.model_dump(mode="json"), subject_values(request.subject), where="task output")


@contextmanager
def _vendor_words(rt: Runtime, task: StepState, step: str, ctx: JobContext) -> Iterator[None]:
    """Keep what the vendor said during this step privately, on success and on failure; on failure, point
    the error's message at the kept object and run the message through the subject backstop."""
    try:
        yield
    except DsrError as exc:
        said = list(ctx.vendor_said) + ([(type(exc).__name__, exc.detail)] if exc.detail else [])
        key = vendor_said.keep(rt.store, task.request_id, task.vendor, task.action.value, step, said)
        message = scrub(exc.message, subject_values(ctx.subject), where=f"{step} error")
        if key:
            message = f"{message} (the vendor's words are kept in {key})"
        exc.with_message(message)
        raise
    else:
        vendor_said.keep(rt.store, task.request_id, task.vendor, task.action.value, step, ctx.vendor_said)


def _recorded(rt: Runtime, task: StepState, event: str, out: dict[str, Any], request: StoredRequest) -> dict[str, Any]:
    """`out` unchanged, after its step went to the ledger (which never raises: core/ledger.py)."""
    if rt.ledger is None:
        return out
    try:
        job = out.get("job") or {}
        progress = out.get("progress") or {}
        status = progress.get("status")
        next_at = job.get("next_check_at") if event == "submitted" or status in ("pending", "needs_approval") else None
        rt.ledger.action(
            task.request_id,
            task.vendor,
            task.action.value,
            out.get("status", event) if event == "collected" else event,
            job_id=job.get("job_id") or out.get("job_id"),
            vendor_status=progress.get("vendor_status"),
            next_check_at=datetime.fromisoformat(next_at) if isinstance(next_at, str) else None,
            outcome=status,
            reason=_reason_of(event, out, progress),
            error=progress.get("error"),
            subject=request.subject,
        )
    except Exception as exc:  # the ledger is a view: the step's result goes back to the workflow regardless
        log.warning("ledger record failed", extra={"error": type(exc).__name__})
    return out


def _reason_of(event: str, out: dict[str, Any], progress: dict[str, Any]) -> str | None:
    """The step's allow-listed reason: a check's progress, a collect's outcome; a submit has none."""
    if event == "checked":
        return progress.get("reason")
    if event == "collected":
        return out.get("reason")
    return None


def _destructive(action: Action) -> bool:
    return action is Action.ERASE


def _require_verified_export(rt: Runtime, task: StepState) -> None:
    if task.action is not Action.ERASE or Action.EXPORT not in task.actions:
        return
    export = rt.store.get_json(outcome_key(task.request_id, task.vendor, Action.EXPORT.value))
    if not export or export.get("status") != "completed":
        raise ErasureWithheld(
            f"{task.vendor}: erase withheld because the export for this request did not complete with a "
            "verified archive; erasing first would destroy the data the subject asked for. Fix the export, "
            "then re-run"
        )


# --- at most one more vendor job per action ---------------------------------------------------------------


class _Submissions:
    """requests/{id}/{vendor}/{action}/submission.json: every attempt to start the vendor job, recorded
    before the call. An attempt left `started` (the function died) or `uncertain` (the vendor may have acted
    without answering) counts against the limit of one more job."""

    UNSETTLED = ("started", "uncertain")

    def __init__(self, rt: Runtime, task: StepState):
        self.rt = rt
        self.key = submission_key(task.request_id, task.vendor, task.action.value, task.attempt)
        raw = rt.store.get_json(self.key) or {}
        self.attempts: list[dict[str, Any]] = list(raw.get("attempts") or [])

    def created(self) -> Job | None:
        """The job an earlier attempt created and recorded (its function died, or its answer to the
        workflow was lost, after the vendor answered): reuse it, make no new call."""
        for attempt in reversed(self.attempts):
            if attempt.get("outcome") == "created" and attempt.get("job"):
                return Job.model_validate(attempt["job"])
        return None

    def unsettled(self) -> int:
        return sum(1 for a in self.attempts if a.get("outcome") in self.UNSETTLED)

    def begin(self, now: datetime) -> None:
        self.attempts.append({"at": now.isoformat(), "outcome": "started"})
        self._save(required=True)

    def end(self, outcome: str, job: Job | None = None) -> None:
        self.attempts[-1]["outcome"] = outcome
        if job is not None:
            self.attempts[-1]["job"] = job.model_dump(mode="json")
            self.attempts[-1]["job_id"] = job.job_id
        self._save(required=False)

    def job_ids(self) -> list[str]:
        return [a["job_id"] for a in self.attempts if a.get("job_id")]

    def _save(self, required: bool) -> None:
        try:
            self.rt.store.put_json(self.key, {"attempts": self.attempts})
        except DsrError:
            # Before the call: no record, no call (the error is retried by the workflow). After it: the job
            # still goes back to the workflow, which holds it from then on; only a later retry of this same
            # submit would miss it, and that is what the unsettled count guards.
            if required:
                raise


def _uncertain(exc: BaseException) -> bool:
    """Could the vendor have acted although the call failed?"""
    if isinstance(exc, DsrError) and exc.acted:
        return True  # it created a job we cannot track (an unusable id): counts against the limit
    if isinstance(exc, VendorTransientError):
        return bool(getattr(exc, "ambiguous", False))
    # A refusal the vendor answered (4xx, bad credentials, bad config, a dry-run refusal) acted on nothing.
    return not isinstance(exc, DsrError)


# --- vendor jobs within the request's deadline ---------------------------------------------------------------
#
# Every vendor job ends by the request's GDPR deadline (extension included), whatever the connector's own
# deadline says: Qualifio's 20-day export and 20-day erase could otherwise run to day 40. An export that an
# erase follows ends earlier, by the erase's earliest completion (its connector's first look), so that the
# erase can still finish in time. The cap is set at submit, in real time as every vendor duration is (at a
# local time scale the vendor time left is shrunk like the schedules), and moved on at each check when the
# deadline was extended meanwhile. A job whose vendor cannot finish before its cap (the connector's first
# look already falls after it) is not submitted at all: DeadlineUnreachable, with the dates. A late retry
# (the deadline has passed; the operator chose to act late) keeps the connector's own deadline.
CAPPED = "capped_at"  # Job.state: the request deadline the cap was computed from (ISO)


def _reserve(task: StepState, schedule: Schedule) -> timedelta:
    """Vendor time an export leaves for the erase that follows it (none when no erase follows)."""
    return schedule.first_check if task.action == Action.EXPORT and Action.ERASE in task.actions else timedelta(0)


def _cap(task: StepState, schedule: Schedule, deadline: datetime, now: datetime) -> datetime | None:
    """When the job must end at the latest, in real time; None when the request's deadline has passed."""
    from core.clock import scaled

    left = deadline - _reserve(task, schedule) - now  # vendor time
    if deadline <= now:
        return None
    return now + scaled(max(left, timedelta(0)))


def _ensure_reachable(task: StepState, connector: Connector, deadline: datetime, now: datetime) -> None:
    from core.clock import scaled

    cap = _cap(task, connector.schedule, deadline, now)
    earliest = now + scaled(connector.schedule.first_check)
    if cap is not None and earliest > cap:
        then = "its erase" if _reserve(task, connector.schedule) else "the request's deadline"
        raise DeadlineUnreachable(
            f"{task.vendor}: the {task.action.value} cannot finish before {then}: {task.vendor} gives its first "
            f"results {connector.schedule.first_check} after submission, and the request's deadline is "
            f"{iso_z(deadline)}; nothing was submitted. Extend the deadline, then retry the request"
        )


def _capped(task: StepState, job: Job, schedule: Schedule, deadline: datetime, now: datetime) -> Job:
    """The job with its deadline capped by the request's (see above); a job capped before keeps its cap and
    moves it by any extension granted since."""
    from core.clock import scaled

    basis = job.state.get(CAPPED)
    if isinstance(basis, str):
        moved = deadline - datetime.fromisoformat(basis)
        if moved <= timedelta(0):
            return job
        own = schedule.deadline_at(job.submitted_at)
        capped = min(own, job.deadline_at + scaled(moved))
    else:
        cap = _cap(task, schedule, deadline, now)
        if cap is None or cap >= job.deadline_at:
            return job
        capped = max(cap, now + MIN_REAL_DEADLINE)  # never shorter than a real step (see core.domain)
    state = {**job.state, CAPPED: iso_z(deadline)}
    return job.model_copy(
        update={"deadline_at": capped, "state": state, "next_check_at": min(job.next_check_at, capped)}
    )


def submit(task: StepState, rt: Runtime) -> dict[str, Any]:
    request = rt.store.load_request(task.request_id)
    _require_verified_export(rt, task)
    connector = _connector(rt, task.vendor, request, pace_wait=PACE_WAIT)
    ctx = _context(rt, request)
    with _vendor_words(rt, task, "submit", ctx):
        if request.dry_run and _destructive(task.action) and task.action not in connector.native_dry_run:
            plan = connector.dry_run(task.action, request.subject, ctx)
            job = Job(
                vendor=task.vendor,
                action=task.action,
                submitted_at=ctx.now,
                next_check_at=ctx.now,
                deadline_at=ctx.now + timedelta(days=1),
                state={"planned": True, "call": plan.call, "verified": plan.verified, "found": plan.subject_found},
            )
            return _recorded(rt, task, "submitted", _with_job(task, job, None, ctx.now, request), request)

        record = _Submissions(rt, task)
        earlier = record.created()
        if earlier is not None:
            return _recorded(rt, task, "submitted", _with_job(task, earlier, None, ctx.now, request), request)
        if record.unsettled() >= 2:
            raise SubmissionUncertain(
                f"{task.vendor}: {task.action.value} was submitted twice without a usable answer (the vendor "
                "may have created the job each time); no third job is created. Check the vendor's console "
                "for jobs of this request, then re-run if there is none"
            )
        deadline, _ = _deadline(rt, task.request_id, fallback=task.deadline or request.deadline)
        _ensure_reachable(task, connector, deadline, ctx.now)  # before anything is sent
        if rt.limits is not None and not rt.limits.acquire(
            task.vendor, _holder(task), connector.schedule.deadline_at(ctx.now)
        ):
            return _queued(rt, task, request, "slot", ctx.now, connector, deadline)
        possible_duplicate = record.unsettled() > 0
        ctx.after_uncertain_attempt = possible_duplicate
        callback_id = _callback_for(rt, task, connector, ctx)
        record.begin(ctx.now)
        try:
            job = connector.submit(task.action, request.subject, ctx)
        except VendorBusy as exc:
            # Our own pace refused a call before it was sent: nothing acted; wait in the workflow, not here.
            record.end("not_acted")
            _release(rt, task)
            if task.queued is not None and task.queued.on == "pace" and task.queued.waits >= MAX_PACE_WAITS:
                exc.with_message(
                    f"{exc.message}; it waited {MAX_PACE_WAITS} times since {iso_z(task.queued.since)}: raise the "
                    f"callsPerSecond limit for {task.vendor} (vendorLimits), then retry the request"
                )
                raise
            return _queued(rt, task, request, "pace", ctx.now, connector, deadline)
        except BaseException as exc:
            uncertain = _uncertain(exc)
            record.end("uncertain" if uncertain else "not_acted")
            if not uncertain:
                _release(rt, task)  # no job was created: the slot is free for another request
            raise
        if job.job_id is not None and (
            safe_id(job.job_id, connector.job_id_pattern) is None or holds_subject(job.job_id, request.subject)
        ):
            # The connector validates its ids; this is the task layer's own check of what enters the history.
            record.end("uncertain")
            raise VendorError(task.vendor, "answered a job id that is not in its documented format", acted=True)
        if possible_duplicate:
            job = job.model_copy(update={"state": {**job.state, "possible_duplicate": True}})
        job = _capped(task, job, connector.schedule, deadline, ctx.now)
        if callback_id is not None and job.job_id is not None and job.next_check_at > ctx.now:
            # The vendor calls back when done: the branch waits for that, and looks only at the fallback interval.
            look = _callback_look(job, job.next_check_at, ctx.now)
            job = job.model_copy(update={"state": {**job.state, CALLBACK: callback_id}, "next_check_at": look})
        record.end("created", job)
    return _recorded(rt, task, "submitted", _with_job(task, job, None, ctx.now, request), request)


def _callback_for(rt: Runtime, task: StepState, connector: Connector, ctx: JobContext) -> str | None:
    """Mint the job's callback token and put its URL in the context, where the vendor offers callbacks for
    this action and the deployment has the route; returns the callback item's id (None: polled only)."""
    from core import callbacks

    if rt.callbacks is None or not rt.callback_base_url or task.action not in getattr(connector, "callbacks", ()):
        return None
    token = callbacks.mint()
    callback_id = rt.callbacks.register(
        token,
        request_id=task.request_id,
        vendor=task.vendor,
        action=task.action.value,
        attempt=task.attempt,
        until=connector.schedule.deadline_at(ctx.now),
    )
    ctx.callback_url = rt.callback_base_url.rstrip("/") + "/" + token
    return callback_id


def await_callback(task: StepState, rt: Runtime, *, token: str | None) -> dict[str, Any]:
    """ "Await the vendor's callback" (`.waitForTaskToken`): keep the token on the job's callback item; a
    callback that came already wakes the branch now. The wait's timeout is the polling fallback."""
    callback_id = task.job.state.get(CALLBACK) if task.job else None
    if token is None or rt.callbacks is None or not isinstance(callback_id, str):
        raise ConfigError("dsrflow", "await_callback", "needs a task token, a job with a callback and LEDGER_TABLE")
    return {"woken": rt.callbacks.park(callback_id, token)}


def _queued(
    rt: Runtime,
    task: StepState,
    request: StoredRequest,
    on: Literal["slot", "pace"],
    now: datetime,
    connector: Connector,
    deadline: datetime,
) -> dict[str, Any]:
    """Submit's answer when our own per-vendor limit holds the job back: nothing was sent. On a slot, the branch
    parks until the slot handed to it wakes it, or at the latest until its job could no longer finish in time
    (then submit answers DeadlineUnreachable); on the pace, it looks again shortly."""
    import math

    from core.clock import scaled

    earlier = task.queued
    until = connector.schedule.deadline_at(now)
    queued = Queued(
        on=on, since=earlier.since if earlier else now, waits=earlier.waits + 1 if earlier else 1, until=until
    )
    if on == "slot":
        cap = _cap(task, connector.schedule, deadline, now)  # None: a late retry, bounded by its own deadline
        latest = (cap if cap is not None else until) - scaled(connector.schedule.first_check)
        wait = max(latest - now, timedelta(seconds=1))
    else:
        wait = min(PACE_RETRY * 2 ** (queued.waits - 1), PACE_RETRY_MAX)
    state = task.model_copy(
        update={
            "job": None,
            "progress": None,
            "queued": queued,
            "wait_on": on,
            "next_check_at": _wait_until(now + wait, now),
            "wait_seconds": max(math.ceil(wait.total_seconds()), 1),
        }
    )
    out = scrub(state.model_dump(mode="json"), subject_values(request.subject), where="task output")
    if queued.waits == 1 and rt.ledger is not None:
        limit = rt.limits.limits.get(task.vendor) if rt.limits else None
        what = (
            f"waiting for a free {task.vendor} slot: at most {limit.jobs} {task.vendor} jobs run at once"
            if on == "slot" and limit and limit.jobs
            else f"waiting for its turn in the {task.vendor} call rate"
        )
        try:
            rt.ledger.action(task.request_id, task.vendor, task.action.value, "waiting", reason=what)
        except Exception as exc:  # the ledger is a view (see _recorded)
            log.warning("ledger record failed", extra={"error": type(exc).__name__})
    return out


def park(task: StepState, rt: Runtime, *, token: str | None) -> dict[str, Any]:
    """ "Wait for a vendor slot" (`.waitForTaskToken`): keep the token where a freed slot wakes it. What it
    returns is ignored; the branch resumes on the wake-up or after `wait_seconds`."""
    if token is None or rt.limits is None:
        raise ConfigError("dsrflow", "park", "needs a task token and the ledger table (LEDGER_TABLE)")
    if task.queued is None:
        raise ConfigError("dsrflow", "park", "needs the queued state submit answered")
    rt.limits.park(task.vendor, _holder(task), token, since=task.queued.since, until=task.queued.until)
    return {"parked": True}


def check(task: StepState, rt: Runtime) -> dict[str, Any]:
    assert task.job is not None, "check needs the submitted job"
    request = rt.store.load_request(task.request_id)
    ctx = _context(rt, request)
    job = task.job.model_copy(update={"checks": task.job.checks + 1})
    if job.state.get("planned"):
        # A dry run's planned action: nothing was submitted, so there is nothing to ask the vendor.
        ready = Progress.ready("dry run: nothing was sent to the vendor")
        return _recorded(rt, task, "checked", _with_job(task, job, ready, ctx.now, request), request)
    connector = _connector(rt, task.vendor, request, pace_wait=PACE_WAIT)
    if isinstance(job.state.get(CAPPED), str):  # an extension granted since submit moves the cap on
        deadline, _ = _deadline(rt, task.request_id, fallback=task.deadline or request.deadline)
        job = _capped(task, job, connector.schedule, deadline, ctx.now)
    with _vendor_words(rt, task, "check", ctx):
        # Deadlines are the connector's call: a job that finished late is still collected.
        try:
            progress = connector.check(judged_when_due(job, ctx.now), ctx)
        except VendorBusy:
            # Our own pace: nothing was asked; look again at the schedule's next look (a check is read-only, so it
            # is safe to repeat, and the job is never looked at more often than its Schedule allows).
            later = max(ctx.now + PACE_RETRY, connector.schedule.next_check_at(job, ctx.now))
            busy = Progress.pending(later, f"waiting for its turn in the {task.vendor} call rate")
            return _with_job(task, job.model_copy(update={"next_check_at": later}), busy, ctx.now, request)
        word = safe_word(progress.vendor_status, connector.statuses)
        if word is None and progress.vendor_status is not None:
            ctx.note("status word outside the documented vocabulary", progress.vendor_status)
    progress = progress.model_copy(update={"vendor_status": word})
    if progress.status in ("ready", "failed"):
        _release(rt, task)  # the vendor's job has ended: its slot goes to the next request waiting
    if progress.status == "failed":
        # Recorded as it stands by the ASL ("Record vendor failure"): give it the error name and the
        # "<vendor> <step>:" opening every other failure has.
        own = (progress.reason or "the vendor reported the job failed").removeprefix(f"{task.vendor}: ")
        error = progress.error or "VendorError"
        if error == "DeadlineExceeded" and isinstance(job.state.get(CAPPED), str):
            own += "; the job's deadline was the request's GDPR deadline: extend it, then retry the request"
        progress = progress.model_copy(update={"reason": f"{task.vendor} check: {own}", "error": error})
    if progress.status in ("pending", "needs_approval"):
        # Never past the job's own deadline (the connector saw the deadline judged_when_due moved): a look
        # that was due in time but ran late is followed at once by one judged at the real time.
        next_at = max(min(progress.next_check_at or ctx.now, job.deadline_at), ctx.now)
        if isinstance(job.state.get(CALLBACK), str):
            next_at = _callback_look(job, next_at, ctx.now)
        job = job.model_copy(update={"next_check_at": next_at})
    return _recorded(rt, task, "checked", _with_job(task, job, progress, ctx.now, request), request)


def judged_when_due(job: Job, now: datetime) -> Job:
    """The job as the connector judges it at `now`: a look its schedule placed before the deadline is judged
    at the time it was placed for, however late it runs.

    The connectors fail a job that is unfinished past its deadline (`ctx.now > job.deadline_at`). What a
    vendor says is read at `now` (a status that was pending at the due time may be done since: it is
    collected), but the lateness between the due time (`job.next_check_at`, what the Wait state waited for)
    and `now` is the workflow's, not the vendor's: a look due before the deadline is not failed for it. The
    deadline is moved on by that lateness for this one judgement, never stored (the job keeps its own), and
    `check` puts the next look no later than the real deadline, so a vendor still pending there is failed at
    the next look. The look placed at the deadline itself is judged at `now`, as before.

    On AWS the lateness is the Wait's rounding to whole seconds and the Task's retries. Locally it is the
    engine being busy: at 86,400x a vendor week is 7 real seconds, and with 200 requests at once a step can
    wait longer than that for the CPU (docs/LIMITS.md, "Deadlines at a local time scale").
    """
    due = job.next_check_at
    if not (due < job.deadline_at < now):
        return job
    return job.model_copy(update={"deadline_at": job.deadline_at + (now - due)})


def _archive_prefix(task: StepState) -> str:
    return f"{request_prefix(task.request_id)}{task.vendor}/{task.action.value}/"


def _already_stored(rt: Runtime, task: StepState) -> list[StoredArchive]:
    """Archives a previous attempt of this collect stored before it failed to record its outcome. Reused
    (re-hashed and re-verified from S3) instead of downloading again: Elevate's download is single-shot."""
    from core.archive_store import rehash_stored

    found: list[StoredArchive] = []
    for key in rt.store.list_keys(_archive_prefix(task)):
        rest = key[len(_archive_prefix(task)) :]
        if "/" in rest or rest == "outcome.json" or (rest.startswith("submission") and rest.endswith(".json")):
            continue  # vendor-said/ objects and our own records are not archives
        name = rest
        kind = "zip" if name.endswith(".zip") else "json" if name.endswith(".json") else "bytes"
        content_type = "application/zip" if kind == "zip" else "application/json" if kind == "json" else ""
        stored = rehash_stored(rt.store.s3, rt.store.bucket, key, name, content_type, kind)
        if stored is not None:
            found.append(stored)
    return found


def collect(task: StepState, rt: Runtime) -> dict[str, Any]:
    assert task.job is not None, "collect needs the finished job"
    request = rt.store.load_request(task.request_id)
    ctx = _context(rt, request)
    key = outcome_key(task.request_id, task.vendor, task.action.value)
    recorded: dict[str, Any] | None = rt.store.get_json(key)
    if recorded and recorded.get("status") in ("completed", "planned"):
        # A retried collect whose first run wrote its outcome: nothing to do again (the ledger write is repeated).
        return _recorded(rt, task, "collected", recorded, request)

    job = task.job
    common: dict[str, Any] = {
        "vendor": task.vendor,
        "action": task.action,
        "job_id": job.job_id,
        "submitted_at": job.submitted_at,
        "completed_at": rt.now(),
        "checks": job.checks,
        "possible_duplicate": bool(job.state.get("possible_duplicate")),
        "attempt": task.attempt,
        "approved_by": task.approval.by if task.approval else None,
        "approved_at": task.approval.at if task.approval else None,
    }
    if job.state.get("possible_duplicate"):
        common["job_ids"] = _Submissions(rt, task).job_ids()
    if job.state.get("planned") or (request.dry_run and _destructive(task.action)):
        outcome = ActionOutcome(status="planned", **common, **_planned(task, job))
    else:
        stored = _already_stored(rt, task)
        if not stored:
            # A download may wait longer for its turn (collect has minutes); VendorBusy is retried by the workflow.
            connector = _connector(rt, task.vendor, request, pace_wait=COLLECT_PACE_WAIT)
            with _vendor_words(rt, task, "collect", ctx):
                stored = _fetch_and_store(rt, task, connector, job, ctx)
        outcome = ActionOutcome(
            status="completed",
            reason=task.progress.reason if task.progress else None,
            archives=stored,
            **common,
        )
    payload = scrub(outcome.model_dump(mode="json"), subject_values(request.subject), where="outcome")
    rt.store.put_json(key, payload)  # retried inside the store; StoreUnavailable is retried by the workflow
    return _recorded(rt, task, "collected", payload, request)


def _planned(task: StepState, job: Job) -> dict[str, Any]:
    if job.state.get("planned"):
        found = job.state.get("found")
        return {
            "planned_call": job.state.get("call"),
            "reason": f"dry run: {job.state.get('verified')}; nothing destructive was sent"
            + ("" if found is not False else " (and the vendor holds no data for this subject)"),
        }
    # The vendor ran the destructive action itself as a test (Qualifio: a `test: true` rule).
    return {
        "reason": f"dry run: {task.vendor} ran the {task.action.value} as a test that changes nothing"
        + (f"; {task.progress.reason}" if task.progress and task.progress.reason else ""),
    }


def _fetch_and_store(
    rt: Runtime, task: StepState, connector: Connector, job: Job, ctx: JobContext
) -> list[StoredArchive]:
    archives = connector.collect(job, ctx)
    stored: list[StoredArchive] = []
    try:
        for archive in archives:
            key = archive_key(task.request_id, task.vendor, task.action.value, archive.name)
            stored.append(store_archive(rt.store.s3, rt.store.bucket, key, rt.store.kms_key_id, archive))
    finally:
        for archive in archives:  # release any connection a failure left open
            archive.close()
    return stored


# --- finalize ---------------------------------------------------------------------------------------------


# Errors raised by AWS itself, by name: a fixed explanation each (their Cause is AWS's text, not ours).
AWS_ERRORS = {
    "Sandbox.Timedout": "the task function ran out of time",
    "Lambda.Unknown": "the task function ended abnormally (out of time or memory)",
    "Lambda.ClientExecutionTimeoutException": "the task function ran out of time",
    "Lambda.ServiceException": "AWS Lambda failed to run the task",
    "Lambda.AWSLambdaException": "AWS Lambda failed to run the task",
    "Lambda.SdkClientException": "AWS Lambda could not be reached",
    "Lambda.TooManyRequestsException": "AWS Lambda throttled the task",
    "States.Timeout": "the task timed out",
    "States.TaskFailed": "the task failed",
    "States.DataLimitExceeded": "the task's result was too large for Step Functions",
    "States.Runtime": "Step Functions could not process the task's result",
}


def _our_error_names() -> set[str]:
    names: set[str] = set()
    todo: list[type] = [DsrError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo += cls.__subclasses__()
    return names


def failure_reason(error: dict[str, Any] | None) -> tuple[str | None, str]:
    """(error name, message) from a Catch's {"Error", "Cause"}; a Lambda error's Cause is its JSON payload.

    Allow-listed: our own errors' messages are built from the allow-list where they are raised (and capped);
    AWS's errors get fixed wording by name; anything else is reported by a fixed phrase only.
    """
    if not error:
        return None, "failed without a recorded reason"
    name = error.get("Error")
    cause = error.get("Cause") or ""
    try:
        parsed = json.loads(cause)
    except (TypeError, ValueError):
        parsed = None
    if isinstance(parsed, dict):
        name = parsed.get("errorType") or name
    if name in _our_error_names():
        message = parsed.get("errorMessage") if isinstance(parsed, dict) else None
        return name, cap(str(message or f"{name} without a message"), MESSAGE_LIMIT + 200)
    if name in AWS_ERRORS:
        return name, f"{AWS_ERRORS[name]} ({name}); re-run the vendor"
    return "TaskFailed", "the task failed with an error dsrflow does not recognise; see the execution's events"


def _denial(error: Any) -> str:
    """The reason of a denial, from the SendTaskFailure cause the deny route wrote (by, at, reason)."""
    cause: Any = error.get("Cause") if isinstance(error, dict) else None
    try:
        said = json.loads(cause) if isinstance(cause, str) else {}
    except ValueError:
        said = {}
    said = said if isinstance(said, dict) else {}
    by, at, why = said.get("by"), said.get("at"), said.get("reason")
    text = "denied" + (f" by {by}" if isinstance(by, str) else "") + (f" at {at}" if isinstance(at, str) else "")
    return cap(text + (f": {why}" if isinstance(why, str) and why else ""), MESSAGE_LIMIT)


def _outcome(raw: dict[str, Any], rt: Runtime, request_id: str, *, said: bool = True) -> ActionOutcome:
    """One branch's end as an ActionOutcome: collect's and record's are already one; the fallback of a
    record that failed (\"Outcome not recorded\") still holds the Catch's error object."""
    state = raw.get("job_state") or {}  # the failed job's bookkeeping (the Record ... failure states pass it)
    if isinstance(state, dict) and state.get("possible_duplicate"):
        raw = {**raw, "possible_duplicate": True}
    if raw.get("status") == "denied" and raw.get("error") is not None and not isinstance(raw["error"], str):
        raw = {**raw, "error": None, "reason": _denial(raw["error"])}
    elif raw.get("status") == "failed" and raw.get("error") is not None and not isinstance(raw["error"], str):
        name, message = failure_reason(raw["error"])
        raw = {**raw, "error": name, "reason": raw.get("reason") or message}
    outcome = ActionOutcome.model_validate(raw)
    if not said:
        return outcome
    keys = vendor_said.keys(rt.store, request_id, outcome.vendor, outcome.action.value)
    return outcome.model_copy(update={"vendor_said": keys}) if keys else outcome


# --- the approval gate ------------------------------------------------------------------------------------
#
# "Ask for approval" (ask_approval) checks the premise and sets how long the gate may hold; "Await approval"
# (hold_for_approval, invoked with a task token) records the token in the ledger and tells the CRM. The
# routes POST /requests/{id}/approve and /deny answer the token (core/operations.py). The gate holds until the
# request's deadline; at a local time scale the wait is scaled like every vendor duration.

LATE_RETRY_GRACE = timedelta(hours=24)  # a retry that reaches the gate after the deadline: one day to decide


def _deadline(rt: Runtime, request_id: str, fallback: datetime | None = None) -> tuple[datetime, datetime | None]:
    """(the request's deadline now, the original one when it was extended), from the ledger (where extensions
    are recorded), else `fallback` (the execution's)."""
    item = rt.ledger.item(request_id) if rt.ledger is not None else None
    if item and isinstance(item.get("deadline"), str):
        original = item.get("original_deadline")
        return datetime.fromisoformat(item["deadline"]), (
            datetime.fromisoformat(original) if isinstance(original, str) else None
        )
    if fallback is None:
        raise ConfigError("dsrflow", "the request ledger", f"holds no deadline for request {request_id}")
    return fallback, None


def ask_approval(task: StepState, rt: Runtime) -> dict[str, Any]:
    from core.clock import scaled

    _require_verified_export(rt, task)  # never ask a person to approve what could not be sent anyway
    now = rt.now()
    deadline, _ = _deadline(rt, task.request_id, fallback=task.deadline)
    wait = task.approval_wait
    if wait is not None and task.approval_timed_out is not None:
        # The gate timed out: at the deadline, unless it was extended meanwhile (then hold on to the new one).
        if deadline <= wait.deadline:
            raise ApprovalTimedOut(
                f"{task.vendor}: no decision on the {task.action.value} came before the request's deadline "
                f"({iso_z(deadline)}); nothing was sent to the vendor. Retry the request to ask again"
            )
        until = wait.until + scaled(deadline - wait.deadline)
    elif now < deadline:
        until = now + scaled(deadline - now)
    elif task.attempt > 1:
        until = now + scaled(LATE_RETRY_GRACE)  # a retry after the deadline: the operator chose to act late
    else:
        raise ApprovalTimedOut(
            f"{task.vendor}: the request's deadline ({iso_z(deadline)}) passed before the {task.action.value} "
            "reached the approval gate; nothing was sent to the vendor. Retry the request to ask again"
        )
    seconds = max(1, int((until - now).total_seconds() + 0.999))
    state = task.model_copy(
        update={
            "approval_wait": ApprovalWait(seconds=seconds, until=until, deadline=deadline),
            "approval_timed_out": None,
        }
    )
    return state.model_dump(mode="json")


def hold_for_approval(task: StepState, rt: Runtime, *, token: str | None) -> dict[str, Any]:
    """Invoked with the task token: the ledger keeps it for the approve/deny routes (a write that must not be
    lost: without the token nobody could answer), then an Approval Required event goes to the CRM."""
    if not token:
        raise ConfigError("dsrflow", "Await approval", "was invoked without a task token")
    if rt.ledger is None:
        raise ConfigError("dsrflow", "LEDGER_TABLE", "is required by the approval gate (it holds the task token)")
    deadline, _ = _deadline(rt, task.request_id, fallback=task.deadline)
    rt.ledger.awaiting_approval(task.request_id, task.vendor, task.action.value, token, attempt=task.attempt)
    if rt.events is not None and rt.event_bus_name:
        emit(
            rt.events,
            rt.event_bus_name,
            "approval_required",
            {
                "request_id": task.request_id,
                "vendor": task.vendor,
                "action": task.action.value,
                "deadline": iso_z(deadline),
                "attempt": task.attempt,
            },
        )
    return {"held": True}


# --- recording an action that did not complete -----------------------------------------------------------


def record(payload: dict[str, Any], rt: Runtime) -> dict[str, Any]:
    """A failed, denied or timed-out action's outcome, from the allow-listed shape the ASL's Record states
    build: written to outcome.json (like a completed one) and to the ledger, and returned to the Map."""
    request_id = str(payload.get("request_id") or "")
    raw = {k: v for k, v in payload.items() if k != "request_id"}
    if raw.get("status") == "denied" and rt.ledger is not None:
        # The deny route noted the decision on the gate before sending it: the reason comes from there when
        # the failure's cause did not keep it.
        found = raw.get("error")
        error: dict[str, Any] = found if isinstance(found, dict) else {}
        if not error.get("Cause"):
            gate = rt.ledger.gate(request_id, str(raw.get("vendor")), str(raw.get("action")))
            if gate and gate.get("decision") == "denied":
                said = {"by": gate.get("decided_by"), "at": gate.get("decided_at"), "reason": gate.get("reason")}
                raw["error"] = {**error, "Cause": json.dumps(said)}
    outcome = _outcome(raw, rt, request_id)
    # However the action ended, its vendor slot (if any) is given back.
    _release_slot(rt, outcome.vendor, holder_of(request_id, int(payload.get("attempt") or 1), outcome.action.value))
    payload_out = outcome.model_dump(mode="json")
    rt.store.put_json(outcome_key(request_id, outcome.vendor, outcome.action.value), payload_out)
    if rt.ledger is not None:
        rt.ledger.action(
            request_id,
            outcome.vendor,
            outcome.action.value,
            outcome.status,
            job_id=outcome.job_id,
            reason=outcome.reason,
            error=outcome.error,
        )
    return payload_out


# --- finalize ---------------------------------------------------------------------------------------------


def _with_attempts(outcome: ActionOutcome) -> ActionOutcome:
    """An outcome that lists its attempts (manifests written before retries existed list none)."""
    if outcome.attempts:
        return outcome
    return outcome.model_copy(
        update={
            "attempts": [
                AttemptOutcome(
                    attempt=outcome.attempt,
                    status=outcome.status,
                    error=outcome.error,
                    finished_at=outcome.completed_at,
                )
            ]
        }
    )


def merge_attempts(earlier: list[ActionOutcome], now: list[ActionOutcome], attempt: int) -> list[ActionOutcome]:
    """Every vendor action's latest outcome, each listing all its attempts: what this attempt ran replaces
    the earlier outcome, what it did not run (completed actions are never re-run) stays as it was."""
    merged = {(o.vendor, o.action): _with_attempts(o) for o in earlier}
    for o in now:
        before = merged.get((o.vendor, o.action))
        history = [a for a in (before.attempts if before else []) if a.attempt != attempt]
        this = AttemptOutcome(attempt=attempt, status=o.status, error=o.error, finished_at=o.completed_at)
        merged[(o.vendor, o.action)] = o.model_copy(update={"attempt": attempt, "attempts": [*history, this]})
    return sorted(merged.values(), key=lambda o: (o.vendor, 0 if o.action == Action.EXPORT else 1))


def summarise(
    outcomes: list[ActionOutcome],
) -> tuple[dict[str, int], Literal["completed", "partially_failed", "failed"]]:
    """The counts per status and the request's status: denied is a decision, not a failure; a skipped action
    (the vendor cannot act on the identifiers given) leaves the request partially failed, as it always did."""
    counts: dict[str, int] = {k: sum(1 for o in outcomes if o.status == k) for k in OUTCOME_STATUSES}
    done = counts["completed"] + counts["planned"] + counts["denied"]
    status: Literal["completed", "partially_failed", "failed"]
    if outcomes and done == len(outcomes):
        status = "completed"
    elif done == 0:
        status = "failed"
    else:
        status = "partially_failed"
    return counts, status


def earlier_outcomes(store: Store, request_id: str, attempt: int) -> list[ActionOutcome]:
    """The outcomes of the attempt before `attempt` (its own manifest under proof/), none for the first: what
    finalize merges a retry into, and what a cancelled retry keeps."""
    if attempt <= 1:
        return []
    earlier = store.load_attempt_manifest(request_id, attempt - 1) or store.load_manifest(request_id)
    return list(earlier.outcomes) if earlier is not None else []


def _outcomes(payload: dict[str, Any], rt: Runtime, *, said: bool = True) -> tuple[ExecutionInput, list[ActionOutcome]]:
    """Every vendor action's outcome once the Map has ended: this attempt's branches, the skipped actions,
    merged into the earlier attempts' (what the package packs and the manifest records). `said`: list the
    keys of the vendor's own words (the manifest points to them; the package has no use for them)."""
    execution = ExecutionInput.model_validate(payload)
    outcomes = [
        _outcome(r, rt, execution.request_id, said=said)
        for vendor_results in payload.get("results", [])
        for r in vendor_results
    ]
    outcomes += [
        ActionOutcome(vendor=s.vendor, action=s.action, status="skipped", reason=s.reason) for s in execution.skipped
    ]
    earlier = earlier_outcomes(rt.store, execution.request_id, execution.attempt)
    return execution, merge_attempts(earlier, outcomes, execution.attempt)


def package(
    payload: dict[str, Any], rt: Runtime, *, read_block: int | None = None, controller_text: str | None = None
) -> dict[str, Any]:
    """The Package step: the access package from every completed export (core/package.py), as a PackageRef
    at $.package for finalize. Nothing to package is a `not_built` answer, not an error."""
    from core.package import DEFAULT_READ_BLOCK, Builder, PackageInput  # only this task needs zipfile and html

    execution, outcomes = _outcomes(payload, rt, said=False)
    builder = Builder(
        rt.store.s3,
        rt.store.bucket,
        rt.store.kms_key_id,
        now=rt.now,
        read_block=read_block or DEFAULT_READ_BLOCK,
        controller_text=controller_text,
        sleep=rt.store.sleep,
    )
    request = PackageInput(
        request_id=execution.request_id,
        received_at=execution.received_at,
        attempt=execution.attempt,
        outcomes=outcomes,
        dry_run=execution.dry_run,
    )
    return builder.build(request).model_dump(mode="json")


PACKAGE_FAILED = "the access package could not be built; the outcomes stand, and a retry of the request builds it again"


def _package_ref(raw: Any, attempt: int) -> PackageRef | None:
    """$.package as the Package step left it: its PackageRef, or the Catch's error object ("Package not
    built"), recorded as `failed` with the error's name and fixed wording (never the error's own text)."""
    if not isinstance(raw, dict):
        return None
    if raw.get("status") == "failed" and isinstance(raw.get("error"), dict):
        name = str(raw["error"].get("Error") or "PackageFailed")
        name = name if re.fullmatch(r"[A-Za-z][A-Za-z0-9_.]{0,80}", name) else "PackageFailed"
        return PackageRef(status="failed", error=name, reason=PACKAGE_FAILED, attempt=attempt)
    return PackageRef.model_validate(raw)


def finalize(payload: dict[str, Any], rt: Runtime) -> dict[str, Any]:
    execution, outcomes = _outcomes(payload, rt)
    counts, status = summarise(outcomes)
    deadline, original = _deadline(rt, execution.request_id, fallback=execution.deadline)
    finished = rt.now()
    manifest = Manifest(
        request_id=execution.request_id,
        status=status,
        dry_run=execution.dry_run,
        received_at=execution.received_at,
        deadline=deadline,
        original_deadline=original,
        attempt=execution.attempt,
        finished_at=finished,
        within_deadline=finished <= deadline,
        counts=counts,
        outcomes=outcomes,
        manifest_key=manifest_key(execution.request_id),
        proof_key=proof_key(execution.request_id),
        package=_package_ref(payload.get("package"), execution.attempt),
    )
    # Manifest first, then the event: when EventBridge rejects the event (EventNotDelivered), the workflow
    # retries this whole task, which rewrites the manifest copies (same outcomes, a later finished_at) and
    # puts the event again. The CRM may so see the event twice only if an answer was lost; it carries the
    # request id and the attempt to deduplicate on.
    rt.store.put_manifest(manifest)
    if rt.ledger is not None:
        rt.ledger.finished(manifest)  # never raises; rewrites every action's final state (core/ledger.py)
    if rt.events is not None and rt.event_bus_name:
        emit(
            rt.events,
            rt.event_bus_name,
            "completed",
            {
                "request_id": manifest.request_id,
                "status": manifest.status,
                "dry_run": manifest.dry_run,
                "counts": manifest.counts,
                "manifest": {"bucket": rt.store.bucket, "key": manifest.manifest_key},
                "attempt": manifest.attempt,
                "package": package_event(manifest.package),
            },
        )
    return manifest.summary()


def package_event(ref: PackageRef | None) -> dict[str, Any]:
    """What the Completed event says of the access package: that it exists, its size and digest. Never a link:
    a URL on an event bus is a bearer credential in every log it passes through (GET /requests/{id}/package
    mints one for a caller the API authenticated)."""
    if ref is None or ref.status != "built":
        return {"available": False}
    return {"available": True, "bytes": ref.bytes, "sha256": ref.sha256, "files": ref.files}


__all__ = [
    "Runtime",
    "package",
    "submit",
    "check",
    "collect",
    "ask_approval",
    "hold_for_approval",
    "record",
    "finalize",
    "ErasureWithheld",
    "STEP_NAMES",
]
