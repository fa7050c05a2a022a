"""The request ledger through the real ASL: what one export+erase request across all vendors leaves there."""

from __future__ import annotations

import json

import pytest

from local.simulators.data import SAMPLE
from tests.workflow.conftest import local_run, sample_subject

pytestmark = pytest.mark.slow

VENDORS = ("elevate", "bloomreach", "qualifio")


def test_ledger_records_the_lifecycle_without_personal_data(run_request):
    with local_run() as (cloud, _):
        _, _, summary = run_request(
            cloud, {"request_id": "dsr-ledger", "actions": ["export", "erase"], "subject": sample_subject()}
        )
        assert summary["status"] == "completed", summary
        ledger = cloud.ledger()

        item = ledger.item("dsr-ledger")
        assert item is not None
        assert item["status"] == "completed" and item["pk"] == "REQ#dsr-ledger" and item["sk"] == "REQUEST"
        assert "open_pk" not in item, "a finished request must leave the open-requests index"
        assert item["received_at"] == summary["received_at"] and item["deadline"] == summary["deadline"]
        for vendor in VENDORS:
            for action in ("export", "erase"):
                state = item[f"action#{vendor}#{action}"]
                assert state["state"] == "completed", (vendor, action, state)
                assert state["since"]

        audit = ledger.audit("dsr-ledger")
        assert [a["sk"] for a in audit] == sorted(a["sk"] for a in audit)
        assert [a["at"] for a in audit] == sorted(a["at"] for a in audit), "audit events out of time order"
        events = [a["event"] for a in audit]
        assert events[0] == "received" and events[-1] == "manifest written"
        for vendor in VENDORS:
            for action in ("export", "erase"):
                mine = [a["event"] for a in audit if a.get("vendor") == vendor and a.get("action") == action]
                assert mine[0] == "submitted" and mine[-1] == "completed", (vendor, action, mine)
                assert "checked" in mine, (vendor, action, mine)
        expires = {a["expires_at"] for a in audit} | {item["expires_at"]}
        assert len(expires) == 1, "every ledger item expires with the request's proof"

        # No subject value in any ledger item, in any case.
        everything = cloud.client("dynamodb").scan(TableName=cloud.ledger_table)["Items"]
        assert len(everything) == len(audit) + 1
        text = json.dumps(everything).casefold()
        for value in (SAMPLE.email, SAMPLE.customer_key, SAMPLE.registered):
            assert value.casefold() not in text, "a subject value reached the ledger"

        status, body = cloud.api("GET", "/requests/dsr-ledger")
        assert status == 200
        view = body["ledger"]
        assert view["status"] == "completed" and view["deadline"] == summary["deadline"]
        assert isinstance(view["days_left"], int)
        assert {(a["vendor"], a["action"]) for a in view["actions"]} == {
            (v, a) for v in VENDORS for a in ("export", "erase")
        }
        assert all(a["state"] == "completed" and a["since"] for a in view["actions"])
