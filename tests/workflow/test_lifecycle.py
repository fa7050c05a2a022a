"""The operator's lifecycle through the real ASL in moto: the approval gate (approve, deny, time out), retry in
place, cancel, extend, the list and audit routes, and the events each step puts on the CRM's bus."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from local.simulators.data import SAMPLE
from tests.event_schemas import validate_event
from tests.workflow.conftest import local_run, outcome, sample_subject, summary_of

pytestmark = pytest.mark.slow

APPROVER = "arn:aws:iam::123456789012:role/dpo"
# One vendor day per second: the gate holds until the request's deadline, 30 s here, ample time to answer it.
GATE_SCALE = 86400.0


def _until(check: Any, timeout: float = 60.0, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _awaiting(cloud: Any, request_id: str, count: int = 1) -> list[dict[str, Any]]:
    return _until(
        lambda: (g := cloud.ledger().open_approvals(request_id)) and len(g) >= count and g,
        what=f"{count} approval gate(s) of {request_id}",
    )


def _events(cloud: Any, kind: str) -> list[dict[str, Any]]:
    from core.events import DETAIL_TYPES

    return [e for e in cloud.events() if e["detail-type"] == DETAIL_TYPES[kind]]


def _no_subject_anywhere(cloud: Any, request_id: str, executions: list[str]) -> None:
    """Ledger, histories and events hold none of the subject's values."""
    kept = json.dumps(cloud.client("dynamodb").scan(TableName=cloud.ledger_table)["Items"], default=str)
    for name in executions:
        kept += json.dumps(cloud.history(name), default=str)
    kept += json.dumps(cloud.events(), default=str)
    for value in (SAMPLE.email, SAMPLE.customer_key, SAMPLE.registered):
        assert value.casefold() not in kept.casefold(), f"{value} was kept"


def test_an_erase_waits_for_a_person_then_runs_once_approved():
    with local_run(vendors=("bloomreach",), require_approval="erase", time_scale=GATE_SCALE) as (cloud, sims):
        cloud.submit({"request_id": "gate-ok", "actions": ["export", "erase"], "subject": sample_subject()})
        (gate,) = _awaiting(cloud, "gate-ok")
        assert (gate["vendor"], gate["action"]) == ("bloomreach", "erase")
        assert sims["bloomreach"].destructive_calls() == [], "nothing destructive before the approval"
        view = cloud.api("GET", "/requests/gate-ok")[1]
        assert view["status"] == "awaiting_approval"
        erase = next(a for a in view["ledger"]["actions"] if a["action"] == "erase")
        assert erase["state"] == "awaiting_approval"
        # Listed among the requests awaiting a decision.
        status, listed = cloud.api("GET", "/requests", query={"status": "awaiting_approval"})
        assert status == 200 and [r["request_id"] for r in listed["requests"]] == ["gate-ok"]

        status, body = cloud.api(
            "POST", "/requests/gate-ok/approve", {"reason": "checked the identity"}, principal=APPROVER
        )
        assert status == 200, body
        assert body["actions"] == [{"vendor": "bloomreach", "action": "erase"}] and body["by"] == APPROVER
        summary = summary_of(cloud, "gate-ok")

        assert summary["status"] == "completed", summary
        erased = outcome(summary, "bloomreach", "erase")
        assert erased["status"] == "completed" and erased["approved_by"] == APPROVER
        assert outcome(summary, "bloomreach", "export")["approved_by"] is None, "only the erase was gated"
        assert sims["bloomreach"].destructive_acted() == 1
        # Approving again: nothing awaits any more.
        status, body = cloud.api("POST", "/requests/gate-ok/approve", principal=APPROVER)
        assert status == 409 and "awaiting approval" in body["message"]

        trail = [e["event"] for e in cloud.api("GET", "/requests/gate-ok/audit")[1]["events"]]
        assert trail.index("approval requested") < trail.index("approved") < trail.index("manifest written")
        approved = next(e for e in cloud.api("GET", "/requests/gate-ok/audit")[1]["events"] if e["event"] == "approved")
        assert approved["by"] == APPROVER and approved["reason"] == "checked the identity"
        kinds = [e["detail-type"] for e in cloud.events()]
        assert kinds == [
            "Data Subject Request Received",
            "Data Subject Request Approval Required",
            "Data Subject Request Approved",
            "Data Subject Request Completed",
        ], kinds
        for event in cloud.events():
            validate_event(event)
        _no_subject_anywhere(cloud, "gate-ok", ["gate-ok"])


