"""How requests arrive: the IAM-authenticated API, the CRM EventBridge rule, its DLQ and alarm."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_every_api_method_requires_iam(synth):
    methods = synth.resources("AWS::ApiGateway::Method")
    assert {m["Properties"]["HttpMethod"] for m in methods.values()} == {"POST", "GET"}
    for lid, method in methods.items():
        assert method["Properties"]["AuthorizationType"] == "AWS_IAM", lid


def test_routes_proxy_to_intake(synth):
    intake_id, _ = synth.function("intake")
    paths = {r["Properties"]["PathPart"] for r in synth.resources("AWS::ApiGateway::Resource").values()}
    assert paths == {"requests", "{id}"}
    for method in synth.resources("AWS::ApiGateway::Method").values():
        integration = method["Properties"]["Integration"]
        assert integration["Type"] == "AWS_PROXY"
        assert {"Fn::GetAtt": [intake_id, "Arn"]} in integration["Uri"]["Fn::Join"][1]


def test_requests_are_validated(synth):
    validator_id, validator = synth.one("AWS::ApiGateway::RequestValidator")
    assert validator["Properties"]["ValidateRequestBody"] is True
    assert validator["Properties"]["ValidateRequestParameters"] is True
    model_id, model = synth.one("AWS::ApiGateway::Model")
    schema = model["Properties"]["Schema"]
    assert set(schema["required"]) == {"actions", "subject"}
    actions = schema["properties"]["actions"]
    assert actions["type"] == "array" and actions["minItems"] == 1
    assert actions["items"] == {"type": "string", "enum": ["export", "erase"]}
    assert schema["properties"]["subject"]["type"] == "object"
    methods = {
        m["Properties"]["HttpMethod"]: m["Properties"] for m in synth.resources("AWS::ApiGateway::Method").values()
    }
    assert methods["POST"]["RequestValidatorId"] == {"Ref": validator_id}
    assert methods["POST"]["RequestModels"] == {"application/json": {"Ref": model_id}}
    assert methods["GET"]["RequestValidatorId"] == {"Ref": validator_id}
    assert methods["GET"]["RequestParameters"] == {"method.request.path.id": True}


def test_stage_throttled_traced_and_access_logged(synth):
    _, stage = synth.one("AWS::ApiGateway::Stage")
    props = stage["Properties"]
    assert props["TracingEnabled"] is True
    log_group = props["AccessLogSetting"]["DestinationArn"]["Fn::Join"][1][-1]["Ref"]
    assert synth.resources("AWS::Logs::LogGroup")[log_group]["Properties"]["RetentionInDays"] == 90
    assert "$context.requestId" in props["AccessLogSetting"]["Format"]
    (settings,) = props["MethodSettings"]
    assert settings["ThrottlingRateLimit"] > 0 and settings["ThrottlingBurstLimit"] > 0
    assert settings["LoggingLevel"] == "ERROR"
    assert settings["DataTraceEnabled"] is False, "data tracing would log request bodies (personal data)"


def test_api_gateway_account_logging_role(synth):
    """API Gateway rejects a logging stage until the region's account settings name a CloudWatch role."""
    account_id, account = synth.one("AWS::ApiGateway::Account")
    role_id = account["Properties"]["CloudWatchRoleArn"]["Fn::GetAtt"][0]
    role = synth.resources("AWS::IAM::Role")[role_id]
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "apigateway.amazonaws.com"
    }
    assert not role["Properties"].get("ManagedPolicyArns")
    # Retained: other APIs in the region rely on the setting once it exists.
    assert account["DeletionPolicy"] == "Retain" and role["DeletionPolicy"] == "Retain"
    _, stage = synth.one("AWS::ApiGateway::Stage")
    assert account_id in stage["DependsOn"]


def test_crm_rule_pattern_and_target(synth):
    intake_id, _ = synth.function("intake")
    dlq_id, _ = synth.one("AWS::SQS::Queue")
    _, rule = synth.one("AWS::Events::Rule")
    props = rule["Properties"]
    assert props["EventBusName"] == "default"
    assert props["EventPattern"] == {"source": ["crm"], "detail-type": ["Data Subject Request"]}
    (target,) = props["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [intake_id, "Arn"]}
    assert target["RetryPolicy"] == {"MaximumEventAgeInSeconds": 86400, "MaximumRetryAttempts": 185}
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [dlq_id, "Arn"]}}


