"""The fault matrix: every vendor x every fault, and the one outcome each cell must show (docs/FAULTS.md).

A cell is survived (S: the request completed, the archive in S3 is byte for byte what the simulator sent),
clearly failed (F: the action failed with `error`, `step` and a reason "<vendor> <step>: ... <cause>", the
other vendors completed, an erase depending on a failed export was withheld), or not applicable (-, with
the reason). tests/faults/run.py executes a cell and judges it; this module only says what is injected and
what is right.

Injection happens in two phases: `setup` before the simulators and the local cloud exist (credentials that
point elsewhere, a shorter vendor read timeout), `arm` once they run and before the request is submitted
(simulator faults, S3 hooks, Lambda service errors, a secret's value, a crashing connector method).
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from local.simulators.data import SAMPLE

if TYPE_CHECKING:
    from tests.faults.run import Arm, Setup

VENDORS = ("elevate", "bloomreach", "qualifio")
Outcome = Literal["S", "F", "-"]

# The call each vendor's export job is created with (Bloomreach: the export itself, it has no job).
CREATE = {
    "elevate": r"/create-export-customer-job$",
    "bloomreach": r"/customers/export-one$",
    "qualifio": r"/v1/gdpr/rules/exportData$",
}
# The call on which the vendor acts (creates a job, or for Bloomreach anonymizes: its only acting call).
ACT = {**CREATE, "bloomreach": r"/customers/anonymize$"}
# The call that says how the export is doing (Bloomreach has none: its export-one answer is the data).
STATUS = {
    "elevate": r"/job-status$",
    "bloomreach": r"/customers/export-one$",
    "qualifio": r"^/v1/gdpr/rules/[0-9a-f]{24}$",
}
# The archive download.
DOWNLOAD = {
    "elevate": r"/export-customer-job-result$",
    "bloomreach": r"/customers/export-one$",
    "qualifio": r"^/archives/",
}
VALIDATE = r"^/v1/gdpr/rules/[0-9a-f]{24}/validate$"

READ_TIMEOUT = 1.5  # seconds: the vendor read timeout for the slow cells (deployed: 30 s)
SLOW = 2.5  # seconds a slow answer is held back, past READ_TIMEOUT


@dataclass(frozen=True)
class Bug:
    """A product bug a cell shows. The cell is xfail(strict): it must fail, and only on the `match`ing
    assertion, which the judge makes last (every other property of the cell is still checked)."""

    reason: str
    match: str  # regex over the failure message


@dataclass(frozen=True)
class Cell:
    """One vendor's outcome under one fault, and how to inject it."""

    outcome: Outcome
    setup: Callable[[Setup], None] | None = None
    arm: Callable[[Arm], None] | None = None
    check: Callable[[Arm], None] | None = None  # extra assertions inside the run (the fault really fired...)
    # clearly failed: the failed action, the step, the error name and a regex the reason must match
    action: Literal["export", "erase"] = "export"
    step: Literal["submit", "check", "collect"] | None = None
    error: str | None = None
    cause: str | None = None
    # survived: the export outcome is marked possible_duplicate (the vendor may have acted without answering)
    duplicate: bool = False
    na: str | None = None  # why the fault does not apply to this vendor
    xfail: Bug | None = None  # a product bug this cell shows (strict: the cell must fail, and only with it)

    def __post_init__(self) -> None:
        if self.outcome == "F":
            assert self.step and self.error and self.cause, "a clearly-failed cell names step, error and cause"
        if self.outcome == "-":
            assert self.na, "a cell that does not apply says why"


@dataclass(frozen=True)
class Fault:
    id: str
    title: str  # the row of the table
    cells: dict[str, Cell]
    slow_vendor: bool = False  # the cell shortens the vendor read timeout to READ_TIMEOUT (setup)
    cost: float = 1.0  # relative run time, to start the longest cells first
    doc: str = field(default="", repr=False)  # docs/FAULTS.md: what is injected, why that outcome is right

    def __post_init__(self) -> None:
        assert set(self.cells) == set(VENDORS), f"{self.id}: one cell per vendor"


def na(reason: str) -> Cell:
    return Cell("-", na=reason)


