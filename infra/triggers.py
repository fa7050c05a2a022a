"""How requests arrive: an IAM-authenticated REST API and an EventBridge rule for the CRM, both into intake."""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import Config, log_retention

# DSRs arrive a few a day; these limits only stop a runaway caller.
API_RATE_LIMIT = 10  # requests per second, steady
API_BURST_LIMIT = 20


class Triggers(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: Config,
        intake: lambda_.Function,
        key: kms.Key,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.api_logging_role: iam.Role | None = None  # set by _logging_role when the stack owns the setting
        self.api = self._api(config, intake, removal_policy)
        self.event_bus = events.EventBus.from_event_bus_name(self, "Bus", config.event_bus_name)
        self.dead_letter_queue, self.rule = self._crm_rule(config, intake, key)

    def _api(self, config: Config, intake: lambda_.Function, removal_policy: RemovalPolicy) -> apigw.RestApi:
        self.access_log_group = logs.LogGroup(
            self, "ApiAccessLogs", retention=log_retention(config.log_retention_days), removal_policy=removal_policy
        )
        api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=f"dsrflow-{config.stage}",
            description="dsrflow: submit and follow data-subject requests (SigV4-signed callers only)",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # CDK's version of the account logging role uses an AWS managed policy: see _logging_role instead.
            cloud_watch_role=False,
            deploy_options=apigw.StageOptions(
                stage_name=config.stage,
                tracing_enabled=True,
                throttling_rate_limit=API_RATE_LIMIT,
                throttling_burst_limit=API_BURST_LIMIT,
                metrics_enabled=True,
                # Access logs name the caller (IAM ARN), never the body; execution logs at ERROR carry error
                # messages and request ids; data tracing (which logs bodies = personal data) stays off.
                access_log_destination=apigw.LogGroupLogDestination(self.access_log_group),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,
            ),
            default_method_options=apigw.MethodOptions(authorization_type=apigw.AuthorizationType.IAM),
        )

        if config.api_gateway_cloudwatch_role:
            api.deployment_stage.node.add_dependency(self._logging_role())

        validator = api.add_request_validator("Validator", validate_request_body=True, validate_request_parameters=True)
        # A first, cheap gate; intake's pydantic model gives the field-by-field answer (core/models.py).
        body = api.add_model(
            "DsrRequestModel",
            content_type="application/json",
            model_name="DsrRequest",
            schema=apigw.JsonSchema(
                schema=apigw.JsonSchemaVersion.DRAFT4,
                title="DsrRequest",
                type=apigw.JsonSchemaType.OBJECT,
                required=["actions", "subject"],
                properties={
                    "actions": apigw.JsonSchema(
                        type=apigw.JsonSchemaType.ARRAY,
                        min_items=1,
                        unique_items=True,
                        items=apigw.JsonSchema(type=apigw.JsonSchemaType.STRING, enum=["export", "erase"]),
                    ),
                    "subject": apigw.JsonSchema(type=apigw.JsonSchemaType.OBJECT, min_properties=1),
                },
            ),
        )

        # allow_test_invoke=False: CDK would otherwise add a second permission per method for TestInvokeMethod
        # (the console's "Test" button, SourceArn .../test-invoke-stage/...): a way into intake, with any body
        # and any claimed identity, for whoever holds the management permission apigateway:POST on the method
        # instead of execute-api:Invoke, past the stage's throttling and access logs. Test through the
        # deployed stage, signed, instead.
        integration = apigw.LambdaIntegration(intake, proxy=True, allow_test_invoke=False)
        requests = api.root.add_resource("requests")
        requests.add_method(
            "POST",
            integration,
            request_validator=validator,
            request_models={"application/json": body},
        )
        requests.add_resource("{id}").add_method(
            "GET",
            integration,
            request_validator=validator,
            request_parameters={"method.request.path.id": True},
        )
        return api

    def _logging_role(self) -> apigw.CfnAccount:
        """API Gateway refuses a stage with access or execution logging until the region's account settings
        name a CloudWatch Logs role. This sets it: the permissions of AWS's AmazonAPIGatewayPushToCloudWatchLogs
        as an inline policy on log groups of this account and region (the role serves every REST API in the
        region, so it cannot be narrowed to ours). Both are retained: deleting dsrflow must not switch off
        other APIs' logging. Pass -c apiGatewayCloudWatchRole=false where the account already manages it."""
        stack = Stack.of(self)
        self.api_logging_role = iam.Role(
            self,
            "ApiGatewayLoggingRole",
            assumed_by=iam.ServicePrincipal("apigateway.amazonaws.com"),
            description="API Gateway (account setting): write REST API access and execution logs to CloudWatch",
            inline_policies={
                "push-to-cloudwatch-logs": iam.PolicyDocument(
                    statements=[
                        iam.PolicyStatement(
                            actions=[
                                "logs:CreateLogGroup",
                                "logs:CreateLogStream",
                                "logs:DescribeLogGroups",
                                "logs:DescribeLogStreams",
                                "logs:PutLogEvents",
                                "logs:GetLogEvents",
                                "logs:FilterLogEvents",
                            ],
                            resources=[
                                stack.format_arn(
                                    service="logs",
                                    resource="log-group",
                                    resource_name="*",
                                    arn_format=ArnFormat.COLON_RESOURCE_NAME,
                                )
                            ],
                        )
                    ]
                )
            },
        )
        self.api_logging_role.apply_removal_policy(RemovalPolicy.RETAIN)
        account = apigw.CfnAccount(self, "ApiGatewayAccount", cloud_watch_role_arn=self.api_logging_role.role_arn)
        account.apply_removal_policy(RemovalPolicy.RETAIN)
        return account

    def _crm_rule(self, config: Config, intake: lambda_.Function, key: kms.Key) -> tuple[sqs.Queue, events.Rule]:
        stack = Stack.of(self)
        # A fixed name, so the key policy below can name the rule without a dependency cycle
        # (key policy -> rule -> its DLQ -> key).
        rule_name = f"dsrflow-{config.stage}-crm-requests"

        # Holds undeliverable CRM events, which carry the subject's identifiers: encrypted with the same
        # customer key as the archives, TLS only, kept the SQS maximum of 14 days for a redrive.
        dlq = sqs.Queue(
            self,
            "IntakeDeadLetters",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        rule = events.Rule(
            self,
            "CrmRequests",
            rule_name=rule_name,
            description="dsrflow: data-subject requests from the CRM",
            event_bus=self.event_bus,
            event_pattern=events.EventPattern(source=[config.crm_event_source], detail_type=[config.crm_detail_type]),
        )
        # Delivery retries: a DSR must survive a Lambda outage or throttling of up to a day; then the DLQ
        # (and its alarm) take over.
        rule.add_target(
            targets.LambdaFunction(intake, dead_letter_queue=dlq, max_event_age=Duration.hours(24), retry_attempts=185)
        )
        # EventBridge invokes Lambda asynchronously: once delivered, a failing invocation is retried by Lambda
        # and would then be dropped. Send those to the same DLQ (intake is idempotent per event id). An L1
        # config because the L2 SQS destination grants kms:ReEncrypt*/GenerateDataKey*; exact grants below.
        async_failures = lambda_.CfnEventInvokeConfig(
            self,
            "IntakeAsyncFailures",
            function_name=intake.function_name,
            qualifier="$LATEST",
            maximum_retry_attempts=2,
            maximum_event_age_in_seconds=6 * 3600,
            destination_config=lambda_.CfnEventInvokeConfig.DestinationConfigProperty(
                on_failure=lambda_.CfnEventInvokeConfig.OnFailureProperty(destination=dlq.queue_arn)
            ),
        )
        intake.add_to_role_policy(iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[dlq.queue_arn]))
        intake.add_to_role_policy(
            iam.PolicyStatement(actions=["kms:GenerateDataKey", "kms:Decrypt"], resources=[key.key_arn])
        )
        # Lambda checks the role can reach the destination when the config is created: policy first.
        async_failures.node.add_dependency(intake.role)

        # EventBridge writes to the encrypted DLQ as its service principal: allow that on this key, for
        # this rule only (the condition AWS documents for EventBridge dead-letter queues).
        rule_path = rule_name if config.event_bus_name == "default" else f"{config.event_bus_name}/{rule_name}"
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="EventBridgeToIntakeDeadLetterQueue",
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["kms:GenerateDataKey", "kms:Decrypt"],
                resources=["*"],  # in a key policy, "*" is this key
                conditions={
                    "ArnEquals": {
                        "aws:SourceArn": stack.format_arn(service="events", resource="rule", resource_name=rule_path)
                    }
                },
            )
        )
        return dlq, rule
