"""Powertools Logger and Tracer shared by every handler, and the wrapper every job-loop task uses.
Logs carry ids, vendors, actions and statuses, never PII."""

from __future__ import annotations

from typing import Any, Callable

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from core.models import ActionTask
from core.runtime import runtime
from core.tasks import Runtime

logger = Logger(service="dsrflow")
tracer = Tracer(service="dsrflow")
# Namespace from POWERTOOLS_METRICS_NAMESPACE; the local engine sets POWERTOOLS_METRICS_DISABLED.
metrics = Metrics(service="dsrflow")


def job_task(step: Callable[[ActionTask, Runtime], dict[str, Any]]) -> Callable[[dict, LambdaContext], dict]:
    """A Lambda handler for one job-loop step: parse the task, run the step, log the outcome."""

    @logger.inject_lambda_context(correlation_id_path="request_id", clear_state=True)
    @tracer.capture_lambda_handler
    @metrics.log_metrics
    def handler(event: dict, context: LambdaContext) -> dict:
        task = ActionTask.model_validate(event)
        logger.append_keys(vendor=task.vendor, action=task.action.value)
        result = step(task, runtime())
        status = (result.get("progress") or {}).get("status") or result.get("status") or "submitted"
        logger.info(f"{step.__name__} done", extra={"status": status})
        # Vendor in the name, not as a dimension: dimensions are per-container state, metrics per call.
        metrics.add_metric(name=f"{task.vendor}.{step.__name__}.{status}", unit=MetricUnit.Count, value=1)
        for archive in result.get("archives") or []:
            metrics.add_metric(name=f"{task.vendor}.archive_bytes", unit=MetricUnit.Bytes, value=archive["bytes"])
        return result

    return handler
