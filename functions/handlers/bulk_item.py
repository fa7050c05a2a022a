"""Bulk intake, one line (a child execution of the bulk state machine's Distributed Map, core/bulk.py): read the
line by its byte range, validate and start it as POST /requests does (core.intake), write its row."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from connectors import registry
from core import bulk, intake
from core.clock import utcnow
from core.errors import ConfigError
from core.models import DsrRequest
from core.settings import settings
from handlers.observability import logger, metrics, tracer
from handlers.runtime import client, runtime


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    item = bulk.Item.model_validate(event)
    s = settings()
    if not s.state_machine_arn or not s.bulk_mac_key_id:
        raise ConfigError("dsrflow", "STATE_MACHINE_ARN", "and BULK_MAC_KEY_ID must be set for the bulk-item function")
    if item.bucket != s.archive_bucket:
        raise ConfigError("dsrflow", "ARCHIVE_BUCKET", "is not the bucket the bulk item names")
    rt = runtime()
    now = utcnow()
    s3 = client("s3")
    text = b""
    if item.end > item.start:
        text = s3.get_object(Bucket=item.bucket, Key=item.key, Range=f"bytes={item.start}-{item.end - 1}")[
            "Body"
        ].read()

    def accept(request: DsrRequest) -> intake.Accepted:
        return intake.accept(
            request,
            source="bulk",
            store=rt.store,
            sfn=client("stepfunctions"),
            state_machine_arn=s.state_machine_arn or "",
            enabled_vendors=sorted(s.vendor_secrets),
            now=now,
            ledger=rt.ledger,
            connector_class=registry.connector_class,
            approval=s.require_approval,
            events=client("events") if s.event_bus_name else None,
            event_bus_name=s.event_bus_name,
        )

    row = bulk.process_line(text, item.line, now=now, mac=bulk.kms_mac(client("kms"), s.bulk_mac_key_id), accept=accept)
    rt.store.put_json(bulk.row_key(item.batch_id, item.line), row.model_dump(mode="json"))
    if row.status == "started":
        metrics.add_metric(name="RequestsReceived", unit=MetricUnit.Count, value=1)
    logger.info("bulk line", extra={"batch_id": item.batch_id, "line": item.line, "status": row.status})
    return {"line": row.line, "status": row.status}
