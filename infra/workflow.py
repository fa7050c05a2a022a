"""The Step Functions state machine, from statemachines/dsr.asl.json: the same file the local engine runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

from aws_cdk import RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.config import DeployConfigError
from statemachines import SUBSTITUTIONS  # the names the stack must provide

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
VENDED_LOGS_PREFIX = "/aws/vendedlogs/states/"


def state_machine_name(stage: str) -> str:
    return f"dsrflow-{stage}"


def state_machine_log_group_name(stage: str) -> str:
    """The workflow's log group: under the prefix AWS documents for Step Functions vended logs."""
    return f"{VENDED_LOGS_PREFIX}dsrflow-{stage}"


def asl_placeholders(path: Path) -> set[str]:
    """Every ${Name} the ASL file asks to be substituted."""
    return set(_PLACEHOLDER.findall(path.read_text()))


class Workflow(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        definition_file: Path,
        functions: dict[str, lambda_.IFunction],
        stage: str,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        if not definition_file.is_file():
            raise DeployConfigError(f"the state machine definition {definition_file} does not exist")
        text = definition_file.read_text()
        try:
            json.loads(text)
        except ValueError as exc:
            raise DeployConfigError(f"{definition_file} is not valid JSON: {exc}") from None
        unknown = set(_PLACEHOLDER.findall(text)) - set(SUBSTITUTIONS)
        if unknown:
            # An unresolved ${...} would only fail at deploy time, inside CloudFormation: fail at synth instead.
            raise DeployConfigError(
                f"{definition_file.name} uses substitutions the stack does not provide: {', '.join(sorted(unknown))}"
                f" (provided: {', '.join(SUBSTITUTIONS)}; add them in infra/workflow.py)"
            )

        # Execution data (inputs/outputs) stays out of the logs even though it holds only ids: the execution
        # history is the place to read it, with its own 90-day retention and IAM.
        # Named under /aws/vendedlogs/states/: Step Functions adds the group to the account's CloudWatch Logs
        # resource policy (5,120 characters per region), and as that policy nears its limit CloudWatch Logs
        # covers every /aws/vendedlogs/ group with one wildcard, where generated names would each take room
        # until state machines fail to enable logging (AWS, Step Functions best practices: "Avoiding CloudWatch
        # Logs resource policy size restrictions"). A fixed name also means a retained group must be deleted
        # (or imported) before a deleted stage is deployed again.
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=state_machine_log_group_name(stage),
            retention=log_retention,
            removal_policy=removal_policy,
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=state_machine_name(stage),
            state_machine_type=sfn.StateMachineType.STANDARD,  # runs for days; exactly-once task starts
            # Inline (from_string), not from_file: from_file uploads the definition as an S3 asset, so the
            # template and its change sets would show only a hash. Inline, a reviewer sees the workflow and
            # CloudFormation fills the ${...} from DefinitionSubstitutions, as the local engine does.
            definition_body=sfn.DefinitionBody.from_string(text),
            definition_substitutions={name: functions[fn].function_arn for name, fn in SUBSTITUTIONS.items()},
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
            tracing_enabled=True,
        )
        # The ASL invokes the unqualified function ARNs (no version, no alias): exactly those, not grantInvoke's
        # extra "<function ARN>:*".
        self.state_machine.add_to_role_policy(
            iam.PolicyStatement(
                actions=["lambda:InvokeFunction"],
                resources=[functions[fn].function_arn for fn in SUBSTITUTIONS.values()],
            )
        )
