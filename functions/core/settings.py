"""Deployment settings from the Lambda environment (see ARCHITECTURE.md, "Environment")."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Literal

from pydantic import Field, ValidationError

from core.errors import ConfigError
from core.limits import VendorLimit, parse_limits
from core.model import Model


class Settings(Model):
    archive_bucket: str = Field(min_length=3)
    archive_kms_key_id: str = Field(min_length=1)
    vendor_secrets: dict[str, str] = Field(default_factory=dict)
    state_machine_arn: str | None = None
    event_bus_name: str | None = None
    secrets_max_age: int = 300
    approval_mode: Literal["auto", "manual"] = "auto"  # Qualifio's own DPO validation (the vendor's gate)
    require_approval: Literal["none", "erase", "all"] = "none"  # dsrflow's approval gate (ours)
    ledger_table: str | None = None
    ledger_retention_days: int = Field(default=1095, ge=1)
    # GET /requests/{id}/package: how long a minted link is valid. A presigned URL also dies with the
    # credentials that signed it (the intake role's session), so more than an hour is not promised (SECURITY.md).
    package_url_seconds: int = Field(default=3600, ge=60, le=43200)
    # The Package step (core/package.py): the size of one ranged read of a vendor zip (its memory), and the
    # deployer's text about the controller (a file in a layer; empty: the bundled neutral template).
    package_read_mb: int = Field(default=8, ge=1, le=256)
    controller_text_file: str | None = None
    # Per-vendor limits across executions (core/limits.py): {"<vendor>": {"jobs": N, "callsPerSecond": R}}.
    vendor_limits: dict[str, VendorLimit] = Field(default_factory=dict)
    # <API>/callbacks/: the unsigned route a vendor calls when its job is done (core/callbacks.py); unset: polled.
    callback_base_url: str | None = None
    # Bulk intake (core/bulk.py): the bulk state machine, the KMS HMAC key request and batch ids are derived
    # with, and the rate (child executions in flight per batch).
    bulk_state_machine_arn: str | None = None
    bulk_mac_key_id: str | None = None
    bulk_max_concurrency: int = Field(default=10, ge=1, le=1000)


_ENV = {
    "archive_bucket": "ARCHIVE_BUCKET",
    "archive_kms_key_id": "ARCHIVE_KMS_KEY_ID",
    "vendor_secrets": "VENDOR_SECRETS",
    "state_machine_arn": "STATE_MACHINE_ARN",
    "event_bus_name": "EVENT_BUS_NAME",
    "secrets_max_age": "SECRETS_MAX_AGE",
    "approval_mode": "APPROVAL_MODE",
    "require_approval": "REQUIRE_APPROVAL",
    "ledger_table": "LEDGER_TABLE",
    "ledger_retention_days": "LEDGER_RETENTION_DAYS",
    "package_url_seconds": "PACKAGE_URL_SECONDS",
    "package_read_mb": "PACKAGE_READ_MB",
    "controller_text_file": "CONTROLLER_TEXT_FILE",
    "vendor_limits": "VENDOR_LIMITS",
    "callback_base_url": "CALLBACK_BASE_URL",
    "bulk_state_machine_arn": "BULK_STATE_MACHINE_ARN",
    "bulk_mac_key_id": "BULK_MAC_KEY_ID",
    "bulk_max_concurrency": "BULK_MAX_CONCURRENCY",
}


@lru_cache(maxsize=1)
def settings() -> Settings:
    raw: dict[str, object] = {}
    for field, var in _ENV.items():
        value = os.environ.get(var)
        if value in (None, ""):
            continue
        if field == "vendor_limits":
            raw[field] = parse_limits(value)
            continue
        if field == "vendor_secrets":
            try:
                value = json.loads(value)
            except ValueError:
                raise ConfigError("dsrflow", var, "is not valid JSON") from None
        raw[field] = value
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_input=False)[0]
        var = _ENV.get(str(first["loc"][0]), str(first["loc"][0]))
        raise ConfigError("dsrflow", var, "is missing" if first["type"] == "missing" else first["msg"]) from None
