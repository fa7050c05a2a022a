"""The operator's actions (core/operations.py) on moto's DynamoDB, S3 and Step Functions: the rules each one
enforces, and that a refused or failed call leaves the ledger as it was."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import mock_aws

from core import operations
from core.domain import Action
from core.intake import InvalidRequest
from core.ledger import Ledger
from core.models import REQUEST_ID_PATTERN, Manifest, PackageRef, StoredRequest, Subject, VendorPlan
from core.operations import AuditUnavailable, CancelBody, Extension, NotFound, Ops, RetryBody, StateConflict
from core.store import Store, package_key
from local.engine import create_ledger_table

REGION = "eu-west-1"
RECEIVED = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
EMAIL = "Jane.Doe@Example.com"
WHO = "arn:aws:iam::123456789012:role/dpo"


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def ops():
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name=REGION)
        create_ledger_table(ddb, "ledger")
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="ops-bucket", CreateBucketConfiguration={"LocationConstraint": REGION})
        key = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["Arn"]
        sfn = boto3.client("stepfunctions", region_name=REGION)
        arn = sfn.create_state_machine(
            name="dsr",
            definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
            roleArn="arn:aws:iam::123456789012:role/x",
        )["stateMachineArn"]
        clock = Clock(RECEIVED + timedelta(days=2))
        yield Ops(
            store=Store(s3, "ops-bucket", key),
            sfn=sfn,
            state_machine_arn=arn,
            ledger=Ledger(ddb, "ledger", now=clock),
            now=clock,
            sleep=lambda _: None,
            # As handlers.runtime.presigner builds it: SigV4, the regional virtual-hosted endpoint.
            presigner=boto3.client(
                "s3", region_name=REGION, config=Config(signature_version="s3v4", s3={"addressing_style": "virtual"})
            ),
        )


def _request(ops: Ops, request_id: str = "dsr-1", *, status: str = "received") -> StoredRequest:
    stored = StoredRequest(
        request_id=request_id,
        actions=[Action.EXPORT, Action.ERASE],
        subject=Subject(email=EMAIL),
        received_at=RECEIVED,
        deadline=RECEIVED + timedelta(days=30),
        plan=[VendorPlan(vendor="bloomreach", actions=[Action.EXPORT, Action.ERASE])],
    )
    ops.store.create_request(stored)
    ops.ledger.received(stored)
    return stored


def _finish(
    ops: Ops, request_id: str, statuses: dict[str, str], package: PackageRef | None = None, attempt: int = 1
) -> Manifest:
    manifest = Manifest.model_validate(
        {
            "attempt": attempt,
            "package": package.model_dump() if package is not None else None,
            "request_id": request_id,
            "status": "partially_failed" if "failed" in statuses.values() else "completed",
            "received_at": RECEIVED,
            "deadline": RECEIVED + timedelta(days=30),
            "finished_at": RECEIVED + timedelta(days=1),
            "within_deadline": True,
            "counts": {},
            "outcomes": [
                {"vendor": "bloomreach", "action": action, "status": status} for action, status in statuses.items()
            ],
            "manifest_key": f"requests/{request_id}/manifest.json",
            "proof_key": f"proof/{request_id}/manifest.json",
        }
    )
    ops.store.put_manifest(manifest)
    ops.ledger.finished(manifest)
    return manifest


def test_retry_execution_names_never_collide_with_a_request_id():
    assert operations._execution_name("dsr-1", 1) == "dsr-1"
    for request_id in ("dsr-1", "x" * 80, "y" * 75):
        for attempt in (2, 3, 12):
            name = operations._execution_name(request_id, attempt)
            assert len(name) <= 80 and re.fullmatch(REQUEST_ID_PATTERN, name) is None, name
    assert operations._execution_name("x" * 80, 2) != operations._execution_name("x" * 79 + "z", 2)


def test_next_tokens_are_opaque_and_only_ours_are_accepted(ops):
    for request_id in ("a", "b", "c"):
        _request(ops, request_id)
    first = operations.list_requests(ops, status=None, due_before=None, limit=2, next_token=None)
    assert len(first["requests"]) == 2 and first["next_token"]
    rest = operations.list_requests(ops, status=None, due_before=None, limit=2, next_token=first["next_token"])
    assert {r["request_id"] for r in first["requests"] + rest["requests"]} == {"a", "b", "c"}
    for bad in ("garbage!", "e30", "W10", "eyJwayI6IDF9"):  # not base64, {}, [], {"pk": 1}
        with pytest.raises(InvalidRequest) as refused:
            operations.list_requests(ops, status=None, due_before=None, limit=2, next_token=bad)
        assert refused.value.fields[0]["field"] == "next_token", bad


def test_describe_answers_from_the_ledger_and_the_proof_once_the_execution_is_gone(ops):
    _request(ops)
    _finish(ops, "dsr-1", {"export": "completed", "erase": "completed"})
    ops.store.s3.delete_object(Bucket="ops-bucket", Key="requests/dsr-1/manifest.json")  # the request data expired
    found = operations.describe(ops, "dsr-1")
    assert found["execution"] is None and found["status"] == "completed"
    assert found["manifest"]["proof_key"] == "proof/dsr-1/manifest.json"
    with pytest.raises(NotFound):
        operations.describe(ops, "nobody")


def _item(ops: Ops) -> dict[str, Any]:
    return ops.ledger.item("dsr-1") or {}


def test_extension_rules_of_gdpr_article_12_3(ops):
    _request(ops)
    ops.ledger.started("dsr-1")
    with pytest.raises(InvalidRequest):  # the reason must not carry the subject's identifiers
        operations.extend(ops, "dsr-1", Extension(days=10, reason=f"asked by {EMAIL.lower()}"), principal=WHO)
    before = _item(ops)
    done = operations.extend(ops, "dsr-1", Extension(days=20, reason="complex"), principal=WHO)
    assert done["deadline"] == "2027-01-12T10:00:00Z" and done["extended_days"] == 20
    with pytest.raises(StateConflict, match="60 days"):
        operations.extend(ops, "dsr-1", Extension(days=41, reason="more"), principal=WHO)
    operations.extend(ops, "dsr-1", Extension(days=10, reason="more"), principal=WHO)
    operations.extend(ops, "dsr-1", Extension(days=10, reason="more"), principal=WHO)
    with pytest.raises(StateConflict, match="3 times"):
        operations.extend(ops, "dsr-1", Extension(days=1, reason="more"), principal=WHO)
    item = _item(ops)
    assert item["extended_days"] == 40 and item["original_deadline"] == before["deadline"]
    assert [e["days"] for e in item["extensions"]] == [20, 10, 10] and item["extensions"][0]["by"] == WHO
    ops.now.at = RECEIVED + timedelta(days=30, seconds=1)  # past the original deadline
    with pytest.raises(StateConflict, match="before the original deadline"):
        operations.extend(ops, "dsr-1", Extension(days=1, reason="late"), principal=WHO)


def test_a_retry_that_cannot_start_releases_its_claim(ops, monkeypatch):
    _request(ops)
    _finish(ops, "dsr-1", {"export": "completed", "erase": "failed"})
    before = _item(ops)

    def refuse(**_: Any) -> Any:
        raise RuntimeError("StartExecution failed")

    monkeypatch.setattr(ops.sfn, "start_execution", refuse)
    with pytest.raises(RuntimeError):
        operations.retry(ops, "dsr-1", RetryBody(), principal=WHO)
    after = _item(ops)
    assert after["status"] == before["status"] == "partially_failed"
    assert after["attempt"] == 1 and len(after["attempts"]) == 1 and "open_pk" not in after


def test_a_retry_runs_only_what_failed_and_is_refused_while_running(ops):
    _request(ops)
    _finish(ops, "dsr-1", {"export": "completed", "erase": "failed"})
    started = operations.retry(ops, "dsr-1", RetryBody(), principal=WHO)
    assert started["attempt"] == 2 and started["actions"] == ["bloomreach/erase"]
    execution = ops.sfn.describe_execution(executionArn=started["execution_arn"])
    given = json.loads(execution["input"])
    assert given["attempt"] == 2 and given["plan"] == [
        {"vendor": "bloomreach", "actions": ["export", "erase"], "run": ["erase"]}
    ]
    assert given["deadline"].startswith("2026-12-23T10:00:00")
    with pytest.raises(StateConflict, match="still running"):
        operations.retry(ops, "dsr-1", RetryBody(), principal=WHO)
    with pytest.raises(StateConflict, match="nothing to retry"):
        _request(ops, "dsr-2")
        _finish(ops, "dsr-2", {"export": "completed"})
        operations.retry(ops, "dsr-2", RetryBody(), principal=WHO)


def test_a_vendor_named_in_a_body_must_be_one_of_the_request(ops):
    _request(ops)
    _finish(ops, "dsr-1", {"export": "completed", "erase": "failed"})
    for call in (
        lambda: operations.approve(ops, "dsr-1", operations.Decision(vendor="elevate"), principal=WHO),
        lambda: operations.deny(ops, "dsr-1", operations.Denial(vendor="elevate", reason="no"), principal=WHO),
        lambda: operations.retry(ops, "dsr-1", RetryBody(vendors=["elevate"]), principal=WHO),
    ):
        with pytest.raises(InvalidRequest) as refused:
            call()
        assert "bloomreach" in refused.value.fields[0]["message"]
    assert _item(ops)["attempt"] == 1, "nothing was started"


# --- GET /requests/{id}/package ---------------------------------------------------------------------------------

ZIP = b"PK\x05\x06" + b"\x00" * 18 + b"an access package, as far as S3 knows" * 100


def _built(ops: Ops, request_id: str = "dsr-1", body: bytes = ZIP) -> PackageRef:
    """The Package step's work as it lands: the zip (SSE-KMS) and its PackageRef."""
    key = package_key(request_id)
    ops.store.s3.put_object(
        Bucket=ops.store.bucket,
        Key=key,
        Body=body,
        ContentType="application/zip",
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=ops.store.kms_key_id,
    )
    return PackageRef(
        status="built",
        key=key,
        bytes=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
        files=3,
        systems=["bloomreach"],
        built_at=RECEIVED + timedelta(days=1),
    )


