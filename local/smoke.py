"""`python -m local smoke`: one dry-run request against a deployed stage, checked end to end.

    python -m local smoke --stack dsrflow-dev --email jane@example.com --vendors qualifio
    python -m local smoke --api https://<id>.execute-api.eu-west-1.amazonaws.com/dev/ --bucket B \
        --state-machine-arn ARN --bus crm-events --customer-id registered=crm-1001

It uses the operator's usual AWS credentials (boto3's default chain: AWS_PROFILE, SSO, environment) and
never runs in CI. The checks take a `Target` (an API caller, boto3 clients, bucket and bus names), so the
same code runs against the local engine in `make test` (tests/workflow/test_smoke.py) and cannot rot.

A dry run writes nothing at any vendor: erasures are only planned, exports run (they are read-only). An
export takes as long as the vendor does: Elevate's first look comes after its 5-day archive window, so a run
that includes Elevate waits for that export job (pick fast vendors with --vendors, or raise --timeout).
Exit code 0 only when every check passes; 1 when one fails; 2 for bad flags; 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote, quote_plus

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

CHECKS = (
    "request accepted",
    "request completed",
    "manifest and proof copy",
    "erase only planned",
    "CRM event on the bus",
    "no subject value kept",
)
COMPLETED_DETAIL_TYPE = "Data Subject Request Completed"  # core/tasks.finalize
_REGION_IN_URL = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com")


@dataclass
class Check:
    name: str
    ok: bool
    reason: str


# --- targets ------------------------------------------------------------------------------------------------


class Target(Protocol):
    bucket: str
    event_bus: str
    state_machine_arn: str
    poll_seconds: float

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]: ...

    def client(self, service: str) -> Any: ...


class LocalTarget:
    """The embedded cloud (local/engine.py): its API is the intake function called in-process."""

    poll_seconds = 0.2

    def __init__(self, cloud: Any):
        self.cloud = cloud
        self.bucket, self.event_bus, self.state_machine_arn = cloud.bucket, cloud.event_bus, cloud.state_machine_arn

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return self.cloud.api(method, path, body)

    def client(self, service: str) -> Any:
        return self.cloud.client(service)


def sign(method: str, url: str, body: bytes | None, credentials: Any, region: str) -> dict[str, str]:
    """The headers of a SigV4-signed API Gateway call (the API accepts IAM-signed callers only)."""
    request = AWSRequest(method=method, url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(credentials, "execute-api", region).add_auth(request)
    return dict(request.headers.items())


class StackTarget:
    """A deployed stage: SigV4 HTTP to its API URL, boto3 clients from the operator's session."""

    poll_seconds = 15.0

    def __init__(self, session: Any, api_url: str, bucket: str, state_machine_arn: str, event_bus: str):
        self.session, self.api_url = session, api_url.rstrip("/")
        self.bucket, self.state_machine_arn, self.event_bus = bucket, state_machine_arn, event_bus
        found = _REGION_IN_URL.search(api_url)
        self.region = found.group(1) if found else session.region_name

    @classmethod
    def from_stack(cls, session: Any, stack: str, event_bus: str | None = None) -> StackTarget:
        """The values from the stack's CloudFormation outputs (infra/stack.py)."""
        cfn = session.client("cloudformation")
        described = cfn.describe_stacks(StackName=stack)["Stacks"][0]
        outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
        missing = [k for k in ("ApiUrl", "ArchiveBucketName", "StateMachineArn") if k not in outputs]
        if missing:
            raise usage_error(f"stack {stack} has no output {', '.join(missing)}")
        bus = event_bus or outputs.get("EventBusName")
        if not bus:  # a stack deployed before the output existed
            raise usage_error(f"stack {stack} has no output EventBusName; pass --bus")
        return cls(session, outputs["ApiUrl"], outputs["ArchiveBucketName"], outputs["StateMachineArn"], bus)

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        url = self.api_url + path
        data = json.dumps(body).encode() if body is not None else None
        # Frozen per call: SSO and role credentials refresh during a long wait.
        headers = sign(method, url, data, self.session.get_credentials().get_frozen_credentials(), self.region)
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:  # 4xx/5xx still carry the API's JSON answer
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, {"error": raw[:200].decode(errors="replace")}

    def client(self, service: str) -> Any:
        return self.session.client(service, region_name=self.region)


