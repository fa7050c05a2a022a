"""Least privilege across every IAM policy of the stack, whichever construct created it."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

# Actions that support no resource-level permission, so "Resource": "*" is the only way to grant them.
STAR_ONLY_ACTIONS = {
    # X-Ray (Lambda active tracing, state machine tracing)
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    # CloudWatch Logs delivery for Step Functions logging
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
}


def policy_documents(template: dict) -> list[tuple[str, dict]]:
    """(where, policy document) for every identity policy: AWS::IAM::Policy, managed policies, inline role
    policies."""
    docs = []
    for lid, res in template["Resources"].items():
        props = res.get("Properties", {})
        if res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            docs.append((lid, props["PolicyDocument"]))
        elif res["Type"] == "AWS::IAM::Role":
            for inline in props.get("Policies", []):
                docs.append((f"{lid}/{inline['PolicyName']}", inline["PolicyDocument"]))
    return docs


def _list(value) -> list:
    return value if isinstance(value, list) else [value]


def test_there_are_policies_to_check(synth):
    # 5 function roles + the state machine role, at least.
    assert len(policy_documents(synth.json)) >= 6


def test_no_wildcard_actions_and_no_star_resource_outside_the_allow_list(synth):
    problems = []
    for where, doc in policy_documents(synth.json):
        for statement in doc["Statement"]:
            assert "NotAction" not in statement and "NotResource" not in statement, where
            actions = _list(statement["Action"])
            for action in actions:
                if action == "*" or action.endswith(":*"):
                    problems.append(f"{where}: action {action}")
            if "*" in _list(statement["Resource"]):
                outside = sorted(set(actions) - STAR_ONLY_ACTIONS)
                if outside:
                    problems.append(f"{where}: Resource '*' for {outside}")
    assert problems == []


def test_no_managed_policies(synth):
    """AWS managed policies (e.g. AWSLambdaBasicExecutionRole: logs on every group) are broader than needed."""
    for lid, role in synth.resources("AWS::IAM::Role").items():
        assert not role["Properties"].get("ManagedPolicyArns"), lid
    assert synth.resources("AWS::IAM::ManagedPolicy") == {}


def test_roles_are_assumed_only_by_their_service(synth):
    for lid, role in synth.resources("AWS::IAM::Role").items():
        for statement in role["Properties"]["AssumeRolePolicyDocument"]["Statement"]:
            principal = statement["Principal"]
            assert set(principal) == {"Service"}, f"{lid} trusts {principal}"
            assert principal["Service"] in (
                "lambda.amazonaws.com",
                "states.amazonaws.com",
                "apigateway.amazonaws.com",  # the region's API Gateway logging role
            ), lid
