"""Cold start (issue 11): the dependency layer ships precompiled, and handlers import only what they use.

Lambda's filesystem is read-only, so a layer without bytecode is compiled on every cold start (about twice the
import time: `make bench`, bench/bench_cold_start.py). `make lambda-deps` compiles it with the Lambda's Python
into unchecked-hash .pyc files (the zip does not keep the files' times); these tests read what make would run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from handlers.catalog import HANDLERS

ROOT = Path(__file__).resolve().parents[2]
LAMBDA_PYTHON = "3.13"  # the Makefile's and infra/config.py's LAMBDA_PYTHON

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _make(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # A stamp and a layer folder of this test's own: the target is out of date, and nothing of build/ is touched.
    # `-o .venv/.installed`: never (re)build the venv for it.
    return subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(ROOT),
            "-o",
            ".venv/.installed",
            f"LAMBDA_DEPS={tmp_path / 'deps'}",
            f"LAMBDA_DEPS_STAMP={tmp_path / 'stamp'}",
            *args,
            "lambda-deps",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _commands(dry_run: str) -> list[str]:
    """`make -n`'s output, one command per entry (continuation lines joined)."""
    return [" ".join(c.split()) for c in dry_run.replace("\\\n", " ").splitlines() if c.strip()]


@needs_make
def test_the_layer_is_compiled_after_the_install_with_the_lambdas_python(tmp_path: Path) -> None:
    python = "/opt/lambda-python/bin/python3.13"  # never run: -n prints the commands
    result = _make(tmp_path, "-n", f"LAMBDA_PYTHON_BIN={python}")
    assert result.returncode == 0, result.stderr
    commands = _commands(result.stdout)
    layer = f"{tmp_path / 'deps'}/python"
    install = next(i for i, c in enumerate(commands) if " -m pip install " in c)
    assert f"--target {layer} " in commands[install] and "--no-compile" in commands[install]
    compiled = [i for i, c in enumerate(commands) if " -m compileall " in c]
    assert len(compiled) == 1, commands
    compile_ = commands[compiled[0]]
    assert compiled[0] > install, "compiled before pip installed anything"
    assert compile_.startswith(f"{python} -m compileall "), "the layer's bytecode is version-specific: the Lambda's"
    # Hash-based and never checked against the source: the asset's zip does not keep the files' times.
    assert "--invalidation-mode unchecked-hash" in compile_
    assert compile_.endswith(f" {layer}"), "the whole layer, python/ and nothing else"
    assert commands[-1] == f"touch {tmp_path / 'stamp'}"


@needs_make
def test_the_default_compiler_is_a_python_of_the_lambdas_version(tmp_path: Path) -> None:
    commands = _commands(_make(tmp_path, "-n").stdout)
    compile_ = next(c for c in commands if " -m compileall " in c)
    assert compile_.split()[0].rsplit("/", 1)[-1] == f"python{LAMBDA_PYTHON}"


@needs_make
def test_without_the_lambdas_python_the_layer_is_not_built_and_says_why(tmp_path: Path) -> None:
    layer = tmp_path / "deps" / "python"
    layer.mkdir(parents=True)
    (layer / "kept.py").write_text("")
    result = _make(tmp_path, "LAMBDA_PYTHON_BIN=/nonexistent/python3.13")
    assert result.returncode != 0
    assert f"no Python {LAMBDA_PYTHON} interpreter" in result.stderr
    assert "LAMBDA_PYTHON_BIN=" in result.stderr
    assert (layer / "kept.py").exists(), "the layer already built was removed before the check"
    assert not (tmp_path / "stamp").exists()


# Modules that only some handlers use, imported where they are used (handlers/runtime.py, handlers/observability.py):
# module -> the handlers whose import may load it.
VENDOR_TASKS = frozenset({"submit", "check", "collect"})
LATE: dict[str, frozenset[str]] = {
    "core.operations": frozenset({"intake"}),  # the operator routes (runtime.ops)
    "core.secrets": VENDOR_TASKS,  # vendor credentials (runtime.connector_for)
    "aws_lambda_powertools.utilities.parameters": VENDOR_TASKS,
    "connectors.registry": VENDOR_TASKS | {"intake", "bulk_item"},  # intake and bulk_item list the vendors
    "core.http": VENDOR_TASKS
    | {"intake", "approval", "bulk_item"},  # observability.job_task's deadline; the connectors
}


def _imported_by(module: str) -> set[str]:
    code = f"import json, sys\nimport {module}\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "functions")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("name", sorted(HANDLERS))
def test_a_handler_imports_only_what_it_uses(name: str) -> None:
    loaded = _imported_by(HANDLERS[name].handler.rsplit(".", 1)[0])
    unexpected = sorted(m for m, users in LATE.items() if m in loaded and name not in users)
    assert not unexpected, f"handlers.{name} imports {unexpected} at module level; it never uses them"
    if name in VENDOR_TASKS:  # every call builds a connector: loaded at init, not in the first call
        assert {"connectors.registry", "core.secrets"} <= loaded
