"""Task: record a vendor action that failed, was denied or timed out (logic in core.tasks.record)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from core import tasks
from handlers.observability import logger, metrics, tracer
from handlers.runtime import runtime


@logger.inject_lambda_context(correlation_id_path="request_id", clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    outcome = tasks.record(event, runtime())
    logger.info(
        "outcome recorded",
        extra={"vendor": outcome["vendor"], "action": outcome["action"], "status": outcome["status"]},
    )
    metrics.add_metric(name=f"{outcome['vendor']}.{outcome['status']}", unit=MetricUnit.Count, value=1)
    return outcome
