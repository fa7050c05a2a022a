"""Wiring for the Lambda handlers (the composition root): clients, store, ledger and connectors.

Clients are built once per container. It lives in `handlers`, not `core`, because it joins the two: core's
tasks take a `Runtime` whose `connector_for` comes from `connectors.registry` (core never imports connectors).

Every handler imports this module, so what only some of them need is imported where it is used (issue 11, cold
start): the connectors and their secrets (HTTP clients) by `connector_for`, which the vendor tasks import at
once themselves (handlers/submit.py); the operator routes (core.operations) by `ops`; the job loop and its
models (core.tasks, core.ledger, core.store) by `runtime` and `ledger`, which the callback route never calls.
tests/unit/test_cold_start.py keeps them out of the other handlers' imports.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Literal, overload

from botocore.config import Config

from core import aws
from core.errors import ConfigError
from core.settings import settings

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_kms import KMSClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_stepfunctions import SFNClient

    from connectors.base import Connector
    from core.callbacks import Callbacks
    from core.ledger import Ledger
    from core.limits import Limits
    from core.operations import Ops
    from core.tasks import Runtime


@overload
def client(service: Literal["s3"]) -> S3Client: ...
@overload
def client(service: Literal["events"]) -> EventBridgeClient: ...
@overload
def client(service: Literal["stepfunctions"]) -> SFNClient: ...
@overload
def client(service: Literal["dynamodb"]) -> DynamoDBClient: ...
@overload
def client(service: Literal["kms"]) -> KMSClient: ...
@cache
def client(
    service: Literal["s3", "events", "stepfunctions", "dynamodb", "kms"],
) -> S3Client | EventBridgeClient | SFNClient | DynamoDBClient | KMSClient:
    # Typed by the overloads above (a botocore client is typed Any: the stubs type boto3.client's answer).
    made: S3Client | EventBridgeClient | SFNClient | DynamoDBClient | KMSClient
    if service == "dynamodb":
        # The ledger's writes: botocore's standard retries first (core.ledger adds its own on throttling).
        made = aws.client("dynamodb", config=Config(retries={"mode": "standard", "max_attempts": 5}))
    else:
        made = aws.client(service)
    return made


@cache
def presigner() -> S3Client:
    """The client that signs links to the access package (GET /requests/{id}/package): SigV4 (botocore presigns
    with SigV2 unless the signature version is set explicitly) on the bucket's regional virtual-hosted endpoint."""
    signer: S3Client = aws.client("s3", config=Config(signature_version="s3v4", s3={"addressing_style": "virtual"}))
    return signer


def connector_for(vendor: str) -> Connector:
    # Not cached: the credentials come from Powertools' secret cache (max_age), so a rotated secret is
    # picked up without a cold start.
    from connectors import registry
    from core.secrets import vendor_credentials

    return registry.build(vendor, vendor_credentials(vendor), manual_approval=settings().approval_mode == "manual")


def _ledger_metric(name: str) -> None:
    from aws_lambda_powertools import Metrics
    from aws_lambda_powertools.metrics import MetricUnit

    # Powertools shares one metric set per process: the handler's log_metrics flushes it.
    Metrics(service="dsrflow").add_metric(name=name, unit=MetricUnit.Count, value=1)


def ledger() -> Ledger | None:
    """The request ledger, or None where LEDGER_TABLE is unset (unit tests that do not need it)."""
    s = settings()
    if not s.ledger_table:
        return None
    from core.ledger import Ledger

    return Ledger(client("dynamodb"), s.ledger_table, retention_days=s.ledger_retention_days, metric=_ledger_metric)


def limits() -> Limits | None:
    """The per-vendor limits (core/limits.py), or None where no vendor has one or there is no ledger table."""
    s = settings()
    if not s.vendor_limits or not s.ledger_table:
        return None
    from core.limits import Limits

    return Limits(client("dynamodb"), s.ledger_table, s.vendor_limits, sfn=client("stepfunctions"))


def callbacks() -> Callbacks | None:
    """Vendor callbacks (core/callbacks.py), or None where there is no ledger table."""
    s = settings()
    if not s.ledger_table:
        return None
    from core.callbacks import Callbacks

    return Callbacks(client("dynamodb"), s.ledger_table, sfn=client("stepfunctions"))


def runtime() -> Runtime:
    # Here, not at the top: core.tasks holds the job loop and its models, which the callback route, the sweep
    # and the bulk functions never run (issue 11, cold start).
    from core.store import Store
    from core.tasks import Runtime

    s = settings()
    return Runtime(
        store=Store(client("s3"), s.archive_bucket, s.archive_kms_key_id),
        connector_for=connector_for,
        events=client("events") if s.event_bus_name else None,
        event_bus_name=s.event_bus_name,
        ledger=ledger(),
        limits=limits(),
        callbacks=callbacks(),
        callback_base_url=s.callback_base_url,
    )


def reset() -> None:
    """Forget cached clients and settings (the local engine calls this between runs)."""
    client.cache_clear()  # type: ignore[attr-defined]  # the @cache wrapper behind the overloads
    presigner.cache_clear()
    settings.cache_clear()
    aws.reset()


def ops() -> Ops:
    """The operator routes' dependencies (core/operations.py): they need the ledger."""
    from core.operations import Ops

    s = settings()
    rt = runtime()
    if rt.ledger is None:
        raise ConfigError("dsrflow", "LEDGER_TABLE", "is required by the operator routes")
    return Ops(
        store=rt.store,
        sfn=client("stepfunctions"),
        state_machine_arn=s.state_machine_arn or "",
        ledger=rt.ledger,
        events=client("events") if s.event_bus_name else None,
        event_bus_name=s.event_bus_name,
        approval_gate=s.require_approval,
        package_url_seconds=s.package_url_seconds,
        presigner=presigner(),
    )