def _audit_events(ops: Ops, request_id: str = "dsr-1") -> list[dict[str, Any]]:
    return operations.audit(ops, request_id, limit=100, next_token=None)["events"]


def _everything_in_the_ledger(ops: Ops) -> str:
    return json.dumps(ops.ledger.client.scan(TableName="ledger")["Items"])


def test_a_package_link_is_minted_audited_and_fetches_the_verified_zip(ops):
    _request(ops)
    ref = _built(ops)
    _finish(ops, "dsr-1", {"export": "completed", "erase": "completed"}, package=ref)
    ops.package_url_seconds = 900
    link = operations.package(ops, "dsr-1", principal=WHO)
    assert set(link) == {"request_id", "url", "expires_at", "bytes", "sha256", "files"}
    assert (link["bytes"], link["sha256"], link["files"]) == (len(ZIP), ref.sha256, 3)
    assert link["expires_at"] == "2026-11-25T10:15:00Z"  # now + 900 s
    url = urlsplit(link["url"])
    query = parse_qs(url.query)
    assert url.scheme == "https" and url.hostname == f"ops-bucket.s3.{REGION}.amazonaws.com"
    assert url.path == "/" + package_key("dsr-1")
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Expires"] == ["900"]
    assert query["response-content-disposition"] == ['attachment; filename="dsrflow-access-dsr-1.zip"']
    fetched = requests.get(link["url"], timeout=10)  # moto answers the presigned GET
    assert fetched.status_code == 200 and fetched.content == ZIP
    assert hashlib.sha256(fetched.content).hexdigest() == link["sha256"]
    assert fetched.headers["Content-Disposition"] == 'attachment; filename="dsrflow-access-dsr-1.zip"'
    issued = [e for e in _audit_events(ops) if e["event"] == "package link issued"]
    assert len(issued) == 1
    assert issued[0]["by"] == WHO and issued[0]["sha256"] == ref.sha256
    assert issued[0]["link_expires_at"] == "2026-11-25T10:15:00Z"
    # The event expires with the request's item.
    (stored,) = [
        i
        for i in ops.ledger.client.scan(TableName="ledger")["Items"]
        if i.get("event", {}).get("S") == "package link issued"
    ]
    assert int(stored["expires_at"]["N"]) == ops.ledger.item("dsr-1")["expires_at"]
    # The link is a bearer credential: nothing of it is kept.
    kept = _everything_in_the_ledger(ops)
    assert query["X-Amz-Signature"][0] not in kept and "X-Amz-" not in kept
    # Each call mints its own link, and each is audited.
    operations.package(ops, "dsr-1", principal="arn:aws:iam::123456789012:role/other")
    assert [e["by"] for e in _audit_events(ops) if e["event"] == "package link issued"] == [
        WHO,
        "arn:aws:iam::123456789012:role/other",
    ]


