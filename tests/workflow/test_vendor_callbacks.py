"""Qualifio's callBackUrl on real parts (core/callbacks.py): the simulator calls the local API's unsigned
GET /callbacks/{token} over loopback when its rule is done, which wakes the branch parked on its task token;
polling stays as the fallback when the callback never comes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.workflow.conftest import local_run, outcome, sample_subject, summary_of

pytestmark = pytest.mark.slow

# 3,600x: a vendor hour is a real second. Qualifio processes a rule in 4 vendor hours (4 s), the polling
# fallback looks every 6 vendor hours (6 s), and the 30-day deadline is 12 real minutes away.
SCALE = 3600.0
SIM = {"processing_minutes": 240}


def _entered(history: list[dict[str, Any]], state: str) -> int:
    return sum(
        1 for e in history if e["type"].endswith("StateEntered") and e["stateEnteredEventDetails"]["name"] == state
    )


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _export(cloud: Any, request_id: str) -> dict[str, Any]:
    cloud.submit({"request_id": request_id, "actions": ["export"], "subject": sample_subject()})
    return summary_of(cloud, request_id, timeout=120)


def test_the_callback_wakes_the_branch_with_one_look_and_keeps_no_token():
    with local_run(time_scale=SCALE, vendors=("qualifio",), callbacks=True, sim_options={"qualifio": SIM}) as (
        cloud,
        sims,
    ):
        summary = _export(cloud, "cb-1")
        qualifio = sims["qualifio"]
        assert outcome(summary, "qualifio", "export")["status"] == "completed"
        assert qualifio.callbacks_sent == 1 and qualifio.callback_answers == [202]
        history = cloud.history("cb-1")
        assert _entered(history, "Await the vendor's callback") == 1
        assert _entered(history, "Check vendor job") == 1  # woken once, looked once, collected
        assert not any(e["type"] == "TaskTimedOut" for e in history)  # woken, not timed out

        (rule,) = qualifio.rules.values()
        url = rule.callback_url
        assert url and url.startswith("http://127.0.0.1:")
        token = url.rsplit("/", 1)[1]
        kept = json.dumps(
            [
                history,
                cloud.ledger().audit("cb-1"),
                cloud.events(),
                [cloud.read(k).decode("latin-1") for k in cloud.objects("cb-1") if k.endswith(".json")],
            ],
            default=str,
        )
        assert token not in kept  # only its hash is kept

        # The route: a repeat is acknowledged and wakes nothing; anything else is refused, naming nothing.
        assert _get(url) == 202
        assert _get(url[: -len(token)] + "A" * 43) == 404
        assert _get(url[: -len(token)] + "not-a-token") == 400
        assert _get(url + "x") == 400


def test_without_the_callback_polling_finds_the_job_done():
    sim = {"qualifio": {**SIM, "send_callbacks": False}}
    with local_run(time_scale=SCALE, vendors=("qualifio",), callbacks=True, sim_options=sim) as (cloud, sims):
        summary = _export(cloud, "cb-2")
        assert outcome(summary, "qualifio", "export")["status"] == "completed"
        assert sims["qualifio"].callbacks_sent == 0
        history = cloud.history("cb-2")
        assert any(e["type"] == "TaskTimedOut" for e in history)  # the fallback's timeout, then a look
        assert _entered(history, "Check vendor job") >= 1


def test_the_callback_saves_looks_against_polling():
    """The same 4-hour rule: polled on Qualifio's schedule (looks within minutes, backing off) it is looked at
    many times; awaited by callback, once."""
    with local_run(time_scale=SCALE, vendors=("qualifio",), sim_options={"qualifio": SIM}) as (cloud, _):
        polled = outcome(_export(cloud, "poll-1"), "qualifio", "export")
    with local_run(time_scale=SCALE, vendors=("qualifio",), callbacks=True, sim_options={"qualifio": SIM}) as (
        cloud,
        _,
    ):
        woken = outcome(_export(cloud, "cb-3"), "qualifio", "export")
    assert woken["checks"] == 1
    # Every Wait lasts at least a real second (a vendor hour here), so polling gets about one look per vendor hour
    # of processing at this scale; at Qualifio's real pace (minutes, backing off) it would be more.
    assert polled["checks"] >= 3, polled["checks"]
    print(f"\nQualifio export, 4 h of processing: {polled['checks']} looks polled, {woken['checks']} with the callback")
