"""The dsrflow stack: storage, secrets, functions, workflow, triggers and alarms, wired per ARCHITECTURE.md."""

from __future__ import annotations

from aws_cdk import CfnOutput, RemovalPolicy, Stack, Tags
from constructs import Construct

from infra.bulk import Bulk
from infra.config import STATE_MACHINE_FILE, Config, log_retention
from infra.dashboard import Dashboard
from infra.functions import Functions
from infra.ledger import Ledger
from infra.nag import apply_suppressions
from infra.observability import Observability
from infra.secrets import VendorSecrets
from infra.storage import Storage
from infra.triggers import CALLBACK_PATH, Triggers
from infra.watch import Watch
from infra.workflow import Workflow, state_machine_name


class DsrflowStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: Config) -> None:
        super().__init__(
            scope,
            construct_id,
            description=f"dsrflow ({config.stage}): GDPR data-subject requests across SaaS vendors",
        )
        self.config = config
        # GDPR proof (manifests, archives) and its key outlive the stack unless told otherwise.
        removal = RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY
        Tags.of(self).add("project", "dsrflow")
        Tags.of(self).add("stage", config.stage)

        self.storage = Storage(
            self,
            "Storage",
            stage=config.stage,
            retention_days=config.retention_days,
            proof_retention_days=config.proof_retention_days,
            noncurrent_version_days=config.noncurrent_version_days,
            access_log_retention_days=config.access_log_retention_days,
            removal_policy=removal,
        )
        self.secrets = VendorSecrets(
            self, "VendorSecrets", stage=config.stage, vendors=config.vendors, key=self.storage.key
        )
        self.ledger = Ledger(self, "Ledger", stage=config.stage, key=self.storage.key, removal_policy=removal)
        self.functions = Functions(
            self, "Functions", config=config, storage=self.storage, secrets=self.secrets, removal_policy=removal
        )
        self.functions.connect_ledger(self.ledger.table, retention_days=config.proof_retention_days)
        fns = self.functions.functions
        self.workflow = Workflow(
            self,
            "Workflow",
            definition_file=STATE_MACHINE_FILE,
            functions=fns,
            stage=config.stage,
            log_retention=log_retention(config.log_retention_days),
            removal_policy=removal,
        )
        self.functions.connect_workflow(self.workflow.state_machine)
        self.functions.connect_limits(self.ledger.table, state_machine_name(config.stage), config.vendor_limits)
        self.bulk = Bulk(
            self,
            "Bulk",
            stage=config.stage,
            functions=fns,
            bucket=self.storage.bucket,
            key=self.storage.key,
            dsr_state_machine=self.workflow.state_machine,
            max_concurrency=config.bulk_max_concurrency,
            log_retention=log_retention(config.log_retention_days),
            removal_policy=removal,
        )
        self.triggers = Triggers(
            self,
            "Triggers",
            config=config,
            intake=fns["intake"],
            callback=fns["callback"] if config.callbacks else None,
            key=self.storage.key,
            removal_policy=removal,
        )
        if config.callbacks:
            self.functions.connect_callbacks(
                self.ledger.table, state_machine_name(config.stage), self._callback_base_url(config)
            )
        self.functions.connect_event_bus(self.triggers.event_bus)
        self.observability = Observability(
            self,
            "Observability",
            stage=config.stage,
            dead_letter_queue=self.triggers.dead_letter_queue,
            bulk_dead_letter_queue=self.bulk.dead_letter_queue,
            state_machine=self.workflow.state_machine,
            alarm_topic_arn=config.alarm_topic_arn,
        )
        self.watch = Watch(
            self, "Watch", stage=config.stage, sweep=fns["sweep"], alarm_topic_arn=config.alarm_topic_arn
        )
        self.dashboard = Dashboard(
            self,
            "Dashboard",
            stage=config.stage,
            vendors=config.vendors,
            functions=fns,
            state_machine=self.workflow.state_machine,
            dead_letter_queue=self.triggers.dead_letter_queue,
            alarms=[
                self.observability.dlq_alarm,
                self.observability.bulk_dlq_alarm,
                self.observability.execution_alarm,
                *self.watch.alarms,
            ],
        )

        CfnOutput(self, "ApiUrl", value=self.triggers.api.url, description="POST /requests, GET /requests/{id}")
        CfnOutput(self, "StateMachineArn", value=self.workflow.state_machine.state_machine_arn)
        CfnOutput(
            self,
            "BulkStateMachineArn",
            value=self.bulk.state_machine_arn,
            description="bulk intake: put JSON Lines under bulk/incoming/, or POST /requests/bulk",
        )
        CfnOutput(self, "ArchiveBucketName", value=self.storage.bucket.bucket_name)
        CfnOutput(self, "ArchiveKeyArn", value=self.storage.key.key_arn)
        CfnOutput(self, "LedgerTableName", value=self.ledger.table.table_name, description="the request ledger")
        CfnOutput(
            self, "EventBusName", value=config.event_bus_name, description="where the dsrflow events go (the CRM's bus)"
        )
        CfnOutput(self, "IntakeDeadLetterQueueUrl", value=self.triggers.dead_letter_queue.queue_url)
        CfnOutput(self, "BulkDeadLetterQueueUrl", value=self.bulk.dead_letter_queue.queue_url)
        CfnOutput(self, "DashboardName", value=self.dashboard.dashboard_name, description="the CloudWatch dashboard")
        for vendor, secret in self.secrets.secrets.items():
            CfnOutput(
                self,
                f"SecretArn{vendor.replace('-', '').replace('_', '').capitalize()}",
                value=secret.secret_arn,
                description=f"put the {vendor} credentials JSON here (README.md, Deploy)",
            )

        apply_suppressions(self)

    def _callback_base_url(self, config: Config) -> str:
        """<API>/callbacks/ from the API's id, not its stage URL: the stage depends on the methods, they on intake,
        intake's role on the state machine and the state machine on submit, so submit's environment cannot refer
        to the stage without a circular dependency."""
        api = self.triggers.api
        return f"https://{api.rest_api_id}.execute-api.{self.region}.{self.url_suffix}/{config.stage}{CALLBACK_PATH}/"
