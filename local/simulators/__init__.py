"""Vendor simulators: real HTTP servers on loopback implementing the vendor contracts of docs/VENDORS.md (see base.py)."""

from __future__ import annotations

import importlib

# name -> "module:Class"; the same names as the connector registry.
SIMULATORS: dict[str, str] = {
    "elevate": "local.simulators.elevate:ElevateSimulator",
    "bloomreach": "local.simulators.bloomreach:BloomreachSimulator",
    "qualifio": "local.simulators.qualifio:QualifioSimulator",
}


def simulator_class(name: str):
    module_name, class_name = SIMULATORS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)
