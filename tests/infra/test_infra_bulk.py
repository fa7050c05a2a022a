"""Bulk intake as deployed (infra/bulk.py): the Distributed Map state machine, its least-privilege roles, the HMAC
key, the bulk/incoming/ rule and the bulk/ lifecycle."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def _bulk_machine(synth) -> tuple[str, dict[str, Any]]:
    found = [
        (k, v)
        for k, v in synth.resources("AWS::StepFunctions::StateMachine").items()
        if v["Properties"].get("StateMachineName") == "dsrflow-dev-bulk"
    ]
    assert len(found) == 1
    return found[0]


def _definition(sm: dict[str, Any]) -> dict[str, Any]:
    body = sm["Properties"]["DefinitionString"]
    text = body if isinstance(body, str) else "".join(p if isinstance(p, str) else "0" for p in body["Fn::Join"][1])
    return json.loads(text)


def _role_id(function: dict[str, Any]) -> str:
    return str(function["Properties"]["Role"]["Fn::GetAtt"][0])


def _statements(synth, role_id: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for s in synth.role_statements(role_id):
        for action in synth.actions(s):
            out.setdefault(action, []).append(s["Resource"])
    return out


def test_the_bulk_machine_is_a_distributed_map_over_the_line_index(synth):
    _, sm = _bulk_machine(synth)
    definition = _definition(sm)
    lines = definition["States"]["Lines"]
    assert lines["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert lines["ItemReader"]["ReaderConfig"] == {"InputType": "JSON"}
    assert lines["MaxConcurrencyPath"] == "$.max_concurrency"
    assert sm["Properties"]["DefinitionSubstitutions"].keys() == {"BulkFunctionArn", "BulkItemFunctionArn"}
    assert sm["Properties"]["LoggingConfiguration"]["IncludeExecutionData"] is False


def test_the_bulk_machine_role_runs_its_children_reads_the_index_and_invokes_only_its_functions(synth):
    sm_id, sm = _bulk_machine(synth)
    grants = _statements(synth, sm["Properties"]["RoleArn"]["Fn::GetAtt"][0])
    assert set(grants) == {
        "lambda:InvokeFunction",
        "states:StartExecution",
        "states:DescribeExecution",
        "states:StopExecution",
        "s3:GetObject",
        "kms:Decrypt",
        # tracing and logging, as the DSR workflow's role
        *(a for a in grants if a.startswith(("xray:", "logs:"))),
    }
    assert "dsrflow-dev-bulk" in json.dumps(grants["states:StartExecution"])  # itself: the Map's children
    assert "bulk/work/*/index.json" in json.dumps(grants["s3:GetObject"])
    invoked = {ref["Fn::GetAtt"][0] for r in grants["lambda:InvokeFunction"] for ref in r}
    assert invoked == {synth.function("bulk")[0], synth.function("bulk_item")[0]}


def test_only_intake_and_the_coordinator_start_batches_and_only_bulk_item_and_intake_start_requests(synth):
    from handlers.catalog import HANDLERS

    for name in HANDLERS:  # every function: only these start executions of either machine
        starts = json.dumps(_statements(synth, _role_id(synth.function(name)[1])).get("states:StartExecution", []))
        assert ("stateMachine:dsrflow-dev-bulk" in starts) == (name in ("intake", "bulk")), name
        assert ("WorkflowStateMachine" in starts) == (name in ("intake", "bulk_item")), name
    item = _statements(synth, _role_id(synth.function("bulk_item")[1]))
    assert "s3:ListBucket" in item and "kms:GenerateMac" in item
    assert not [r for r in item.get("s3:PutObject", []) if "bulk/results" in json.dumps(r)]
    coordinator = _statements(synth, _role_id(synth.function("bulk")[1]))
    assert not [r for r in coordinator.get("s3:GetObject", []) if "requests/" in json.dumps(r)], "never the subjects"


def test_the_hmac_key_derives_ids_and_only_the_bulk_parts_may_use_it(synth):
    keys = synth.resources("AWS::KMS::Key")
    hmac = [k for k, v in keys.items() if v["Properties"].get("KeySpec") == "HMAC_256"]
    assert len(hmac) == 1
    assert keys[hmac[0]]["Properties"]["KeyUsage"] == "GENERATE_VERIFY_MAC"
    for name in ("intake", "bulk", "bulk_item"):
        assert synth.function(name)[1]["Properties"]["Environment"]["Variables"]["BULK_MAC_KEY_ID"] == {
            "Fn::GetAtt": [hmac[0], "Arn"]
        }


def test_files_under_bulk_incoming_only_start_a_batch(synth):
    rules = [
        v
        for v in synth.resources("AWS::Events::Rule").values()
        if v["Properties"].get("EventPattern", {}).get("source") == ["aws.s3"]
    ]
    assert len(rules) == 1
    pattern = rules[0]["Properties"]["EventPattern"]
    assert pattern["detail-type"] == ["Object Created"]
    assert pattern["detail"]["object"]["key"] == [{"prefix": "bulk/incoming/"}]  # not bulk/results/, bulk/work/
    assert rules[0]["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": [synth.function("bulk")[0], "Arn"]}
    _, bucket = synth.archive_bucket()
    assert bucket["Properties"]["NotificationConfiguration"]["EventBridgeConfiguration"]["EventBridgeEnabled"] is True


def test_a_file_event_that_cannot_start_its_batch_lands_in_the_bulk_dead_letter_queue(synth):
    """Undelivered for a day (EventBridge's retries), or still failing after Lambda's own retries: the S3 event
    waits in the bulk DLQ, which is TLS-only, encrypted, alarmed and named in the outputs, never dropped."""
    coordinator_id, _ = synth.function("bulk")
    dlq_id, dlq = synth.queue("Bulk")
    dlq_arn = {"Fn::GetAtt": [dlq_id, "Arn"]}
    (rule,) = [
        v
        for v in synth.resources("AWS::Events::Rule").values()
        if v["Properties"].get("EventPattern", {}).get("source") == ["aws.s3"]
    ]
    (target,) = rule["Properties"]["Targets"]
    assert target["DeadLetterConfig"] == {"Arn": dlq_arn}
    assert target["RetryPolicy"] == {"MaximumEventAgeInSeconds": 86400, "MaximumRetryAttempts": 185}
    (config,) = [
        c["Properties"]
        for c in synth.resources("AWS::Lambda::EventInvokeConfig").values()
        if c["Properties"]["FunctionName"] == {"Ref": coordinator_id}
    ]
    assert config["DestinationConfig"]["OnFailure"]["Destination"] == dlq_arn
    assert config["MaximumRetryAttempts"] == 2
    role_id = synth.function("bulk")[1]["Properties"]["Role"]["Fn::GetAtt"][0]
    sends = [s for s in synth.role_statements(role_id) if "sqs:SendMessage" in synth.actions(s)]
    assert [s["Resource"] for s in sends] == [dlq_arn]
    # Encrypted (SQS-managed: the events hold object names only) and TLS only; EventBridge may send for this
    # rule alone.
    assert dlq["Properties"]["SqsManagedSseEnabled"] is True
    assert dlq["Properties"]["MessageRetentionPeriod"] == 14 * 86400
    (policy,) = [
        p for p in synth.resources("AWS::SQS::QueuePolicy").values() if {"Ref": dlq_id} in p["Properties"]["Queues"]
    ]
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in statements
    )
    (send,) = [s for s in statements if s["Effect"] == "Allow"]
    assert send["Principal"] == {"Service": "events.amazonaws.com"}
    rule_id = next(k for k, v in synth.resources("AWS::Events::Rule").items() if v == rule)
    assert send["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": [rule_id, "Arn"]}}}
    (alarm,) = [
        a["Properties"]
        for a in synth.resources("AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("Dimensions") == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}]
    ]
    assert alarm["AlarmName"] == "dsrflow-dev-bulk-dead-letters" and alarm["Threshold"] == 1
    assert "BulkDeadLetterQueueUrl" in synth.json["Outputs"]


def test_bulk_files_are_encrypted_and_expire_with_the_request_data(synth):
    _, bucket = synth.archive_bucket()
    rules = {r["Id"]: r for r in bucket["Properties"]["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-bulk"]["Prefix"] == "bulk/"
    assert rules["expire-bulk"]["ExpirationInDays"] == rules["expire-request-data"]["ExpirationInDays"]