def test_failed_async_invocations_of_intake_land_in_the_dlq(synth):
    intake_id, _ = synth.function("intake")
    dlq_id, _ = synth.one("AWS::SQS::Queue")
    _, config = synth.one("AWS::Lambda::EventInvokeConfig")
    props = config["Properties"]
    assert props["FunctionName"] == {"Ref": intake_id}
    assert props["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": [dlq_id, "Arn"]}
    # Lambda validates the role's sqs:SendMessage when the config is created, so the policy must exist first.
    role_id = synth.function("intake")[1]["Properties"]["Role"]["Fn::GetAtt"][0]
    policies = synth.resources("AWS::IAM::Policy").items()
    (policy_id,) = [k for k, p in policies if {"Ref": role_id} in p["Properties"]["Roles"]]
    assert policy_id in config.get("DependsOn", [])
    sends = [s for s in synth.role_statements(role_id) if "sqs:SendMessage" in synth.actions(s)]
    assert [s["Resource"] for s in sends] == [{"Fn::GetAtt": [dlq_id, "Arn"]}]


def test_dlq_encrypted_and_tls_only(synth):
    key_id, _ = synth.one("AWS::KMS::Key")
    dlq_id, dlq = synth.one("AWS::SQS::Queue")
    assert dlq["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    (policy,) = [
        p for p in synth.resources("AWS::SQS::QueuePolicy").values() if {"Ref": dlq_id} in p["Properties"]["Queues"]
    ]
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in statements
    )
    # The queue policy allows one principal, EventBridge, and only for the CRM rule (aws:SourceArn)...
    rule_id, _ = synth.one("AWS::Events::Rule")
    (send,) = [s for s in statements if s["Effect"] == "Allow"]
    assert send["Principal"] == {"Service": "events.amazonaws.com"}
    assert send["Action"] == "sqs:SendMessage"
    assert send["Resource"] == {"Fn::GetAtt": [dlq_id, "Arn"]}
    assert send["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": [rule_id, "Arn"]}}}
    # ... and may use the key for this rule only (key policy).
    (events_grant,) = synth.key_policy_grants("events.amazonaws.com")
    assert sorted(events_grant["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    rule_arn = events_grant["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Join"][1]
    assert rule_arn[-1] == ":rule/dsrflow-dev-crm-requests"


def test_dlq_depth_alarm(synth):
    dlq_id, _ = synth.one("AWS::SQS::Queue")
    alarms = [
        a["Properties"]
        for a in synth.resources("AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
    ]
    assert len(alarms) == 1
    alarm = alarms[0]
    assert alarm["Namespace"] == "AWS/SQS"
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}]
    assert alarm["Threshold"] == 1
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


def test_outputs(synth):
    outputs = synth.json["Outputs"]
    for name in ("ApiUrl", "StateMachineArn", "ArchiveBucketName", "EventBusName"):
        assert name in outputs
    secret_outputs = {v["Value"]["Ref"] for k, v in outputs.items() if k.startswith("SecretArn")}
    assert secret_outputs == set(synth.resources("AWS::SecretsManager::Secret"))


def test_intake_may_be_invoked_by_the_deployed_stage_and_the_crm_rule_only(synth):
    """No test-invoke-stage permission (CDK's LambdaIntegration default): TestInvokeMethod would reach intake
    with the management permission apigateway:POST, past the stage's IAM check, throttling and access logs."""
    intake_id, _ = synth.function("intake")
    stage_id, _ = synth.one("AWS::ApiGateway::Stage")
    rule_id, _ = synth.one("AWS::Events::Rule")
    permissions = list(synth.resources("AWS::Lambda::Permission").values())
    by_principal: dict[str, list[dict]] = {}
    for permission in permissions:
        props = permission["Properties"]
        assert props["FunctionName"] == {"Fn::GetAtt": [intake_id, "Arn"]}, "only intake is invoked from outside"
        assert props["Action"] == "lambda:InvokeFunction"
        by_principal.setdefault(props["Principal"], []).append(props)
    assert set(by_principal) == {"apigateway.amazonaws.com", "events.amazonaws.com"}
    api = by_principal["apigateway.amazonaws.com"]
    assert len(api) == 2  # POST /requests, GET /requests/{id}
    for props in api:
        parts = props["SourceArn"]["Fn::Join"][1]
        assert {"Ref": stage_id} in parts, parts
        assert not any(isinstance(p, str) and "test-invoke-stage" in p for p in parts)
    (crm,) = by_principal["events.amazonaws.com"]
    assert crm["SourceArn"] == {"Fn::GetAtt": [rule_id, "Arn"]}
