"""Builds the CDK app: cdk.json context, the dsrflow stack, and the cdk-nag AwsSolutions checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra.config import REPO_ROOT, load_config
from infra.stack import DsrflowStack

CDK_JSON = REPO_ROOT / "cdk.json"
# Error annotations (cdk-nag findings included) fail `app.synth()` itself, so `cdk synth`, `cdk deploy` and
# `python app.py` all stop on them. Set after the CLI's context (post_cli_context): cdk.context.json,
# ~/.cdk.json or `-c` cannot turn the gate off.
VALIDATION_REPORT_FLAG = "@aws-cdk/core:annotationsInValidationReport"


def cdk_json_context() -> dict[str, Any]:
    """cdk.json's context (feature flags, defaults). The cdk CLI passes it to the app itself; reading it here
    too makes `python app.py` synthesize exactly what `cdk synth` does (CLI values still take precedence)."""
    return json.loads(CDK_JSON.read_text()).get("context", {})


def build_app(context: dict[str, Any] | None = None, outdir: str | Path | None = None) -> tuple[cdk.App, DsrflowStack]:
    app = cdk.App(
        context={**cdk_json_context(), **(context or {})},
        post_cli_context={VALIDATION_REPORT_FLAG: True},
        outdir=str(outdir) if outdir else None,
        analytics_reporting=False,  # no CDK version/construct telemetry in the template
    )
    config = load_config(app.node)
    stack = DsrflowStack(app, config.stack_name, config=config)
    # Every finding is an error or warning annotation; errors fail the synthesis (VALIDATION_REPORT_FLAG).
    cdk.Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    return app, stack