def test_a_denied_erase_is_recorded_as_denied_and_a_retry_asks_again():
    with local_run(vendors=("bloomreach",), require_approval="erase", time_scale=GATE_SCALE) as (cloud, sims):
        cloud.submit({"request_id": "gate-no", "actions": ["export", "erase"], "subject": sample_subject()})
        _awaiting(cloud, "gate-no")
        status, body = cloud.api("POST", "/requests/gate-no/deny", {"reason": "legal hold"}, principal=APPROVER)
        assert status == 200, body
        summary = summary_of(cloud, "gate-no")
        denied = outcome(summary, "bloomreach", "erase")
        assert denied["status"] == "denied" and denied["step"] == "approval" and denied["error"] is None
        assert APPROVER in denied["reason"] and "legal hold" in denied["reason"]
        assert summary["status"] == "completed" and summary["counts"]["denied"] == 1, "a denial is not a failure"
        assert sims["bloomreach"].destructive_calls() == []
        exports_before = sims["bloomreach"].calls_to("export")

        # Retry in place: only the denied erase runs again, through the gate again.
        status, body = cloud.api("POST", "/requests/gate-no/retry", principal=APPROVER)
        assert status == 202, body
        assert body["attempt"] == 2 and body["actions"] == ["bloomreach/erase"]
        retry_name = body["execution_arn"].rsplit(":", 1)[1]
        assert retry_name == "gate-no.retry-2"
        status, body = cloud.api("POST", "/requests/gate-no/retry", principal=APPROVER)
        assert status == 409 and "still" in body["message"], "a retry of a running request is refused"
        _awaiting(cloud, "gate-no")
        cloud.api("POST", "/requests/gate-no/approve", {"vendor": "bloomreach", "action": "erase"}, principal=APPROVER)
        summary = summary_of(cloud, retry_name)

        assert summary["attempt"] == 2 and summary["status"] == "completed"
        erased = outcome(summary, "bloomreach", "erase")
        assert erased["status"] == "completed" and [a["status"] for a in erased["attempts"]] == ["denied", "completed"]
        exported = outcome(summary, "bloomreach", "export")
        assert exported["attempt"] == 1 and [a["attempt"] for a in exported["attempts"]] == [1]
        assert sims["bloomreach"].calls_to("export") == exports_before, "a completed export is never re-run"
        # Every version of the manifest stays under proof/.
        first = json.loads(cloud.read("proof/gate-no/attempts/1/manifest.json"))
        assert outcome(first, "bloomreach", "erase")["status"] == "denied"
        view = cloud.api("GET", "/requests/gate-no")[1]
        assert [a["execution"] for a in view["attempts"]] == ["gate-no", "gate-no.retry-2"]
        for event in cloud.events():
            validate_event(event)
        _no_subject_anywhere(cloud, "gate-no", ["gate-no", retry_name])


def test_an_approval_that_never_comes_ends_the_branch_at_the_deadline():
    # The deadline is 2 vendor days away: half a second at the test's time scale.
    received = (datetime.now(UTC) - timedelta(days=28)).isoformat()
    with local_run(vendors=("bloomreach",), require_approval="all") as (cloud, sims):
        cloud.submit(
            {
                "request_id": "gate-late",
                "actions": ["export", "erase"],
                "subject": sample_subject(),
                "received_at": received,
            }
        )
        summary = summary_of(cloud, "gate-late")
        export, erase = outcome(summary, "bloomreach", "export"), outcome(summary, "bloomreach", "erase")
        assert export["status"] == "failed" and export["error"] == "ApprovalTimedOut" and export["step"] == "approval"
        assert "deadline" in export["reason"] and "nothing was sent" in export["reason"]
        assert erase["status"] == "failed" and erase["error"] == "ErasureWithheld"
        assert sims["bloomreach"].calls_to("export") == [], "the gated export was never sent"
        assert sims["bloomreach"].destructive_calls() == []
        # Every failure is written where the messages say it is.
        for action in ("export", "erase"):
            kept = json.loads(cloud.read(f"requests/gate-late/bloomreach/{action}/outcome.json"))
            assert kept["status"] == "failed"


