"""Scheduled: the deadline watch (logic in core.watch.sweep), run hourly by an EventBridge schedule (infra/watch.py).

Counts open, due-soon and overdue requests as metrics (Powertools EMF in the log: no cloudwatch:PutMetricData)
and warns once per deadline value with a `deadline_at_risk` event on EVENT_BUS_NAME. Then settles every limited
vendor's queue, so that a wake-up lost to a crash waits an hour at most.
"""

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from core import watch
from core.clock import utcnow
from core.errors import ConfigError
from core.settings import settings
from handlers.observability import logger, metrics, tracer
from handlers.runtime import client, ledger, limits


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
    queues = limits()
    if queues is not None:
        # Repeat any wake-up a crash lost: a waiter handed a slot, or a free slot nobody was handed (core/limits.py).
        for vendor in sorted(queues.limits):
            try:
                queues.settle(vendor)
            except Exception as exc:  # the watch's own work is done; the next hour tries again
                logger.warning("vendor queue not settled", extra={"vendor": vendor, "error": type(exc).__name__})
    logger.info(
        "deadline watch done",
        extra={"open": result.open, "due_soon": result.due_soon, "overdue": result.overdue, "warned": result.warned},
    )
    return result.model_dump()
