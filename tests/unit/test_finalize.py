"""Finalize: outcomes from the Map's results (including caught errors) into the manifest."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from core.tasks import failure_reason, finalize


class FakeStore:
    bucket = "b"

    def __init__(self):
        self.manifest = None

    def put_manifest(self, manifest):
        self.manifest = manifest


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
        now=lambda: datetime(2026, 11, 24, tzinfo=timezone.utc),
        events=events,
        event_bus_name="crm-bus" if events else None,
    )


BASE = {
    "request_id": "r1",
    "received_at": "2026-11-23T10:00:00Z",
    "deadline": "2026-12-23T10:00:00Z",
    "vendors": [{"vendor": "elevate", "actions": ["export"]}, {"vendor": "qualifio", "actions": ["export"]}],
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
    assert failure_reason({"Error": "States.Timeout", "Cause": "timed out"}) == ("States.Timeout", "timed out")
    assert failure_reason(None)[1] == "failed without a recorded reason"


def test_one_failure_makes_partially_failed_and_emits_an_event_without_pii():
    events = FakeEvents()
    rt = runtime(events)
    failed = {"vendor": "qualifio", "action": "export", "status": "failed", "error": LAMBDA_ERROR}
    summary = finalize({**BASE, "results": [[DONE], [failed]]}, rt)
    assert summary["status"] == "partially_failed"
    assert summary["counts"] == {"completed": 1, "failed": 1, "skipped": 0}
    q = next(o for o in summary["outcomes"] if o["vendor"] == "qualifio")
    assert q["error"] == "VendorAuthError" and "HTTP 403" in q["reason"]
    assert rt.store.manifest.manifest_key == "requests/r1/manifest.json"
    detail = json.loads(events.entries[0]["Detail"])
    assert detail == {
        "request_id": "r1",
        "status": "partially_failed",
        "counts": summary["counts"],
        "manifest": {"bucket": "b", "key": "requests/r1/manifest.json"},
    }
    assert events.entries[0]["EventBusName"] == "crm-bus"


def test_all_completed_and_within_deadline():
    summary = finalize({**BASE, "results": [[DONE]]}, runtime())
    assert summary["status"] == "completed" and summary["within_deadline"] is True


def test_nothing_completed_is_failed_and_skips_are_reported():
    payload = {
        **BASE,
        "vendors": [],
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
            "archives": [],
            "submitted_at": None,
            "completed_at": None,
            "checks": None,
        }
    ]