def test_retry_reruns_only_the_failed_vendor_under_the_same_request():
    with local_run(vendors=("bloomreach", "elevate")) as (cloud, sims):
        faults = sims["bloomreach"].faults
        faults.path_pattern, faults.reject = "export", 1
        cloud.submit({"request_id": "again", "actions": ["export", "erase"], "subject": sample_subject()})
        first = summary_of(cloud, "again")
        assert first["status"] == "partially_failed"
        assert outcome(first, "bloomreach", "export")["status"] == "failed"
        assert outcome(first, "bloomreach", "erase")["error"] == "ErasureWithheld"
        elevate_jobs = sims["elevate"].jobs_created()

        status, body = cloud.api("POST", "/requests/again/retry", {"vendors": ["bloomreach"]}, principal=APPROVER)
        assert status == 202, body
        assert body["actions"] == ["bloomreach/export", "bloomreach/erase"]
        second = summary_of(cloud, "again.retry-2")
        assert second["status"] == "completed", second
        assert second["received_at"] == first["received_at"] and second["deadline"] == first["deadline"]
        assert sims["elevate"].jobs_created() == elevate_jobs, "completed actions are never run again"
        for vendor, action in (("elevate", "export"), ("elevate", "erase")):
            assert outcome(second, vendor, action)["attempt"] == 1
        for action in ("export", "erase"):
            statuses = [a["status"] for a in outcome(second, "bloomreach", action)["attempts"]]
            assert statuses == ["failed", "completed"], (action, statuses)
        status, body = cloud.api("POST", "/requests/again/retry", principal=APPROVER)
        assert status == 409 and "nothing to retry" in body["message"]
        trail = [e["event"] for e in cloud.api("GET", "/requests/again/audit")[1]["events"]]
        assert trail.count("manifest written") == 2 and "retried" in trail


def test_cancel_stops_a_request_mid_wait_and_lists_the_submitted_job():
    # Elevate archives for 5 vendor days: at one vendor day per second the export waits long enough to cancel.
    with local_run(vendors=("elevate",), time_scale=86400.0) as (cloud, sims):
        cloud.submit({"request_id": "stop-me", "actions": ["export", "erase"], "subject": sample_subject()})
        _until(
            lambda: (cloud.ledger().item("stop-me") or {}).get("action#elevate#export", {}).get("job_id"),
            what="the export job",
        )
        status, body = cloud.api("POST", "/requests/stop-me/cancel", {"reason": "subject withdrew"}, principal=APPROVER)
        assert status == 200, body
        execution = cloud.wait("stop-me", timeout=30)
        # AWS reports a stopped execution ABORTED; moto 5.2.5 reports FAILED when the stop lands inside a Map.
        assert execution["status"] in ("ABORTED", "FAILED")
        manifest = json.loads(cloud.read("requests/stop-me/manifest.json"))
        assert manifest["status"] == "cancelled" and manifest["cancelled_by"] == APPROVER
        export = outcome(manifest, "elevate", "export")
        assert export["status"] == "cancelled" and export["job_id"] and "cannot be withdrawn" in export["reason"]
        erase = outcome(manifest, "elevate", "erase")
        assert erase["status"] == "cancelled" and "before anything was sent" in erase["reason"]
        assert sims["elevate"].destructive_calls() == []
        assert cloud.ledger().item("stop-me")["status"] == "cancelled"
        assert "open_pk" not in cloud.ledger().item("stop-me")
        status, body = cloud.api("POST", "/requests/stop-me/cancel", principal=APPROVER)
        assert status == 409 and "finished" in body["message"]
        status, body = cloud.api("POST", "/requests/stop-me/retry", principal=APPROVER)
        assert status == 409 and "cancelled" in body["message"]
        (cancelled,) = _events(cloud, "cancelled")
        validate_event(cancelled)
        assert cancelled["detail"]["by"] == APPROVER


def test_extend_moves_the_deadline_within_the_gdpr_limits_and_the_sweep_warns_once():
    received = (datetime.now(UTC) - timedelta(days=25)).isoformat()
    with local_run(vendors=("bloomreach",), require_approval="erase", time_scale=GATE_SCALE) as (cloud, _):
        cloud.submit(
            {
                "request_id": "longer",
                "actions": ["export", "erase"],
                "subject": sample_subject(),
                "received_at": received,
            }
        )
        _awaiting(cloud, "longer")
        # Due in 5 days: the sweep warns once.
        first = cloud.sweep()
        assert first["warned"] == ["longer"] and first["due_soon"] == 1
        assert cloud.sweep()["warned"] == []
        (at_risk,) = _events(cloud, "deadline_at_risk")
        validate_event(at_risk)

        bad = [
            ({"days": 0, "reason": "x"}, 400),
            ({"days": 61, "reason": "x"}, 400),
            ({"days": 10}, 400),
            ({"days": 10, "reason": f"asked by {SAMPLE.email}"}, 400),
        ]
        for body, expected in bad:
            status, answer = cloud.api("POST", "/requests/longer/extend", body, principal=APPROVER)
            assert status == expected, (body, answer)
        status, body = cloud.api(
            "POST", "/requests/longer/extend", {"days": 30, "reason": "complex request"}, principal=APPROVER
        )
        assert status == 200, body
        original = datetime.fromisoformat(body["original_deadline"])
        assert datetime.fromisoformat(body["deadline"]) == original + timedelta(days=30)
        status, body = cloud.api("POST", "/requests/longer/extend", {"days": 31, "reason": "more"}, principal=APPROVER)
        assert status == 409 and "60 days" in body["message"]
        # The new deadline is what the list filter, the sweep and the manifest read.
        soon = (datetime.now(UTC) + timedelta(days=7)).isoformat()
        assert cloud.api("GET", "/requests", query={"due_before": soon})[1]["requests"] == []
        assert cloud.sweep()["due_soon"] == 0
        (extended,) = _events(cloud, "deadline_extended")
        validate_event(extended)
        assert extended["detail"]["extended_days"] == 30
        cloud.api("POST", "/requests/longer/approve", principal=APPROVER)
        summary = summary_of(cloud, "longer")
        assert summary["deadline"] == body_deadline(cloud, "longer") and summary["within_deadline"] is True
        assert summary["original_deadline"] is not None