def test_no_link_is_handed_out_when_the_audit_trail_cannot_record_it(ops, monkeypatch):
    _request(ops)
    _finish(ops, "dsr-1", {"export": "completed"}, package=_built(ops))
    before = len(_audit_events(ops))
    real_put = ops.ledger.client.put_item

    def refuse(**kwargs: Any) -> Any:
        if kwargs["Item"]["sk"]["S"].startswith("AUDIT#"):
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "PutItem")
        return real_put(**kwargs)

    monkeypatch.setattr(ops.ledger.client, "put_item", refuse)
    with pytest.raises(AuditUnavailable, match="could not be recorded in the audit trail; nothing was handed out"):
        operations.package(ops, "dsr-1", principal=WHO)
    monkeypatch.undo()
    assert len(_audit_events(ops)) == before


def test_no_link_for_an_unknown_or_running_request(ops):
    with pytest.raises(NotFound, match="no request with id nobody"):
        operations.package(ops, "nobody", principal=WHO)
    _request(ops)
    with pytest.raises(StateConflict, match="dsr-1 is still running: its access package is built once its exports"):
        operations.package(ops, "dsr-1", principal=WHO)
    ops.ledger.started("dsr-1")
    with pytest.raises(StateConflict, match="still running"):
        operations.package(ops, "dsr-1", principal=WHO)


