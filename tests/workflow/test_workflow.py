"""The real ASL in moto's interpreter, real handlers, real HTTP to the vendor simulators."""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from datetime import UTC, datetime, timedelta

import pytest

from local.simulators.data import SAMPLE, UNKNOWN_EMAIL
from tests.workflow.conftest import local_run, outcome, sample_subject

pytestmark = pytest.mark.slow


def test_export_and_erase_across_all_vendors(run_request):
    with local_run() as (cloud, sims):
        # The CRM listens on the bus: route dsrflow's completion event into a queue we can read.
        sqs, events = cloud.client("sqs"), cloud.client("events")
        queue = sqs.create_queue(QueueName="crm")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name="crm", EventPattern=json.dumps({"source": ["dsrflow"]}))
        events.put_targets(Rule="crm", Targets=[{"Id": "q", "Arn": queue_arn}])

        accepted, execution, summary = run_request(
            cloud, {"request_id": "dsr-all", "actions": ["export", "erase"], "subject": sample_subject()}
        )

        assert accepted["status"] == "accepted"
        assert summary["status"] == "completed", summary
        assert summary["counts"] == {
            "completed": 6,
            "planned": 0,
            "failed": 0,
            "skipped": 0,
            "denied": 0,
            "cancelled": 0,
        }
        # The manifest in the bucket is the execution's output, and its proof copy is the same record.
        assert json.loads(cloud.read("requests/dsr-all/manifest.json")) == summary
        assert json.loads(cloud.read(summary["proof_key"])) == summary
        assert summary["proof_key"] == "proof/dsr-all/manifest.json"
        for vendor in ("elevate", "bloomreach", "qualifio"):
            export = outcome(summary, vendor, "export")
            assert len(export["archives"]) == 1, export
            archive = export["archives"][0]
            body = cloud.read(archive["key"])
            assert len(body) == archive["bytes"] > 0
            assert hashlib.sha256(body).hexdigest() == archive["sha256"]
            assert outcome(summary, vendor, "erase")["archives"] == []
            # Export finished before erase was submitted, for every vendor.
            assert (
                outcome(summary, vendor, "export")["completed_at"] <= outcome(summary, vendor, "erase")["submitted_at"]
            )
        # The Elevate archive is the subject's real data, not a placeholder.
        elevate_zip = zipfile.ZipFile(
            io.BytesIO(cloud.read(outcome(summary, "elevate", "export")["archives"][0]["key"]))
        )
        assert any(n.endswith(".jsonl") for n in elevate_zip.namelist())
        # Erasure really happened at the vendors.
        assert sims["qualifio"].profiles_of(SAMPLE.email) == []
        # Archives are encrypted with the deployment's key.
        head = cloud.client("s3").head_object(
            Bucket=cloud.bucket, Key=outcome(summary, "qualifio", "export")["archives"][0]["key"]
        )
        assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == cloud.kms_key_arn

        answer = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1, MaxNumberOfMessages=10)
        messages = [json.loads(m["Body"]) for m in answer["Messages"]]
        assert [m["detail-type"] for m in messages] == [
            "Data Subject Request Received",
            "Data Subject Request Completed",
        ]
        message = messages[-1]
        assert message["detail"]["request_id"] == "dsr-all" and message["detail"]["status"] == "completed"

        # No PII in the execution history: not in inputs, outputs, or error causes.
        history = json.dumps(cloud.history("dsr-all"), default=str)
        for secret in (SAMPLE.email, SAMPLE.customer_key, SAMPLE.registered, SAMPLE.first_name, SAMPLE.last_name):
            assert secret not in history
        for creds in (s.credentials() for s in sims.values()):
            for key, value in creds.items():
                if key != "base_url" and isinstance(value, str):
                    assert value not in history


def test_one_vendor_failing_never_fails_the_others(run_request):
    with local_run(creds_override={"qualifio": {"api_token": "revoked-token"}}) as (cloud, _):
        _, _, summary = run_request(cloud, {"actions": ["export", "erase"], "subject": sample_subject()})

    assert summary["status"] == "partially_failed"
    failed = outcome(summary, "qualifio", "export")
    assert failed["status"] == "failed" and failed["error"] == "VendorAuthError"
    assert "qualifio" in failed["reason"] and "credentials" in failed["reason"]
    assert "revoked-token" not in json.dumps(summary)
    # Erase is withheld where the export failed: erasing would destroy what the subject asked for.
    withheld = outcome(summary, "qualifio", "erase")
    assert withheld["status"] == "failed" and withheld["error"] == "ErasureWithheld"
    for vendor in ("elevate", "bloomreach"):
        assert outcome(summary, vendor, "export")["status"] == "completed"
        assert outcome(summary, vendor, "erase")["status"] == "completed"