def body_deadline(cloud: Any, request_id: str) -> str:
    return cloud.ledger().item(request_id)["deadline"]


def test_the_routes_answer_404_409_and_400_without_changing_anything():
    with local_run(vendors=("bloomreach",)) as (cloud, _):
        for method, path in (
            ("GET", "/requests/nobody"),
            ("GET", "/requests/nobody/audit"),
            ("POST", "/requests/nobody/approve"),
            ("POST", "/requests/nobody/retry"),
            ("POST", "/requests/nobody/cancel"),
        ):
            status, body = cloud.api(method, path, principal=APPROVER)
            assert status == 404, (method, path, body)
        status, body = cloud.api("POST", "/requests/nobody/deny", {"reason": "x"}, principal=APPROVER)
        assert status == 404
        cloud.submit({"request_id": "plain", "actions": ["export"], "subject": sample_subject()})
        summary_of(cloud, "plain")
        before = cloud.ledger().item("plain")
        for method, path, body, expected in (
            ("POST", "/requests/plain/approve", None, 409),
            ("POST", "/requests/plain/deny", {"reason": "no"}, 409),
            ("POST", "/requests/plain/cancel", None, 409),
            ("POST", "/requests/plain/retry", None, 409),
            ("POST", "/requests/plain/extend", {"days": 5, "reason": "late"}, 409),
            ("POST", "/requests/plain/approve", "{not json", 400),
            ("POST", "/requests/plain/extend", {"days": "5", "reason": "x"}, 400),
            ("GET", "/requests", None, 200),
        ):
            status, answer = cloud.api(method, path, body, principal=APPROVER)
            assert status == expected, (method, path, answer)
        assert cloud.ledger().item("plain") == before, "a refused call changed the ledger"
        status, page = cloud.api("GET", "/requests", query={"status": "completed", "limit": "1"})
        assert status == 200 and [r["request_id"] for r in page["requests"]] == ["plain"]
        status, body = cloud.api("GET", "/requests", query={"next_token": "garbage!"})
        assert status == 400 and body["fields"][0]["field"] == "next_token"


def test_cancelling_a_retry_keeps_what_earlier_attempts_completed():
    with local_run(vendors=("bloomreach",), require_approval="erase", time_scale=GATE_SCALE) as (cloud, sims):
        cloud.submit({"request_id": "keep", "actions": ["export", "erase"], "subject": sample_subject()})
        _awaiting(cloud, "keep")
        cloud.api("POST", "/requests/keep/deny", {"reason": "legal hold"}, principal=APPROVER)
        first = summary_of(cloud, "keep")
        archives = outcome(first, "bloomreach", "export")["archives"]
        assert archives
        status, body = cloud.api("POST", "/requests/keep/retry", principal=APPROVER)
        assert status == 202, body
        _awaiting(cloud, "keep")
        status, body = cloud.api("POST", "/requests/keep/cancel", principal=APPROVER)
        assert status == 200, body
        manifest = json.loads(cloud.read("requests/keep/manifest.json"))
        assert manifest["status"] == "cancelled" and manifest["attempt"] == 2
        export = outcome(manifest, "bloomreach", "export")
        assert export["status"] == "completed" and export["archives"] == archives, "proof of the export kept"
        erase = outcome(manifest, "bloomreach", "erase")
        assert erase["status"] == "cancelled" and [a["status"] for a in erase["attempts"]] == ["denied", "cancelled"]
        assert cloud.ledger().item("keep")["action#bloomreach#export"]["state"] == "completed"
        assert sims["bloomreach"].destructive_calls() == []