# --- injection helpers ---------------------------------------------------------------------------------------


def only(arm: Arm, pattern: str) -> Any:
    """The simulator's faults, limited to paths matching `pattern`."""
    arm.sim.faults.path_pattern = pattern
    return arm.sim.faults


def rewrite_once(arm: Arm, pattern: str, hook: Callable[[Any, Any], Any]) -> None:
    """After the vendor acted on the first call matching `pattern`, run `hook(request, response)`."""
    faults = only(arm, pattern)
    faults.rewrite, faults.rewrites = hook, 1


def answer_json(response: Any) -> Any:
    return json.loads(response.body)


def slow_once_before_acting(arm: Arm, pattern: str, seconds: float) -> None:
    """The first call matching `pattern` waits `seconds` before the simulator handles it: the vendor has not
    acted when the client's read timeout fires, and acts afterwards (a vendor working through a backlog).
    The simulator's own `delay` stays on for every later call, so it cannot make a one-off."""
    sim = arm.sim
    real = sim._answer
    left = [1]

    def answer(req: Any, call: Any) -> Any:
        if left[0] and re.search(pattern, req.path):
            left[0] = 0
            call.faults.append("slow_before_acting")
            time.sleep(seconds)
        return real(req, call)

    sim._answer = answer


def closed_port(setup: Setup) -> str:
    """A loopback URL that refuses connections: a bound socket that never listens (held for the run)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    setup.stack.callback(sock.close)
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


def s3_fails_once(arm: Arm, operation: str, key_part: str) -> None:
    """The handlers' S3 client fails `operation` once (InternalError) on the first key containing `key_part`."""
    from botocore.exceptions import ClientError

    from handlers.runtime import client

    left = arm.counters.setdefault(operation, [1])

    def hook(params: dict[str, Any], **_: Any) -> None:
        if key_part in params.get("Key", "") and left[0] > 0:
            left[0] -= 1
            raise ClientError({"Error": {"Code": "InternalError", "Message": "injected"}}, operation)

    client("s3").meta.events.register(f"before-parameter-build.s3.{operation}", hook)


def fired(arm: Arm, operation: str) -> None:
    assert arm.counters[operation] == [0], f"the injected S3 {operation} failure never fired"


def faulted_calls(arm: Arm, fault: str) -> list[Any]:
    return [c for c in arm.sim.calls if fault in c.faults]


def in_history(arm: Arm, error: str) -> None:
    failed = [e["taskFailedEventDetails"]["error"] for e in arm.history() if e["type"] == "TaskFailed"]
    assert error in failed, f"no task failed with {error} (failures: {failed})"


CONNECTOR_CLASSES = {
    "elevate": "connectors.elevate:ElevateConnector",
    "bloomreach": "connectors.bloomreach:BloomreachConnector",
    "qualifio": "connectors.qualifio:QualifioConnector",
}


def crash_once(arm: Arm, method: str) -> None:
    """The vendor's connector `method` raises once, with the subject's email as the exception's text."""
    import importlib

    module, name = CONNECTOR_CLASSES[arm.vendor].split(":")
    cls = getattr(importlib.import_module(module), name)
    real = getattr(cls, method)
    left = arm.counters.setdefault("crash", [1])

    def crashing(self: Any, *args: Any, **kwargs: Any) -> Any:
        if left[0]:
            left[0] -= 1
            raise KeyError(SAMPLE.email)
        return real(self, *args, **kwargs)

    arm.mp.setattr(cls, method, crashing)


# --- per-fault injections ---------------------------------------------------------------------------------------


def _rate_limit(arm: Arm) -> None:
    faults = only(arm, CREATE[arm.vendor])
    faults.rate_limit, faults.retry_after = 2, 1


def _rate_limit_check(arm: Arm) -> None:
    calls = sorted(arm.sim.calls_to(CREATE[arm.vendor]), key=lambda c: c.real_at)
    limited = [c.status for c in calls if "rate_limit" in c.faults]
    assert limited == [429, 429], limited
    for before, after in zip(calls, calls[1:], strict=False):
        if "rate_limit" in before.faults:
            waited = after.real_at - before.real_at
            assert waited >= 0.95, f"retried {waited:.2f}s after a 429 with Retry-After: 1"