def test_a_retry_that_will_rebuild_the_package_is_running(ops):
    _request(ops)
    _finish(ops, "dsr-1", {"export": "completed", "erase": "failed"}, package=_built(ops))
    assert operations.package(ops, "dsr-1", principal=WHO)["url"]
    operations.retry(ops, "dsr-1", RetryBody(), principal=WHO)
    with pytest.raises(StateConflict, match="still running"):
        operations.package(ops, "dsr-1", principal=WHO)
    # Finalize wrote attempt 2's manifest and the ledger has not heard of it yet: the request is done.
    _finish(ops, "dsr-1", {"export": "completed", "erase": "completed"}, package=_built(ops), attempt=2)
    assert operations.package(ops, "dsr-1", principal=WHO)["url"]


def test_an_expired_package_is_404(ops):
    _request(ops)
    _finish(ops, "dsr-1", {"export": "completed"}, package=_built(ops))
    ops.store.s3.delete_object(Bucket="ops-bucket", Key=package_key("dsr-1"))  # the request data's lifecycle
    with pytest.raises(NotFound, match="the access package of request dsr-1 expired with the request data"):
        operations.package(ops, "dsr-1", principal=WHO)
    assert not [e for e in _audit_events(ops) if e["event"] == "package link issued"]


@pytest.mark.parametrize(
    "ref, message",
    [
        (
            PackageRef(status="not_built", reason="a dry run sends nothing and collects nothing"),
            "request dsr-1 has no access package: a dry run sends nothing and collects nothing",
        ),
        (
            PackageRef(status="failed", error="StoreUnavailable", reason="the Package step failed; retry the request"),
            "request dsr-1 has no access package: the Package step failed; retry the request",
        ),
        (PackageRef(status="failed", error="StoreUnavailable"), "building it failed \\(StoreUnavailable\\)"),
        (None, "request dsr-1 has no access package: its manifest records none"),
    ],
)
def test_no_package_built_is_404_with_its_reason(ops, ref, message):
    _request(ops)
    _finish(ops, "dsr-1", {"export": "completed"}, package=ref)
    with pytest.raises(NotFound, match=message):
        operations.package(ops, "dsr-1", principal=WHO)


def test_a_package_that_does_not_match_its_manifest_is_not_linked(ops):
    _request(ops)
    ref = _built(ops)
    _finish(ops, "dsr-1", {"export": "completed"}, package=ref)
    _built(ops, body=ZIP + b"rebuilt")  # a later attempt's Package step replaced it meanwhile
    with pytest.raises(StateConflict, match=f"holds {len(ZIP) + 7} bytes, its manifest records {len(ZIP)}"):
        operations.package(ops, "dsr-1", principal=WHO)


def test_a_cancelled_retry_keeps_the_earlier_package(ops):
    _request(ops)
    ref = _built(ops)
    _finish(ops, "dsr-1", {"export": "completed", "erase": "failed"}, package=ref)
    operations.retry(ops, "dsr-1", RetryBody(), principal=WHO)
    cancelled = operations.cancel(ops, "dsr-1", CancelBody(reason="the subject withdrew"), principal=WHO)
    assert cancelled["status"] == "cancelled"
    manifest = ops.store.load_manifest("dsr-1")
    assert manifest is not None and manifest.status == "cancelled" and manifest.attempt == 2
    assert manifest.package == ref
    link = operations.package(ops, "dsr-1", principal=WHO)
    assert requests.get(link["url"], timeout=10).content == ZIP


def test_a_request_cancelled_on_its_first_attempt_has_no_package(ops):
    _request(ops)
    operations.cancel(ops, "dsr-1", CancelBody(), principal=WHO)
    with pytest.raises(NotFound, match="has no access package: its manifest records none"):
        operations.package(ops, "dsr-1", principal=WHO)
