"""The request's deadline caps every vendor job, through the real ASL in moto: a request received 29 days ago
cannot wait for Elevate's 5-day archive, so nothing is submitted there and the DPO is told to extend; after
an extension a retry runs it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.workflow.conftest import local_run, outcome, sample_subject, summary_of

pytestmark = pytest.mark.slow

DPO = "arn:aws:iam::123456789012:role/dpo"


def test_a_vendor_that_cannot_finish_before_the_deadline_gets_nothing_and_an_extension_lets_a_retry_run_it():
    received = (datetime.now(UTC) - timedelta(days=29)).isoformat()
    with local_run(vendors=("elevate", "bloomreach")) as (cloud, sims):
        cloud.submit(
            {"request_id": "late-1", "actions": ["export"], "received_at": received, "subject": sample_subject()}
        )
        first = summary_of(cloud, "late-1")
        assert first["status"] == "partially_failed"
        late = outcome(first, "elevate", "export")
        assert late["status"] == "failed" and late["error"] == "DeadlineUnreachable" and late["step"] == "submit"
        assert late["reason"].startswith("elevate submit:") and "Extend the deadline" in late["reason"]
        assert sims["elevate"].jobs_created() == 0, "nothing was submitted to a vendor that could not finish"
        assert outcome(first, "bloomreach", "export")["status"] == "completed", "a fast vendor still answers"

        status, body = cloud.api(
            "POST", "/requests/late-1/extend", {"days": 30, "reason": "Elevate needs its archive window"}, principal=DPO
        )
        assert status == 200, body
        status, body = cloud.api("POST", "/requests/late-1/retry", principal=DPO)
        assert status == 202 and body["actions"] == ["elevate/export"], body
        second = summary_of(cloud, "late-1.retry-2")
        assert second["status"] == "completed", second
        assert sims["elevate"].jobs_created() == 1
        assert second["within_deadline"] is True
