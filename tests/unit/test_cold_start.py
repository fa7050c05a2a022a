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


# Modules that only some handlers use, imported where they are used (handlers/runtime.py, handlers/observability.py,
# the connectors): module -> the handlers whose import may load it.
VENDOR_TASKS = frozenset({"submit", "check", "collect"})
JOB_LOOP = VENDOR_TASKS | {"approval", "park", "record", "finalize", "package"}  # the tasks that take a Runtime
# The vendor tasks, and approval: job_task wraps its step at import, and the invocation deadline lives in core.http.
HTTP_USERS = VENDOR_TASKS | {"approval"}
LATE: dict[str, frozenset[str]] = {
    # No handler: botocore's clients (core/aws.py), the ledger's own codec (core/dynamo.py) and the secret cache
    # (core/secrets.py) replace boto3 and Powertools' parameters, which import boto3 and s3transfer.
    "boto3": frozenset(),
    "s3transfer": frozenset(),
    "aws_lambda_powertools.utilities.parameters": frozenset(),
    "core.operations": frozenset({"intake"}),  # the operator routes (runtime.ops)
    "core.secrets": VENDOR_TASKS,  # vendor credentials (runtime.connector_for)
    "connectors.registry": VENDOR_TASKS | {"intake", "bulk_item"},  # intake and bulk_item list the vendors
    # The vendors' HTTP client: the connectors import it where they call a vendor, so intake and bulk_item, which
    # only ask a connector class what a subject lacks, never load it; job_task's invocation deadline does.
    "requests": HTTP_USERS,
    "core.http": HTTP_USERS,
    "connectors.elevate": frozenset(),  # a connector module: at its first use (registry.connector_class)
    "core.tasks": JOB_LOOP,  # the job loop and its models: not the callback route, the sweep or bulk intake
    "core.ledger": frozenset(set(HANDLERS) - {"callback"}),
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


@pytest.mark.parametrize("name", sorted(HANDLERS))
def test_tracing_patches_the_vendor_http_client_only_in_the_vendor_tasks(name: str) -> None:
    """With tracing on (as in Lambda: LAMBDA_TASK_ROOT set), Powertools' default patches every module it knows,
    importing requests and http.cookiejar into handlers that make no HTTP call; observability patches botocore
    everywhere and requests only where trace_vendor_http() is called."""
    code = (
        f"import json, sys\nimport {HANDLERS[name].handler.rsplit('.', 1)[0]}\nprint(json.dumps(sorted(sys.modules)))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "functions"), "LAMBDA_TASK_ROOT": "/var/task"}
    env.pop("POWERTOOLS_TRACE_DISABLED", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "aws_xray_sdk" in loaded  # tracing is on in this run: the check below means something
    if name not in HTTP_USERS:
        assert "requests" not in loaded and "http.cookiejar" not in loaded, name


# --- the code asset, precompiled (infra/code_asset.py, `make functions-asset`) -----------------------------


def _lambda_python() -> str | None:
    from bench.bench_cold_start import lambda_python

    return lambda_python()


def test_synth_and_deploy_depend_on_the_precompiled_code_asset() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ("synth", "deploy"):
        line = next(x for x in makefile.splitlines() if x.startswith(f"{target}:"))
        assert "functions-asset" in line.split(":", 1)[1].split(), line
    recipe = makefile.split("\nfunctions-asset:", 1)[1].split("\n\n", 1)[0]
    assert "-m infra.code_asset --python $(LAMBDA_PYTHON_BIN)" in recipe


def test_the_code_asset_python_is_the_lambdas() -> None:
    from infra import code_asset

    config = (ROOT / "infra" / "config.py").read_text()
    assert f'LAMBDA_PYTHON = "{code_asset.LAMBDA_PYTHON}"' in config


def _source(tmp_path: Path) -> Path:
    source = tmp_path / "functions"
    (source / "pkg" / "__pycache__").mkdir(parents=True)
    (source / "pkg" / "__init__.py").write_text("")
    (source / "pkg" / "mod.py").write_text("VALUE = 1\n")
    (source / "pkg" / "data.txt").write_text("kept")
    (source / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"litter")  # another Python's
    (source / "pkg" / "stray.pyc").write_bytes(b"litter")
    return source


def test_the_code_asset_is_built_without_litter_and_with_unchecked_hash_bytecode(tmp_path: Path) -> None:
    from infra import code_asset

    python = _lambda_python()
    if python is None:
        pytest.skip(f"no Python {LAMBDA_PYTHON} interpreter on this machine")
    source, asset, stamp = _source(tmp_path), tmp_path / "asset", tmp_path / "asset.sha256"
    assert code_asset.problem(asset, stamp, source) is not None  # nothing built yet
    assert code_asset.build(python, source, asset, stamp) is True
    assert code_asset.problem(asset, stamp, source) is None
    files = sorted(p.relative_to(asset).as_posix() for p in asset.rglob("*") if p.is_file())
    assert files == [
        "pkg/__init__.py",
        "pkg/__pycache__/__init__.cpython-313.pyc",
        "pkg/__pycache__/mod.cpython-313.pyc",
        "pkg/data.txt",
        "pkg/mod.py",
    ]
    # PEP 552: flags 0b01 = hash-based, not checked against the source (the zip keeps no file times).
    header = (asset / "pkg" / "__pycache__" / "mod.cpython-313.pyc").read_bytes()[:8]
    assert int.from_bytes(header[4:8], "little") == 0b01
    assert code_asset.build(python, source, asset, stamp) is False, "rebuilt although nothing changed"

    # A change to the code makes the copy stale (never shipped), and the next build brings it in.
    before = code_asset.digest(asset)
    (source / "pkg" / "mod.py").write_text("VALUE = 2\n")
    problem = code_asset.problem(asset, stamp, source)
    assert problem is not None and "stale" in problem and "make functions-asset" in problem
    assert code_asset.build(python, source, asset, stamp) is True
    assert code_asset.problem(asset, stamp, source) is None and code_asset.digest(asset) != before
    assert (asset / "pkg" / "mod.py").read_text() == "VALUE = 2\n"

    # A file removed from the code is removed from the asset too.
    (source / "pkg" / "data.txt").unlink()
    assert code_asset.problem(asset, stamp, source) is not None
    code_asset.build(python, source, asset, stamp)
    assert not (asset / "pkg" / "data.txt").exists()


def test_a_copy_without_bytecode_or_edited_by_hand_is_not_current(tmp_path: Path) -> None:
    from infra import code_asset

    source, asset, stamp = _source(tmp_path), tmp_path / "asset", tmp_path / "asset.sha256"
    shutil.copytree(source, asset, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    stamp.write_text(code_asset.digest(source))
    problem = code_asset.problem(asset, stamp, source)
    assert problem is not None and "without bytecode" in problem
    (asset / "pkg" / "mod.py").write_text("VALUE = 3\n")  # the stamp says current, the copy is not
    assert "stale" in (code_asset.problem(asset, stamp, source) or "")


def test_without_the_lambdas_python_the_code_asset_is_not_built(tmp_path: Path) -> None:
    from infra import code_asset

    source, asset, stamp = _source(tmp_path), tmp_path / "asset", tmp_path / "asset.sha256"
    with pytest.raises(SystemExit, match=f"no Python {LAMBDA_PYTHON} interpreter"):
        code_asset.build("/nonexistent/python3.13", source, asset, stamp)
    assert not asset.exists() and not stamp.exists()
