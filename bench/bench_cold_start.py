"""Cold start: the time each Lambda handler takes to import, without bytecode and precompiled (issue 11).

Lambda's filesystem is read-only. A module without a .pyc next to its source is compiled every time it is
imported, and the result cannot be kept, so it is compiled again on the next cold start. This is modelled on
this machine, with the Lambda's Python (3.13: LAMBDA_PYTHON_BIN, else python3.13 on PATH or from pyenv) when
there is one, else this venv's (the ratios carry over roughly, the milliseconds do not):
- the layer: requirements.txt installed by that Python's pip into a `python/` folder (/opt/python on Lambda),
  as `make lambda-deps` does for the Lambda's platform, cached under build/bench/ (without 3.13: what the
  handlers import from the venv, copied); the code asset: built by infra/code_asset.py, exactly as
  `make functions-asset` builds what is deployed (/var/task);
- each statement runs in a fresh interpreter started with `-S -B` and PYTHONDONTWRITEBYTECODE=1: no
  site-packages, the two copies on PYTHONPATH, and nothing written (the read-only filesystem). The standard
  library keeps its own bytecode, as the Lambda runtime's does;
- the environment is a Lambda's: LAMBDA_TASK_ROOT set (so Powertools' Tracer is on and patches the SDKs, as
  with active tracing), the functions' POWERTOOLS_* settings, a region and dummy ARCHIVE_BUCKET and ledger.

Three states of the copies: "none" (no bytecode at all), "layer" (the layer compiled, the code asset not) and
"both" (both compiled, compileall --invalidation-mode unchecked-hash: what `make deploy` ships now). Each
figure is the least of RUNS fresh interpreters, the CPU time from before the import to after it (interpreter
start-up excluded), rounds interleaved so that a busy machine slows every column alike. The least, not the
median: an import does the same work every time, and what varies is only what other processes take from it.

The models are deferred (core/model.py): a handler builds, at its first call, the validators of the models
that call uses. The last column bounds that: the deployed import plus building every model the import loaded,
more than any one call builds.

The baseline is a function that only does `import boto3; boto3.client("s3")` with bytecode: about what a
Lambda with the runtime's own (precompiled) SDK spends. The target: each handler, as deployed ("both"), at
most TARGET times that.

Prints figures only; it never fails on a number.
"""

from __future__ import annotations

import compileall
import hashlib
import json
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "functions"
LAMBDA_PYTHON = "3.13"  # infra/config.py's LAMBDA_PYTHON
CACHE = ROOT / "build" / "bench"
RUNS = int(os.environ.get("BENCH_COLD_START_RUNS", "7"))
TARGET = 1.2
STATES = ("none", "layer", "both")
BASELINE = "import boto3; boto3.client('s3', region_name='eu-west-1')"
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")
# After a handler's import: build every deferred model it loaded (the bound of what its first calls build).
BUILD_ALL = """
from core.model import Model as _Model
_todo = [_Model]
while _todo:
    for _sub in _todo.pop().__subclasses__():
        _todo.append(_sub)
        if not _sub.__pydantic_complete__:
            _sub.model_rebuild()
"""


def _handlers() -> dict[str, str]:
    sys.path.insert(0, str(FUNCTIONS))
    from handlers.catalog import HANDLERS

    return {name: h.handler.rsplit(".", 1)[0] for name, h in HANDLERS.items()}


def _lambda_env(task: Path, layer: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": f"{task}{os.pathsep}{layer}",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "LAMBDA_TASK_ROOT": str(task),
        "AWS_LAMBDA_FUNCTION_NAME": "dsrflow-bench",
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "ARCHIVE_BUCKET": "dsrflow-bench-archive",
        "ARCHIVE_KMS_KEY_ID": "arn:aws:kms:eu-west-1:123456789012:key/bench",
        "LEDGER_TABLE": "dsrflow-bench-ledger",
        "POWERTOOLS_SERVICE_NAME": "dsrflow",
        "POWERTOOLS_METRICS_NAMESPACE": "dsrflow",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "POWERTOOLS_LOGGER_LOG_EVENT": "false",
        "POWERTOOLS_TRACER_CAPTURE_RESPONSE": "false",
    }