def test_elevate_is_polled_only_as_its_schedule_says(run_request):
    with local_run(time_scale=86400.0, vendors=("elevate",)) as (cloud, sims):
        _, _, summary = run_request(cloud, {"actions": ["export"], "subject": sample_subject()})
        sim = sims["elevate"]
        created = sim.calls_to(r"create-export-customer-job")[0].at
        polls = sim.calls_to(r"job-status")

    assert summary["status"] == "completed"
    # Nothing is asked before the 5-day archive window has passed, and then only once or twice, not every
    # few minutes for a week.
    assert polls, "the job was never checked"
    assert all(p.at - created >= timedelta(days=5) for p in polls), [p.at - created for p in polls]
    assert len(polls) <= 2
    assert outcome(summary, "elevate", "export")["checks"] == len(polls)


def test_qualifio_without_a_profile_is_no_data_held(run_request):
    with local_run(vendors=("qualifio",)) as (cloud, sims):
        _, _, summary = run_request(cloud, {"actions": ["export"], "subject": {"email": UNKNOWN_EMAIL}})
        rules = sims["qualifio"].calls_to(r"/v1/gdpr/rules")

    result = outcome(summary, "qualifio", "export")
    assert summary["status"] == "completed"
    assert result["status"] == "completed" and result["archives"] == []
    assert "no data held" in result["reason"]
    assert rules == []


def test_vendor_that_cannot_act_is_reported_as_skipped(run_request):
    with local_run(vendors=("elevate", "qualifio")) as (cloud, _):
        accepted, _, summary = run_request(cloud, {"actions": ["export"], "subject": {"email": SAMPLE.email}})

    assert [s["vendor"] for s in accepted["skipped"]] == ["elevate"]
    skipped = outcome(summary, "elevate", "export")
    assert skipped["status"] == "skipped" and "customer_key" in skipped["reason"]
    assert outcome(summary, "qualifio", "export")["status"] == "completed"
    assert summary["status"] == "partially_failed"


def test_duplicate_request_id_starts_one_execution(run_request):
    with local_run(vendors=("qualifio",)) as (cloud, _):
        request = {"request_id": "dsr-dup", "actions": ["export"], "subject": {"email": SAMPLE.email}}
        first = cloud.submit(request)
        # A redelivery of the same request is a duplicate: nothing new starts.
        second = cloud.submit(request)
        # The same id with another subject is a different request: refused, nothing started or replaced.
        status, conflict = cloud.api("POST", "/requests", {**request, "subject": {"email": "someone.else@example.com"}})
        cloud.wait("dsr-dup")
        executions = cloud.client("stepfunctions").list_executions(stateMachineArn=cloud.state_machine_arn)[
            "executions"
        ]
        stored = json.loads(cloud.read("requests/dsr-dup/request.json"))

    assert first["status"] == "accepted" and second["status"] == "duplicate"
    assert second["execution_arn"] == first["execution_arn"]
    assert status == 409 and conflict["error"] == "conflict" and "someone.else" not in json.dumps(conflict)
    assert [e["name"] for e in executions] == ["dsr-dup"]
    assert stored["subject"]["email"] == SAMPLE.email


def test_bad_requests_are_rejected_naming_the_field():
    with local_run(vendors=("qualifio",)) as (cloud, _):
        status, body = cloud.api("POST", "/requests", {"actions": ["export"], "subject": {"email": "nope"}})
        assert status == 400 and body["fields"][0]["field"] == "subject.email"
        status, body = cloud.api("POST", "/requests", {"actions": ["shred"], "subject": {"email": SAMPLE.email}})
        assert status == 400 and body["fields"][0]["field"] == "actions.0"
        status, body = cloud.api("POST", "/requests", "{not json")
        assert status == 400 and body["fields"][0]["field"] == "(body)"
        status, body = cloud.api(
            "POST",
            "/requests",
            {
                "actions": ["export"],
                "subject": {"email": SAMPLE.email},
                "vendors": ["qualifio"],
                "request_id": "bad id!",
            },
        )
        assert status == 400 and body["fields"][0]["field"] == "request_id"
        # Nothing was stored or started for any of them.
        assert cloud.client("s3").list_objects_v2(Bucket=cloud.bucket).get("KeyCount") == 0
        assert (
            cloud.client("stepfunctions").list_executions(stateMachineArn=cloud.state_machine_arn)["executions"] == []
        )


