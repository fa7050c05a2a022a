"""The local engine under concurrent API calls: each call sees its own event. Powertools' resolver keeps the
current event on its module-level app, so the engine runs intake one event at a time, as one Lambda execution
environment does (local/engine.py, ONE_EVENT_AT_A_TIME)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.workflow.conftest import local_run, sample_subject

pytestmark = pytest.mark.slow

# 16 at once: without the engine's lock, a call read another's event within a few dozen calls (a 500 from the
# resolver's validation, or an answer for another id).
CALLS, AT_ONCE = 200, 16


def test_concurrent_api_calls_each_get_their_own_answer():
    with local_run(vendors=("bloomreach",)) as (cloud, _):

        def show(n: int) -> tuple[int, Any]:
            # Unknown ids: the 404 names the id asked for, and no execution starts.
            return cloud.api("GET", f"/requests/nobody-{n}")

        with ThreadPoolExecutor(max_workers=AT_ONCE) as pool:
            shown = list(pool.map(show, range(CALLS)))
        for n, (status, body) in enumerate(shown):
            assert status == 404 and f"nobody-{n}" in body["message"], (n, body)
        # And a request submitted meanwhile starts once, under its own id.
        status, body = cloud.api(
            "POST", "/requests", {"request_id": "conc-1", "actions": ["export"], "subject": sample_subject()}
        )
        assert status == 202 and body["request_id"] == "conc-1"
        assert cloud.wait("conc-1", timeout=60)["status"] == "SUCCEEDED"


def test_disabled_metrics_never_reach_stdout_however_many_invocations(capfd):
    """Powertools keeps disabled metrics forever and prints them as EMF after 100 values; the engine drops
    them after each invocation."""
    from local.engine import scheduled_event

    with local_run(vendors=("bloomreach",)) as (cloud, _):
        for _ in range(110):  # each sweep puts OpenRequests, RequestsDueSoon and RequestsOverdue
            cloud.invoke("sweep", scheduled_event())
    assert '"_aws"' not in capfd.readouterr().out
