"""The embedded local cloud: moto executing the real ASL file, Lambda invocations dispatched in-process.

    with LocalCloud(vendor_credentials, time_scale=86400) as cloud:
        accepted = cloud.submit({"actions": ["export"], "subject": {...}})
        summary = cloud.wait(accepted["request_id"])

It creates what the CDK stack deploys, under the names the ASL substitutions use: a KMS key, the encrypted
bucket, one secret per vendor, the request ledger table, every function of functions/handlers/catalog.py and the state machine. Requests enter through the intake
function with an API Gateway proxy event, exactly as in AWS.

The in-process dispatch replaces one moto method, `LambdaBackend.invoke` (moto 5.2.5; moto itself would need
Docker to run code). It imports the function's Handler from `functions/`, calls it with the payload and
answers as Lambda does, including `FunctionError` with `errorType` = the exception's class name, which is
what the ASL Retry/Catch match on.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import io
import json
import os
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from unittest import mock

from statemachines import ASL_FILE, BULK_ASL_FILE, BULK_SUBSTITUTIONS, SUBSTITUTIONS

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "functions"
if str(FUNCTIONS) not in sys.path:
    sys.path.insert(0, str(FUNCTIONS))

from handlers.catalog import HANDLERS  # noqa: E402  # functions/ is on the path from here on

MOTO_VERSION = "5.2.5"  # the dispatch below patches this version's LambdaBackend.invoke
REGION = "eu-west-1"
PREFIX = "dsrflow-local"
FUNCTIONS_BY_ROLE = {name: h.handler for name, h in HANDLERS.items()}  # functions/handlers/catalog.py


class _Context:
    """The bits of LambdaContext that Powertools reads."""

    def __init__(self, name: str, arn: str):
        self.function_name = name
        self.function_version = "$LATEST"
        self.invoked_function_arn = arn
        self.memory_limit_in_mb = 512
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


# Lambda service errors to answer after a function ran (LocalCloud.inject_lambda_error): role -> [code, ...].
_LAMBDA_FAULTS: dict[str, list[str]] = {}


def _lambda_api_error(code: str) -> Exception:
    """A Lambda API error for the patched invoke: moto answers it as such, and the ASL interpreter names it
    `Lambda.<code>`, exactly like AWS when the Lambda service fails around an invocation."""
    from moto.core.exceptions import JsonRESTError

    error = JsonRESTError(code, "injected by the local engine after the function ran")
    error.code = 500
    return error


# Handlers whose module keeps the current event on a module-level object: Powertools' API resolver (intake's
# `app`) holds `current_event` and `context` on the app, as one Lambda execution environment may, since it
# takes one event at a time. In one process, concurrent calls would read each other's event (a new id answered
# "duplicate", a request never started), so each of these runs one invocation at a time, as one environment.
ONE_EVENT_AT_A_TIME = frozenset({"handlers.intake"})
_MODULE_LOCKS = {name: threading.Lock() for name in ONE_EVENT_AT_A_TIME}


def _forget_metrics() -> None:
    """Locally metrics are disabled (POWERTOOLS_METRICS_DISABLED), and then Powertools never clears the values
    it collects (`flush_metrics` skips both the print and the clear): after 100 values of one metric it prints
    the whole set as EMF to stdout anyway. Dropped after each invocation, as a deployed flush would."""
    from handlers.observability import metrics

    metrics.clear_metrics()


def _dispatch(backend: Any, function_name: str, qualifier: str | None, body: Any, headers: Any, response_headers: Any):
    fn = backend.get_function(function_name, qualifier)
    module_name, attr = fn.handler.rsplit(".", 1)
    handler: Callable = getattr(importlib.import_module(module_name), attr)
    event = json.loads(body) if body else {}
    lock = _MODULE_LOCKS.get(module_name) or contextlib.nullcontext()
    try:
        with lock:
            try:
                result = handler(event, _Context(fn.function_name, fn.function_arn))
            finally:
                _forget_metrics()
    except Exception as exc:  # as Lambda reports an unhandled error
        response_headers["x-amz-function-error"] = "Unhandled"
        return json.dumps({"errorMessage": str(exc), "errorType": type(exc).__name__}).encode()
    role = fn.function_name.removeprefix(f"{PREFIX}-")
    queued = _LAMBDA_FAULTS.get(role)
    if queued:
        # The function ran (the vendor may have acted); the caller only sees the service failing.
        raise _lambda_api_error(queued.pop(0))
    return json.dumps(result).encode()


# --- executions: how many run at once -------------------------------------------------------------------
# moto runs each execution in threads of its own, counted on this state machine (tests/unit/test_execution_gate.py
# keeps the count): the execution; its program; the vendor Map's timeout watch; and per vendor branch running
# (up to the Map's MaxConcurrency) the branch's iteration worker and its program, the action Map's timeout
# watch, the action's iteration worker and its program, and the watch of the Task state it is in. Wait states
# and Retry intervals sleep in those threads. A Task's vendor call adds the HTTP client's deadline timer
# (functions/core/http.py) and, on a simulator, the server's thread for the connection. With nothing to hold
# them, N requests at once were N x 27 threads and moto's state for all of them (issue 11: over 4,000 threads
# and 4-7 GB at N=200), and every execution's steps waited for the CPU behind everyone else's.
MAX_RUNNING_EXECUTIONS = 24
MAP_CONCURRENCY = 10  # the vendor Map's MaxConcurrency (statemachines/dsr.asl.json)
POOLED_CONNECTIONS = 10  # requests' default pool_maxsize: idle keep-alive connections kept per vendor host


def threads_per_execution(vendors: int) -> int:
    """The most threads one running execution of the DSR state machine uses with `vendors` vendors: 3 for
    the execution, its program and the vendor Map's watch; 8 per vendor branch running at once (two
    iteration workers and their programs, the action Map's and the Task's watches, the HTTP deadline timer,
    the simulator's connection thread)."""
    return 3 + 8 * min(vendors, MAP_CONCURRENCY)


