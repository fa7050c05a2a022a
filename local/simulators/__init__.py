"""Vendor simulators: real HTTP servers on loopback implementing the vendor contracts of docs/VENDORS.md (see base.py).

There is no list of simulators to keep: SIMULATORS is derived from the connector registry
(functions/connectors/registry.py). The registry's `"<name>": "connectors.<module>:<Stem>Connector"` has its
simulator at `local.simulators.<module>:<Stem>Simulator`; tests/unit/test_registry_derivations.py fails when
a registered vendor has none.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

_FUNCTIONS = str(Path(__file__).resolve().parents[2] / "functions")
if _FUNCTIONS not in sys.path:
    sys.path.insert(0, _FUNCTIONS)

from connectors.registry import CONNECTORS  # noqa: E402  # functions/ is on the path from here on


def simulator_target(connector_target: str) -> str:
    """ "connectors.elevate:ElevateConnector" -> "local.simulators.elevate:ElevateSimulator"."""
    module_path, class_name = connector_target.split(":")
    return f"{__name__}.{module_path.rsplit('.', 1)[-1]}:{class_name.removesuffix('Connector')}Simulator"


# name -> "module:Class", in the registry's order; the same names as the connector registry.
SIMULATORS: dict[str, str] = {name: simulator_target(target) for name, target in CONNECTORS.items()}


def simulator_class(name: str) -> Any:
    try:
        target = SIMULATORS[name]
    except KeyError:
        raise KeyError(f"no simulator named {name!r} (known: {', '.join(sorted(SIMULATORS))})") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)
