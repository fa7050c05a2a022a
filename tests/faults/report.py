"""The fault matrix's table at the end of a run: each cell's observed outcome (only when cells ran).

A pytest plugin: tests/faults/conftest.py registers it. Under pytest-xdist started from tests/ (`make test`
with -n), the controller process never loads that conftest; `pytest_plugins = ["tests.faults.report"]` in
tests/conftest.py registers it there too (the conftest then leaves it alone).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.faults.matrix import LEGEND, Fault, table

PROPERTY = "fault_cell"  # the user property each cell records: {"cell", "observed", "seconds"}

_observed: dict[str, str] = {}
_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call":
        return
    for name, value in report.user_properties:
        if name != PROPERTY:
            continue
        letter = value["observed"]
        if hasattr(report, "wasxfail"):
            letter += "x"  # a known product bug (xfail, strict)
        elif report.failed:
            letter += "!"
        _observed[value["cell"]] = letter
        if "seconds" in value:
            _seconds[value["cell"]] = value["seconds"]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _observed:
        return

    def show(fault: Fault, vendor: str) -> str:
        return _observed.get(f"{fault.id}-{vendor}", " ")

    terminalreporter.section("fault matrix (docs/FAULTS.md)")
    terminalreporter.write_line(table(show))
    terminalreporter.write_line(f"{LEGEND}; x a known product bug (xfail), ! differs from the matrix; blank: not run")
    if _seconds:
        slowest = ", ".join(f"{c} {s:.0f}s" for c, s in sorted(_seconds.items(), key=lambda kv: -kv[1])[:5])
        terminalreporter.write_line(
            f"{len(_seconds)} cells, {sum(_seconds.values()):.0f}s of cell time; slowest: {slowest}"
        )