def _loaded_from_venv(modules: list[str]) -> set[str]:
    """The top-level names of every non-stdlib module the handlers (and the baseline) load, in this venv."""
    lines = [
        "import json, sys",
        "before = set(sys.modules)",  # the interpreter's own start-up (site's .pth files), not the handlers'
        BASELINE,
        *(f"import {m}" for m in modules),
        "stdlib = set(sys.stdlib_module_names)",
        "print(json.dumps(sorted({n.split('.')[0] for n, m in list(sys.modules.items()) if n not in before"
        " and 'site-packages' in (getattr(m, '__file__', None) or '') and n.split('.')[0] not in stdlib})))",
    ]
    code = "\n".join(lines)
    env = {**_lambda_env(FUNCTIONS, FUNCTIONS), "PYTHONPATH": str(FUNCTIONS)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _copy_layer(top_level: set[str], layer: Path) -> list[str]:
    """Every file (but bytecode) of every distribution that provides one of `top_level`, as pip --target lays
    them out; the distributions' names."""
    provides = metadata.packages_distributions()
    names = sorted({dist for top in top_level for dist in provides.get(top, [])})
    for name in names:
        dist = metadata.distribution(name)
        for file in dist.files or []:
            if "__pycache__" in file.parts or file.suffix == ".pyc" or ".." in file.parts:
                continue
            source = Path(str(dist.locate_file(file)))
            if source.is_file():
                target = layer / file
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
    return names


def lambda_python() -> str | None:
    """The Lambda's Python on this machine: LAMBDA_PYTHON_BIN, python3.13 on PATH, or pyenv's; None if none."""
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    found = [os.environ.get("LAMBDA_PYTHON_BIN"), shutil.which(f"python{LAMBDA_PYTHON}")]
    found += [str(p) for p in sorted(pyenv.glob(f"{LAMBDA_PYTHON}.*/bin/python{LAMBDA_PYTHON}"))[::-1]]
    for python in filter(None, found):
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True)
        if out.returncode == 0 and out.stdout.decode().strip() == LAMBDA_PYTHON:
            return python
    return None


def _installed_layer(python: str) -> Path:
    """requirements.txt installed by `python`'s pip for this machine, without bytecode, as `make lambda-deps`
    installs it for the Lambda's platform: cached under build/bench/ by the requirements' digest."""
    requirements = (ROOT / "requirements.txt").read_bytes()
    key = hashlib.sha256(requirements + python.encode()).hexdigest()[:12]
    site = CACHE / f"cold-start-layer-{LAMBDA_PYTHON}-{key}" / "python"
    done = site.parent / ".installed"
    if not done.exists():
        shutil.rmtree(site.parent, ignore_errors=True)
        install = [python, "-m", "pip", "install", "--quiet", "--no-compile", "--disable-pip-version-check"]
        out = subprocess.run(
            [*install, "--target", str(site), "-r", str(ROOT / "requirements.txt")], capture_output=True, text=True
        )
        if out.returncode:
            raise RuntimeError(f"pip could not install the layer for the bench:\n{out.stderr[-2000:]}")
        done.touch()
    return site


def _compile(folder: Path, python: str | None) -> None:
    # As `make lambda-deps` does: the source is never checked against the .pyc (timestamps do not survive a zip).
    if python is None:
        ok = compileall.compile_dir(
            str(folder), quiet=1, workers=0, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
        )
    else:
        mode = ["--invalidation-mode", "unchecked-hash"]
        ok = subprocess.run([python, "-m", "compileall", "-q", "-j", "0", *mode, str(folder)]).returncode == 0
    if not ok:
        print(f"  (some files of {folder.name} did not compile)")