def _server_errors(arm: Arm) -> None:
    arm.sim.faults.server_errors = 4  # every path: more than the 4 tries of one call


def _server_errors_check(arm: Arm) -> None:
    assert [c.status for c in faulted_calls(arm, "server_errors")] == [503] * 4
    in_history(arm, "VendorTransientError")  # the workflow's retry took over from the call's own


def _down(setup: Setup) -> None:
    setup.creds[setup.vendor] = {"base_url": closed_port(setup)}


def _down_check(arm: Arm) -> None:
    assert arm.sim.calls == [], "a vendor whose credentials point at a closed port was reached"


def _slow_before(arm: Arm) -> None:
    slow_once_before_acting(arm, ACT[arm.vendor], SLOW)


def _slow_before_check(arm: Arm) -> None:
    assert len(faulted_calls(arm, "slow_before_acting")) == 1


def _slow_after(arm: Arm) -> None:
    faults = only(arm, ACT[arm.vendor])
    faults.slow_after_acting, faults.slow_after_acting_count = SLOW, 1


def _slow_after_check(arm: Arm) -> None:
    slowed = faulted_calls(arm, "slow_after_acting")
    assert len(slowed) == 1 and slowed[0].acted, "the slow answer came after the vendor acted"


def _cut(times: int) -> Callable[[Arm], None]:
    def arm_(arm: Arm) -> None:
        faults = only(arm, DOWNLOAD[arm.vendor])
        faults.cut_download_after, faults.cut_downloads = 100, times

    return arm_


def _cut_once_check(arm: Arm) -> None:
    downloads = arm.sim.calls_to(DOWNLOAD[arm.vendor])
    assert [("cut_download_after" in c.faults) for c in downloads] == [True, False], [c.faults for c in downloads]


def _cut_always_check(arm: Arm) -> None:
    downloads = arm.sim.calls_to(DOWNLOAD[arm.vendor])
    # The first try and the workflow's two ArchiveTransferError retries, every one cut.
    assert len(downloads) == 3 and all("cut_download_after" in c.faults for c in downloads), len(downloads)


WRONG_CREDENTIALS = {
    "elevate": {"api_key": "revoked-elevate-key"},  # Elevate answers 403
    "bloomreach": {"api_key_id": "unknown-key-id"},  # Bloomreach: unknown key id, 401
    "qualifio": {"api_token": "revoked-qualifio-token"},  # Qualifio: wrong token, 403
}


def _auth(setup: Setup) -> None:
    setup.creds[setup.vendor] = WRONG_CREDENTIALS[setup.vendor]


def _vanish_elevate_job(arm: Arm) -> None:
    def hook(_req: Any, response: Any) -> Any:
        with arm.sim.lock:
            arm.sim.jobs.pop(answer_json(response)["jid"], None)  # the vendor forgot it
        return response

    rewrite_once(arm, CREATE["elevate"], hook)


def _rule_id(req: Any) -> str:
    return req.path.split("/")[4]


def _vanish_qualifio_rule(arm: Arm) -> None:
    def hook(req: Any, response: Any) -> Any:
        with arm.sim.lock:
            arm.sim.rules.pop(_rule_id(req), None)  # deleted in the back office once validated
        return response

    rewrite_once(arm, VALIDATE, hook)