def test_crm_event_starts_a_request_and_a_redelivery_does_not(run_request):
    # A receipt time a day ago (intake refuses times older than 92 days: past any lawful deadline).
    received = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
    event = {
        "version": "0",
        "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "detail-type": "Data Subject Request",
        "source": "crm",
        "account": "123456789012",
        "time": received.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "eu-west-1",
        "resources": [],
        "detail": {"actions": ["export"], "subject": {"email": SAMPLE.email}, "vendors": ["qualifio"]},
    }
    with local_run(vendors=("qualifio",)) as (cloud, _):
        first = cloud.invoke("intake", event)
        again = cloud.invoke("intake", event)
        execution = cloud.wait(first["request_id"])
        with pytest.raises(RuntimeError, match=r"InvalidRequest: invalid request: detail.subject.email"):
            cloud.invoke(
                "intake", {**event, "id": "other", "detail": {"actions": ["export"], "subject": {"email": "x"}}}
            )

    assert first["request_id"] == f"evt-{event['id']}" and first["status"] == "accepted"
    # The GDPR month starts when the CRM received the request (the event's time), not when intake ran.
    assert first["deadline"].startswith((received + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%S"))
    assert again["status"] == "duplicate"
    assert execution["status"] == "SUCCEEDED"


def test_cut_off_download_is_retried_by_the_workflow(run_request):
    from local.simulators.base import Faults

    faults = Faults(cut_download_after=100, cut_downloads=1)
    with local_run(vendors=("elevate",), sim_options={"elevate": {"faults": faults}}) as (cloud, sims):
        accepted, _, summary = run_request(cloud, {"actions": ["export"], "subject": sample_subject()})
        history = cloud.history(accepted["request_id"])
        downloads = sims["elevate"].calls_to(r"export-customer-job-result")

    assert summary["status"] == "completed"
    failures = [e for e in history if e["type"] == "TaskFailed"]
    assert [f["taskFailedEventDetails"]["error"] for f in failures] == ["ArchiveTransferError"]
    assert len(downloads) == 2
    archive = outcome(summary, "elevate", "export")["archives"][0]
    assert archive["bytes"] > 100


def test_status_endpoint_shows_the_manifest(run_request):
    with local_run(vendors=("bloomreach",)) as (cloud, _):
        accepted, _, summary = run_request(
            cloud, {"actions": ["export"], "subject": {"customer_ids": {"registered": SAMPLE.registered}}}
        )
        status, body = cloud.api("GET", f"/requests/{accepted['request_id']}")
        missing, _ = cloud.api("GET", "/requests/no-such-request")
        invalid, problem = cloud.api("GET", "/requests/not%20an%20id")
        # Once the request data has expired, the status still shows the proof copy.
        cloud.client("s3").delete_object(Bucket=cloud.bucket, Key=summary["manifest_key"])
        _, after_expiry = cloud.api("GET", f"/requests/{accepted['request_id']}")

    assert status == 200 and body["execution_status"] == "SUCCEEDED"
    assert body["manifest"] == summary
    assert after_expiry["manifest"] == summary
    assert missing == 404
    assert invalid == 400 and problem["fields"][0]["field"] == "request_id"


def test_manual_approval_waits_for_a_human_dpo():
    with local_run(vendors=("qualifio",), approval_mode="manual") as (cloud, sims):
        accepted = cloud.submit({"actions": ["export"], "subject": {"email": SAMPLE.email}})
        request_id = accepted["request_id"]

        def waiting_rule() -> str | None:
            for event in cloud.history(request_id):
                if event["type"] == "TaskSucceeded":
                    out = json.loads(event["taskSucceededEventDetails"]["output"])["Payload"]
                    if (out.get("progress") or {}).get("status") == "needs_approval":
                        return out["job"]["job_id"]
            return None

        deadline = time.monotonic() + 30
        while (rule_id := waiting_rule()) is None:
            assert time.monotonic() < deadline, "the workflow never reported that approval is needed"
            time.sleep(0.2)

        # Several looks later the rule is still NEW: dsrflow never validates it itself in manual mode.
        def approval_waits() -> int:
            return sum(
                1
                for e in cloud.history(request_id)
                if e.get("stateEnteredEventDetails", {}).get("name") == "Wait for DPO approval"
            )

        while approval_waits() < 2:
            assert time.monotonic() < deadline + 30, "the workflow stopped looking for the DPO's approval"
            time.sleep(0.2)
        assert sims["qualifio"].rule(rule_id)["ruleStatus"]["status"] == "NEW"
        assert sims["qualifio"].calls_to(r"/validate") == []
        sims["qualifio"].approve(rule_id)  # the DPO validates it in Qualifio's back office
        execution = cloud.wait(request_id)
        states = [
            e["stateEnteredEventDetails"]["name"] for e in cloud.history(request_id) if "stateEnteredEventDetails" in e
        ]

    assert execution["status"] == "SUCCEEDED"
    summary = json.loads(execution["output"])
    assert summary["status"] == "completed"
    assert len(outcome(summary, "qualifio", "export")["archives"]) == 1
    assert states.count("Wait for DPO approval") >= 2
