"""Powertools Logger and Tracer shared by every handler, and the wrapper every job-loop task uses.
Logs carry ids, vendors, actions and statuses, never PII."""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from core.errors import DsrError, TaskCrashed

if TYPE_CHECKING:
    from core.models import StepState
    from core.tasks import Runtime

logger = Logger(service="dsrflow")
# Patched for X-Ray: the AWS SDK in every handler; the vendors' HTTP client (requests) only in the vendor tasks,
# which call trace_vendor_http(). Patching everything (Powertools' default) imports requests, its encodings and
# http.cookiejar into handlers that never make an HTTP call, at every cold start (issue 11).
tracer = Tracer(service="dsrflow", patch_modules=("botocore",))


def trace_vendor_http() -> None:
    """Trace the vendor calls too (submit, check, collect: they import requests anyway)."""
    tracer.patch(("requests",))


# Namespace from POWERTOOLS_METRICS_NAMESPACE (the service's name where unset, as in unit tests, which would
# otherwise fail to flush); the local engine sets POWERTOOLS_METRICS_DISABLED.
metrics = Metrics(service="dsrflow", namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "dsrflow")


def _seconds_between(start: Any, end: Any) -> float | None:
    """`end - start` in seconds for two ISO 8601 times (a step's JSON output), None when either is unreadable."""
    try:
        return (datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(start))).total_seconds()
    except (TypeError, ValueError):
        return None


def job_task(
    step: Callable[[StepState, Runtime], dict[str, Any]],
) -> Callable[[dict[str, Any], LambdaContext], dict[str, Any]]:
    """A Lambda handler for one job-loop step: parse the task, run the step inside the Lambda's remaining time,
    log the outcome.

    Every failure leaves as a named error whose message starts with the vendor and the step ("elevate check:
    …"), so the manifest and the console say where it broke. An exception dsrflow did not anticipate becomes
    TaskCrashed naming only its type and where it was raised: its own text may quote personal data.
    """
    # Here, not at the top: only the job-loop tasks bound their vendor calls (core.http is the HTTP client,
    # requests and urllib3), the other handlers share this module without them (issue 11, cold start).
    from core.http import invocation_deadline
    from core.models import StepState
    from handlers import runtime as wiring

    name = step.__name__

    @logger.inject_lambda_context(correlation_id_path="request_id", clear_state=True)
    @tracer.capture_lambda_handler
    @metrics.log_metrics
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        task = StepState.model_validate(event)
        logger.append_keys(vendor=task.vendor, action=task.action.value, step=name)
        started = time.monotonic()
        try:
            with invocation_deadline(context.get_remaining_time_in_millis() / 1000):
                result = step(task, wiring.runtime())
        except DsrError as exc:
            own = exc.message.removeprefix(f"{task.vendor}: ")
            exc.with_message(f"{task.vendor} {name}: {own}")
            logger.warning(f"{name} failed", extra={"error": type(exc).__name__})
            metrics.add_metric(name=f"{task.vendor}.{name}.error", unit=MetricUnit.Count, value=1)
            raise
        except Exception as exc:
            where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
            at = f" at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}" if where else ""
            logger.error(f"{name} crashed", extra={"error": type(exc).__name__, "where": at.strip()})
            metrics.add_metric(name=f"{task.vendor}.{name}.error", unit=MetricUnit.Count, value=1)
            raise TaskCrashed(
                f"{task.vendor} {name}: unexpected {type(exc).__name__}{at}; the workflow retries once, "
                "then records the failure (report it with the request id)"
            ) from None
        finally:
            took_ms = (time.monotonic() - started) * 1000
            metrics.add_metric(name=f"{task.vendor}.{name}.duration", unit=MetricUnit.Milliseconds, value=took_ms)
        status = (result.get("progress") or {}).get("status") or result.get("status") or "submitted"
        logger.info(f"{name} done", extra={"status": status})
        # Vendor in the name, not as a dimension: dimensions are per-container state, metrics per call.
        metrics.add_metric(name=f"{task.vendor}.{name}.{status}", unit=MetricUnit.Count, value=1)
        if status == "completed" and result.get("submitted_at") and result.get("completed_at"):
            # A completed vendor action (collect's outcome): from its job's submission to its collection.
            took = _seconds_between(result["submitted_at"], result["completed_at"])
            if took is not None:
                metrics.add_metric(name=f"{task.vendor}.time_to_complete", unit=MetricUnit.Seconds, value=took)
        for archive in result.get("archives") or []:
            metrics.add_metric(name=f"{task.vendor}.archive_bytes", unit=MetricUnit.Bytes, value=archive["bytes"])
        return result

    return handler