class ExecutionGate:
    """At most `limit` executions run at once; StartExecution beyond that queues them, oldest first.

    A queued execution has been accepted (StartExecution answered, its status RUNNING) and has not begun: its
    history is still empty, as when Step Functions has not yet run its first state. It starts when a running
    one ends. Nothing of the ASL changes: the same states run in the same order, only later. Vendor jobs are
    submitted from inside the execution, so a queued request has no vendor clock running yet.
    """

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError("the execution limit must be at least 1")
        self.limit = limit
        self._lock = threading.Lock()
        self._running = 0
        self._queue: collections.deque[Any] = collections.deque()
        self.peak_running = 0
        self.peak_queued = 0

    def start(self, worker: Any) -> None:
        """Replaces moto's ExecutionWorker.start: run the worker now, or queue it."""
        with self._lock:
            if self._running >= self.limit:
                self._queue.append(worker)
                self.peak_queued = max(self.peak_queued, len(self._queue))
                return
            self._running += 1
            self.peak_running = max(self.peak_running, self._running)
        self._launch(worker)

    def stop(self, worker: Any, stop_date: Any, error: str | None, cause: str | None) -> bool:
        """StopExecution on a queued execution: it leaves the queue ABORTED without running. False when the
        worker is not queued (it runs: moto stops it)."""
        with self._lock:
            try:
                self._queue.remove(worker)
            except ValueError:
                return False
        worker.env = worker._get_evaluation_environment()
        worker.env.set_stop(stop_date=stop_date, cause=cause, error=error)
        worker._execution_communication.terminated()
        return True

    def drop_queued(self) -> int:
        """Forget the executions still queued (the LocalCloud is closing); how many there were."""
        with self._lock:
            dropped = len(self._queue)
            self._queue.clear()
            return dropped

    @property
    def queued(self) -> int:
        with self._lock:
            return len(self._queue)

    def _launch(self, worker: Any) -> None:
        def run() -> None:
            try:
                worker._execution_logic()
            finally:
                self._finished()

        threading.Thread(target=run, name="sfn-execution", daemon=True).start()

    def _finished(self) -> None:
        from moto.stepfunctions.parser.utils import TMP_THREADS

        # moto keeps every thread it started in this list, for good: let the finished ones go.
        TMP_THREADS[:] = [t for t in TMP_THREADS if t.is_alive()]
        with self._lock:
            if not self._queue:
                self._running -= 1
                return
            following = self._queue.popleft()
        self._launch(following)


