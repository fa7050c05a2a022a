"""Every vendor x every fault, through the real ASL in the local engine: each cell survives or clearly fails,
as tests/faults/matrix.py defines and docs/FAULTS.md shows."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.faults.matrix import DOC_END, DOC_START, cell_ids, doc_section, lookup
from tests.faults.run import run_isolated

DOC = Path(__file__).resolve().parents[2] / "docs" / "FAULTS.md"


class KnownBug(AssertionError):
    """The cell failed exactly on the product bug its matrix entry names (matrix.Bug)."""


def _param(cell_id: str) -> Any:
    bug = lookup(cell_id)[2].xfail
    marks = [pytest.mark.xfail(strict=True, raises=KnownBug, reason=f"product bug: {bug.reason}")] if bug else []
    return pytest.param(cell_id, id=cell_id, marks=marks)


@pytest.mark.slow
@pytest.mark.parametrize("cell_id", [_param(c) for c in cell_ids()])
def test_cell(cell_id: str, matrix_pool: Any, capfd: pytest.CaptureFixture[str], record_property: Any) -> None:
    fault, vendor, cell = lookup(cell_id)
    if cell.outcome == "-":
        record_property("fault_cell", {"cell": cell_id, "observed": "–"})
        pytest.skip(f"not applicable to {vendor}: {cell.na}")
    result = matrix_pool.result(cell_id) if matrix_pool is not None else run_isolated(cell_id, capfd)
    record_property("fault_cell", {"cell": cell_id, "observed": result.observed, "seconds": round(result.seconds, 1)})
    if result.error:
        message = (
            f"{fault.title} at {vendor}: expected {cell.outcome}, observed {result.observed} ({result.seconds:.1f}s)"
        )
        if cell.xfail and re.search(cell.xfail.match, result.error):
            raise KnownBug(f"{message}: {result.error}")
        pytest.fail(f"{message}\n{result.error}", pytrace=False)


def test_the_doc_shows_the_matrix() -> None:
    text = DOC.read_text()
    assert DOC_START in text and DOC_END in text, f"docs/FAULTS.md lost its matrix markers ({DOC_START})"
    shown = text[text.index(DOC_START) : text.index(DOC_END) + len(DOC_END)]
    expected = doc_section()
    assert shown == expected, (
        "docs/FAULTS.md's matrix is not tests/faults/matrix.py's: regenerate it with "
        f"`.venv/bin/python -m tests.faults.matrix`. It should read:\n{expected}"
    )
