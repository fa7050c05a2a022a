"""One in-process synthesis of the real app per test session (about 5 s), shared by every infra test.

The app is built the way app.py builds it (cdk.json context + cdk-nag), with a stand-in dependency layer
directory so the layer wiring is part of what is asserted, and the cloud assembly written under tmp.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Synth:
    app: Any
    stack: Any
    template: Any  # aws_cdk.assertions.Template
    outdir: Path

    @property
    def json(self) -> dict[str, Any]:
        return self.template.to_json()

    def resources(self, type_: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.json["Resources"].items() if v["Type"] == type_}

    def one(self, type_: str) -> tuple[str, dict[str, Any]]:
        found = self.resources(type_)
        assert len(found) == 1, f"expected one {type_}, found {sorted(found)}"
        return next(iter(found.items()))

    def archive_key(self) -> tuple[str, dict[str, Any]]:
        """The stack's customer-managed key (archives, ledger, secrets); bulk intake's HMAC key is the other one."""
        found = [(k, v) for k, v in self.resources("AWS::KMS::Key").items() if "KeySpec" not in v["Properties"]]
        assert len(found) == 1, f"expected one symmetric key, found {[k for k, _ in found]}"
        return found[0]

    def queue(self, construct: str) -> tuple[str, dict[str, Any]]:
        """The dead-letter queue of a construct: "Triggers" (the CRM rule and intake) or "Bulk" (bulk/incoming/)."""
        found = [(k, v) for k, v in self.resources("AWS::SQS::Queue").items() if k.startswith(construct)]
        assert len(found) == 1, f"expected one queue of {construct}, found {[k for k, _ in found]}"
        return found[0]

    def dsr_state_machine(self) -> tuple[str, dict[str, Any]]:
        """The DSR workflow (statemachines/dsr.asl.json); bulk intake's (infra/bulk.py) is the other one."""
        found = [
            (k, v)
            for k, v in self.resources("AWS::StepFunctions::StateMachine").items()
            if not str(v["Properties"].get("StateMachineName", "")).endswith("-bulk")
        ]
        assert len(found) == 1, f"expected one DSR state machine, found {[k for k, _ in found]}"
        return found[0]

    def crm_rule(self) -> tuple[str, dict[str, Any]]:
        """The CRM's request rule (an event pattern); the deadline watch's schedule rule and bulk intake's
        bulk/incoming/ rule (source aws.s3) are the others."""
        found = [
            (k, v)
            for k, v in self.resources("AWS::Events::Rule").items()
            if "EventPattern" in v["Properties"] and v["Properties"]["EventPattern"].get("source") != ["aws.s3"]
        ]
        assert len(found) == 1, f"expected one event-pattern rule, found {[k for k, _ in found]}"
        return found[0]

    def archive_bucket(self) -> tuple[str, dict[str, Any]]:
        """The versioned (archive) bucket; the access-log bucket is not versioned."""
        found = [
            (k, v) for k, v in self.resources("AWS::S3::Bucket").items() if "VersioningConfiguration" in v["Properties"]
        ]
        assert len(found) == 1, "expected exactly one versioned bucket"
        return found[0]

    def role_statements(self, role_id: str) -> list[dict[str, Any]]:
        """Every statement of the AWS::IAM::Policy resources attached to the role."""
        return [
            statement
            for policy in self.resources("AWS::IAM::Policy").values()
            if {"Ref": role_id} in policy["Properties"].get("Roles", [])
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        ]

    def key_policy_grants(self, service: str) -> list[dict[str, Any]]:
        _, key = self.archive_key()
        return [s for s in key["Properties"]["KeyPolicy"]["Statement"] if s.get("Principal") == {"Service": service}]

    @staticmethod
    def actions(statement: dict[str, Any]) -> list[str]:
        action = statement["Action"]
        return [action] if isinstance(action, str) else action

    def function(self, handler_module: str) -> tuple[str, dict[str, Any]]:
        """The Lambda function whose handler is handlers.<module>.handler."""
        found = [
            (k, v)
            for k, v in self.resources("AWS::Lambda::Function").items()
            if v["Properties"].get("Handler") == f"handlers.{handler_module}.handler"
        ]
        assert len(found) == 1, f"expected one function for handlers.{handler_module}, found {len(found)}"
        return found[0]


def synthesize(tmp: Path, context: dict[str, Any]) -> Synth:
    from aws_cdk.assertions import Template

    from infra.application import build_app

    app, stack = build_app(context=context, outdir=tmp / "cdk.out")
    app.synth()
    return Synth(app=app, stack=stack, template=Template.from_stack(stack), outdir=tmp / "cdk.out")


def fake_lambda_deps(root: Path) -> Path:
    """A directory shaped like `make lambda-deps` output (nothing downloaded)."""
    site = root / "lambda-deps" / "python" / "placeholder_dep"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text("")
    return root / "lambda-deps"


@pytest.fixture(scope="session")
def synth(tmp_path_factory) -> Synth:
    """The default deployment (stage dev, three vendors, default bus), synthesized once."""
    tmp = tmp_path_factory.mktemp("synth-default")
    return synthesize(tmp, {"lambdaDepsDir": str(fake_lambda_deps(tmp))})


# Context as an operator passes it with `-c key=value`: every value a string.
VARIANT_CONTEXT = {
    "stage": "prod",
    "vendors": "elevate,qualifio",
    "eventBusName": "crm-bus",
    "crmEventSource": "acme.crm",
    "crmDetailType": "Privacy Request",
    "retentionDays": "45",
    "approvalMode": "manual",
    "removalPolicy": "destroy",
    "apiGatewayCloudWatchRole": "false",
    "logRetentionDays": "30",
    "alarmTopicArn": "arn:aws:sns:eu-west-1:123456789012:privacy-pager",
    "skipLambdaDeps": "true",
    "packageUrlSeconds": "900",
    "controllerText": "tests/infra/controller-acme.txt",
    "vendorLimits": '{"qualifio": {"jobs": 2, "callsPerSecond": 5}}',
}


@pytest.fixture(scope="session")
def variant(tmp_path_factory) -> Synth:
    """Every setting changed from its default, synthesized once."""
    return synthesize(tmp_path_factory.mktemp("synth-variant"), dict(VARIANT_CONTEXT))