def _time_ms(statement: str, env: dict[str, str], python: str = sys.executable) -> float:
    # CPU time (user + system) of the interpreter, not the wall clock: an import is all CPU once its files are in
    # the page cache, and on a shared machine the wall clock counts the other processes too.
    code = f"import time as _t\n_s = _t.process_time()\n{statement}\nprint((_t.process_time() - _s) * 1000)\n"
    out = subprocess.run([python, "-S", "-B", "-c", code], env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{statement!r} failed:\n{out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from infra import code_asset

    handlers = _handlers()
    statements = {"boto3 + client": BASELINE, **{name: f"import {m}" for name, m in handlers.items()}}
    python = lambda_python()
    interpreter = python or sys.executable
    with tempfile.TemporaryDirectory(prefix="dsrflow-bench-cold-") as tmp:
        roots = {state: Path(tmp, state) for state in STATES}
        if python is not None:
            source = _installed_layer(python)
            names = sorted(p.name.split("-")[0] for p in source.glob("*.dist-info"))
        else:
            source = Path(tmp, "venv-layer")
            names = _copy_layer(_loaded_from_venv(list(handlers.values())), source)
        # The code asset as `make functions-asset` builds it (compiled with the Lambda's Python, or this one).
        asset = Path(tmp, "functions-asset")
        code_asset.build(interpreter, FUNCTIONS, asset, Path(tmp, "functions-asset.sha256"), check=python is not None)
        for state, root in roots.items():
            shutil.copytree(source, root / "python", ignore=IGNORE)
            if state != "none":
                _compile(root / "python", python)
            shutil.copytree(asset, root / "task", ignore=None if state == "both" else IGNORE)
            for folder in root.rglob("*"):  # read-only, as on Lambda
                folder.chmod(folder.stat().st_mode & ~0o222)
        version = subprocess.run([interpreter, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True)
        print(
            f"layer: {', '.join(names)}; {RUNS} runs each, python {version.stdout.decode().strip()} -S -B"
            + ("" if python else f" (no python{LAMBDA_PYTHON} found: this venv's; ratios only roughly the Lambda's)")
        )
        envs = {state: _lambda_env(root / "task", root / "python") for state, root in roots.items()}
        for env in envs.values():  # a first, untimed run each: the page cache warm for every state alike
            _time_ms(BASELINE, env, interpreter)
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(RUNS):
            for label, statement in statements.items():
                for state in STATES:
                    times.setdefault((label, state), []).append(_time_ms(statement, envs[state], interpreter))
                if label in handlers:
                    built = _time_ms(statement + BUILD_ALL, envs["both"], interpreter)
                    times.setdefault((label, "built"), []).append(built)
        for folder in Path(tmp).rglob("*"):  # writable again, for the clean-up
            folder.chmod(folder.stat().st_mode | 0o200)
    least = {key: min(values) for key, values in times.items()}
    base = least[("boto3 + client", "layer")]  # the SDK with bytecode: what a bare boto3 function spends
    print(f"x = times the baseline, boto3 + client with bytecode ({base:.0f} ms); target: deployed <= {TARGET}x")
    print(
        f"{'handler':>15} {'no bytecode':>16} {'layer compiled':>16} {'both (deployed)':>16} {'precompiled gain':>16} "
        f"{'target':>12} {'+ every model built':>20}"
    )
    for label in statements:
        cells = [f"{least[(label, s)]:>6.0f} ms {least[(label, s)] / base:>4.2f}x" for s in STATES]
        gain = least[(label, "both")] / least[(label, "none")]
        ratio = least[(label, "both")] / base
        met = f"{'met' if ratio <= TARGET else 'MISSED'} {ratio:.2f}/{TARGET}"
        built = least.get((label, "built"))
        bound = f"{built:>6.0f} ms {built / base:>4.2f}x" if built is not None else ""
        print(f"{label:>15} {cells[0]:>16} {cells[1]:>16} {cells[2]:>16} {gain:>15.2f}x {met:>12} {bound:>20}")


if __name__ == "__main__":
    main()
