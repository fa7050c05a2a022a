"""Every context setting changed at once (as `-c key=value` strings) reaches the template."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_stage_and_vendors(variant):
    assert variant.stack.stack_name == "dsrflow-prod"
    names = sorted(s["Properties"]["Name"] for s in variant.resources("AWS::SecretsManager::Secret").values())
    assert names == ["dsrflow/prod/vendors/elevate", "dsrflow/prod/vendors/qualifio"]
    env = variant.function("submit")[1]["Properties"]["Environment"]["Variables"]
    assert json.loads(env["VENDOR_SECRETS"]) == {
        "elevate": "dsrflow/prod/vendors/elevate",
        "qualifio": "dsrflow/prod/vendors/qualifio",
    }
    _, stage = variant.one("AWS::ApiGateway::Stage")
    assert stage["Properties"]["StageName"] == "prod"


def test_retention_and_removal(variant):
    _, archive = variant.archive_bucket()
    rules = {r["Id"]: r for r in archive["Properties"]["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-request-data"]["ExpirationInDays"] == 45
    assert archive["DeletionPolicy"] == "Delete"
    _, key = variant.archive_key()
    assert key["DeletionPolicy"] == "Delete"
    for group in variant.resources("AWS::Logs::LogGroup").values():
        assert group["Properties"]["RetentionInDays"] == 30


def test_custom_bus_source_and_detail_type(variant):
    _, rule = variant.crm_rule()
    assert rule["Properties"]["EventBusName"] == "crm-bus"
    assert rule["Properties"]["EventPattern"] == {"source": ["acme.crm"], "detail-type": ["Privacy Request"]}
    finalize = variant.function("finalize")[1]
    assert finalize["Properties"]["Environment"]["Variables"]["EVENT_BUS_NAME"] == "crm-bus"
    role = finalize["Properties"]["Role"]["Fn::GetAtt"][0]
    puts = [s for s in variant.role_statements(role) if s["Action"] == "events:PutEvents"]
    assert puts[0]["Resource"]["Fn::Join"][1][-1] == ":event-bus/crm-bus"
    (grant,) = variant.key_policy_grants("events.amazonaws.com")
    rule_arn = grant["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Join"][1]
    assert rule_arn[-1] == ":rule/crm-bus/dsrflow-prod-crm-requests"


def test_approval_mode_reaches_the_connector_functions(variant):
    for name in ("submit", "check", "collect"):
        assert variant.function(name)[1]["Properties"]["Environment"]["Variables"]["APPROVAL_MODE"] == "manual"


def test_account_logging_role_left_to_the_account_when_asked(variant):
    from aws_cdk.assertions import Annotations, Match

    assert variant.resources("AWS::ApiGateway::Account") == {}
    trusted = [
        r["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
        for r in variant.resources("AWS::IAM::Role").values()
    ]
    assert {"Service": "apigateway.amazonaws.com"} not in trusted
    _, stage = variant.one("AWS::ApiGateway::Stage")
    assert "AccessLogSetting" in stage["Properties"]  # logging stays on: the account provides the role
    annotations = Annotations.from_stack(variant.stack)
    assert annotations.find_error("*", Match.any_value()) == []


def test_alarms_notify_the_topic(variant):
    alarms = variant.resources("AWS::CloudWatch::Alarm")
    assert len(alarms) == 6  # infra/observability.py (3: both dead-letter queues, the executions), infra/watch.py (3)
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == ["arn:aws:sns:eu-west-1:123456789012:privacy-pager"]


def test_skip_lambda_deps_means_no_dependency_layer(variant):
    layers = variant.resources("AWS::Lambda::LayerVersion").values()
    assert [layer["Properties"]["Description"] for layer in layers] == [
        "the controller's text in the access package (context controllerText)"
    ]


def test_the_package_link_lifetime_and_the_controller_text_reach_their_functions(variant):
    intake = variant.function("intake")[1]["Properties"]["Environment"]["Variables"]
    assert intake["PACKAGE_URL_SECONDS"] == "900"
    package = variant.function("package")[1]["Properties"]
    assert package["Environment"]["Variables"]["CONTROLLER_TEXT_FILE"] == "/opt/dsrflow/controller.txt"
    layers = variant.resources("AWS::Lambda::LayerVersion")
    (text_id,) = [k for k, v in layers.items() if "controller" in v["Properties"]["Description"]]
    assert {"Ref": text_id} in package["Layers"]
    asset = variant.outdir / f"asset.{layers[text_id]['Properties']['Content']['S3Key'].removesuffix('.zip')}"
    assert (asset / "dsrflow" / "controller.txt").read_text().startswith("Acme Ltd")
    for name in ("intake", "collect", "finalize"):  # the text is the package function's alone
        assert {"Ref": text_id} not in variant.function(name)[1]["Properties"].get("Layers", [])
