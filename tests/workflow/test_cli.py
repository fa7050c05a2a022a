"""The CLI as a user runs it: `python -m local demo` and `python -m local run` in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from local.simulators.qualifio import QualifioSimulator

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "local", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_demo_runs_a_full_request_and_copies_the_archives_out(tmp_path):
    result = run_cli("demo", "--out", str(tmp_path), "--time-scale", str(4 * 86400))
    assert result.returncode == 0, result.stdout + result.stderr
    assert ": completed ({'completed': 6, 'planned': 0, 'failed': 0, 'skipped': 0})" in result.stdout
    manifests = list(tmp_path.glob("requests/*/manifest.json"))
    assert len(manifests) == 1
    manifest = json.loads(manifests[0].read_text())
    on_disk = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    for o in manifest["outcomes"]:
        for a in o["archives"]:
            assert a["key"] in on_disk
    # The subject's record (PII) stays in the encrypted bucket.
    assert not any(k.endswith("request.json") for k in on_disk)
    for vendor in ("elevate", "bloomreach", "qualifio"):
        assert f"{vendor:<11} export  completed" in result.stdout


def test_run_with_vendors_file_exits_non_zero_with_the_reason(tmp_path):
    with QualifioSimulator(time_scale=86400) as sim:
        creds = {**sim.credentials(), "api_token": "wrong-token"}
        vendors = tmp_path / "vendors.json"
        vendors.write_text(json.dumps({"qualifio": creds}))
        result = run_cli(
            "run", "--email", "ada.lovelace@example.com", "--vendors-file", str(vendors), "--time-scale", "86400"
        )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "qualifio    export  FAILED" in result.stdout
    assert "check the vendor credentials" in result.stdout
    assert "wrong-token" not in result.stdout + result.stderr


def test_bad_request_on_the_command_line_names_the_field():
    result = run_cli("run", "--email", "not-an-email", "--vendors-file", "/dev/null")
    assert result.returncode == 2
