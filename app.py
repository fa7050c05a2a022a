#!/usr/bin/env python3
"""CDK entry point: `cdk synth` / `cdk deploy` (via cdk.json) or `python app.py`. Needs neither Docker nor AWS
credentials. Settings come from CDK context (cdk.json, `-c key=value`): see README.md, Deploy."""

from __future__ import annotations

import sys

from infra.application import build_app
from infra.config import DeployConfigError


def main() -> int:
    try:
        app, _ = build_app()
    except DeployConfigError as exc:
        print(f"dsrflow: cannot synthesize: {exc}", file=sys.stderr)
        return 2
    try:
        app.synth()
    except RuntimeError as exc:
        # build_app pins @aws-cdk/core:annotationsInValidationReport, so synth itself fails on error
        # annotations, cdk-nag findings included; CDK has already printed the report.
        if "ValidationFailed" not in str(exc):
            raise
        print(f"dsrflow: synthesis failed validation: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
