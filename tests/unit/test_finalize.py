"""Finalize: outcomes from the Map's results (including caught errors) into the manifest."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from core.tasks import failure_reason, finalize


class FakeStore:
    bucket = "b"

    def __init__(self, keys=None):
        self.manifest = None
        self.keys = keys or []

    def put_manifest(self, manifest):
        self.manifest = manifest

    def list_keys(self, prefix):
        return [k for k in self.keys if k.startswith(prefix)]


class FakeEvents:
    def __init__(self):
        self.entries = []

    def put_events(self, Entries):
        self.entries += Entries


def runtime(events=None):
    from core.tasks import Runtime

    return Runtime(
        store=FakeStore(),
        connector_for=None,
        now=lambda: datetime(2026, 11, 24, tzinfo=UTC),
        events=events,
        event_bus_name="crm-bus" if events else None,
    )


BASE = {
    "request_id": "r1",
    "received_at": "2026-11-23T10:00:00Z",
    "deadline": "2026-12-23T10:00:00Z",
    "plan": [{"vendor": "elevate", "actions": ["export"]}, {"vendor": "qualifio", "actions": ["export"]}],
    "skipped": [],
}
DONE = {"vendor": "elevate", "action": "export", "status": "completed", "job_id": "j1", "archives": []}
LAMBDA_ERROR = {
    "Error": "VendorAuthError",
    "Cause": json.dumps(
        {"errorMessage": "qualifio: GET /v1/gdpr/profiles was refused with HTTP 403", "errorType": "VendorAuthError"}
    ),
}


def test_caught_lambda_error_becomes_a_readable_reason():
    assert failure_reason(LAMBDA_ERROR) == (
        "VendorAuthError",
        "qualifio: GET /v1/gdpr/profiles was refused with HTTP 403",
    )
    assert failure_reason(None)[1] == "failed without a recorded reason"


def test_aws_errors_get_fixed_wording_and_unknown_ones_are_not_quoted():
    # AWS's own Cause text is not ours to keep: each documented name gets a fixed explanation.
    name, message = failure_reason({"Error": "States.Timeout", "Cause": "timed out for ada@example.com"})
    assert name == "States.Timeout" and message == "the task timed out (States.Timeout); re-run the vendor"
    cause = json.dumps({"errorMessage": "RequestId: x Error: Task timed out", "errorType": "Sandbox.Timedout"})
    assert failure_reason({"Error": "Sandbox.Timedout", "Cause": cause})[0] == "Sandbox.Timedout"
    # A name nobody documented (e.g. an unhandled exception of a library) is reported by a fixed phrase only.
    leaked = {"Error": "KeyError", "Cause": json.dumps({"errorMessage": "'ada@example.com'", "errorType": "KeyError"})}
    name, message = failure_reason(leaked)
    assert name == "TaskFailed" and "ada@example.com" not in message
    # Our own errors keep their (allow-listed) message, capped.
    huge = {"Error": "VendorError", "Cause": json.dumps({"errorMessage": "x" * 100_000, "errorType": "VendorError"})}
    assert len(failure_reason(huge)[1]) <= 800


def test_one_failure_makes_partially_failed_and_emits_an_event_without_pii():
    events = FakeEvents()
    rt = runtime(events)
    failed = {"vendor": "qualifio", "action": "export", "status": "failed", "error": LAMBDA_ERROR}
    summary = finalize({**BASE, "results": [[DONE], [failed]]}, rt)
    assert summary["status"] == "partially_failed"
    assert summary["counts"] == {"completed": 1, "planned": 0, "failed": 1, "skipped": 0, "denied": 0, "cancelled": 0}
    q = next(o for o in summary["outcomes"] if o["vendor"] == "qualifio")
    assert q["error"] == "VendorAuthError" and "HTTP 403" in q["reason"]
    assert rt.store.manifest.manifest_key == "requests/r1/manifest.json"
    detail = json.loads(events.entries[0]["Detail"])
    assert detail == {
        "request_id": "r1",
        "status": "partially_failed",
        "dry_run": False,
        "counts": summary["counts"],
        "manifest": {"bucket": "b", "key": "requests/r1/manifest.json"},
        "attempt": 1,
        "package": {"available": False},
    }
    assert events.entries[0]["EventBusName"] == "crm-bus"


def test_all_completed_and_within_deadline():
    summary = finalize({**BASE, "results": [[DONE]]}, runtime())
    assert summary["status"] == "completed" and summary["within_deadline"] is True


def test_nothing_completed_is_failed_and_skips_are_reported():
    payload = {
        **BASE,
        "plan": [],
        "results": [],
        "skipped": [{"vendor": "elevate", "action": "export", "reason": "no customer_key given"}],
    }
    summary = finalize(payload, runtime())
    assert summary["status"] == "failed"
    assert summary["outcomes"] == [
        {
            "vendor": "elevate",
            "action": "export",
            "status": "skipped",
            "job_id": None,
            "reason": "no customer_key given",
            "error": None,
            "step": None,
            "archives": [],
            "submitted_at": None,
            "completed_at": None,
            "checks": None,
            "possible_duplicate": False,
            "job_ids": [],
            "planned_call": None,
            "vendor_said": [],
            "approved_by": None,
            "approved_at": None,
            "attempt": 1,
            "attempts": [{"attempt": 1, "status": "skipped", "error": None, "finished_at": None}],
        }
    ]


def test_a_dry_run_with_planned_erasures_is_completed():
    planned = {"vendor": "elevate", "action": "erase", "status": "planned", "planned_call": "POST /x?k={k}"}
    payload = {**BASE, "dry_run": True, "plan": [{"vendor": "elevate", "actions": ["export", "erase"]}]}
    summary = finalize({**payload, "results": [[DONE, planned]]}, runtime())
    assert summary["status"] == "completed" and summary["dry_run"] is True
    assert summary["counts"] == {"completed": 1, "planned": 1, "failed": 0, "skipped": 0, "denied": 0, "cancelled": 0}


def test_failed_outcomes_point_to_the_vendors_words_and_carry_a_possible_duplicate():
    said = "requests/r1/qualifio/export/vendor-said/submit-20261124T000000000000Z.json"
    rt = runtime()
    rt.store = FakeStore(keys=[said, "requests/r1/elevate/export/outcome.json"])
    failed = {
        "vendor": "qualifio",
        "action": "export",
        "status": "failed",
        "step": "check",
        "error": LAMBDA_ERROR,
        "job_state": {"possible_duplicate": True},
    }
    summary = finalize({**BASE, "results": [[DONE], [failed]]}, rt)
    q = next(o for o in summary["outcomes"] if o["vendor"] == "qualifio")
    assert q["vendor_said"] == [said] and q["possible_duplicate"] is True and q["step"] == "check"
    assert next(o for o in summary["outcomes"] if o["vendor"] == "elevate")["vendor_said"] == []


BUILT = {
    "status": "built",
    "key": "requests/r1/package/dsrflow-access-r1.zip",
    "bytes": 4096,
    "sha256": "b" * 64,
    "files": 6,
    "systems": ["elevate"],
    "built_at": "2026-11-24T00:00:00Z",
    "attempt": 1,
    "reason": None,
    "error": None,
}


def test_a_built_package_is_in_the_manifest_and_the_event_says_it_exists_without_a_link():
    events = FakeEvents()
    rt = runtime(events)
    summary = finalize({**BASE, "results": [[DONE]], "package": BUILT}, rt)
    assert summary["package"]["status"] == "built" and summary["package"]["sha256"] == "b" * 64
    assert rt.store.manifest.package.key == BUILT["key"]
    detail = json.loads(events.entries[0]["Detail"])
    assert detail["package"] == {"available": True, "bytes": 4096, "sha256": "b" * 64, "files": 6}
    assert "package/" not in events.entries[0]["Detail"] and "http" not in events.entries[0]["Detail"]


def test_a_failed_package_step_is_recorded_by_its_error_name_with_fixed_wording():
    events = FakeEvents()
    rt = runtime(events)
    caught = {"status": "failed", "error": {"Error": "PackageSourceInvalid"}}
    summary = finalize({**BASE, "results": [[DONE]], "package": caught}, rt)
    package = summary["package"]
    assert package["status"] == "failed" and package["error"] == "PackageSourceInvalid"
    assert "retry of the request builds it again" in package["reason"]
    odd = {"status": "failed", "error": {"Error": "ada@example.com leaked"}}
    assert finalize({**BASE, "results": [[DONE]], "package": odd}, rt)["package"]["error"] == "PackageFailed"
    assert json.loads(events.entries[0]["Detail"])["package"] == {"available": False}
