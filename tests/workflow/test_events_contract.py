"""The event contracts end to end: every dsrflow event the local engine's bus received during one demo request,
and during a deadline-watch sweep, matches its JSON Schema (schemas/events/, tests/event_schemas.py)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from core.ledger import pk
from tests.event_schemas import validate_event
from tests.workflow.conftest import local_run, sample_subject

pytestmark = pytest.mark.slow


def test_every_event_of_a_request_and_of_a_sweep_matches_its_schema(run_request):
    with local_run() as (cloud, _):
        assert cloud.events() == []
        accepted, _, summary = run_request(
            cloud, {"actions": ["export", "erase"], "subject": sample_subject(), "dry_run": True}
        )
        request_id = accepted["request_id"]
        events = first = cloud.events()
        kinds = Counter(validate_event(e) for e in events)
        assert kinds["completed"] == 1, kinds
        (completed,) = [e for e in events if e["detail-type"] == "Data Subject Request Completed"]
        assert completed["source"] == "dsrflow"
        assert completed["detail"]["request_id"] == request_id
        assert completed["detail"]["status"] == summary["status"]
        assert completed["detail"]["manifest"] == {
            "bucket": cloud.bucket,
            "key": f"requests/{request_id}/manifest.json",
        }

        # The request is finished: the watch sees nothing open. An open request due in 3 days (written as intake
        # writes one) is warned once, through the deployed handler and the bus.
        assert cloud.sweep() == {"open": 0, "due_soon": 0, "overdue": 0, "warned": []}
        deadline = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
        cloud.client("dynamodb").put_item(
            TableName=cloud.ledger_table,
            Item={
                "pk": {"S": pk("dsr-due-soon")},
                "sk": {"S": "REQUEST"},
                "request_id": {"S": "dsr-due-soon"},
                "status": {"S": "running"},
                "deadline": {"S": deadline.isoformat().replace("+00:00", "Z")},
                "open_pk": {"S": "OPEN"},
            },
        )
        assert cloud.sweep() == {"open": 1, "due_soon": 1, "overdue": 0, "warned": ["dsr-due-soon"]}
        assert cloud.sweep()["warned"] == []  # once per deadline
        events = cloud.events()
        assert events[: len(first)] == first  # accumulated, oldest first
        new = [validate_event(e) for e in events[len(first) :]]
        assert new == ["deadline_at_risk"]
        assert events[-1]["detail"]["request_id"] == "dsr-due-soon" and events[-1]["detail"]["days_left"] in (2, 3)
