"""Task: package (logic in core.tasks.package, the zip in core/package.py): the access package for the subject."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from core import tasks
from core.settings import settings
from handlers.observability import logger, metrics, tracer
from handlers.runtime import runtime

MIB = 1024 * 1024


def _controller_text() -> str:
    from core.package import load_controller_text

    return load_controller_text(settings().controller_text_file)


@logger.inject_lambda_context(correlation_id_path="request_id", clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    ref = tasks.package(
        event, runtime(), read_block=settings().package_read_mb * MIB, controller_text=_controller_text()
    )
    logger.info("access package", extra={k: ref.get(k) for k in ("status", "bytes", "files", "reason")})
    return ref
