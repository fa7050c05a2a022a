"""Task: finalize (logic in core.tasks.finalize): manifest.json, the CRM event, the execution output."""

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
    summary = tasks.finalize(event, runtime())
    logger.info("request finalized", extra={"status": summary["status"], "counts": summary["counts"]})
    metrics.add_metric(name=f"Requests_{summary['status']}", unit=MetricUnit.Count, value=1)
    if not summary["within_deadline"]:  # alarm on this: a GDPR deadline was missed
        metrics.add_metric(name="RequestsPastDeadline", unit=MetricUnit.Count, value=1)
    return summary