# --- the temporary CRM listener -------------------------------------------------------------------------------


class Listener:
    def __init__(self, sqs: Any, queue_url: str):
        self.sqs, self.queue_url = sqs, queue_url

    def wait(self, request_id: str, timeout: float) -> dict[str, Any] | None:
        """The completion event for the request, or None when none arrives within `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            wait = int(min(max(left, 0), 20))
            got = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait)
            for message in got.get("Messages", []):
                event = json.loads(message["Body"])
                if (event.get("detail") or {}).get("request_id") == request_id:
                    return event
            if left <= 0:
                return None


@contextlib.contextmanager
def crm_listener(target: Target, request_id: str, warn: Callable[[str], None] = print) -> Iterator[Listener]:
    """A temporary rule (source dsrflow, this request id) on the bus into a temporary queue, created before the
    request is sent and removed in `finally`, whatever happens (a failure, Ctrl-C)."""
    events, sqs, bus = target.client("events"), target.client("sqs"), target.event_bus
    name = f"dsrflow-smoke-{uuid.uuid4().hex[:12]}"
    undo: list[tuple[str, Callable[[], Any]]] = []
    try:
        pattern = {
            "source": ["dsrflow"],
            "detail-type": [COMPLETED_DETAIL_TYPE],
            "detail": {"request_id": [request_id]},
        }
        rule_arn = events.put_rule(
            Name=name, EventBusName=bus, EventPattern=json.dumps(pattern), Description="dsrflow smoke test (temporary)"
        )["RuleArn"]
        undo.append((f"rule {name} on bus {bus}", lambda: events.delete_rule(Name=name, EventBusName=bus)))
        queue_url = sqs.create_queue(
            QueueName=name, Attributes={"SqsManagedSseEnabled": "true", "MessageRetentionPeriod": "3600"}
        )["QueueUrl"]
        undo.append((f"queue {queue_url}", lambda: sqs.delete_queue(QueueUrl=queue_url)))
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "events.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},  # this rule only
                }
            ],
        }
        sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})
        events.put_targets(Rule=name, EventBusName=bus, Targets=[{"Id": "smoke", "Arn": queue_arn}])
        undo.append(("its target", lambda: events.remove_targets(Rule=name, EventBusName=bus, Ids=["smoke"])))
        yield Listener(sqs, queue_url)
    finally:
        for what, step in reversed(undo):  # target, queue, rule: a rule with targets cannot be deleted
            try:
                step()
            except Exception as exc:  # keep removing the rest; the operator gets the name to delete by hand
                warn(f"warning: could not remove the temporary {what}: {type(exc).__name__}; delete it by hand")


# --- the checks (pure: data in, a Check out) --------------------------------------------------------------------


def check_accepted(status: int, body: Any, request_id: str, execution_arn: str) -> Check:
    name = CHECKS[0]
    if status != 202 or not isinstance(body, dict):
        return Check(name, False, f"HTTP {status}: {_brief(body)}")
    if body.get("request_id") != request_id or body.get("execution_arn") != execution_arn:
        return Check(name, False, "the answer names another request or state machine")
    return Check(
        name, True, f"HTTP 202, {len(body.get('vendors') or [])} vendor(s), {len(body.get('skipped') or [])} skipped"
    )


def check_completed(
    final: dict[str, Any] | None, manifest: dict[str, Any] | None, timeout: float, last_status: int = 200
) -> Check:
    """The execution succeeded and every export ran (a dry run still exports: it is read-only)."""
    name = CHECKS[1]
    if final is None:
        return Check(name, False, f"GET /requests/{{id}} never answered 200 (last: HTTP {last_status})")
    if final.get("execution_status") == "RUNNING":
        return Check(name, False, f"still RUNNING after {timeout:.0f}s (the execution goes on; see --timeout)")
    if final.get("execution_status") != "SUCCEEDED":
        return Check(name, False, f"execution {final.get('execution_status')}")
    if manifest is None:
        return Check(name, False, "no manifest")
    bad = [o for o in manifest.get("outcomes", []) if o.get("action") == "export" and o.get("status") != "completed"]
    if bad:
        return Check(
            name,
            False,
            "; ".join(f"{o['vendor']} export {o['status']}: {o.get('reason') or o.get('error')}" for o in bad),
        )
    return Check(name, True, f"{manifest.get('status')} {manifest.get('counts')}")


def check_manifests(manifest: dict[str, Any] | None, proof: dict[str, Any] | None, request_id: str) -> Check:
    name = CHECKS[2]
    if manifest is None or proof is None:
        missing = [k for k, v in (("requests/", manifest), ("proof/", proof)) if v is None]
        return Check(name, False, f"missing under {' and '.join(missing)}")
    if manifest != proof:
        return Check(name, False, "requests/ and proof/ copies differ")
    if manifest.get("request_id") != request_id:
        return Check(name, False, "the manifest names another request")
    return Check(name, True, f"both copies agree, {len(manifest.get('outcomes', []))} outcome(s)")


def check_erase_planned(manifest: dict[str, Any] | None) -> Check:
    """Nothing destructive was sent: a dry run, and every erase outcome is `planned`."""
    name = CHECKS[3]
    if manifest is None:
        return Check(name, False, "no manifest")
    erases = [o for o in manifest.get("outcomes", []) if o.get("action") == "erase"]
    bad = [o for o in erases if o.get("status") != "planned"]
    problems = [] if manifest.get("dry_run") is True else ["not a dry run"]
    problems += [f"{o['vendor']} erase {o['status']}" for o in bad] or ([] if erases else ["no erase outcome"])
    if problems:
        return Check(name, False, "; ".join(problems))
    return Check(name, True, f"{len(erases)} erase(s) planned, none sent")


def check_event(event: dict[str, Any] | None, manifest: dict[str, Any] | None, bucket: str, waited: float) -> Check:
    name = CHECKS[4]
    if event is None:
        return Check(name, False, f"no event within {waited:.0f}s")
    detail = event.get("detail") or {}
    if manifest is not None and detail.get("status") != manifest.get("status"):
        return Check(name, False, f"event says {detail.get('status')}, manifest {manifest.get('status')}")
    location = detail.get("manifest") or {}
    if location.get("bucket") != bucket or location.get("key") != f"requests/{detail.get('request_id')}/manifest.json":
        return Check(name, False, "the event points to another manifest")
    return Check(name, True, f"{event.get('detail-type')} from {event.get('source')}, status {detail.get('status')}")


def subject_values(subject: dict[str, Any]) -> dict[str, str]:
    """{label: value} of the subject's identifying values. Under 3 characters they are not looked for: they
    turn up anywhere by chance (core/safe.subject_values draws the same line)."""
    values = {"email": subject.get("email"), "customer_key": subject.get("customer_key")}
    values |= {f"customer id {k}": v for k, v in (subject.get("customer_ids") or {}).items()}
    return {k: v for k, v in values.items() if isinstance(v, str) and len(v.strip()) >= 3}


def find_subject(text: str, subject: dict[str, Any]) -> list[str]:
    """Which subject values `text` holds, in any case, plain, URL-encoded or JSON-escaped: labels, never values."""
    folded = text.casefold()
    found = []
    for label, value in subject_values(subject).items():
        forms = {value.strip(), quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]}
        if any(f.casefold() in folded for f in forms if f):
            found.append(label)
    return found


def check_no_subject(subject: dict[str, Any], records: dict[str, Any]) -> Check:
    """`records`: {where: what was kept} (execution history, manifests, the CRM event)."""
    name = CHECKS[5]
    hits = [
        f"{label} in {where}" for where, record in records.items() for label in find_subject(_text(record), subject)
    ]
    if hits:
        return Check(name, False, "; ".join(hits))
    return Check(name, True, f"{len(subject_values(subject))} value(s) looked for in {', '.join(records)}")


def _text(record: Any) -> str:
    return record if isinstance(record, str) else json.dumps(record, default=str)


def _brief(body: Any) -> str:
    if isinstance(body, dict) and body.get("fields"):  # a 400 names fields, never values
        return "; ".join(f"{f.get('field')}: {f.get('message')}" for f in body["fields"])
    return _text(body)[:200]


# --- one smoke run ------------------------------------------------------------------------------------------------


def new_request_id() -> str:
    return f"smoke-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def execution_arn(state_machine_arn: str, request_id: str) -> str:
    head, name = state_machine_arn.split(":stateMachine:")
    return f"{head}:execution:{name}:{request_id}"


def _get_json(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def _history(sfn: Any, arn: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for page in sfn.get_paginator("get_execution_history").paginate(executionArn=arn):  # every page
        events += page["events"]
    return events


def run_smoke(
    target: Target,
    subject: dict[str, Any],
    *,
    vendors: list[str] | None = None,
    timeout: float = 3600.0,
    event_timeout: float = 120.0,
    request_id: str | None = None,
    say: Callable[[str], None] = print,
) -> list[Check]:
    """One dry-run export + erase request through the target's API, then every check in CHECKS."""
    request_id = request_id or new_request_id()
    arn = execution_arn(target.state_machine_arn, request_id)
    request: dict[str, Any] = {
        "request_id": request_id,
        "actions": ["export", "erase"],
        "subject": subject,
        "dry_run": True,
        "justification": "dsrflow smoke test (dry run)",
    }
    if vendors:
        request["vendors"] = vendors
    checks: list[Check] = []
    with crm_listener(target, request_id, warn=say) as listener:  # listening before the request can finish
        status, body = target.api("POST", "/requests", request)
        checks.append(check_accepted(status, body, request_id, arn))
        if not checks[-1].ok:
            return checks + [Check(n, False, "not run: the request was not accepted") for n in CHECKS[1:]]
        say(f"Request {request_id} accepted; waiting up to {timeout:.0f}s for it to finish")
        final, deadline = None, time.monotonic() + timeout
        while True:
            try:
                status, body = target.api("GET", f"/requests/{request_id}")
            except OSError:  # a network blip during a wait of hours or days: ask again
                status, body = 0, None
            if status == 200:
                final = body
                if body.get("execution_status") != "RUNNING":
                    break
            elif 400 <= status < 500 and status not in (404, 429):  # 403 and the like: waiting will not help
                break
            if time.monotonic() > deadline:
                break
            time.sleep(target.poll_seconds)
        s3 = target.client("s3")
        manifest = _get_json(s3, target.bucket, f"requests/{request_id}/manifest.json")
        proof = _get_json(s3, target.bucket, f"proof/{request_id}/manifest.json")
        finished = final is not None and final.get("execution_status") != "RUNNING"
        event = listener.wait(request_id, event_timeout) if finished else None
        checks += [
            check_completed(final, manifest, timeout, status),
            check_manifests(manifest, proof, request_id),
            check_erase_planned(manifest),
            check_event(event, manifest, target.bucket, event_timeout if finished else 0),
        ]
        records: dict[str, Any] = {"execution history": _history(target.client("stepfunctions"), arn)}
        records |= {k: v for k, v in (("manifest", manifest), ("proof copy", proof), ("CRM event", event)) if v}
        checks.append(check_no_subject(subject, records))
    return checks


