"""Real synthesis as an operator runs it: `python app.py` and `cdk synth`, no Docker, no AWS credentials."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.config import REPO_ROOT, DeployConfigError

pytestmark = pytest.mark.slow

CDK_CLI = REPO_ROOT / "build" / "cdk-cli" / "node_modules" / ".bin" / "cdk"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus anything that could reach or authenticate to AWS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDK_"))}
    env.update(
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        # The venv's python first: cdk.json runs `python3 app.py`.
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    env.update(extra)
    return env


def assert_template(outdir: Path) -> dict:
    template = outdir / "dsrflow-dev.template.json"
    assert template.is_file(), f"no template in {outdir}: {sorted(p.name for p in outdir.iterdir())}"
    body = json.loads(template.read_text())
    kinds = {r["Type"] for r in body["Resources"].values()}
    assert {"AWS::StepFunctions::StateMachine", "AWS::Lambda::Function", "AWS::ApiGateway::RestApi"} <= kinds
    return body


def test_python_app_py(tmp_path):
    repo_cdk_out = (REPO_ROOT / "cdk.out").exists()
    result = subprocess.run(
        [sys.executable, "app.py"],
        cwd=REPO_ROOT,
        env=clean_env(CDK_OUTDIR=str(tmp_path), CDK_CONTEXT_JSON=json.dumps({"skipLambdaDeps": True})),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_template(tmp_path)
    assert (REPO_ROOT / "cdk.out").exists() == repo_cdk_out, "synthesis must write where it is told"


def test_cli_context_cannot_switch_off_the_validation_gate(tmp_path):
    """An unsuppressed cdk-nag error fails `python app.py` even when the CLI's context (cdk.context.json,
    ~/.cdk.json, -c) sets @aws-cdk/core:annotationsInValidationReport to false: build_app pins it."""
    from infra.application import VALIDATION_REPORT_FLAG

    no_suppressions = (
        "import sys, infra.stack; infra.stack.apply_suppressions = lambda stack: None; import app; sys.exit(app.main())"
    )
    result = subprocess.run(
        [sys.executable, "-c", no_suppressions],
        cwd=REPO_ROOT,
        env=clean_env(
            CDK_OUTDIR=str(tmp_path),
            CDK_CONTEXT_JSON=json.dumps({"skipLambdaDeps": True, VALIDATION_REPORT_FLAG: False}),
        ),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "dsrflow: synthesis failed validation" in result.stderr


def test_missing_dependency_layer_stops_synthesis(tmp_path):
    """Without `make lambda-deps` the app refuses (a template with functions that cannot import is worse)."""
    from infra.application import build_app

    with pytest.raises(DeployConfigError, match="make lambda-deps"):
        build_app(context={"lambdaDepsDir": str(tmp_path / "missing")}, outdir=tmp_path / "out")


def test_cdk_cli_synth(tmp_path):
    context_file = (REPO_ROOT / "cdk.context.json").exists()
    if not CDK_CLI.exists():
        if os.environ.get("CI"):
            pytest.fail("the cdk CLI is missing: `make test` installs it (make cdk-cli)")
        pytest.skip("the cdk CLI is not installed here: run `make cdk-cli` (make test does)")
    result = subprocess.run(
        [str(CDK_CLI), "synth", "--no-notices", "--quiet", "-c", "skipLambdaDeps=true", "-o", str(tmp_path)],
        cwd=REPO_ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    body = assert_template(tmp_path)
    assert "CDKMetadata" not in body["Resources"], "no CDK usage reporting from a privacy tool"
    assert (REPO_ROOT / "cdk.context.json").exists() == context_file, "synth must not need context lookups"
