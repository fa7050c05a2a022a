"""The fault matrix's fixtures and its table at the end of the run (docs/FAULTS.md).

Cells run in worker processes (tests/faults/run.py, Pool), DSRFLOW_FAULT_WORKERS at once (default 4: a
cell mostly sleeps through Waits and retries). They run in this process instead with
DSRFLOW_FAULT_WORKERS=1, when one cell is selected, or under pytest-xdist (which spreads them itself).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.faults.matrix import lookup
from tests.faults.run import Pool

DEFAULT_WORKERS = 4
REPORT = "tests.faults.report"


def _selected_cells(session: pytest.Session) -> list[str]:
    cells = []
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        cell_id = callspec.params.get("cell_id") if callspec is not None else None
        if cell_id is not None and lookup(cell_id)[2].outcome != "-":
            cells.append(cell_id)
    return cells


@pytest.fixture(scope="session")
def matrix_pool(request: pytest.FixtureRequest) -> Iterator[Pool | None]:
    workers = int(os.environ.get("DSRFLOW_FAULT_WORKERS", DEFAULT_WORKERS))
    cells = _selected_cells(request.session)
    if workers <= 1 or len(cells) <= 1 or os.environ.get("PYTEST_XDIST_WORKER"):
        yield None
        return
    # The longest cells first, so the last ones to finish are short.
    cells.sort(key=lambda cell_id: -lookup(cell_id)[0].cost)
    pool = Pool(cells, min(workers, len(cells)))
    try:
        yield pool
    finally:
        pool.close()


# --- the table (tests/faults/report.py) -------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin(REPORT):
        config.pluginmanager.import_plugin(REPORT)
