"""The Lambda code asset, precompiled: a copy of functions/ with unchecked-hash bytecode (issue 11, cold start).

Lambda's filesystem is read-only: a module shipped without a .pyc next to it is compiled on every cold start and
the result is never kept. `make functions-asset` (synth and deploy depend on it) runs `build` below:

- copy functions/ to build/functions-asset, without the __pycache__ litter of local runs (bytecode of another
  Python, or of an older source);
- compile the copy with the Lambda's Python (bytecode is specific to a minor version) in
  `--invalidation-mode unchecked-hash`: the asset's zip keeps no file times, so timestamp-checked .pyc files
  would all look stale, and a checked hash would read and hash every source again at import. `-p /var/task`
  records where Lambda unpacks the asset as the source path (tracebacks), not this checkout's;
- write the stamp (build/functions-asset.sha256) last: the digest of the sources the copy was made from.

infra/functions.py ships the copy only while it is current (`problem` is None): the stamp and the copy's own
sources both match functions/ now, and every module has its bytecode. A stale or half-built copy is never
shipped: a deployable synth refuses it (infra/config.py), a template-only one (skipLambdaDeps) falls back to
functions/ as it is. The asset hash CDK gives the copy changes with any source, since the copy holds them.

Only the standard library here: the Makefile runs it before anything of aws-cdk is needed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "functions"
ASSET = ROOT / "build" / "functions-asset"
STAMP = ROOT / "build" / "functions-asset.sha256"
LAMBDA_PYTHON = "3.13"  # infra/config.py's LAMBDA_PYTHON (config imports aws-cdk; a test keeps them equal)
TASK_ROOT = "/var/task"  # where Lambda unpacks the code asset
# Never part of the asset: local bytecode (another interpreter's, or stale) and the caches of tools run locally.
LITTER_DIRS = frozenset({"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"})
LITTER_SUFFIXES = (".pyc", ".pyo")


def _is_litter(relative: Path) -> bool:
    return any(part in LITTER_DIRS for part in relative.parts) or relative.name.endswith(LITTER_SUFFIXES)


def source_files(folder: Path) -> Iterator[Path]:
    """Every file of `folder` that belongs in the asset (relative paths, sorted), bytecode and caches left out."""
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not _is_litter(relative):
            yield relative


def digest(folder: Path) -> str:
    """sha256 over the asset's files of `folder`: each relative path and its bytes."""
    h = hashlib.sha256()
    for relative in source_files(folder):
        data = (folder / relative).read_bytes()
        h.update(f"{relative.as_posix()}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def _pyc(py: Path, python: str = LAMBDA_PYTHON) -> Path:
    return py.parent / "__pycache__" / f"{py.stem}.cpython-{python.replace('.', '')}.pyc"


def uncompiled(asset: Path, python: str = LAMBDA_PYTHON) -> list[Path]:
    """The modules of `asset` without bytecode for `python`."""
    return [r for r in source_files(asset) if r.suffix == ".py" and not _pyc(asset / r, python).is_file()]


def problem(asset: Path = ASSET, stamp: Path = STAMP, source: Path = SOURCE, python: str = LAMBDA_PYTHON) -> str | None:
    """Why `asset` must not be shipped as the code of `source` now, or None if it is its current precompiled copy."""
    rebuild = "run `make functions-asset`"
    if not asset.is_dir() or not stamp.is_file():
        return f"the precompiled code asset {asset} is missing or was not finished; {rebuild}"
    want = digest(source)
    if stamp.read_text().strip() != want or digest(asset) != want:
        return f"the precompiled code asset {asset} is stale: {source} changed since it was built; {rebuild}"
    missing = uncompiled(asset, python)
    if missing:
        return f"the code asset {asset} has {len(missing)} module(s) without bytecode ({missing[0]}); {rebuild}"
    return None


def _python_version(python: str) -> str:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True
        )
    except OSError:  # no such interpreter
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def build(python: str, source: Path = SOURCE, asset: Path = ASSET, stamp: Path = STAMP, *, check: bool = True) -> bool:
    """Bring `asset` up to date with `source`, compiled by `python` (the Lambda's; `check=False`: any, for a
    bench without one); False if it already was."""
    tag = _python_version(python)
    if problem(asset, stamp, source, tag if not check else LAMBDA_PYTHON) is None:
        return False
    if check and tag != LAMBDA_PYTHON:
        raise SystemExit(
            f"make functions-asset: no Python {LAMBDA_PYTHON} interpreter ('{python}') to compile the code asset's "
            f"bytecode with (the Lambda runs {LAMBDA_PYTHON}); install one or pass "
            f"LAMBDA_PYTHON_BIN=/path/to/python{LAMBDA_PYTHON}"
        )
    want = digest(source)
    stamp.unlink(missing_ok=True)  # from here on the old copy is not current, whatever happens below
    staging = asset.with_name(asset.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    for relative in source_files(source):
        target = staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / relative, target)
    compile_ = [python, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash"]
    subprocess.run([*compile_, "-s", str(staging), "-p", TASK_ROOT, str(staging)], check=True)
    if digest(staging) != want:  # functions/ changed while it was copied: the next make builds it again
        raise SystemExit(f"make functions-asset: {source} changed while it was copied; run it again")
    missing = uncompiled(staging, tag)
    if missing:
        raise SystemExit(f"make functions-asset: {missing[0]} did not compile")
    shutil.rmtree(asset, ignore_errors=True)
    os.replace(staging, asset)
    stamp.write_text(want + "\n")
    return True


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.code_asset", description=__doc__.split("\n")[0])
    parser.add_argument("--python", default=f"python{LAMBDA_PYTHON}", help="the Lambda's Python, to compile with")
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--asset", type=Path, default=ASSET)
    parser.add_argument("--stamp", type=Path, default=STAMP)
    args = parser.parse_args(argv)
    built = build(args.python, args.source, args.asset, args.stamp)
    print(f"{args.asset}: {'built' if built else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
