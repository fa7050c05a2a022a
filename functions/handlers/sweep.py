"""Scheduled: the deadline watch (logic in core.watch.sweep), run hourly by an EventBridge schedule (infra/watch.py).

Counts open, due-soon and overdue requests as metrics (Powertools EMF in the log: no cloudwatch:PutMetricData)
and warns once per deadline value with a `deadline_at_risk` event on EVENT_BUS_NAME.
"""

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from core import watch
from core.clock import utcnow
from core.errors import ConfigError
from core.settings import settings
from handlers.observability import logger, metrics, tracer
from handlers.runtime import client, ledger


def _metric(name: str, value: float) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    book = ledger()
    if book is None:
        raise ConfigError("dsrflow", "LEDGER_TABLE", "is missing: the deadline watch reads the request ledger")
    bus = settings().event_bus_name
    result = watch.sweep(book, events_client=client("events") if bus else None, bus=bus, now=utcnow(), metric=_metric)
    logger.info(
        "deadline watch done",
        extra={"open": result.open, "due_soon": result.due_soon, "overdue": result.overdue, "warned": result.warned},
    )
    return result.model_dump()
