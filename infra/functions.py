"""The Lambda functions: one code asset (functions/), one dependency layer, one function and role per handler.

Each function gets its own role with exactly the actions its handler calls (see ARCHITECTURE.md, "Runtime
contract"): no AWS managed policy, no resource "*" except the X-Ray actions that only support "*".
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Size, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from handlers.catalog import HANDLERS
from infra.config import FUNCTIONS_DIR, LAMBDA_ARCH, LAMBDA_PYTHON, REPO_ROOT, Config, log_retention
from infra.ledger import OPEN_INDEX, STATUS_INDEX
from infra.secrets import VendorSecrets
from infra.storage import PROOF_PREFIX, REQUESTS_PREFIX, Storage

RUNTIME: lambda_.Runtime = getattr(lambda_.Runtime, f"PYTHON_{LAMBDA_PYTHON.replace('.', '_')}")
ARCHITECTURE = lambda_.Architecture.ARM_64 if LAMBDA_ARCH == "aarch64" else lambda_.Architecture.X86_64
SERVICE = "dsrflow"
SECRETS_MAX_AGE = 300
PACKAGE_READ_MB = 8  # one ranged read of a vendor zip while packing (PACKAGE_READ_MB): the package's read memory
CONTROLLER_TEXT_PATH = "/opt/dsrflow/controller.txt"  # where the controllerText layer puts the file  # seconds Powertools caches a vendor secret: a fixed secret is picked up within 5 min


@dataclass(frozen=True)
class Sizing:
    memory_mb: int
    timeout: Duration
    ephemeral_mb: int = 512  # /tmp; Lambda's default


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
# Per function (functions/handlers/catalog.py lists them all, with handler and description).
SIZING: dict[str, Sizing] = {
    "intake": Sizing(512, Duration.seconds(29)),
    "submit": Sizing(512, Duration.minutes(5)),
    "check": Sizing(512, Duration.minutes(5)),
    "collect": Sizing(1769, Duration.minutes(15), COLLECT_EPHEMERAL_MB),
    # Deflate and sha256 over every byte of every export on one vCPU: about 52 MiB/s for text, 254 MiB/s for
    # media stored as is (make bench), so 15 minutes packs the 32 GiB a package may hold. Memory: one ranged-read
    # block and the parts in flight, whatever the data (core/package.py): 87-89 MiB peak RSS for a 1 GiB vendor zip.
    "package": Sizing(1769, Duration.minutes(15)),
    "finalize": Sizing(512, Duration.minutes(1)),
    "approval": Sizing(512, Duration.minutes(1)),  # a ledger read and write, an S3 read, one event
    "record": Sizing(256, Duration.minutes(1)),  # one outcome.json and a ledger write
    "park": Sizing(256, Duration.minutes(1)),  # a waiter put, a Query of its vendor's queue, maybe a wake-up
    "callback": Sizing(256, Duration.seconds(10)),  # one conditional update, maybe a wake-up: a vendor waits on it
    "sweep": Sizing(256, Duration.minutes(2)),  # one Query over the open requests, a write and an event per warning
    # Bulk intake: index up to 5 MiB, or read back up to 10,000 rows (16 at a time) and write the result file.
    "bulk": Sizing(1024, Duration.minutes(10)),
    "bulk_item": Sizing(512, Duration.minutes(1)),  # one line: what POST /requests does
}
SPECS: dict[str, Spec] = {
    name: Spec(h.handler, SIZING[name].memory_mb, SIZING[name].timeout, h.description, SIZING[name].ephemeral_mb)
    for name, h in HANDLERS.items()
}
VENDOR_FACING = ("intake", "submit", "check", "collect", "bulk_item")  # get VENDOR_SECRETS (intake: the enabled list)
SECRET_READERS = ("submit", "check", "collect")  # build connectors: read the credentials themselves
# Put dsrflow events on the CRM's bus (EVENT_BUS_NAME, events:PutEvents; catalog in core/events.py).
EVENT_SENDERS = ("intake", "approval", "finalize", "sweep", "bulk_item")


# --- what each handler does with the archive bucket --------------------------------------------------------
# Every S3 call of core/store.py, core/archive_store.py, core/vendor_said.py and core/tasks.py, per handler,
# as IAM key patterns (ARCHITECTURE.md, "Bucket layout"). Request ids and vendor names hold no "/"
# (core/models.REQUEST_ID_PATTERN, connectors/registry.py), so each "*" but the last stands for one segment.
REQUEST = f"{REQUESTS_PREFIX}*/request.json"  # the subject
MANIFEST = f"{REQUESTS_PREFIX}*/manifest.json"
PROOF_MANIFEST = f"{PROOF_PREFIX}*/manifest.json"  # the manifest's copy, kept longer
EXPORT_OUTCOME = f"{REQUESTS_PREFIX}*/*/export/outcome.json"  # what an erase depends on
SUBMISSION = f"{REQUESTS_PREFIX}*/*/*/submission*.json"  # the intent recorded before a vendor job is created
OUTCOME = f"{REQUESTS_PREFIX}*/*/*/outcome.json"  # each vendor action's outcome (collect and record write it)
ATTEMPT_MANIFEST = f"{PROOF_PREFIX}*/attempts/*/manifest.json"  # every attempt's manifest, kept as proof
VENDOR_SAID = f"{REQUESTS_PREFIX}*/*/*/vendor-said/*"  # the vendor's own words (core/vendor_said.py)
VENDOR_SAID_PREFIX = f"{REQUESTS_PREFIX}*/*/*/vendor-said/"  # what finalize lists (core/vendor_said.keys)
# One vendor action's folder: its archives, outcome.json, submission.json and vendor-said/ (core.domain.Action).
ACTION_FOLDERS = (f"{REQUESTS_PREFIX}*/*/export/*", f"{REQUESTS_PREFIX}*/*/erase/*")
EXPORT_FOLDER = f"{REQUESTS_PREFIX}*/*/export/*"  # an export's archives (what the access package unpacks)
PACKAGE = f"{REQUESTS_PREFIX}*/package/*"  # the access package (core.store.package_key)
# Bulk intake (core/bulk.py): a batch id holds no "/", a dropped file's name may.
BULK_INCOMING = "bulk/incoming/*"
BULK_API = "bulk/api/*"
BULK_INDEX = "bulk/work/*/index.json"
BULK_ROWS = "bulk/work/*/rows/*"
BULK_ROWS_PREFIX = "bulk/work/*/rows/"
BULK_RESULT = "bulk/results/*"


# What each handler does with the request ledger (functions/core/ledger.py): intake puts the request item and
# its first audit event, and reads the item for GET /requests/{id}; the job-loop tasks and finalize update the
# request item and put audit events. Nobody deletes or scans. The deadline watch (sweep) queries the
# open-by-deadline index (Query is granted on that index only: LEDGER_QUERY_INDEX) and marks request items.
LEDGER_ACTIONS: dict[str, tuple[str, ...]] = {
    # POST /requests and every operator route: the request item (read, put, conditional updates: started,
    # approved/denied, retry claim, extension, cancel), audit events, and Queries (LEDGER_QUERIES).
    "intake": ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"),
    # GetItem: the request's deadline (an extension moves it), which caps every vendor job (core/tasks.py).
    "submit": ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"),
    "check": ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"),
    "collect": ("dynamodb:PutItem", "dynamodb:UpdateItem"),
    # The deadline (an extension moves it), the gate's token item, the request item, audit events.
    "approval": ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"),
    "record": ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"),  # GetItem: a denial's gate
    "finalize": ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"),
    "sweep": ("dynamodb:Query", "dynamodb:UpdateItem"),
    # Bulk intake, one line: what POST /requests writes (the request item, its first audit event, started).
    "bulk_item": ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"),
}
# Where each function's dynamodb:Query may go: "table" is one request's items (its audit trail, its open
# approval gates: always by pk), the others are the indexes' ARNs. Nobody scans.
LEDGER_QUERIES: dict[str, tuple[str, ...]] = {
    "intake": ("table", OPEN_INDEX, STATUS_INDEX),
    "sweep": (OPEN_INDEX,),
}
LEDGER_QUERY_INDEX = OPEN_INDEX  # the sweep's one index

# Who touches the per-vendor limits (core/limits.py; items under pk "LIMIT#<vendor>" in the ledger's table), and
# how: submit takes a slot (and settles the queue), check and record give it back (and hand it on), park queues
# a waiter, the deadline watch settles each queue hourly; the pace (GetItem, UpdateItem) is every vendor call's.
# Granted only on those keys (dynamodb:LeadingKeys "LIMIT#*"); handing a slot on wakes its waiter
# (states:SendTaskSuccess).
LIMIT_ITEM_ACTIONS: dict[str, tuple[str, ...]] = {
    "submit": ("dynamodb:Query", "dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:UpdateItem"),
    "check": ("dynamodb:Query", "dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:UpdateItem"),
    "collect": ("dynamodb:GetItem", "dynamodb:UpdateItem"),
    "record": ("dynamodb:Query", "dynamodb:PutItem", "dynamodb:DeleteItem"),
    "park": ("dynamodb:Query", "dynamodb:PutItem", "dynamodb:DeleteItem"),
    "sweep": ("dynamodb:Query", "dynamodb:PutItem", "dynamodb:DeleteItem"),
}
LIMIT_WAKERS = ("submit", "check", "record", "park", "sweep")

# Vendor callbacks (core/callbacks.py; items under pk "CALLBACK#<sha256 of the token>" in the ledger's table): submit
# registers a job's item, park writes the waiting task token on it (and wakes the branch when the call came first),
# the callback function notes the call (a conditional update; GetItem tells a repeat from an unknown token) and
# wakes the branch. Granted only on those keys.
CALLBACK_ITEM_ACTIONS: dict[str, tuple[str, ...]] = {
    "submit": ("dynamodb:PutItem",),
    "park": ("dynamodb:UpdateItem",),
    "callback": ("dynamodb:UpdateItem", "dynamodb:GetItem"),
}
CALLBACK_WAKERS = ("park", "callback")


@dataclass(frozen=True)
class S3Access:
    get: tuple[str, ...] = ()  # s3:GetObject
    put: tuple[str, ...] = ()  # s3:PutObject (also CreateMultipartUpload, UploadPart, CompleteMultipartUpload)
    abort: tuple[str, ...] = ()  # s3:AbortMultipartUpload
    # s3:ListBucket limited to these prefixes (s3:prefix); empty: on the whole bucket, for 404s (see _s3).
    list_prefixes: tuple[str, ...] = ()


S3_ACCESS: dict[str, S3Access] = {
    # POST: request.json once (IfNoneMatch; a taken key is read back to tell a lost answer from a duplicate).
    # GET /requests/{id}: the manifest, or its proof copy once the request data expired.
    # Retry: the request and the last attempt's manifest. Cancel: each action's outcome and submission record
    # (what was sent), then the cancelled manifest's copies.
    # GET /requests/{id}/package: HEAD the package, and sign the link to it (a presigned GET is this role's).
    "intake": S3Access(
        get=(REQUEST, MANIFEST, PROOF_MANIFEST, ATTEMPT_MANIFEST, OUTCOME, SUBMISSION, PACKAGE),
        # POST /requests/bulk: the body, under bulk/api/ (no trigger there).
        put=(REQUEST, MANIFEST, PROOF_MANIFEST, ATTEMPT_MANIFEST, BULK_API),
    ),
    # The subject, the export's outcome (erase waits for a verified export), the submission record (read,
    # then written before the vendor call), the vendor's words.
    "submit": S3Access(get=(REQUEST, EXPORT_OUTCOME, SUBMISSION), put=(SUBMISSION, VENDOR_SAID)),
    "check": S3Access(get=(REQUEST,), put=(VENDOR_SAID,)),
    # The subject; in its action's folder: the outcome (a retry that finds it completed stops), the submission
    # record (job ids of a possible duplicate), archives listed and read back (rehash_stored), archives put by
    # multipart upload and aborted on any failure (no orphaned parts holding personal data), outcome.json and
    # the vendor's words written. Never request.json or the manifest.
    "collect": S3Access(get=(REQUEST, *ACTION_FOLDERS), put=ACTION_FOLDERS, abort=ACTION_FOLDERS),
    # Both manifest copies; the vendor-said keys of each action are listed into the manifest. It reads nothing:
    # the outcomes come in the execution's input.
    # A retry's finalize reads the previous attempt's manifest to merge the attempts.
    "finalize": S3Access(
        get=(MANIFEST, PROOF_MANIFEST, ATTEMPT_MANIFEST),
        put=(MANIFEST, PROOF_MANIFEST, ATTEMPT_MANIFEST),
        list_prefixes=(VENDOR_SAID_PREFIX,),
    ),
    # The access package: every export's archives read (ranged GETs), the earlier attempt's manifest (a retry
    # packs what earlier attempts collected); the zip put by multipart upload and aborted on any failure.
    # Never request.json: the package needs no subject. ListBucket stays unconditioned (as for the others that
    # read): a missing earlier manifest must answer 404, not 403.
    "package": S3Access(
        get=(EXPORT_FOLDER, MANIFEST, PROOF_MANIFEST, ATTEMPT_MANIFEST),
        put=(PACKAGE,),
        abort=(PACKAGE,),
    ),
    # The export's outcome an erase depends on; never the subject (the deadline comes from the ledger).
    "approval": S3Access(get=(EXPORT_OUTCOME,)),
    # The failed/denied action's outcome.json; the vendor-said keys it points to are listed.
    "record": S3Access(put=(OUTCOME,), list_prefixes=(VENDOR_SAID_PREFIX,)),
    # Bulk intake (core/bulk.py). The coordinator: the batch file (a drop or the API's body), the line index
    # (written, read back), the rows (listed and read), the result file. Never requests/.
    "bulk": S3Access(
        get=(BULK_INCOMING, BULK_API, BULK_INDEX, BULK_ROWS),
        put=(BULK_INDEX, BULK_RESULT),
        list_prefixes=(BULK_ROWS_PREFIX,),
    ),
    # One line: its byte range of the batch file, then what POST /requests does (request.json once, read back
    # for a duplicate), and its row.
    "bulk_item": S3Access(get=(BULK_INCOMING, BULK_API, REQUEST), put=(REQUEST, BULK_ROWS)),
}


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
        self._table_key_granted: set[str] = set()  # roles given the ledger table's key (_table_key)
        self._wakers: set[str] = set()  # roles given states:SendTaskSuccess on the workflow (_wakes)

        # The precompiled copy (infra/code_asset.py) ships its bytecode; functions/ itself only its sources.
        precompiled = config.code_asset_dir != FUNCTIONS_DIR
        code = lambda_.Code.from_asset(
            str(config.code_asset_dir), exclude=[] if precompiled else ["**/__pycache__", "**/*.pyc"]
        )
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
            if name == "bulk_item":
                env["REQUIRE_APPROVAL"] = config.require_approval  # as intake: each execution's approval gate
            if name == "intake":
                env["REQUIRE_APPROVAL"] = config.require_approval  # each execution's approval gate
                env["PACKAGE_URL_SECONDS"] = str(config.package_url_seconds)
            if name == "package":
                env["PACKAGE_READ_MB"] = str(PACKAGE_READ_MB)
            if name == "collect":
                env["ARCHIVE_SPOOL_LIMIT_MB"] = str(SPOOL_LIMIT_MB)
            if name in EVENT_SENDERS:
                env["EVENT_BUS_NAME"] = config.event_bus_name  # the lifecycle events go back to the CRM's bus

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
            function_layers = list(layers)
            if name == "package" and config.controller_text is not None:
                function_layers.append(self._controller_layer(config.controller_text))
                env["CONTROLLER_TEXT_FILE"] = CONTROLLER_TEXT_PATH
            self.functions[name] = lambda_.Function(
                self,
                title,
                description=f"dsrflow {config.stage}: {spec.description}",
                runtime=RUNTIME,
                architecture=ARCHITECTURE,
                code=code,
                handler=spec.handler,
                layers=function_layers,
                memory_size=spec.memory_mb,
                ephemeral_storage_size=Size.mebibytes(spec.ephemeral_mb),
                timeout=spec.timeout,
                environment=env,
                tracing=lambda_.Tracing.ACTIVE,
                role=role,
                log_group=log_group,
            )
            self.roles[name] = role

        # --- data access, per handler: S3_ACCESS below --------------------------------------------------
        for name, access in S3_ACCESS.items():
            self._s3(name, access)

        # Vendor credentials: core/secrets.py calls GetSecretValue only (through Powertools), and only where
        # connectors are built (handlers/runtime.connector_for: submit, check, collect). intake merely lists the
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

    def _controller_layer(self, source: Path) -> lambda_.LayerVersion:
        """The deployer's controller text as a layer of one file (CONTROLLER_TEXT_PATH under /opt), staged
        under build/ at synth: the code asset stays the same for everyone."""
        staging = REPO_ROOT / "build" / "controller-text"
        target = staging / CONTROLLER_TEXT_PATH.removeprefix("/opt/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return lambda_.LayerVersion(
            self,
            "ControllerText",
            code=lambda_.Code.from_asset(str(staging)),
            description="the controller's text in the access package (context controllerText)",
            removal_policy=RemovalPolicy.DESTROY,
        )

    def connect_workflow(self, state_machine: sfn.IStateMachine) -> None:
        """intake starts executions (name = request id; a retry's: <id>.retry-<n>), describes them for
        GET /requests/{id}, stops them (cancel) and answers the approval gate (approve, deny)."""
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
        # The operator routes: cancel stops the request's execution; approve/deny answer the approval gate's
        # task token (a token belongs to an execution of this state machine).
        intake.add_to_role_policy(iam.PolicyStatement(actions=["states:StopExecution"], resources=[executions]))
        intake.add_to_role_policy(
            iam.PolicyStatement(
                actions=["states:SendTaskSuccess", "states:SendTaskFailure"],
                resources=[state_machine.state_machine_arn],
            )
        )

    def connect_ledger(self, table: dynamodb.ITable, *, retention_days: int) -> None:
        """LEDGER_TABLE and exactly the item actions each function uses on the table (LEDGER_ACTIONS), and
        kms:Decrypt through DynamoDB only: the table is encrypted with the stack's key, and DynamoDB decrypts
        its table key with the caller's permission (kms:ViaService)."""
        for name, actions in LEDGER_ACTIONS.items():
            fn = self.functions[name]
            fn.add_environment("LEDGER_TABLE", table.table_name)
            fn.add_environment("LEDGER_RETENTION_DAYS", str(retention_days))
            role = self.roles[name]
            on_table = [a for a in actions if a != "dynamodb:Query"]
            if on_table:
                role.add_to_policy(iam.PolicyStatement(actions=on_table, resources=[table.table_arn]))
            if "dynamodb:Query" in actions:  # exactly LEDGER_QUERIES: the table (by pk) and named indexes
                targets = [
                    table.table_arn if where == "table" else f"{table.table_arn}/index/{where}"
                    for where in LEDGER_QUERIES[name]
                ]
                role.add_to_policy(iam.PolicyStatement(actions=["dynamodb:Query"], resources=targets))
            self._table_key(name)

    def _table_key(self, name: str) -> None:
        """kms:Decrypt of the stack's key through DynamoDB only, once per role: the ledger's table is encrypted
        with it, and DynamoDB decrypts its table key with the caller's permission (kms:ViaService)."""
        if name in self._table_key_granted:
            return
        self._table_key_granted.add(name)
        self.roles[name].add_to_policy(
            iam.PolicyStatement(
                actions=["kms:Decrypt"],
                resources=[self._storage.key.key_arn],
                conditions={"StringEquals": {"kms:ViaService": f"dynamodb.{Stack.of(self).region}.amazonaws.com"}},
            )
        )

    def _keyed_items(self, name: str, table: dynamodb.ITable, actions: tuple[str, ...], prefix: str) -> None:
        """`actions` on the ledger's table for the items whose pk starts with `prefix` only, and LEDGER_TABLE."""
        self.functions[name].add_environment("LEDGER_TABLE", table.table_name)
        self.roles[name].add_to_policy(
            iam.PolicyStatement(
                actions=list(actions),
                resources=[table.table_arn],
                conditions={"ForAllValues:StringLike": {"dynamodb:LeadingKeys": [f"{prefix}*"]}},
            )
        )
        self._table_key(name)

    def _wakes(self, names: tuple[str, ...], state_machine_name: str) -> None:
        """states:SendTaskSuccess on the workflow, its ARN built from the machine's fixed name, not a reference to
        it: the machine refers to these functions, so a reference back from their roles would be a circular
        dependency in CloudFormation."""
        machine = Stack.of(self).format_arn(
            service="states",
            resource="stateMachine",
            resource_name=state_machine_name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        for name in sorted(set(names) - self._wakers):
            self._wakers.add(name)
            self.roles[name].add_to_policy(iam.PolicyStatement(actions=["states:SendTaskSuccess"], resources=[machine]))

    def connect_limits(self, table: dynamodb.ITable, state_machine_name: str, limits: str) -> None:
        """VENDOR_LIMITS and, where a vendor has a limit, exactly the limit items' actions (LIMIT_ITEM_ACTIONS)
        and the wake-up of a waiting branch. Without `vendorLimits` nothing is granted."""
        if not limits:
            return
        for name, actions in LIMIT_ITEM_ACTIONS.items():
            self.functions[name].add_environment("VENDOR_LIMITS", limits)
            self._keyed_items(name, table, actions, "LIMIT#")
        self._wakes(LIMIT_WAKERS, state_machine_name)

    def connect_callbacks(self, table: dynamodb.ITable, state_machine_name: str, base_url: str) -> None:
        """Vendor callbacks (core/callbacks.py): submit registers a job's callback item and hands the vendor
        CALLBACK_BASE_URL + token; park keeps the waiting branch's task token on it; the callback function (the
        unsigned GET /callbacks/{token}) notes the call and wakes the branch. Each only on `CALLBACK#*` keys."""
        self.functions["submit"].add_environment("CALLBACK_BASE_URL", base_url)
        for name, actions in CALLBACK_ITEM_ACTIONS.items():
            self._keyed_items(name, table, actions, "CALLBACK#")
        self._wakes(CALLBACK_WAKERS, state_machine_name)

    def connect_event_bus(self, bus: events.IEventBus) -> None:
        """finalize (the completion event) and sweep (deadline warnings) put events on the CRM's bus
        (EVENT_BUS_NAME)."""
        for name in EVENT_SENDERS:
            bus.grant_put_events_to(self.functions[name])

    def _s3(self, name: str, access: S3Access) -> None:
        """The object actions of `access` on exactly its key patterns, ListBucket as it says, and the KMS
        actions they need on the bucket's key."""
        role = self.roles[name]
        bucket = self._storage.bucket
        for action, patterns in (
            ("s3:GetObject", access.get),
            ("s3:PutObject", access.put),
            ("s3:AbortMultipartUpload", access.abort),
        ):
            if patterns:
                role.add_to_policy(
                    iam.PolicyStatement(actions=[action], resources=[bucket.arn_for_objects(p) for p in patterns])
                )
        if access.list_prefixes:
            # Lists these prefixes only; no GetObject relies on a 404 here.
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=["s3:ListBucket"],
                    resources=[bucket.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": list(access.list_prefixes)}},
                )
            )
        else:
            # Unconditioned: without it S3 answers a missing object 403 instead of 404 NoSuchKey, and the code
            # relies on "missing" (no manifest yet, no export outcome or submission record yet, unknown id).
            # That check comes with a GetObject, which carries no s3:prefix: a prefix-conditioned grant would not
            # count there, so these functions keep it on the bucket as before.
            role.add_to_policy(iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn]))
        # SSE-KMS with the bucket key: GenerateDataKey to write, Decrypt to read and to complete a multipart
        # upload (collect, which also reads). Explicit actions rather than grantEncrypt/grantDecrypt, which add
        # ReEncrypt*/GenerateDataKey*. A function that only puts whole objects (finalize) needs no Decrypt.
        kms_actions: list[str] = []
        if access.get or access.abort:
            kms_actions.append("kms:Decrypt")
        if access.put:
            kms_actions.append("kms:GenerateDataKey")
        if kms_actions:
            role.add_to_policy(iam.PolicyStatement(actions=kms_actions, resources=[self._storage.key.key_arn]))
