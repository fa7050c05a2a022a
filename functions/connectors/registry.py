"""Vendor name -> connector class. Adding a vendor is one line here (plus its module, simulator, test)."""

from __future__ import annotations

import importlib
from typing import Any

from connectors.base import Connector, parse_credentials
from core.errors import ConfigError
from core.http import VendorHttp

# name -> "module:Class", imported on first use so one Lambda loads only what it needs.
CONNECTORS: dict[str, str] = {
    "elevate": "connectors.elevate:ElevateConnector",
    "bloomreach": "connectors.bloomreach:BloomreachConnector",
    "qualifio": "connectors.qualifio:QualifioConnector",
}


def connector_class(vendor: str) -> type[Connector]:
    try:
        target = CONNECTORS[vendor]
    except KeyError:
        known = ", ".join(sorted(CONNECTORS))
        raise ConfigError(vendor, "vendor", f"is not a known vendor (known: {known})") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def build(vendor: str, credentials: Any, http: VendorHttp | None = None, *, manual_approval: bool = False) -> Connector:
    """A ready connector from its credentials JSON (dict or text); ConfigError names the bad field.

    `manual_approval` is the deployment's approval mode: a human DPO validates every vendor job that can wait
    for one (Qualifio rules), whatever the vendor's secret says about validating automatically.
    """
    cls = connector_class(vendor)
    creds = parse_credentials(vendor, cls.credentials_model, credentials)
    if manual_approval and "auto_validate" in type(creds).model_fields:
        creds = creds.model_copy(update={"auto_validate": False})
    return cls(creds, http=http)  # type: ignore[call-arg]