_GATE: ExecutionGate | None = None  # the running LocalCloud's (one at a time, like the rest of moto's state)


def _gated_start(worker: Any) -> None:
    assert _GATE is not None, "an execution started outside a LocalCloud"
    _GATE.start(worker)


def _gated_stop(worker: Any, stop_date: Any, error: str | None, cause: str | None) -> None:
    if _GATE is not None and _GATE.stop(worker, stop_date, error, cause):
        return
    worker.env.set_stop(stop_date=stop_date, cause=cause, error=error)


def substitute(asl: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        asl = asl.replace("${" + name + "}", value)
    if "${" in asl:
        raise ValueError("the ASL file has a ${...} substitution the local engine does not know")
    return asl


def scale_retries(definition: str, time_scale: float) -> str:
    """The ASL with its Retry intervals shrunk like its Waits: moto sleeps them in real time.

    At a time scale above 1 every retrier waits ceil(interval / scale) seconds (at least 1, moto's minimum)
    with no backoff growth; the error names, attempt counts and order stay exactly as deployed.
    """
    if time_scale <= 1:
        return definition
    import math

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for retrier in node.get("Retry", []) if isinstance(node.get("Retry"), list) else []:
                retrier["IntervalSeconds"] = max(1, math.ceil(retrier.get("IntervalSeconds", 1) / time_scale))
                retrier["BackoffRate"] = 1
                retrier.pop("MaxDelaySeconds", None)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    asl = json.loads(definition)
    walk(asl)
    return json.dumps(asl)


def create_ledger_table(ddb: Any, name: str, kms_key_arn: str | None = None) -> None:
    """The request ledger as infra/ledger.py deploys it: pk/sk, the two indexes, TTL on expires_at, PITR, KMS."""
    strings = ("pk", "sk", "open_pk", "deadline", "status", "received_at")

    def index(index_name: str, hash_key: str, range_key: str) -> dict[str, Any]:
        return {
            "IndexName": index_name,
            "KeySchema": [
                {"AttributeName": hash_key, "KeyType": "HASH"},
                {"AttributeName": range_key, "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        }

    sse = {"Enabled": True, "SSEType": "KMS", "KMSMasterKeyId": kms_key_arn} if kms_key_arn else {"Enabled": True}
    ddb.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in strings],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
        GlobalSecondaryIndexes=[
            index("open-by-deadline", "open_pk", "deadline"),
            index("by-status", "status", "received_at"),
        ],
        SSESpecification=sse,
        DeletionProtectionEnabled=False,  # a throwaway local table
    )
    ddb.update_time_to_live(TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"})
    ddb.update_continuous_backups(TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})


def api_gateway_event(
    method: str,
    path: str,
    body: str | None = None,
    *,
    base64_encoded: bool = False,
    query: Mapping[str, str | list[str]] | None = None,
    principal: str = "arn:aws:iam::123456789012:user/local",
) -> dict[str, Any]:
    """The API Gateway REST proxy event the deployed API hands the intake function (IAM-authenticated caller
    `principal`): `resource` and `pathParameters` as API Gateway sets them for /requests/{request_id}[/<action>]
    (docs/openapi.json), `query` as {name: value or [values]}."""
    resource, params = path, None
    parts = path.split("/")
    if len(parts) >= 3 and parts[1] == "requests" and parts[2] and parts[2:] != ["bulk"]:
        resource = "/".join(["", "requests", "{request_id}", *parts[3:]])
        params = {"request_id": parts[2]}
    multi = {k: [v] if isinstance(v, str) else list(v) for k, v in (query or {}).items()}
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": {"Content-Type": "application/json"},
        "multiValueHeaders": {},
        "queryStringParameters": {k: v[-1] for k, v in multi.items() if v} or None,
        "multiValueQueryStringParameters": multi or None,
        "pathParameters": params,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/local{path}",
            "stage": "local",
            "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": "127.0.0.1", "userArn": principal},
            "accountId": "123456789012",
            "apiId": "local",
        },
        "body": body,
        "isBase64Encoded": base64_encoded,
    }