def table(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{'check':<{width}}  result  reason"]
    lines += [f"{c.name:<{width}}  {'PASS' if c.ok else 'FAIL':<6}  {c.reason}" for c in checks]
    return "\n".join(lines)


# --- command line -------------------------------------------------------------------------------------------------


def usage_error(message: str) -> SystemExit:
    print(f"error: {message}", file=sys.stderr)
    return SystemExit(2)


def parse_subject(args: argparse.Namespace) -> dict[str, Any]:
    """SMOKE_SUBJECT / --subject JSON, with --email, --customer-key and --customer-id on top."""
    try:
        subject = json.loads(args.subject) if args.subject else {}
    except ValueError:
        raise usage_error("--subject / SMOKE_SUBJECT is not JSON") from None  # never echo the value
    if not isinstance(subject, dict):
        raise usage_error("--subject / SMOKE_SUBJECT must be a JSON object")
    if args.email:
        subject["email"] = args.email
    if args.customer_key:
        subject["customer_key"] = args.customer_key
    for item in args.customer_id:
        id_type, sep, value = item.partition("=")
        if not sep or not id_type or not value:
            raise usage_error("--customer-id wants TYPE=VALUE (e.g. registered=crm-1001)")
        subject.setdefault("customer_ids", {})[id_type] = value
    if not subject:
        raise usage_error("give a test subject: --email, --customer-key, --customer-id or SMOKE_SUBJECT")
    return subject


def add_arguments(p: argparse.ArgumentParser) -> None:
    where = p.add_argument_group("the deployed stage: --stack, or --api with --bucket, --state-machine-arn, --bus")
    where.add_argument("--stack", help="CloudFormation stack name (dsrflow-<stage>): values from its outputs")
    where.add_argument("--api", help="ApiUrl output")
    where.add_argument("--bucket", help="ArchiveBucketName output")
    where.add_argument("--state-machine-arn", help="StateMachineArn output")
    where.add_argument("--bus", help="the CRM event bus (default: read from the stack)")
    where.add_argument("--region", help="default: the region in the API URL, else your AWS config")
    where.add_argument("--profile", help="AWS profile (default: boto3's default chain)")
    who = p.add_argument_group("the test subject (use a test identity the vendors know)")
    who.add_argument("--subject", default=os.environ.get("SMOKE_SUBJECT"), help="JSON; default: $SMOKE_SUBJECT")
    who.add_argument("--email")
    who.add_argument("--customer-key")
    who.add_argument("--customer-id", action="append", default=[], metavar="TYPE=VALUE", help="repeatable")
    p.add_argument("--vendors", help="comma-separated; default: every enabled vendor (Elevate's export takes days)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the request (default 3600)")
    p.add_argument("--event-timeout", type=float, default=120.0, help="seconds to wait for the CRM event")
    p.add_argument("--poll", type=float, default=15.0, help="seconds between GET /requests/{id}")


def run_args(args: argparse.Namespace) -> int:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    subject = parse_subject(args)
    try:
        session = boto3.Session(profile_name=args.profile, region_name=args.region)
        if args.stack:
            target = StackTarget.from_stack(session, args.stack, args.bus)
        elif args.api and args.bucket and args.state_machine_arn and args.bus:
            target = StackTarget(session, args.api, args.bucket, args.state_machine_arn, args.bus)
        else:
            raise usage_error("give --stack, or --api, --bucket, --state-machine-arn and --bus")
    except (BotoCoreError, ClientError) as exc:  # no credentials, no such stack, ...
        raise usage_error(str(exc)) from None
    target.poll_seconds = args.poll
    vendors = [v.strip() for v in args.vendors.split(",") if v.strip()] if args.vendors else None
    print(f"Smoke test of {target.api_url} (bucket {target.bucket}, bus {target.event_bus}); dry run")
    try:
        checks = run_smoke(target, subject, vendors=vendors, timeout=args.timeout, event_timeout=args.event_timeout)
    except KeyboardInterrupt:
        print("interrupted: the temporary rule and queue were removed", file=sys.stderr)
        return 130
    except (BotoCoreError, ClientError, OSError) as exc:  # AccessDenied, the API unreachable: a failed smoke
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print()
    print(table(checks))
    return 0 if all(c.ok for c in checks) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m local smoke", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run_args(p.parse_args(argv))
