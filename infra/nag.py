"""cdk-nag (AwsSolutions) suppressions: each one scoped to the construct it concerns and, for IAM5, to the
exact wildcard (`applies_to`), so a new finding anywhere else still fails the synth. Listed with the same
reasons in SECURITY.md; tests/infra checks that every rule suppressed here is documented there.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from cdk_nag import NagPackSuppression, NagSuppressions, RegexAppliesTo

from infra.functions import S3_ACCESS, S3Access

if TYPE_CHECKING:
    from infra.stack import DsrflowStack

XRAY = (
    "Resource::* is required by xray:PutTraceSegments and xray:PutTelemetryRecords (and, for the state "
    "machine, the CloudWatch Logs delivery actions logs:*LogDelivery, logs:DescribeLogGroups, "
    "logs:*ResourcePolicy), which do not support resource-level permissions."
)
REQUEST_OBJECTS = (
    "Object actions are limited to the exact key patterns this function's code reads or writes "
    "(infra/functions.py S3_ACCESS: request.json, manifest.json and its proof/ copy, outcome.json, "
    "submission.json, vendor-said/, one vendor action's folder); each wildcard stands for a request id, "
    "vendor name or archive name, which exist only at run time."
)
EXECUTIONS = (
    "states:DescribeExecution and states:StopExecution (cancel) on this state machine's executions only; "
    "execution names are request ids (and <id>.retry-<n>) created at run time."
)
RUNTIME = (
    "The runtime is pinned deliberately (python3.13, a supported Lambda runtime): the dependency layer is "
    "built for exactly this Python ABI and architecture (make lambda-deps), so moving to a newer runtime is a "
    "reviewed change of LAMBDA_PYTHON in infra/config.py and the Makefile, not an automatic one."
)
ROTATION = (
    "These hold third-party vendor API credentials that can only be issued in each vendor's console; there "
    "is no rotation Lambda that could mint new ones. They are rotated by the operator with put-secret-value "
    "(README.md, Deploy); the functions pick up a new value within SECRETS_MAX_AGE (300 s)."
)
CALLBACK_AUTH = (
    "GET /callbacks/{token} is the one unsigned method: a vendor calling back when its job is done cannot sign. "
    "The 256-bit per-job token in the path is the credential; an unknown, expired or malformed token changes "
    "nothing, a job is woken at most once, and the method has its own low throttle (core/callbacks.py)."
)
IAM_AUTH = (
    "The API uses AWS_IAM (SigV4) authorization on every method: its callers are backend systems (the CRM) "
    "with IAM roles, not end users, so there is no Cognito user pool."
)
WAF = (
    "Every method requires a SigV4 signature from an IAM principal allowed execute-api:Invoke, the stage is "
    "throttled (10 rps, burst 20) and request bodies are schema-validated; a WAF web ACL would add cost but "
    "no meaningful control for a private, machine-to-machine API. Associate one if your account mandates it."
)
API_LOGGING_ROLE = (
    "The region's API Gateway CloudWatch Logs role (an account setting) writes the logs of every REST API "
    "in the region, whose log group names are not known here; it is scoped to log groups of this account and "
    "region, and holds the permissions of AWS's AmazonAPIGatewayPushToCloudWatchLogs as an inline policy."
)
DLQ = (
    "This queue IS the dead-letter queue (EventBridge target DLQ and intake's asynchronous on-failure "
    "destination); a DLQ of a DLQ would only move the same messages. Its depth is alarmed."
)

BULK_DLQ = (
    "This queue IS the dead-letter queue of bulk intake (the S3 event rule's target DLQ and the coordinator's "
    "asynchronous on-failure destination); a DLQ of a DLQ would only move the same messages. Its depth is alarmed."
)
BULK_CHILDREN = (
    "A Distributed Map runs its children as executions of its own state machine: states:DescribeExecution and "
    "states:StopExecution on the bulk state machine's executions only, whose names are created at run time."
)
BULK_INDEX_OBJECTS = (
    "The Distributed Map's ItemReader reads one batch's line index (bulk/work/<batch id>/index.json); the "
    "wildcard is the batch id, created at run time."
)


def _object_patterns(access: S3Access) -> RegexAppliesTo:
    """Exactly the object key patterns one function is granted, as cdk-nag names them
    ("Resource::<StorageArchiveBucket1234ABCD.Arn>/requests/*/request.json"): any other wildcard still fails."""
    patterns = sorted({*access.get, *access.put, *access.abort})
    alternatives = "|".join(re.escape(p).replace("/", r"\/") for p in patterns)
    return RegexAppliesTo(regex=rf"/^Resource::<StorageArchive[A-F0-9]+\.Arn>\/({alternatives})$/g")


def _iam5(reason: str, *applies_to: str | RegexAppliesTo) -> NagPackSuppression:
    return NagPackSuppression(id="AwsSolutions-IAM5", reason=reason, applies_to=list(applies_to))


def apply_suppressions(stack: DsrflowStack) -> None:
    for name, role in stack.functions.roles.items():
        found = [_iam5(XRAY, "Resource::*")]
        if name in S3_ACCESS:  # the deadline watch (sweep) touches no object
            found.append(_iam5(REQUEST_OBJECTS, _object_patterns(S3_ACCESS[name])))
        if name == "intake":
            found.append(
                _iam5(
                    EXECUTIONS,
                    RegexAppliesTo(
                        regex=r"/^Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:"
                        r"execution:<WorkflowStateMachine[A-F0-9]+\.Name>:\*$/g"
                    ),
                )
            )
        NagSuppressions.add_resource_suppressions(role, found, apply_to_children=True)

    NagSuppressions.add_resource_suppressions(
        stack.workflow.state_machine.role, [_iam5(XRAY, "Resource::*")], apply_to_children=True
    )

    NagSuppressions.add_resource_suppressions(
        stack.bulk.state_machine.role,
        [
            _iam5(XRAY, "Resource::*"),
            _iam5(
                BULK_CHILDREN,
                f"Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:{stack.bulk.state_machine_name}:*",
            ),
            _iam5(
                BULK_INDEX_OBJECTS,
                RegexAppliesTo(regex=r"/^Resource::<StorageArchive[A-F0-9]+\.Arn>\/bulk\/work\/\*\/index\.json$/g"),
            ),
        ],
        apply_to_children=True,
    )

    NagSuppressions.add_resource_suppressions(
        list(stack.functions.functions.values()), [NagPackSuppression(id="AwsSolutions-L1", reason=RUNTIME)]
    )
    NagSuppressions.add_resource_suppressions(
        list(stack.secrets.secrets.values()), [NagPackSuppression(id="AwsSolutions-SMG4", reason=ROTATION)]
    )

    api = stack.triggers.api
    NagSuppressions.add_resource_suppressions(
        api.methods, [NagPackSuppression(id="AwsSolutions-COG4", reason=IAM_AUTH)]
    )
    if stack.triggers.callback_method is not None:
        NagSuppressions.add_resource_suppressions(
            stack.triggers.callback_method,
            [NagPackSuppression(id="AwsSolutions-APIG4", reason=CALLBACK_AUTH)],
        )
    NagSuppressions.add_resource_suppressions(
        api.deployment_stage, [NagPackSuppression(id="AwsSolutions-APIG3", reason=WAF)]
    )
    if stack.triggers.api_logging_role is not None:
        NagSuppressions.add_resource_suppressions(
            stack.triggers.api_logging_role,
            [
                _iam5(
                    API_LOGGING_ROLE,
                    "Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:*",
                )
            ],
        )

    NagSuppressions.add_resource_suppressions(
        stack.triggers.dead_letter_queue, [NagPackSuppression(id="AwsSolutions-SQS3", reason=DLQ)]
    )
    NagSuppressions.add_resource_suppressions(
        stack.bulk.dead_letter_queue, [NagPackSuppression(id="AwsSolutions-SQS3", reason=BULK_DLQ)]
    )
