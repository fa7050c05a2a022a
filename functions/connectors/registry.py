"""Vendor name -> connector class. Adding a vendor is one line here (plus its module, simulator, test).

A connector class is refused unless it declares the vocabulary its kept records may use (`statuses`,
`job_id_pattern`, `native_dry_run`, see core/domain.py) and a `dry_run`: without them the allow-list
has nothing to check a vendor's words against, and a dry run could not be planned.
"""

from __future__ import annotations

import importlib
import re
from typing import TYPE_CHECKING, Any

from connectors.base import Connector, parse_credentials
from core.errors import ConfigError

if TYPE_CHECKING:
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
    cls: type[Connector] = getattr(importlib.import_module(module_name), class_name)
    _check_vocabulary(vendor, cls)
    return cls


def _check_vocabulary(vendor: str, cls: type) -> None:
    statuses = getattr(cls, "statuses", None)
    pattern = getattr(cls, "job_id_pattern", None)
    native = getattr(cls, "native_dry_run", None)
    problem = None
    if not isinstance(statuses, frozenset) or not all(isinstance(w, str) for w in statuses):
        problem = "does not declare its documented status words (statuses)"
    elif not isinstance(pattern, str):
        problem = "does not declare its job id format (job_id_pattern)"
    elif not isinstance(native, frozenset):
        problem = "does not declare which destructive actions it can dry-run itself (native_dry_run)"
    elif not callable(getattr(cls, "dry_run", None)):
        problem = "has no dry_run"
    else:
        try:
            re.compile(pattern)
        except re.error:
            problem = "declares a job_id_pattern that is not a regular expression"
    if problem is not None:
        raise ConfigError(vendor, "connector", problem)


def build(vendor: str, credentials: Any, http: VendorHttp | None = None, *, manual_approval: bool = False) -> Connector:
    """A ready connector from its credentials JSON (dict or text); ConfigError names the bad field.

    `manual_approval` is the deployment's approval mode: a human DPO validates every vendor job that can wait
    for one (Qualifio rules), whatever the vendor's secret says about validating automatically.
    """
    cls = connector_class(vendor)
    creds = parse_credentials(vendor, cls.credentials_model, credentials)
    if manual_approval and "auto_validate" in type(creds).model_fields:
        creds = creds.model_copy(update={"auto_validate": False})
    return cls(creds, http=http)  # type: ignore[call-arg]  # the Protocol types instances, not constructors
