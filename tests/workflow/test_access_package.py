"""The access package through the real ASL in moto: built after the vendor branches from every completed export
(across attempts), recorded in the manifest, announced without a link, fetched through GET .../package, and a
failed Package step recorded and rebuilt by a retry that sends nothing to any vendor."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from typing import Any

import pytest
import requests

from local.simulators.data import SAMPLE
from tests.event_schemas import validate_event
from tests.workflow.conftest import local_run, outcome, sample_subject, summary_of

pytestmark = pytest.mark.slow

OPERATOR = "arn:aws:iam::123456789012:role/dpo"


def _completed_events(cloud: Any) -> list[dict[str, Any]]:
    return [e for e in cloud.events() if e["detail-type"] == "Data Subject Request Completed"]


def _zip(cloud: Any, key: str) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(cloud.read(key)))


def test_the_package_holds_every_vendor_unpacked_and_is_fetched_by_a_link_never_announced():
    with local_run(vendors=("elevate", "bloomreach", "qualifio")) as (cloud, _):
        cloud.submit({"request_id": "pkg-all", "actions": ["export"], "subject": sample_subject()})
        summary = summary_of(cloud, "pkg-all")
        assert summary["status"] == "completed", summary
        package = summary["package"]
        assert package["status"] == "built" and package["systems"] == ["bloomreach", "elevate", "qualifio"]
        head = cloud.client("s3").head_object(Bucket=cloud.bucket, Key=package["key"])
        assert head["ServerSideEncryption"] == "aws:kms" and head["ContentLength"] == package["bytes"]
        assert package["key"] == "requests/pkg-all/package/dsrflow-access-pkg-all.zip"

        z = _zip(cloud, package["key"])
        assert z.testzip() is None
        names = z.namelist()
        assert {"index.html", "about-this-answer.txt", "manifest.json"} <= set(names)
        for folder in ("Elevate/", "Bloomreach/", "Qualifio/"):
            assert any(n.startswith(folder) for n in names), folder
        assert not [n for n in names if n.endswith(".zip")], "vendor zips are unpacked"
        listing = json.loads(z.read("manifest.json"))
        for entry in listing["files"]:
            assert hashlib.sha256(z.read(entry["path"])).hexdigest() == entry["sha256"]
        page = z.read("index.html").decode()
        assert "<script" not in page and "Elevate" in page and "Qualifio" in page
        # The subject's own data is in the package (it is their answer) ...
        assert any(SAMPLE.email.encode() in z.read(n) for n in names if n.startswith("Qualifio/"))

        # ... but the event says only that it exists, and nothing kept names a file inside it.
        (event,) = _completed_events(cloud)
        validate_event(event)
        assert event["detail"]["package"] == {
            "available": True,
            "bytes": package["bytes"],
            "sha256": package["sha256"],
            "files": package["files"],
        }
        kept = json.dumps(cloud.history("pkg-all"), default=str) + json.dumps(cloud.events(), default=str)
        kept += json.dumps(cloud.client("dynamodb").scan(TableName=cloud.ledger_table)["Items"], default=str)
        for name in names:
            if "/" in name:
                assert name not in kept, f"{name} (a name from inside the package) was kept"
        for value in (SAMPLE.email, SAMPLE.customer_key):
            assert value.casefold() not in kept.casefold()

        status, link = cloud.api("GET", "/requests/pkg-all/package", principal=OPERATOR)
        assert status == 200, link
        assert link["sha256"] == package["sha256"] and link["bytes"] == package["bytes"]
        body = requests.get(link["url"], timeout=30).content  # moto answers the presigned GET in process
        assert hashlib.sha256(body).hexdigest() == package["sha256"]
        assert link["url"] not in json.dumps(cloud.client("dynamodb").scan(TableName=cloud.ledger_table)["Items"])
        trail = cloud.api("GET", "/requests/pkg-all/audit")[1]["events"]
        assert [e["event"] for e in trail].count("package built") == 1
        issued = [e for e in trail if e["event"] == "package link issued"]
        assert len(issued) == 1 and issued[0]["by"] == OPERATOR


def test_a_retry_packs_what_every_attempt_collected():
    with local_run(vendors=("bloomreach", "elevate")) as (cloud, sims):
        faults = sims["bloomreach"].faults
        faults.path_pattern, faults.reject = "export", 1
        cloud.submit({"request_id": "pkg-again", "actions": ["export"], "subject": sample_subject()})
        first = summary_of(cloud, "pkg-again")
        assert first["status"] == "partially_failed" and first["package"]["systems"] == ["elevate"]
        page = _zip(cloud, first["package"]["key"]).read("index.html").decode()
        assert "Systems we could not search" in page and "Bloomreach" in page

        status, body = cloud.api("POST", "/requests/pkg-again/retry", principal=OPERATOR)
        assert status == 202, body
        second = summary_of(cloud, "pkg-again.retry-2")
        assert second["status"] == "completed"
        assert second["package"]["systems"] == ["bloomreach", "elevate"] and second["package"]["attempt"] == 2
        names = _zip(cloud, second["package"]["key"]).namelist()
        assert any(n.startswith("Elevate/") for n in names) and any(n.startswith("Bloomreach/") for n in names)


def test_a_failed_package_step_is_recorded_and_a_retry_rebuilds_it_without_calling_any_vendor():
    with local_run(vendors=("bloomreach",)) as (cloud, sims):
        cloud.inject_lambda_error("package", "Unknown")  # not retried by the Package step: caught at once
        cloud.submit({"request_id": "pkg-fail", "actions": ["export"], "subject": sample_subject()})
        first = summary_of(cloud, "pkg-fail")
        assert first["status"] == "completed", "the outcomes stand"
        assert first["package"]["status"] == "failed" and first["package"]["error"] == "Lambda.Unknown"
        assert "retry of the request builds it again" in first["package"]["reason"]
        (event,) = _completed_events(cloud)
        assert event["detail"]["package"] == {"available": False}
        status, body = cloud.api("GET", "/requests/pkg-fail/package", principal=OPERATOR)
        assert status == 404 and "could not be built" in body["message"], body
        exports = sims["bloomreach"].calls_to("export")

        status, body = cloud.api("POST", "/requests/pkg-fail/retry", principal=OPERATOR)
        assert status == 202 and body["actions"] == [], body
        second = summary_of(cloud, "pkg-fail.retry-2")
        assert second["status"] == "completed" and second["package"]["status"] == "built"
        assert sims["bloomreach"].calls_to("export") == exports, "no vendor is called again"
        assert outcome(second, "bloomreach", "export")["attempt"] == 1
        assert cloud.api("GET", "/requests/pkg-fail/package", principal=OPERATOR)[0] == 200
        # Built now: nothing left to retry.
        status, body = cloud.api("POST", "/requests/pkg-fail/retry", principal=OPERATOR)
        assert status == 409 and "nothing to retry" in body["message"]


def test_a_dry_run_gets_a_package_marked_as_a_rehearsal_and_an_erase_only_request_none():
    with local_run(vendors=("bloomreach",)) as (cloud, sims):
        cloud.submit(
            {"request_id": "pkg-dry", "actions": ["export", "erase"], "dry_run": True, "subject": sample_subject()}
        )
        summary = summary_of(cloud, "pkg-dry")
        assert summary["package"]["status"] == "built" and sims["bloomreach"].destructive_calls() == []
        page = _zip(cloud, summary["package"]["key"]).read("index.html").decode()
        assert "rehearsal (a dry run)" in page and "nothing was erased" in page

        cloud.submit({"request_id": "pkg-erase", "actions": ["erase"], "subject": sample_subject()})
        summary = summary_of(cloud, "pkg-erase")
        assert summary["package"]["status"] == "not_built"
        assert summary["package"]["reason"] == "the request asked for no export"
        assert not [k for k in cloud.objects("pkg-erase") if "/package/" in k]
        status, body = cloud.api("GET", "/requests/pkg-erase/package", principal=OPERATOR)
        assert status == 404 and "no export" in body["message"], body