def scheduled_event(at: str | None = None) -> dict[str, Any]:
    """The event an EventBridge schedule rule (infra/watch.py) hands its target."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": at or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:123456789012:rule/{PREFIX}-deadline-watch"],
        "detail": {},
    }


class LocalCloud:
    def __init__(
        self,
        vendors: dict[str, Any],
        time_scale: float = 1.0,
        event_bus: str = "default",
        approval_mode: str = "auto",
        require_approval: str = "none",
        vendor_limits: dict[str, Any] | None = None,
        callbacks: bool = False,
        max_running_executions: int = MAX_RUNNING_EXECUTIONS,
    ):
        """`vendors`: {name: credentials JSON}, exactly what each vendor's secret holds in AWS.
        `max_running_executions`: executions started beyond it wait for one to end (ExecutionGate)."""
        self.vendors = vendors
        self.approval_mode = approval_mode
        self.require_approval = require_approval  # dsrflow's approval gate: none, erase, all
        self.vendor_limits = vendor_limits or {}  # {"qualifio": {"jobs": 2, "callsPerSecond": 5}}: core/limits.py
        # Serve GET /callbacks/{token} on loopback (as the deployed API's unsigned route does) and hand vendors its
        # URL (CALLBACK_BASE_URL): a simulator then calls back when its job is done (core/callbacks.py).
        self.callbacks = callbacks
        self._callback_server: Any = None
        self.time_scale = time_scale
        self.event_bus = event_bus
        self._mock: Any = None
        self._patches: list[Any] = []
        self.functions: dict[str, str] = {}
        self.secrets: dict[str, str] = {}
        self._events: list[dict[str, Any]] = []  # every dsrflow event delivered so far (events())
        self.gate = ExecutionGate(max_running_executions)

    # --- lifecycle -----------------------------------------------------------------------------------
    def __enter__(self) -> LocalCloud:
        import moto
        from moto import mock_aws
        from moto.awslambda.models import LambdaBackend
        from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

        if moto.__version__ != MOTO_VERSION:
            raise RuntimeError(f"local engine is pinned to moto {MOTO_VERSION}, found {moto.__version__}")
        env = {
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_SESSION_TOKEN": "local",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_METRICS_NAMESPACE": "dsrflow-local",
            "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
        }
        self._patches.append(mock.patch.dict(os.environ, env))
        self._patches.append(mock.patch.object(LambdaBackend, "invoke", _dispatch))
        self._patches.append(mock.patch.object(ExecutionWorker, "start", _gated_start))
        self._patches.append(mock.patch.object(ExecutionWorker, "stop", _gated_stop))
        global _GATE
        _GATE = self.gate
        for p in self._patches:
            p.start()
        # Default Lambda backend (not "use_docker: False", whose LambdaSimpleBackend overrides invoke again).
        self._mock = mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
        self._mock.start()
        try:
            self._provision()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        global _GATE
        _LAMBDA_FAULTS.clear()
        if self._callback_server is not None:
            self._callback_server.shutdown()
            self._callback_server.server_close()
            self._callback_server = None
        self.gate.drop_queued()
        if _GATE is self.gate:
            _GATE = None
        if self._mock is not None:
            self._mock.stop()
            self._mock = None
        for p in reversed(self._patches):
            p.stop()
        self._patches.clear()
        self._reset_handler_caches()

    @staticmethod
    def _reset_handler_caches() -> None:
        from core import secrets
        from handlers import runtime

        runtime.reset()
        secrets.clear_cache()

    # --- provisioning (mirrors infra/) -----------------------------------------------------------------
    def client(self, service: str) -> Any:
        import boto3

        # Any: the engine, the CLI and the tests ask for services by name and use moto's answers loosely.
        return boto3.client(service, region_name=REGION)  # type: ignore[call-overload]  # stubs take literal names only

    def _provision(self) -> None:
        kms, s3, sm = self.client("kms"), self.client("s3"), self.client("secretsmanager")
        self.kms_key_arn = kms.create_key(Description="dsrflow archives")["KeyMetadata"]["Arn"]
        kms.enable_key_rotation(KeyId=self.kms_key_arn)
        self.bucket = f"{PREFIX}-archives"
        s3.create_bucket(Bucket=self.bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_bucket_versioning(Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"})
        s3.put_bucket_encryption(
            Bucket=self.bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {
                        "ApplyServerSideEncryptionByDefault": {
                            "SSEAlgorithm": "aws:kms",
                            "KMSMasterKeyID": self.kms_key_arn,
                        },
                        "BucketKeyEnabled": True,
                    }
                ]
            },
        )
        s3.put_public_access_block(
            Bucket=self.bucket,
            PublicAccessBlockConfiguration={
                k: True for k in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
            },
        )
        for vendor, creds in self.vendors.items():
            name = f"{PREFIX}/vendors/{vendor}"
            value = creds if isinstance(creds, str) else json.dumps(creds)
            sm.create_secret(Name=name, SecretString=value, KmsKeyId=self.kms_key_arn)
            self.secrets[vendor] = name

        self.ledger_table = f"{PREFIX}-ledger"
        create_ledger_table(self.client("dynamodb"), self.ledger_table, self.kms_key_arn)
        self._capture_events()

        role = self.client("iam").create_role(
            RoleName=f"{PREFIX}-role",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]
        lam = self.client("lambda")
        zipped = io.BytesIO()
        with zipfile.ZipFile(zipped, "w") as zf:  # moto wants a package; the code runs from functions/
            zf.writestr("README", "dispatched in-process by local/engine.py")
        # Bulk intake's HMAC key (core/bulk.derive_id), as infra/bulk.py deploys it.
        self.bulk_mac_key_id = kms.create_key(
            Description="dsrflow bulk ids", KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC"
        )["KeyMetadata"]["Arn"]
        base_env = {
            "BULK_MAC_KEY_ID": self.bulk_mac_key_id,
            "ARCHIVE_BUCKET": self.bucket,
            "ARCHIVE_KMS_KEY_ID": self.kms_key_arn,
            "VENDOR_SECRETS": json.dumps(self.secrets),
            "EVENT_BUS_NAME": self.event_bus,
            "DSRFLOW_TIME_SCALE": repr(self.time_scale),
            "APPROVAL_MODE": self.approval_mode,
            "REQUIRE_APPROVAL": self.require_approval,
            "POWERTOOLS_SERVICE_NAME": "dsrflow",
            "LEDGER_TABLE": self.ledger_table,
        }
        if self.vendor_limits:
            base_env["VENDOR_LIMITS"] = json.dumps(self.vendor_limits)
        if self.callbacks:
            base_env["CALLBACK_BASE_URL"] = self._serve_callbacks()
        for role_name, handler in FUNCTIONS_BY_ROLE.items():
            arn = lam.create_function(
                FunctionName=f"{PREFIX}-{role_name}",
                Runtime="python3.13",
                Role=role,
                Handler=handler,
                Code={"ZipFile": zipped.getvalue()},
                Environment={"Variables": base_env},
                Timeout=900,
            )["FunctionArn"]
            self.functions[role_name] = arn
        sfn = self.client("stepfunctions")
        definition = substitute(ASL_FILE.read_text(), {k: self.functions[role] for k, role in SUBSTITUTIONS.items()})
        definition = scale_retries(definition, self.time_scale)
        self.state_machine_arn = sfn.create_state_machine(
            name=f"{PREFIX}-dsr", definition=definition, roleArn=role, type="STANDARD"
        )["stateMachineArn"]
        bulk = substitute(BULK_ASL_FILE.read_text(), {k: self.functions[r] for k, r in BULK_SUBSTITUTIONS.items()})
        self.bulk_state_machine_arn = sfn.create_state_machine(
            name=f"{PREFIX}-bulk", definition=scale_retries(bulk, self.time_scale), roleArn=role, type="STANDARD"
        )["stateMachineArn"]
        # In-process handlers read their settings from the process environment; one set serves all five.
        os.environ.update(
            {
                **base_env,
                "STATE_MACHINE_ARN": self.state_machine_arn,
                "BULK_STATE_MACHINE_ARN": self.bulk_state_machine_arn,
            }
        )
        self._reset_handler_caches()

    def _capture_events(self) -> None:
        """A rule on the bus for every dsrflow event (source "dsrflow") into a queue, as a CRM would subscribe:
        events() drains it. moto delivers PutEvents to an SQS target synchronously, inside the PutEvents call."""
        events, sqs = self.client("events"), self.client("sqs")
        if self.event_bus != "default":
            try:
                events.create_event_bus(Name=self.event_bus)
            except events.exceptions.ResourceAlreadyExistsException:
                pass
        name = f"{PREFIX}-events"
        self._events_queue = sqs.create_queue(QueueName=name)["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=self._events_queue, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        events.put_rule(Name=name, EventBusName=self.event_bus, EventPattern=json.dumps({"source": ["dsrflow"]}))
        events.put_targets(Rule=name, EventBusName=self.event_bus, Targets=[{"Id": "capture", "Arn": queue_arn}])

    def events(self) -> list[dict[str, Any]]:
        """Every dsrflow event delivered to the bus so far, oldest first, as EventBridge delivers it (with
        "detail-type", and "detail" as a dict). Accumulates: each call returns the earlier ones too."""
        sqs = self.client("sqs")
        while True:
            got = sqs.receive_message(QueueUrl=self._events_queue, MaxNumberOfMessages=10).get("Messages", [])
            if not got:
                return list(self._events)
            for message in got:
                event = json.loads(message["Body"])
                if isinstance(event.get("detail"), str):
                    event["detail"] = json.loads(event["detail"])
                self._events.append(event)
            sqs.delete_message_batch(
                QueueUrl=self._events_queue,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)],
            )

    def sweep(self) -> dict[str, Any]:
        """Run the deadline watch now (the sweep function, with the event its hourly schedule sends)."""
        return self.invoke("sweep", scheduled_event())

    def ledger(self) -> Any:
        """The request ledger the functions write (core/ledger.Ledger over the local table)."""
        from core.ledger import Ledger

        return Ledger(self.client("dynamodb"), self.ledger_table)

    @property
    def max_running_executions(self) -> int:
        return self.gate.limit

    def thread_bound(self) -> int:
        """The most threads the engine's executions use at once (the gate's limit x threads_per_execution),
        plus, per vendor simulator, its server thread and one per idle pooled connection."""
        vendors = len(self.vendors)
        return self.gate.limit * threads_per_execution(vendors) + vendors * (1 + POOLED_CONNECTIONS)

    # --- using it ------------------------------------------------------------------------------------
    def inject_lambda_error(self, role: str, code: str = "ServiceException", times: int = 1) -> None:
        """The next `times` invocations of `role` run, then answer the Lambda API error `code` (the ASL sees
        `Lambda.<code>`), as when the Lambda service fails after the function did its work."""
        _LAMBDA_FAULTS.setdefault(role, []).extend([code] * times)

    def _serve_callbacks(self) -> str:
        """A loopback HTTP server for GET /callbacks/{token} that invokes the callback function with the event
        API Gateway sends (resource "/callbacks/{token}"); returns the base URL vendors are given."""
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        cloud = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet, and the path holds a token
                pass

            def do_GET(self) -> None:  # http.server's name
                head, _, token = self.path.split("?", 1)[0].rpartition("/")
                if head != "/callbacks":
                    self.send_error(404)
                    return
                event = {
                    "httpMethod": "GET",
                    "resource": "/callbacks/{token}",
                    "path": self.path,
                    "pathParameters": {"token": token},
                }
                out = cloud.invoke("callback", event)
                body = (out.get("body") or "").encode()
                self.send_response(int(out.get("statusCode", 500)))
                for name, value in (out.get("headers") or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="dsrflow-callbacks", daemon=True).start()
        self._callback_server = server
        return f"http://127.0.0.1:{server.server_address[1]}/callbacks/"

    def invoke(self, role: str, event: dict[str, Any]) -> Any:
        """Invoke one of the functions through moto's Lambda API, as AWS would."""
        out = self.client("lambda").invoke(FunctionName=self.functions[role], Payload=json.dumps(event).encode())
        payload = json.loads(out["Payload"].read())
        if out.get("FunctionError"):
            raise RuntimeError(f"{payload.get('errorType')}: {payload.get('errorMessage')}")
        return payload

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, str | list[str]] | None = None,
        principal: str = "arn:aws:iam::123456789012:user/local",
    ) -> tuple[int, Any]:
        """Call the intake function with an API Gateway REST proxy event, as the deployed API does."""
        text = body if isinstance(body, str) or body is None else json.dumps(body)
        event = api_gateway_event(method, path, text, query=query, principal=principal)
        out = self.invoke("intake", event)
        return out["statusCode"], json.loads(out["body"]) if out.get("body") else None

    def submit(self, request: dict[str, Any]) -> dict[str, Any]:
        status, body = self.api("POST", "/requests", request)
        if status not in (200, 202):
            raise ValueError(json.dumps(body))
        return body

    def drop_bulk_file(self, name: str, body: bytes) -> dict[str, Any]:
        """Put a JSON Lines file under bulk/incoming/ and hand the bulk function the EventBridge "Object Created"
        event S3 sends for it in AWS (infra/bulk.py's rule; moto does not deliver S3 events to EventBridge)."""
        key = f"bulk/incoming/{name}"
        put = self.client("s3").put_object(Bucket=self.bucket, Key=key, Body=body)
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Object Created",
            "source": "aws.s3",
            "account": "123456789012",
            "region": REGION,
            "resources": [f"arn:aws:s3:::{self.bucket}"],
            "detail": {
                "bucket": {"name": self.bucket},
                "object": {"key": key, "size": len(body), "etag": put["ETag"], "version-id": put.get("VersionId")},
            },
        }
        out: dict[str, Any] = self.invoke("bulk", event)
        return out

    def bulk_execution_arn(self, batch_id: str) -> str:
        head, name = self.bulk_state_machine_arn.split(":stateMachine:")
        return f"{head}:execution:{name}:{batch_id}"

    def execution_arn(self, request_id: str) -> str:
        head, name = self.state_machine_arn.split(":stateMachine:")
        return f"{head}:execution:{name}:{request_id}"

    def history(self, request_id: str) -> list[dict[str, Any]]:
        sfn = self.client("stepfunctions")
        events, token = [], None
        while True:
            kwargs = {"executionArn": self.execution_arn(request_id), "maxResults": 1000}
            if token:
                kwargs["nextToken"] = token
            page = sfn.get_execution_history(**kwargs)
            events += page["events"]
            token = page.get("nextToken")
            if not token:
                return events

    def wait(
        self,
        request_id: str,
        timeout: float = 300.0,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        poll: float = 0.2,
        between: Callable[[], float] | None = None,
    ) -> dict[str, Any]:
        """Block until the execution ends; returns describe_execution. `on_event` sees each new history event;
        `between` runs between two polls and returns seconds not to count against `timeout` (a person's time at
        a prompt)."""
        sfn = self.client("stepfunctions")
        arn = self.execution_arn(request_id)
        seen = 0
        deadline = time.monotonic() + timeout
        while True:
            execution = sfn.describe_execution(executionArn=arn)
            if on_event is not None:
                events = self.history(request_id)
                for event in events[seen:]:
                    on_event(event)
                seen = len(events)
            if execution["status"] != "RUNNING":
                return execution
            if between is not None:
                deadline += between()
            if time.monotonic() > deadline:
                raise TimeoutError(f"execution {request_id} still running after {timeout:.0f}s")
            time.sleep(poll)

    def objects(self, request_id: str) -> list[str]:
        s3 = self.client("s3")
        keys = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"requests/{request_id}/"):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return sorted(keys)

    def read(self, key: str) -> bytes:
        return self.client("s3").get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def download(self, request_id: str, out_dir: Path, include_request: bool = False) -> list[Path]:
        """Copy the request's archives and manifest out of the local bucket. request.json holds the subject
        (PII) and is left in the bucket unless asked for."""
        written = []
        for key in self.objects(request_id):
            if key.endswith("/request.json") and not include_request:
                continue
            target = out_dir / key
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.read(key))
            written.append(target)
        return written
