"""What the job-loop wrapper (handlers/observability.job_task) puts as metrics: the names the dashboard plots
(tests/infra/test_infra_dashboard.py checks the names exist in the code; this checks they are really put)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.errors import VendorError
from handlers import observability, runtime


class Context:
    function_name = "dsrflow-collect"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:dsrflow-collect"
    memory_limit_in_mb = 512
    aws_request_id = "req-1"
    log_group_name = "/aws/lambda/dsrflow-collect"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def _metrics(out: str) -> dict[str, Any]:
    """The EMF record Powertools printed: {metric name: value}."""
    for line in out.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "_aws" in record:
            names = [m["Name"] for d in record["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]]
            return {n: record[n] for n in names} | {"_namespace": record["_aws"]["CloudWatchMetrics"][0]["Namespace"]}
    raise AssertionError(f"no metrics printed: {out!r}")


TASK = {"request_id": "r-1", "vendor": "elevate", "action": "export", "actions": ["export"]}


def test_a_completed_collect_puts_its_duration_its_status_and_the_time_to_complete(monkeypatch, capsys):
    monkeypatch.setattr(runtime, "runtime", lambda: None)
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)

    def collect(task: Any, rt: Any) -> dict[str, Any]:
        return {"status": "completed", "submitted_at": "2026-11-23T10:00:00Z", "completed_at": "2026-11-24T11:00:00Z"}

    observability.job_task(collect)(dict(TASK), Context())
    put = _metrics(capsys.readouterr().out)
    assert put["_namespace"] == "dsrflow"
    assert put["elevate.collect.completed"] == [1.0] or put["elevate.collect.completed"] == 1.0
    assert "elevate.collect.duration" in put
    assert put["elevate.time_to_complete"] in (90000.0, [90000.0])


def test_a_failed_step_is_timed_too(monkeypatch, capsys):
    monkeypatch.setattr(runtime, "runtime", lambda: None)
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)

    def submit(task: Any, rt: Any) -> dict[str, Any]:
        raise VendorError("elevate", "refused the job")

    with pytest.raises(VendorError):
        observability.job_task(submit)(dict(TASK), Context())
    put = _metrics(capsys.readouterr().out)
    assert "elevate.submit.error" in put and "elevate.submit.duration" in put
    assert "elevate.time_to_complete" not in put
