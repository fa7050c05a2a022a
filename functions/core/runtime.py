"""Wiring for the Lambda handlers: clients, store and connectors built once per container."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Literal, overload

import boto3

from connectors import registry
from connectors.base import Connector
from core.secrets import vendor_credentials
from core.settings import settings
from core.store import Store
from core.tasks import Runtime

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_stepfunctions import SFNClient


@overload
def client(service: Literal["s3"]) -> S3Client: ...
@overload
def client(service: Literal["events"]) -> EventBridgeClient: ...
@overload
def client(service: Literal["stepfunctions"]) -> SFNClient: ...
@cache
def client(service: Literal["s3", "events", "stepfunctions"]) -> S3Client | EventBridgeClient | SFNClient:
    return boto3.client(service)


def connector_for(vendor: str) -> Connector:
    # Not cached: the credentials come from Powertools' secret cache (max_age), so a rotated secret is
    # picked up without a cold start.
    return registry.build(vendor, vendor_credentials(vendor), manual_approval=settings().approval_mode == "manual")


def runtime() -> Runtime:
    s = settings()
    return Runtime(
        store=Store(client("s3"), s.archive_bucket, s.archive_kms_key_id),
        connector_for=connector_for,
        events=client("events") if s.event_bus_name else None,
        event_bus_name=s.event_bus_name,
    )


def reset() -> None:
    """Forget cached clients and settings (the local engine calls this between runs)."""
    client.cache_clear()  # type: ignore[attr-defined]  # the @cache wrapper behind the overloads
    settings.cache_clear()