def _malformed(arm: Arm) -> None:
    def hook(_req: Any, response: Any) -> Any:
        response.body = response.body[: len(response.body) // 2]  # valid JSON cut in the middle
        return response

    rewrite_once(arm, STATUS[arm.vendor], hook)


def _html(arm: Arm) -> None:
    only(arm, DOWNLOAD[arm.vendor]).html_instead = 1


def _fail_elevate_job(arm: Arm) -> None:
    def hook(_req: Any, response: Any) -> Any:
        arm.sim.fail_job(answer_json(response)["jid"])
        return response

    rewrite_once(arm, CREATE["elevate"], hook)


def _deny_qualifio_rule(arm: Arm) -> None:
    def hook(req: Any, response: Any) -> Any:
        arm.sim.deny(_rule_id(req))  # a DPO refused it after validation: an undocumented status word
        return response

    rewrite_once(arm, VALIDATE, hook)


def _bloomreach_success_false(arm: Arm) -> None:
    arm.sim.fail_next("export-one", ["Internal error, please try again later"])


def _crash(arm: Arm) -> None:
    crash_once(arm, "collect")


def _crash_check(arm: Arm) -> None:
    assert arm.counters["crash"] == [0], "the connector never crashed"
    in_history(arm, "TaskCrashed")


def _lambda_error(arm: Arm) -> None:
    arm.cloud.inject_lambda_error("submit")


def _lambda_error_check(arm: Arm) -> None:
    in_history(arm, "Lambda.ServiceException")


def _s3_put(arm: Arm) -> None:
    s3_fails_once(arm, "PutObject", f"/{arm.vendor}/export/submission.json")


def _cmu(arm: Arm) -> None:
    s3_fails_once(arm, "CompleteMultipartUpload", f"/{arm.vendor}/export/")


def _put_secret(value: str) -> Callable[[Arm], None]:
    def arm_(arm: Arm) -> None:
        secrets = arm.cloud.client("secretsmanager")
        secrets.put_secret_value(SecretId=arm.cloud.secrets[arm.vendor], SecretString=value)

    return arm_


def _elevate_secret_without_a_key(arm: Arm) -> None:
    creds = {k: v for k, v in arm.sim.credentials().items() if k != "api_key"}
    _put_secret(json.dumps(creds))(arm)


def _delete_secret(arm: Arm) -> None:
    secrets = arm.cloud.client("secretsmanager")
    secrets.delete_secret(SecretId=arm.cloud.secrets[arm.vendor], ForceDeleteWithoutRecovery=True)


def _elevate_stays_running(arm: Arm) -> None:
    def hook(_req: Any, response: Any) -> Any:
        arm.sim.force_status(answer_json(response)["jid"], "running")
        return response

    rewrite_once(arm, CREATE["elevate"], hook)


def _qualifio_keeps_processing(arm: Arm) -> None:
    arm.sim.processing = timedelta(days=365)


# --- the matrix -------------------------------------------------------------------------------------------------

NO_JOB_IDS = "Bloomreach has no job ids: its calls answer at once, so no job of ours can vanish between two calls"
ANSWERS_AT_ONCE = (
    "Bloomreach answers at once: no vendor status can stay pending, so no vendor job outlives a deadline "
    "(its 7-day deadline guards a stalled workflow; tests/unit/test_bloomreach_unit.py covers it)"
)

FAULTS: list[Fault] = [
    Fault(
        "rate_limit",
        "429 with Retry-After",
        {v: Cell("S", arm=_rate_limit, check=_rate_limit_check) for v in VENDORS},
        doc="two 429 answers with `Retry-After: 1` on the call that creates the export job (Bloomreach: "
        "export-one). 429 proves the vendor did not act, so the call is retried in place after the time asked: "
        "survived, no second job.",
    ),
    Fault(
        "server_errors",
        "5xx burst",
        {v: Cell("S", arm=_server_errors, check=_server_errors_check) for v in VENDORS},
        cost=1.3,
        doc="the vendor's next four answers are 503, one more than a call's tries: the call gives up as "
        "VendorTransientError and the workflow's retry takes over. 503 says the vendor did not act: survived, no "
        "second job.",
    ),
    Fault(
        "down",
        "vendor down (connection refused)",
        {
            "elevate": Cell(
                "F",
                setup=_down,
                check=_down_check,
                step="submit",
                error="VendorTransientError",
                cause=r"connection failed after 4 tries",
            ),
            "bloomreach": Cell(
                "F",
                setup=_down,
                check=_down_check,
                step="collect",
                error="VendorTransientError",
                cause=r"connection failed after 4 tries",
            ),
            "qualifio": Cell(
                "F",
                setup=_down,
                check=_down_check,
                step="submit",
                error="VendorTransientError",
                cause=r"connection failed after 4 tries",
            ),
        },
        cost=4.0,
        doc="the vendor's credentials point at a loopback port that refuses connections, for the whole run. "
        'Every try of the call and every workflow retry fail: clearly failed as VendorTransientError ("re-run '
        'later"); nothing reached the vendor.',
    ),
    Fault(
        "slow_before",
        "slow past read timeout, before acting",
        {
            "elevate": Cell("S", arm=_slow_before, check=_slow_before_check, duplicate=True),
            "bloomreach": Cell("S", arm=_slow_before, check=_slow_before_check),
            "qualifio": Cell("S", arm=_slow_before, check=_slow_before_check, duplicate=True),
        },
        slow_vendor=True,
        cost=1.5,
        doc=f"the vendor read timeout is {READ_TIMEOUT:g} s and the acting call (job creation; Bloomreach's "
        f"anonymize) is held {SLOW:g} s before the vendor handles it, then handled. The client cannot tell "
        "this from an answer lost after acting: a job-creating call is not repeated in place, the workflow "
        "makes at most one more job and marks the export `possible_duplicate` (survived, duplicate marked); "
        "Bloomreach's anonymize is not repeated in place either: the workflow's retry finds the customer gone "
        "and records the erase as done by the earlier attempt, marked `possible_duplicate` (survived).",
    ),
    Fault(
        "slow_after",
        "slow past read timeout, after acting",
        {
            "elevate": Cell("S", arm=_slow_after, check=_slow_after_check, duplicate=True),
            "bloomreach": Cell("S", arm=_slow_after, check=_slow_after_check),
            "qualifio": Cell("S", arm=_slow_after, check=_slow_after_check, duplicate=True),
        },
        slow_vendor=True,
        cost=1.5,
        doc=f"the vendor acts, then holds its answer {SLOW:g} s, past the {READ_TIMEOUT:g} s read timeout. Elevate "
        "and Qualifio: one more job, the export marked `possible_duplicate` (neither vendor can look a job up "
        "by anything but its id); Bloomreach: the workflow's retry finds the customer gone and records the erase "
        "as done by the earlier attempt, never as 'no data held' (survived).",
    ),
    Fault(
        "cut_once",
        "download cut once",
        {v: Cell("S", arm=_cut(1), check=_cut_once_check) for v in VENDORS},
        doc="the archive download (Bloomreach: the export-one answer) breaks off after 100 bytes, once. "
        "ArchiveTransferError, retried by the workflow; the cut download kept the vendor's job, so the retry "
        "downloads it whole: survived, byte-identical.",
    ),
    Fault(
        "cut_always",
        "download cut every time",
        {
            v: Cell(
                "F",
                arm=_cut(100),
                check=_cut_always_check,
                step="collect",
                error="ArchiveTransferError",
                cause=r"broke off|ended after",
            )
            for v in VENDORS
        },
        cost=1.3,
        doc="every download breaks off after 100 bytes. After the workflow's two retries: clearly failed as "
        "ArchiveTransferError at collect, nothing partial stored, the erase withheld.",
    ),
    Fault(
        "auth",
        "401/403 credentials refused",
        {
            "elevate": Cell("F", setup=_auth, step="submit", error="VendorAuthError", cause=r"HTTP 403"),
            "bloomreach": Cell("F", setup=_auth, step="collect", error="VendorAuthError", cause=r"HTTP 401"),
            "qualifio": Cell("F", setup=_auth, step="submit", error="VendorAuthError", cause=r"HTTP 403"),
        },
        doc="a revoked key (Elevate 403, Qualifio 403) or an unknown key id (Bloomreach 401). Retrying cannot "
        'help: clearly failed as VendorAuthError ("fix the secret").',
    ),
    Fault(
        "vanished",
        "404 for a vanished job",
        {
            "elevate": Cell(
                "F",
                arm=_vanish_elevate_job,
                step="check",
                error="VendorError",
                cause=r"not_found",
            ),
            "bloomreach": na(NO_JOB_IDS),
            "qualifio": Cell("F", arm=_vanish_qualifio_rule, step="check", error="VendorError", cause=r"HTTP 404"),
        },
        doc="the vendor forgets the export job right after creating it (Qualifio: after validating the rule). "
        "Elevate answers its documented `not_found` (HTTP 200), Qualifio HTTP 404. The job is gone: clearly "
        "failed at check as VendorError.",
    ),
    Fault(
        "malformed_json",
        "malformed JSON",
        {
            "elevate": Cell("F", arm=_malformed, step="check", error="VendorError", cause=r"not JSON"),
            "bloomreach": Cell("F", arm=_malformed, step="collect", error="ArchiveInvalid", cause=r"not a JSON object"),
            "qualifio": Cell("F", arm=_malformed, step="check", error="VendorError", cause=r"not JSON"),
        },
        doc="the status answer (Bloomreach: the export-one data) is valid JSON cut in half, with HTTP 200. Not "
        "the documented shape, and the same answer would come again: clearly failed (VendorError; Bloomreach "
        "ArchiveInvalid, nothing stored).",
    ),
    Fault(
        "html",
        "200 HTML instead of JSON or zip",
        {
            "elevate": Cell("F", arm=_html, step="collect", error="ArchiveInvalid", cause=r"HTML page"),
            "bloomreach": Cell("F", arm=_html, step="collect", error="ArchiveInvalid", cause=r"not a JSON object"),
            "qualifio": Cell("F", arm=_html, step="collect", error="ArchiveInvalid", cause=r"HTML page"),
        },
        doc="a login page (HTTP 200, text/html) where the zip (Bloomreach: the JSON export) is expected. "
        "Clearly failed as ArchiveInvalid, nothing stored, the erase withheld.",
    ),
    Fault(
        "job_failed",
        "vendor reports the job failed",
        {
            "elevate": Cell(
                "F",
                arm=_fail_elevate_job,
                step="check",
                error="VendorError",
                cause=r"'error'",
            ),
            "bloomreach": Cell(
                "F", arm=_bloomreach_success_false, step="collect", error="VendorError", cause=r"success false"
            ),
            "qualifio": Cell(
                "F",
                arm=_deny_qualifio_rule,
                step="check",
                error="VendorError",
                cause=r"undocumented status",
            ),
        },
        doc="Elevate's job status turns `error`; a DPO denies the Qualifio rule (an undocumented status word); "
        "Bloomreach answers HTTP 200 with `success: false`. The vendor's verdict: clearly failed as VendorError.",
    ),
    Fault(
        "crash_once",
        "task crashing once",
        {v: Cell("S", arm=_crash, check=_crash_check) for v in VENDORS},
        doc="the connector's `collect` raises an unanticipated KeyError once (its text: the subject's email). "
        "TaskCrashed, retried once by the workflow: survived, and the email is in no record.",
    ),
    Fault(
        "lambda_error",
        "Lambda service error after submit",
        {v: Cell("S", arm=_lambda_error, check=_lambda_error_check) for v in VENDORS},
        doc="the submit function runs (the vendor job is created), then Lambda answers ServiceException. The "
        "workflow retries and the submission record hands back the job already created: survived, no second "
        "job.",
    ),
    Fault(
        "s3_put",
        "S3 put failing once",
        {v: Cell("S", arm=_s3_put, check=lambda arm: fired(arm, "PutObject")) for v in VENDORS},
        doc="S3 answers InternalError once to the put of the export's submission record, the write made before "
        "the vendor is called. The store retries it: survived.",
    ),
    Fault(
        "complete_mpu",
        "CompleteMultipartUpload failing once",
        {v: Cell("S", arm=_cmu, check=lambda arm: fired(arm, "CompleteMultipartUpload")) for v in VENDORS},
        doc="S3 answers InternalError once to the CompleteMultipartUpload of the export archive. The upload is "
        "completed on retry, no download is repeated: survived, no open upload.",
    ),
    Fault(
        "secret",
        "secret missing or malformed",
        {
            "elevate": Cell(
                "F", arm=_elevate_secret_without_a_key, step="submit", error="ConfigError", cause=r"'api_key'"
            ),
            "bloomreach": Cell(
                "F", arm=_put_secret("{not json"), step="submit", error="ConfigError", cause=r"not valid JSON"
            ),
            "qualifio": Cell("F", arm=_delete_secret, step="submit", error="ConfigError", cause=r"holds no value"),
        },
        doc="Elevate's secret lacks `api_key`, Bloomreach's is not JSON, Qualifio's is deleted. Nothing to "
        "retry: clearly failed as ConfigError naming the field, before any vendor call.",
    ),
    Fault(
        "deadline",
        "deadline passed",
        {
            "elevate": Cell(
                "F",
                arm=_elevate_stays_running,
                step="check",
                error="DeadlineExceeded",
                cause=r"DeadlineExceeded",
            ),
            "bloomreach": na(ANSWERS_AT_ONCE),
            "qualifio": Cell(
                "F",
                arm=_qualifio_keeps_processing,
                step="check",
                error="DeadlineExceeded",
                cause=r"DeadlineExceeded",
            ),
        },
        cost=1.5,
        doc="Elevate's export job stays `running`, Qualifio keeps processing the rule, past the connector's "
        "deadline (Elevate 14 days, Qualifio 20 days of vendor time). Clearly failed at check as DeadlineExceeded "
        "(core/errors.py), named in the reason.",
    ),
]

BY_ID = {f.id: f for f in FAULTS}
assert len(BY_ID) == len(FAULTS), "fault ids are unique"


def cell_ids() -> list[str]:
    """Every cell as "fault-vendor", column by column."""
    return [f"{fault.id}-{vendor}" for fault in FAULTS for vendor in VENDORS]


def lookup(cell_id: str) -> tuple[Fault, str, Cell]:
    fault_id, vendor = cell_id.rsplit("-", 1)
    fault = BY_ID[fault_id]
    return fault, vendor, fault.cells[vendor]


# --- the table ---------------------------------------------------------------------------------------------------

LEGEND = "S survived, F clearly failed, – not applicable"
DOC_START = "<!-- the matrix: generated by `python -m tests.faults.matrix`; tests/faults checks it is current -->"
DOC_END = "<!-- end of the matrix -->"


def table(outcome: Callable[[Fault, str], str] | None = None) -> str:
    """The matrix as a Markdown table: one row per fault, one column per vendor."""
    show = outcome or (lambda fault, vendor: "–" if fault.cells[vendor].outcome == "-" else fault.cells[vendor].outcome)
    width = max(len(f.title) for f in FAULTS)
    lines = [f"| {'fault':<{width}} | " + " | ".join(VENDORS) + " |"]
    lines.append(f"|{'-' * (width + 2)}|" + "|".join(":" + "-" * len(v) + ":" for v in VENDORS) + "|")
    for fault in FAULTS:
        cells = " | ".join(f"{show(fault, v):^{len(v)}}" for v in VENDORS)
        lines.append(f"| {fault.title:<{width}} | {cells} |")
    return "\n".join(lines)


def doc_section() -> str:
    """docs/FAULTS.md between DOC_START and DOC_END: the table, then one line per fault (what is injected,
    why the outcome is right), the cells that do not apply and the known product bugs."""
    lines = [DOC_START, "", table(), "", LEGEND + ".", ""]
    lines += [f"- **{fault.title}** (`{fault.id}`): {fault.doc}" for fault in FAULTS]
    lines += ["", "Not applicable:", ""]
    lines += [
        f"- {vendor}, {fault.title}: {fault.cells[vendor].na}."
        for fault in FAULTS
        for vendor in VENDORS
        if fault.cells[vendor].outcome == "-"
    ]
    bugs: dict[str, list[str]] = {}
    for fault in FAULTS:
        for vendor in VENDORS:
            bug = fault.cells[vendor].xfail
            if bug is not None:
                bugs.setdefault(bug.reason, []).append(f"`{fault.id}-{vendor}`")
    if bugs:
        lines += ["", "Known product bugs (those cells are xfail, strict: each must fail, on that bug only):", ""]
        lines += [f"- {', '.join(cells)}: {reason}." for reason, cells in bugs.items()]
    lines += ["", DOC_END]
    return "\n".join(lines)


if __name__ == "__main__":
    print(doc_section())
