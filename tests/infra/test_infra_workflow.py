"""The state machine: the ASL file, its substitutions, logging, tracing, and who it may invoke."""

from __future__ import annotations

import json
import re

import pytest

from infra.config import STATE_MACHINE_FILE
from infra.workflow import SUBSTITUTIONS, asl_placeholders

pytestmark = pytest.mark.slow

PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


def test_asl_file_uses_exactly_the_provided_substitutions():
    assert STATE_MACHINE_FILE.is_file(), f"{STATE_MACHINE_FILE} is missing"
    assert asl_placeholders(STATE_MACHINE_FILE) == set(SUBSTITUTIONS)


def test_definition_is_the_asl_file_inline(synth):
    _, sm = synth.dsr_state_machine()
    props = sm["Properties"]
    assert "DefinitionS3Location" not in props, "the definition must be reviewable in the template"
    assert json.loads(props["DefinitionString"]) == json.loads(STATE_MACHINE_FILE.read_text())


def test_every_placeholder_resolves_to_the_right_function(synth):
    _, sm = synth.dsr_state_machine()
    props = sm["Properties"]
    used = set(PLACEHOLDER.findall(props["DefinitionString"]))
    substitutions = props["DefinitionSubstitutions"]
    assert used == set(substitutions), f"unresolved: {used - set(substitutions)}; unused: {set(substitutions) - used}"
    functions = synth.resources("AWS::Lambda::Function")
    for name, value in substitutions.items():
        assert set(value) == {"Fn::GetAtt"} and value["Fn::GetAtt"][1] == "Arn", f"{name}: {value}"
        target = functions.get(value["Fn::GetAtt"][0])
        assert target is not None, f"${{{name}}} does not point at a Lambda function of the stack"
        assert target["Properties"]["Handler"] == f"handlers.{SUBSTITUTIONS[name]}.handler"


def test_standard_type_traced_and_logged_without_execution_data(synth):
    _, sm = synth.dsr_state_machine()
    props = sm["Properties"]
    assert props["StateMachineType"] == "STANDARD"
    assert props["TracingConfiguration"] == {"Enabled": True}
    logging = props["LoggingConfiguration"]
    assert logging["Level"] == "ALL"
    assert logging["IncludeExecutionData"] is False
    (dest,) = logging["Destinations"]
    group_id = dest["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]
    assert synth.resources("AWS::Logs::LogGroup")[group_id]["Properties"]["RetentionInDays"] == 90


def test_state_machine_invokes_exactly_the_task_functions(synth):
    _, sm = synth.dsr_state_machine()
    role_id = sm["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    statements = synth.role_statements(role_id)
    invoke = [s for s in statements if "lambda:InvokeFunction" in synth.actions(s)]
    assert len(invoke) == 1 and invoke[0]["Action"] == "lambda:InvokeFunction"
    tasks = {
        k
        for k, v in synth.resources("AWS::Lambda::Function").items()
        if v["Properties"]["Handler"] in {f"handlers.{t}.handler" for t in SUBSTITUTIONS.values()}
    }
    # The ASL invokes the unqualified function ARNs: no "<function ARN>:*" (versions, aliases).
    expected = [{"Fn::GetAtt": [t, "Arn"]} for t in tasks]
    assert sorted(invoke[0]["Resource"], key=json.dumps) == sorted(expected, key=json.dumps)
    # Besides invoking, the role may only do what logging and X-Ray need (checked in detail in test_infra_iam).
    other = {a for s in statements if s is not invoke[0] for a in synth.actions(s)}
    assert all(a.startswith(("logs:", "xray:")) for a in other), other


@pytest.mark.parametrize("which, stage", [("synth", "dev"), ("variant", "prod")])
def test_log_group_is_named_under_the_vended_logs_prefix(request, which, stage):
    """Step Functions adds its log group to the account's CloudWatch Logs resource policy (5,120 characters per
    region): /aws/vendedlogs/ groups are covered by one wildcard as the policy fills up, generated names are not."""
    synth = request.getfixturevalue(which)
    _, sm = synth.dsr_state_machine()
    (dest,) = sm["Properties"]["LoggingConfiguration"]["Destinations"]
    group_id = dest["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]
    name = synth.resources("AWS::Logs::LogGroup")[group_id]["Properties"]["LogGroupName"]
    assert name == f"/aws/vendedlogs/states/dsrflow-{stage}"
    # No other group of the stack claims a vended-logs name (the functions log to /aws/lambda/...).
    vended = [
        g
        for g in synth.resources("AWS::Logs::LogGroup").values()
        if str(g["Properties"].get("LogGroupName", "")).startswith("/aws/vendedlogs/")
    ]
    # The other one is bulk intake's state machine's (infra/bulk.py), under its own name.
    assert sorted(g["Properties"]["LogGroupName"] for g in vended) == [name, f"{name}-bulk"]
