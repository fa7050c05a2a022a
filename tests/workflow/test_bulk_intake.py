"""Bulk intake on the real parts: statemachines/bulk.asl.json's Distributed Map run by moto's interpreter, the
bulk and bulk_item handlers in-process, every line started through core.intake into the real DSR state machine."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from local.engine import LocalCloud
from local.simulators.data import SAMPLE
from tests.workflow.conftest import local_run, sample_subject

pytestmark = pytest.mark.slow


def _wait_bulk(cloud: LocalCloud, batch_id: str, timeout: float = 180) -> dict[str, Any]:
    sfn = cloud.client("stepfunctions")
    arn = cloud.bulk_execution_arn(batch_id)
    deadline = time.monotonic() + timeout
    while True:
        execution = sfn.describe_execution(executionArn=arn)
        if execution["status"] != "RUNNING":
            assert execution["status"] == "SUCCEEDED", (execution.get("error"), execution.get("cause"))
            out: dict[str, Any] = json.loads(execution["output"])
            return out
        assert time.monotonic() < deadline, "the bulk execution did not finish"
        time.sleep(0.3)


def _dsr_executions(cloud: LocalCloud) -> list[str]:
    sfn = cloud.client("stepfunctions")
    names: list[str] = []
    for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=cloud.state_machine_arn):
        names += [e["name"] for e in page["executions"]]
    return names


def _batch() -> tuple[bytes, dict[str, int]]:
    """20 lines: 17 distinct requests, line 7 not JSON, line 12 missing its subject, line 18 = line 3."""
    subject = sample_subject()
    lines = []
    for n in range(1, 21):
        line: dict[str, Any] = {"actions": ["export"], "subject": subject, "dry_run": True, "justification": f"n{n}"}
        lines.append(json.dumps(line))
    lines[6] = '{"actions": ["export"], "subject": '  # line 7: cut short
    lines[11] = json.dumps({"actions": ["export"], "justification": "no subject"})  # line 12
    lines[17] = lines[2]  # line 18: the same request as line 3
    return ("\n".join(lines) + "\n").encode(), {"bad": 2, "duplicate": 1}


def _no_email_in(cloud: LocalCloud, text: str) -> None:
    for value in (SAMPLE.email, SAMPLE.customer_key):
        assert value not in text


def test_a_dropped_file_starts_each_line_once_and_lists_every_line():
    body, _ = _batch()
    with local_run(vendors=("qualifio",)) as (cloud, _sims):
        dropped = cloud.drop_bulk_file("crm-backfill.jsonl", body)
        assert dropped["started"] is True
        batch_id = dropped["batch_id"]
        out = _wait_bulk(cloud, batch_id)
        assert out == {
            "batch_id": batch_id,
            "result_key": f"bulk/results/{batch_id}.jsonl",
            "lines": 20,
            "started": 17,
            "already_started": 1,
            "invalid": 2,
            "conflict": 0,
            "not_processed": 0,
        }
        rows = [json.loads(r) for r in cloud.read(out["result_key"]).decode().splitlines()]
        assert [r["line"] for r in rows] == list(range(1, 21))
        by_line = {r["line"]: r for r in rows}
        assert by_line[7] == {
            "line": 7,
            "status": "invalid",
            "request_id": None,
            "errors": [{"field": "(line)", "message": "is not JSON"}],
        }
        assert by_line[12]["status"] == "invalid"
        assert [e["field"] for e in by_line[12]["errors"]] == ["subject"]
        # Lines 3 and 18 ask the same: one request id, started once; the file lists the first line as the one
        # that started it, whichever of the two children won the race.
        assert by_line[3]["request_id"] == by_line[18]["request_id"]
        assert (by_line[3]["status"], by_line[18]["status"]) == ("started", "already started")
        started = {r["request_id"] for r in rows if r["status"] == "started"}
        assert len(started) == 17
        assert sorted(_dsr_executions(cloud)) == sorted(started)

        # Re-submitted: the same file under another name, and the same drop's event again. Nothing new starts.
        again = cloud.drop_bulk_file("crm-backfill-again.jsonl", body)
        out2 = _wait_bulk(cloud, again["batch_id"])
        assert (out2["started"], out2["already_started"], out2["invalid"]) == (0, 18, 2)
        assert len(_dsr_executions(cloud)) == 17

        # Nothing kept holds the subject: the result files, the bulk execution's history, the ledger.
        _no_email_in(cloud, cloud.read(out["result_key"]).decode())
        sfn = cloud.client("stepfunctions")
        history = sfn.get_execution_history(executionArn=cloud.bulk_execution_arn(batch_id), maxResults=1000)
        _no_email_in(cloud, json.dumps(history["events"], default=str))
        for request_id in list(started)[:3]:
            _no_email_in(cloud, json.dumps(cloud.ledger().view(request_id), default=str))


def test_post_requests_bulk_starts_a_batch_and_the_same_body_again_starts_nothing():
    body, _ = _batch()
    with local_run(vendors=("qualifio",)) as (cloud, _sims):
        status, answer = cloud.api("POST", "/requests/bulk", body.decode())
        assert status == 202, answer
        assert answer["lines"] == 20 and answer["status"] == "accepted"
        out = _wait_bulk(cloud, answer["batch_id"])
        assert out["started"] == 17 and out["result_key"] == answer["result_key"]
        status, again = cloud.api("POST", "/requests/bulk", body.decode())
        assert status == 200 and again["batch_id"] == answer["batch_id"] and again["status"] == "duplicate"
        assert len(_dsr_executions(cloud)) == 17


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "has no line (one JSON object per line is expected)"),
        ("\n \n", "has no line (one JSON object per line is expected)"),
    ],
)
def test_post_requests_bulk_refuses_a_body_with_no_line(body, message):
    with local_run(vendors=("qualifio",)) as (cloud, _sims):
        status, answer = cloud.api("POST", "/requests/bulk", body)
        assert status == 400
        assert answer == {"error": "invalid request", "fields": [{"field": "(body)", "message": message}]}
