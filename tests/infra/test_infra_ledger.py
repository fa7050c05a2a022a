"""The request ledger table (infra/ledger.py) and each function's access to it (infra/functions.py)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

HANDLERS = ("intake", "submit", "check", "collect", "finalize", "approval", "record")  # sweep: test_infra_watch
# What each handler's code calls on the table (functions/core/ledger.py), written out here, not imported.
LEDGER_ACTIONS = {
    # received(), started(); the operator routes: decisions, retry claims, extensions, cancel (UpdateItem);
    # GET reads the item; Query: the audit trail and open gates (by pk), the list (indexes): QUERIES below.
    "intake": {"dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:Query"},
    # The deadline that caps each vendor job (GetItem); action(): the request item, an audit event.
    "submit": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
    "check": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
    "collect": {"dynamodb:PutItem", "dynamodb:UpdateItem"},
    "finalize": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},  # the deadline; finished()
    "approval": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},  # the deadline; the gate's token
    "record": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},  # a denial's gate; action()
}
# Where Query may go: the table itself (always by pk) and the two indexes; never Scan.
QUERIES = {"intake": {"table", "index/open-by-deadline", "index/by-status"}}


def _role_of(synth, name: str) -> str:
    return synth.function(name)[1]["Properties"]["Role"]["Fn::GetAtt"][0]


def test_table_keys_billing_recovery_ttl_and_encryption(synth):
    table_id, table = synth.one("AWS::DynamoDB::Table")
    key_id, _ = synth.archive_key()
    props = table["Properties"]
    assert props["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"] == {
        "SSEEnabled": True,
        "SSEType": "KMS",
        "KMSMasterKeyId": {"Fn::GetAtt": [key_id, "Arn"]},
    }
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert props["DeletionProtectionEnabled"] is True
    assert table["DeletionPolicy"] == "Retain" and table["UpdateReplacePolicy"] == "Retain"
    assert synth.json["Outputs"]["LedgerTableName"]["Value"] == {"Ref": table_id}


def test_indexes_for_open_requests_and_status(synth):
    _, table = synth.one("AWS::DynamoDB::Table")
    indexes = {
        i["IndexName"]: [(k["AttributeName"], k["KeyType"]) for k in i["KeySchema"]]
        for i in table["Properties"]["GlobalSecondaryIndexes"]
    }
    assert indexes == {
        "open-by-deadline": [("open_pk", "HASH"), ("deadline", "RANGE")],
        "by-status": [("status", "HASH"), ("received_at", "RANGE")],
    }
    types = {a["AttributeName"]: a["AttributeType"] for a in table["Properties"]["AttributeDefinitions"]}
    assert types == dict.fromkeys(("pk", "sk", "open_pk", "deadline", "status", "received_at"), "S")


def test_destroy_stage_drops_deletion_protection(variant):
    _, table = variant.one("AWS::DynamoDB::Table")
    assert table["Properties"]["DeletionProtectionEnabled"] is False
    assert table["DeletionPolicy"] == "Delete"


def test_functions_know_the_table_and_the_retention(synth):
    table_id, _ = synth.one("AWS::DynamoDB::Table")
    for name in HANDLERS:
        env = synth.function(name)[1]["Properties"]["Environment"]["Variables"]
        assert env["LEDGER_TABLE"] == {"Ref": table_id}
        assert env["LEDGER_RETENTION_DAYS"] == "1095"  # proofRetentionDays


@pytest.mark.parametrize("name", HANDLERS)
def test_dynamodb_access_is_exactly_what_the_handler_does(synth, name):
    table_id, _ = synth.one("AWS::DynamoDB::Table")
    granted: set[str] = set()
    queried: set[str] = set()
    table = {"Fn::GetAtt": [table_id, "Arn"]}
    for statement in synth.role_statements(_role_of(synth, name)):
        actions = [a for a in synth.actions(statement) if a.startswith("dynamodb:")]
        if not actions:
            continue
        if "dynamodb:LeadingKeys" in str(statement.get("Condition", {})):
            continue  # grants on the limit and callback items only: tests/infra/test_infra_limits.py
        assert "Condition" not in statement and "dynamodb:Scan" not in actions
        if actions == ["dynamodb:Query"]:
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            for r in resources:
                queried.add("table" if r == table else r["Fn::Join"][1][-1].lstrip("/"))
        else:
            assert statement["Resource"] == table, f"{name}: DynamoDB beyond the ledger"
        granted.update(actions)
    assert granted == LEDGER_ACTIONS[name]
    assert queried == QUERIES.get(name, set())


@pytest.mark.parametrize("name", HANDLERS)
def test_kms_for_the_ledger_only_through_dynamodb(synth, name):
    key_id, _ = synth.archive_key()
    via = [
        s
        for s in synth.role_statements(_role_of(synth, name))
        if "kms:ViaService" in s.get("Condition", {}).get("StringEquals", {})
    ]
    assert len(via) == 1, name
    assert synth.actions(via[0]) == ["kms:Decrypt"]
    assert via[0]["Resource"] == {"Fn::GetAtt": [key_id, "Arn"]}
    service = via[0]["Condition"]["StringEquals"]["kms:ViaService"]
    assert service == {"Fn::Join": ["", ["dynamodb.", {"Ref": "AWS::Region"}, ".amazonaws.com"]]}
