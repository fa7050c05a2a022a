"""Bulk intake (core/bulk.py): the bulk state machine (statemachines/bulk.asl.json, a Distributed Map), the HMAC
key its ids are derived with, the S3 -> EventBridge rule for files put under bulk/incoming/, and exactly the
access each part needs."""

from __future__ import annotations

import json

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from core.bulk import INCOMING_PREFIX, WORK_PREFIX
from infra.config import DeployConfigError
from infra.workflow import VENDED_LOGS_PREFIX
from statemachines import BULK_ASL_FILE, BULK_SUBSTITUTIONS


class Bulk(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: str,
        functions: dict[str, lambda_.Function],
        bucket: s3.Bucket,
        key: kms.Key,
        dsr_state_machine: sfn.IStateMachine,
        max_concurrency: int,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        text = BULK_ASL_FILE.read_text()
        json.loads(text)
        if not 1 <= max_concurrency <= 1000:
            raise DeployConfigError("bulkMaxConcurrency must be 1-1000")
        # HMAC_256 in KMS: request and batch ids derived from a line cannot be recomputed from an email without it.
        self.mac_key = kms.Key(
            self,
            "IdKey",
            alias=f"alias/dsrflow-{stage}-bulk-ids",
            description=f"dsrflow {stage}: derives bulk intake's request and batch ids (HMAC)",
            key_spec=kms.KeySpec.HMAC_256,
            key_usage=kms.KeyUsage.GENERATE_VERIFY_MAC,
            removal_policy=removal_policy,
        )
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"{VENDED_LOGS_PREFIX}dsrflow-{stage}-bulk",
            retention=log_retention,
            removal_policy=removal_policy,
        )
        name = f"dsrflow-{stage}-bulk"
        self.state_machine_name = name
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=name,
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_string(text),
            definition_substitutions={k: functions[fn].function_arn for k, fn in BULK_SUBSTITUTIONS.items()},
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
            tracing_enabled=True,
        )
        stack = Stack.of(self)
        own_arn = stack.format_arn(
            service="states", resource="stateMachine", resource_name=name, arn_format=ArnFormat.COLON_RESOURCE_NAME
        )
        own_executions = stack.format_arn(
            service="states", resource="execution", resource_name=f"{name}:*", arn_format=ArnFormat.COLON_RESOURCE_NAME
        )
        role = self.state_machine.role
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["lambda:InvokeFunction"],
                resources=[functions[fn].function_arn for fn in BULK_SUBSTITUTIONS.values()],
            )
        )
        # A Distributed Map runs its children as executions of this state machine (AWS: "IAM policies for
        # Distributed Map states"): StartExecution on itself, Describe/Stop on its executions (by name, not the
        # state machine's token, to avoid a cycle). The ItemReader reads the line index.
        role.add_to_principal_policy(iam.PolicyStatement(actions=["states:StartExecution"], resources=[own_arn]))
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["states:DescribeExecution", "states:StopExecution"], resources=[own_executions]
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"], resources=[bucket.arn_for_objects(f"{WORK_PREFIX}*/index.json")]
            )
        )
        role.add_to_principal_policy(iam.PolicyStatement(actions=["kms:Decrypt"], resources=[key.key_arn]))

        coordinator, item, intake = functions["bulk"], functions["bulk_item"], functions["intake"]
        for fn in (coordinator, item, intake):
            fn.add_environment("BULK_MAC_KEY_ID", self.mac_key.key_arn)
            fn.add_to_role_policy(iam.PolicyStatement(actions=["kms:GenerateMac"], resources=[self.mac_key.key_arn]))
        # By its name, not the state machine's attribute: the machine already depends on the coordinator's ARN.
        self.state_machine_arn = own_arn
        for fn in (coordinator, intake):
            fn.add_environment("BULK_STATE_MACHINE_ARN", own_arn)
            fn.add_environment("BULK_MAX_CONCURRENCY", str(max_concurrency))
            fn.add_to_role_policy(iam.PolicyStatement(actions=["states:StartExecution"], resources=[own_arn]))
        # bulk_item starts the requests, as intake does (infra/functions.py grants the ledger and request.json).
        item.add_environment("STATE_MACHINE_ARN", dsr_state_machine.state_machine_arn)
        item.add_to_role_policy(
            iam.PolicyStatement(actions=["states:StartExecution"], resources=[dsr_state_machine.state_machine_arn])
        )

        # Files put under bulk/incoming/ start a batch: S3 sends every object event to EventBridge (a property of
        # the bucket, no notification custom resource); the rule matches that prefix only, so the work files
        # and results (bulk/work/, bulk/results/) and the API's bodies (bulk/api/) never start one.
        # SQS-managed encryption, not the archive key: EventBridge may then send to it without a key policy, and
        # an S3 event holds object names only. TLS only, 14 days (the SQS maximum) to fix and redrive; alarmed
        # (infra/observability.py).
        self.dead_letter_queue = sqs.Queue(
            self,
            "IncomingDeadLetters",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        cfn_bucket = bucket.node.default_child
        assert isinstance(cfn_bucket, s3.CfnBucket)
        cfn_bucket.add_property_override("NotificationConfiguration.EventBridgeConfiguration.EventBridgeEnabled", True)
        self.rule = events.Rule(
            self,
            "IncomingFiles",
            description="dsrflow bulk intake: a JSON Lines file put under bulk/incoming/ starts a batch",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={"bucket": {"name": [bucket.bucket_name]}, "object": {"key": [{"prefix": INCOMING_PREFIX}]}},
            ),
            targets=[
                targets.LambdaFunction(
                    coordinator,
                    dead_letter_queue=self.dead_letter_queue,
                    max_event_age=Duration.hours(24),
                    retry_attempts=185,
                )
            ],
        )
        # EventBridge invokes the coordinator asynchronously: a delivery that fails for a day (above), or an
        # invocation that still fails after Lambda's own 2 retries, lands in the queue instead of being dropped.
        # The event names the bucket and the file (bulk/incoming/...), never a line; redriving it is safe (the
        # batch id is derived from the file: a batch already started is not started twice).
        coordinator.configure_async_invoke(
            on_failure=destinations.SqsDestination(self.dead_letter_queue),
            retry_attempts=2,
            max_event_age=Duration.hours(6),
        )
