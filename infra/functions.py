"""The Lambda functions: one code asset (functions/), one dependency layer, one function and role per handler.

Each function gets its own role with exactly the actions its handler calls (see ARCHITECTURE.md, "Runtime
contract"): no AWS managed policy, no resource "*" except the X-Ray actions that only support "*".
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Size, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.config import FUNCTIONS_DIR, LAMBDA_ARCH, LAMBDA_PYTHON, Config, log_retention
from infra.secrets import VendorSecrets
from infra.storage import PROOF_PREFIX, REQUESTS_PREFIX, Storage

RUNTIME: lambda_.Runtime = getattr(lambda_.Runtime, f"PYTHON_{LAMBDA_PYTHON.replace('.', '_')}")
ARCHITECTURE = lambda_.Architecture.ARM_64 if LAMBDA_ARCH == "aarch64" else lambda_.Architecture.X86_64
SERVICE = "dsrflow"
SECRETS_MAX_AGE = 300  # seconds Powertools caches a vendor secret: a fixed secret is picked up within 5 min


@dataclass(frozen=True)
class Spec:
    handler: str
    memory_mb: int
    timeout: Duration
    description: str
    ephemeral_mb: int = 512  # /tmp; Lambda's default


# collect spools each zip archive to /tmp while it streams to S3, to verify it (every member's CRC) before the
# upload completes (core/verify.py): /tmp bounds the largest verifiable zip. 4 GiB leaves 3.5 GiB for the
# spool and room for Bloomreach's export-one spool (400 MiB).
COLLECT_EPHEMERAL_MB = 4096
SPOOL_LIMIT_MB = 3584


# Memory also buys CPU and network bandwidth in Lambda. The job-loop tasks make a few vendor HTTP calls, each
# with in-call retries capped at about 5 minutes in total (core/http.py). collect streams archives of any
# size from the vendor into S3 multipart uploads: 1769 MB is one full vCPU (TLS both ways plus sha256 over
# every byte) and leaves room for the part buffer, and 15 minutes (the Lambda maximum) lets a multi-GB
# archive finish in one invocation; a transfer that still breaks off is retried by the workflow.
SPECS: dict[str, Spec] = {
    "intake": Spec("handlers.intake.handler", 512, Duration.seconds(29), "API and CRM events: validate, store, start"),
    "submit": Spec("handlers.submit.handler", 512, Duration.minutes(5), "Submit one vendor job"),
    "check": Spec("handlers.check.handler", 512, Duration.minutes(5), "Check one vendor job"),
    "collect": Spec(
        "handlers.collect.handler", 1769, Duration.minutes(15), "Stream a vendor's archives to S3", COLLECT_EPHEMERAL_MB
    ),
    "finalize": Spec("handlers.finalize.handler", 512, Duration.minutes(1), "Write the manifest, notify the CRM"),
}
VENDOR_FACING = ("intake", "submit", "check", "collect")  # get VENDOR_SECRETS (intake: the enabled list)
SECRET_READERS = ("submit", "check", "collect")  # build connectors: read the credentials themselves


class Functions(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: Config,
        storage: Storage,
        secrets: VendorSecrets,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self._storage = storage

        code = lambda_.Code.from_asset(str(FUNCTIONS_DIR), exclude=["**/__pycache__", "**/*.pyc"])
        layers: list[lambda_.ILayerVersion] = []
        if not config.skip_lambda_deps:
            layers.append(
                lambda_.LayerVersion(
                    self,
                    "Dependencies",
                    code=lambda_.Code.from_asset(str(config.lambda_deps_dir)),
                    compatible_runtimes=[RUNTIME],
                    compatible_architectures=[ARCHITECTURE],
                    description=f"requirements.txt for python{LAMBDA_PYTHON} {LAMBDA_ARCH} (make lambda-deps)",
                    removal_policy=RemovalPolicy.DESTROY,  # old versions are garbage once functions moved on
                )
            )

        common = {
            "ARCHIVE_BUCKET": storage.bucket.bucket_name,
            "ARCHIVE_KMS_KEY_ID": storage.key.key_arn,
            "POWERTOOLS_SERVICE_NAME": SERVICE,
            "POWERTOOLS_METRICS_NAMESPACE": SERVICE,
            "POWERTOOLS_LOG_LEVEL": config.log_level,
            # Never let an env flip put whole events (subject, email) into the logs, nor handler responses
            # into X-Ray metadata.
            "POWERTOOLS_LOGGER_LOG_EVENT": "false",
            "POWERTOOLS_TRACER_CAPTURE_RESPONSE": "false",
        }
        vendor_secrets = json.dumps(secrets.names, sort_keys=True)

        self.functions: dict[str, lambda_.Function] = {}
        self.roles: dict[str, iam.Role] = {}
        for name, spec in SPECS.items():
            env = dict(common)
            if name in VENDOR_FACING:
                env["VENDOR_SECRETS"] = vendor_secrets
            if name in SECRET_READERS:  # the functions that build connectors
                env["SECRETS_MAX_AGE"] = str(SECRETS_MAX_AGE)
                env["APPROVAL_MODE"] = config.approval_mode
            if name == "collect":
                env["ARCHIVE_SPOOL_LIMIT_MB"] = str(SPOOL_LIMIT_MB)
            if name == "finalize":
                env["EVENT_BUS_NAME"] = config.event_bus_name  # the completion event goes back to the CRM's bus

            title = name.capitalize()
            log_group = logs.LogGroup(
                self,
                f"{title}Logs",
                retention=log_retention(config.log_retention_days),
                removal_policy=removal_policy,
            )
            role = iam.Role(
                self,
                f"{title}Role",
                assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                description=f"dsrflow {config.stage} {name} function",
            )
            # Instead of AWSLambdaBasicExecutionRole (logs:* on every log group): write to its own group only.
            log_group.grant_write(role)
            self.functions[name] = lambda_.Function(
                self,
                title,
                description=f"dsrflow {config.stage}: {spec.description}",
                runtime=RUNTIME,
                architecture=ARCHITECTURE,
                code=code,
                handler=spec.handler,
                layers=layers,
                memory_size=spec.memory_mb,
                ephemeral_storage_size=Size.mebibytes(spec.ephemeral_mb),
                timeout=spec.timeout,
                environment=env,
                tracing=lambda_.Tracing.ACTIVE,
                role=role,
                log_group=log_group,
            )
            self.roles[name] = role

        # --- data access, per handler (core/store.py, core/archive_store.py, core/tasks.py) ---------------
        # s3:ListBucket on the bucket only turns "object missing" into 404 NoSuchKey instead of 403, which
        # the code relies on (no manifest yet, no export outcome yet, unknown request id).
        self._s3("intake", "s3:PutObject", "s3:GetObject")  # request.json (IfNoneMatch), manifest.json
        self._s3("submit", "s3:GetObject")  # request.json (subject), the export's outcome.json, submission.json
        self._s3("check", "s3:GetObject")  # request.json
        # The intent record written before a vendor job is created (at most one more job per action).
        self._s3("submit", "s3:PutObject", keys="*/submission.json")
        # The vendor's own words (error bodies, odd status words): the private per-request objects.
        self._s3("submit", "s3:PutObject", keys="*/vendor-said/*")
        self._s3("check", "s3:PutObject", keys="*/vendor-said/*")
        # request.json; archives by multipart upload (Create/UploadPart/Complete are s3:PutObject); abort on
        # any failure so no partial object or orphaned part holding personal data remains; outcome.json.
        self._s3("collect", "s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload")
        self._s3("finalize", "s3:GetObject", "s3:PutObject")  # request.json, manifest.json
        self._proof("finalize", "s3:PutObject")  # the manifest's proof copy
        self._proof("intake", "s3:GetObject")  # GET /requests/{id} after the request data expired

        # Vendor credentials: core/secrets.py calls GetSecretValue only (through Powertools), and only where
        # connectors are built (core/runtime.connector_for: submit, check, collect). intake merely lists the
        # enabled vendors from VENDOR_SECRETS and gets no access. Not secret.grant_read, which adds
        # DescribeSecret and a key-policy statement. The secrets are encrypted with the archive key: the
        # kms:Decrypt granted with the S3 access above (no kms:ViaService condition) covers them too.
        for name in SECRET_READERS:
            self.roles[name].add_to_policy(
                iam.PolicyStatement(
                    actions=["secretsmanager:GetSecretValue"],
                    resources=[secret.secret_arn for secret in secrets.secrets.values()],
                )
            )

    def connect_workflow(self, state_machine: sfn.IStateMachine) -> None:
        """intake starts executions (name = request id) and describes them for GET /requests/{id}."""
        intake = self.functions["intake"]
        intake.add_environment("STATE_MACHINE_ARN", state_machine.state_machine_arn)
        intake.add_to_role_policy(
            iam.PolicyStatement(actions=["states:StartExecution"], resources=[state_machine.state_machine_arn])
        )
        executions = Stack.of(self).format_arn(
            service="states",
            resource="execution",
            resource_name=f"{state_machine.state_machine_name}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        intake.add_to_role_policy(iam.PolicyStatement(actions=["states:DescribeExecution"], resources=[executions]))

    def connect_event_bus(self, bus: events.IEventBus) -> None:
        """finalize puts the completion event on the CRM's bus (EVENT_BUS_NAME)."""
        bus.grant_put_events_to(self.functions["finalize"])

    def _proof(self, name: str, *object_actions: str) -> None:
        self.roles[name].add_to_policy(
            iam.PolicyStatement(
                actions=list(object_actions), resources=[self._storage.bucket.arn_for_objects(f"{PROOF_PREFIX}*")]
            )
        )

    def _s3(self, name: str, *object_actions: str, keys: str = "*") -> None:
        """Object actions on requests/{keys} (a key pattern under requests/), plus what they need."""
        role = self.roles[name]
        bucket = self._storage.bucket
        role.add_to_policy(
            iam.PolicyStatement(
                actions=list(object_actions), resources=[bucket.arn_for_objects(f"{REQUESTS_PREFIX}{keys}")]
            )
        )
        role.add_to_policy(iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn]))
        # SSE-KMS with the bucket key: GenerateDataKey to write, Decrypt to read and to finish a multipart
        # upload. Explicit actions rather than grantEncrypt/grantDecrypt, which add ReEncrypt*/GenerateDataKey*.
        kms_actions = ["kms:Decrypt"]
        if "s3:PutObject" in object_actions:
            kms_actions.append("kms:GenerateDataKey")
        role.add_to_policy(iam.PolicyStatement(actions=kms_actions, resources=[self._storage.key.key_arn]))
