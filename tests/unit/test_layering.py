"""Imports go one way: handlers -> connectors -> core (ARCHITECTURE.md, "Layout").

`core` holds the domain types and the connector protocol (core/domain.py), so it never needs `connectors` or
`handlers`; `connectors` never needs `handlers`. Read from the source with `ast`, so an import under
`TYPE_CHECKING`, inside a function or relative to a package counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"

# package -> the top-level packages its modules must not import
FORBIDDEN: dict[str, frozenset[str]] = {
    "core": frozenset({"connectors", "handlers"}),
    "connectors": frozenset({"handlers"}),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(FUNCTIONS).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import statement in the file (or in `source`, standing at `path`)."""
    module = _module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    text = path.read_text(encoding="utf-8") if source is None else source
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the module's own package
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            # `from . import handlers` style: the imported names may be modules themselves
            if not node.module:
                found.extend((node.lineno, f"{name}.{alias.name}".lstrip(".")) for alias in node.names)
    return found


def violations(package: str) -> list[str]:
    forbidden = FORBIDDEN[package]
    problems = []
    for path in sorted((FUNCTIONS / package).rglob("*.py")):
        for line, name in imported(path):
            if name.split(".")[0] in forbidden:
                problems.append(f"{path.relative_to(FUNCTIONS)}:{line} imports {name}")
    return problems


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_go_one_way(package: str) -> None:
    assert (FUNCTIONS / package / "__init__.py").exists()
    problems = violations(package)
    assert not problems, f"{package} must not import {', '.join(sorted(FORBIDDEN[package]))}:\n" + "\n".join(problems)


def test_the_check_sees_every_kind_of_import(tmp_path: Path) -> None:
    # The gate itself: a plain, a from-, a TYPE_CHECKING-guarded and a function-local import are all found.
    source = (
        "from typing import TYPE_CHECKING\n"
        "import connectors.registry\n"
        "from connectors.base import Action\n"
        "if TYPE_CHECKING:\n"
        "    from handlers.runtime import runtime\n"
        "def f():\n"
        "    import handlers\n"
        "from ..handlers import intake\n"
    )
    module = FUNCTIONS / "core" / "domain.py"  # any real path under core/, for the module name
    names = {name for _, name in imported(module, source)}
    assert {"connectors.registry", "connectors.base", "handlers.runtime", "handlers"} <= names
    assert [name for _, name in imported(module, "from ..handlers import intake\n")] == ["handlers"]
