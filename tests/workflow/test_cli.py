"""The CLI as a user runs it: `python -m local demo` and `python -m local run` in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from local.simulators import simulator_class
from local.simulators.data import SAMPLE
from local.simulators.qualifio import QualifioSimulator
from tests.workflow.conftest import FAST

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "local", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_demo_runs_a_full_request_and_copies_the_archives_out(tmp_path):
    result = run_cli("demo", "--out", str(tmp_path), "--time-scale", str(4 * 86400))
    assert result.returncode == 0, result.stdout + result.stderr
    assert ": completed (6 completed)" in result.stdout
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


def _gated_run(tmp_path: Path, answer: str) -> tuple[subprocess.CompletedProcess, Any]:
    """`run --approval erase --answer <answer>` against a Bloomreach simulator of this process (its calls seen)."""
    with simulator_class("bloomreach")(time_scale=FAST) as sim:
        vendors = tmp_path / "vendors.json"
        vendors.write_text(json.dumps({"bloomreach": sim.credentials()}))
        result = run_cli(
            "run",
            "--email",
            SAMPLE.email,
            "--customer-id",
            f"registered={SAMPLE.registered}",
            "--actions",
            "export,erase",
            "--vendors-file",
            str(vendors),
            "--time-scale",
            str(FAST),
            "--approval",
            "erase",
            "--answer",
            answer,
        )
    return result, sim


def test_run_with_the_approval_gate_approved_erases_after_the_gate(tmp_path):
    result, sim = _gated_run(tmp_path, "approve")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "bloomreach erase: awaiting approval (POST /requests/" in out and "/approve or /deny)" in out
    assert "bloomreach export: awaiting approval" not in out, "only the erase is gated"
    assert "bloomreach erase: approved by arn:aws:iam::123456789012:user/local" in out
    assert out.index("erase: awaiting approval") < out.index("erase: approved") < out.index("erase   completed")
    assert ": completed (2 completed)" in out
    assert "bloomreach  erase   completed" in out
    assert sim.destructive_acted() == 1


def test_run_with_the_approval_gate_denied_sends_nothing_destructive(tmp_path):
    result, sim = _gated_run(tmp_path, "deny")
    assert result.returncode == 0, result.stdout + result.stderr  # a denial is a decision, not a failure
    out = result.stdout
    assert "bloomreach erase: awaiting approval (POST /requests/" in out
    assert "bloomreach erase: denied by arn:aws:iam::123456789012:user/local; reason: denied by the local CLI" in out
    assert ": completed (1 completed, 1 denied)" in out
    assert "bloomreach  export  completed" in out
    denied = next(line for line in out.splitlines() if line.startswith("  bloomreach  erase   denied"))
    assert "denied by the local CLI" in denied
    assert sim.destructive_calls() == []


def test_run_without_a_vendors_file_runs_the_simulators_at_the_demo_s_time_scale():
    result = run_cli(
        "run", "--email", SAMPLE.email, "--customer-id", f"registered={SAMPLE.registered}", "--vendors", "bloomreach"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Started vendor simulators (86400x time): bloomreach http://127.0.0.1:" in result.stdout


def test_run_refuses_a_compressed_time_scale_with_a_real_vendor(tmp_path):
    vendors = tmp_path / "vendors.json"
    vendors.write_text(json.dumps({"qualifio": {"base_url": "https://api.qualif.io", "api_token": "t"}}))
    result = run_cli("run", "--email", SAMPLE.email, "--vendors-file", str(vendors), "--time-scale", "3600")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--time-scale 3600 with --vendors-file naming a real vendor (qualifio)" in result.stderr
    assert "orphaning it" in result.stderr
    assert "Traceback" not in result.stderr and "Request" not in result.stdout  # refused before anything ran


def test_run_refuses_a_vendors_file_naming_an_unknown_vendor(tmp_path):
    vendors = tmp_path / "vendors.json"
    vendors.write_text(json.dumps({"acme": {"base_url": "https://acme.example"}}))
    result = run_cli("run", "--email", SAMPLE.email, "--vendors-file", str(vendors))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "'acme' is not a known vendor (known: bloomreach, elevate, qualifio)" in result.stderr


def test_an_unknown_vendor_name_is_a_400_listing_the_known_vendors():
    result = run_cli("run", "--email", SAMPLE.email, "--vendors", "nope")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Request rejected (HTTP 400):" in result.stderr
    assert "vendors.0: is not a vendor of this deployment (known: bloomreach, elevate, qualifio)" in result.stderr


def test_a_timeout_is_an_exit_code_and_a_message_not_a_traceback():
    # Elevate's first look is after its 5-day archive window: 5 s at the demo's scale, past a 1 s timeout.
    result = run_cli(
        "run", "--email", SAMPLE.email, "--customer-key", SAMPLE.customer_key, "--vendors", "elevate", "--timeout", "1"
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Timed out: request " in result.stderr and "still running after 1s (--timeout)" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_simulator_s_json_is_a_vendors_file_as_printed(tmp_path):
    vendors = tmp_path / "vendors.json"
    with vendors.open("w") as out:
        sim = subprocess.Popen(
            [sys.executable, "-m", "local", "simulator", "bloomreach"],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert sim.stderr is not None
            banner = sim.stderr.readline()  # printed once the simulator listens, after its JSON
            assert "bloomreach simulator on http://127.0.0.1:" in banner
            printed = json.loads(vendors.read_text())
            assert set(printed) == {"bloomreach"}
            result = run_cli(
                "run",
                "--email",
                SAMPLE.email,
                "--customer-id",
                f"registered={SAMPLE.registered}",
                "--vendors-file",
                str(vendors),
                "--timeout",
                "60",
            )
        finally:
            sim.terminate()
            sim.wait(timeout=10)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bloomreach  export  completed" in result.stdout
