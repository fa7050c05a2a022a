"""How requests arrive: the IAM-authenticated API, the CRM EventBridge rule, its DLQ and alarm."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def _routes(synth) -> dict[tuple[str, str], dict]:
    """{(METHOD, /full/path): method properties}, the paths rebuilt from each resource's parent chain."""
    resources = synth.resources("AWS::ApiGateway::Resource")

    def path(ref: dict) -> str:
        if "Ref" not in ref:  # Fn::GetAtt [api, RootResourceId]
            return ""
        props = resources[ref["Ref"]]["Properties"]
        return f"{path(props['ParentId'])}/{props['PathPart']}"

    return {
        (m["Properties"]["HttpMethod"], path(m["Properties"]["ResourceId"])): m["Properties"]
        for m in synth.resources("AWS::ApiGateway::Method").values()
        if path(m["Properties"]["ResourceId"]) != CALLBACK  # the vendors' route: test_the_callback_route_*
    }


CALLBACK = "/callbacks/{token}"


def _callback_method(synth) -> tuple[str, dict]:
    resources = synth.resources("AWS::ApiGateway::Resource")
    found = [
        (lid, m)
        for lid, m in synth.resources("AWS::ApiGateway::Method").items()
        if resources.get(m["Properties"]["ResourceId"].get("Ref", ""), {}).get("Properties", {}).get("PathPart")
        == "{token}"
    ]
    assert len(found) == 1
    return found[0]


def _document_operations() -> dict[tuple[str, str], dict]:
    from infra.triggers import api_document

    return {
        (verb.upper(), path): operation
        for path, operations in api_document()["paths"].items()
        for verb, operation in operations.items()
    }


# Every route of issue 9: the document must hold them all (tests/unit/test_openapi.py checks the same of the code).
ROUTES = {
    ("POST", "/requests"),
    ("POST", "/requests/bulk"),
    ("GET", "/requests"),
    ("GET", "/requests/{request_id}"),
    ("GET", "/requests/{request_id}/audit"),
    ("GET", "/requests/{request_id}/package"),
    *{("POST", f"/requests/{{request_id}}/{action}") for action in ("approve", "deny", "retry", "cancel", "extend")},
}


def test_every_api_method_requires_iam_but_the_vendors_callback(synth):
    methods = synth.resources("AWS::ApiGateway::Method")
    assert {m["Properties"]["HttpMethod"] for m in methods.values()} == {"POST", "GET"}
    callback_id, _ = _callback_method(synth)
    for lid, method in methods.items():
        expected = "NONE" if lid == callback_id else "AWS_IAM"
        assert method["Properties"]["AuthorizationType"] == expected, lid


def test_the_callback_route_is_the_callback_functions_alone_throttled_apart(synth):
    """GET /callbacks/{token}: unsigned (a vendor cannot sign), proxied to the callback function (not intake),
    the token required, with a throttle lower than the signed routes'."""
    callback_fn, _ = synth.function("callback")
    _, method = _callback_method(synth)
    props = method["Properties"]
    assert props["HttpMethod"] == "GET" and props["AuthorizationType"] == "NONE"
    assert props["RequestParameters"] == {"method.request.path.token": True}
    assert {"Fn::GetAtt": [callback_fn, "Arn"]} in props["Integration"]["Uri"]["Fn::Join"][1]
    _, stage = synth.one("AWS::ApiGateway::Stage")
    settings = {s["ResourcePath"]: s for s in stage["Properties"]["MethodSettings"]}
    own, every = settings["/~1callbacks~1{token}"], settings["/*"]
    assert own["HttpMethod"] == "GET" and own["DataTraceEnabled"] is False
    assert own["ThrottlingRateLimit"] < every["ThrottlingRateLimit"]
    assert own["ThrottlingBurstLimit"] < every["ThrottlingBurstLimit"]
    # The vendor's URL: this API's stage, /callbacks/, built from the API's id.
    submit = synth.function("submit")[1]["Properties"]["Environment"]["Variables"]
    api_id, _ = synth.one("AWS::ApiGateway::RestApi")
    parts = submit["CALLBACK_BASE_URL"]["Fn::Join"][1]
    assert {"Ref": api_id} in parts and parts[-1].endswith("/dev/callbacks/")


def test_the_api_has_exactly_the_documents_routes_each_proxied_to_intake(synth):
    intake_id, _ = synth.function("intake")
    routes = _routes(synth)
    assert set(routes) == set(_document_operations()) == ROUTES
    for key, method in routes.items():
        integration = method["Integration"]
        assert integration["Type"] == "AWS_PROXY", key
        assert {"Fn::GetAtt": [intake_id, "Arn"]} in integration["Uri"]["Fn::Join"][1], key
        assert method["OperationName"] == _document_operations()[key]["operationId"]


def test_request_validation_is_the_documents(synth):
    """Each method validates what the OpenAPI document declares: its parameters (required ones enforced) and,
    where the body is required, a model holding the document's body schema in draft 4 (never stricter)."""
    from infra.triggers import api_document, gateway_schema

    components = api_document()["components"]["schemas"]
    validator_id, validator = synth.one("AWS::ApiGateway::RequestValidator")
    assert validator["Properties"]["ValidateRequestBody"] is True
    assert validator["Properties"]["ValidateRequestParameters"] is True
    models = {
        m["Properties"]["Name"]: (k, m["Properties"]) for k, m in synth.resources("AWS::ApiGateway::Model").items()
    }
    assert set(models) == {"DsrRequest", "Denial", "Extension"}
    for key, method in _routes(synth).items():
        operation = _document_operations()[key]
        assert method["RequestValidatorId"] == {"Ref": validator_id}, key
        location = {"query": "querystring", "path": "path"}
        expected = {
            f"method.request.{location[p['in']]}.{p['name']}": p["required"] for p in operation.get("parameters", [])
        }
        assert method.get("RequestParameters", {}) == expected, key
        body = operation.get("requestBody")
        if body and body.get("required") and "application/json" in body["content"]:
            schema = body["content"]["application/json"]["schema"]
            name = schema["$ref"].rsplit("/", 1)[-1] if "$ref" in schema else schema["title"]
            model_id, model = models[name]
            assert method["RequestModels"] == {"application/json": {"Ref": model_id}}, key
            built = {k: v for k, v in model["Schema"].items() if k not in ("$schema", "title")}
            assert built == gateway_schema(schema, components), key
            assert model["Schema"]["$schema"] == "http://json-schema.org/draft-04/schema#"
        else:  # an optional body (approve, retry, cancel), none, or JSON Lines (bulk): intake alone validates it
            assert "RequestModels" not in method, key
    assert "RequestModels" not in _routes(synth)[("POST", "/requests/bulk")]
    # What the old hand-written model checked is still checked, now from the document.
    request = models["DsrRequest"][1]["Schema"]
    assert set(request["required"]) == {"actions", "subject"}
    assert request["additionalProperties"] is False
    actions = request["properties"]["actions"]
    assert actions["type"] == "array" and actions["minItems"] == 1 and actions["maxItems"] == 2
    assert actions["items"] == {"type": "string", "enum": ["export", "erase"]}
    assert request["properties"]["subject"]["type"] == "object"
    extension = models["Extension"][1]["Schema"]
    assert extension["properties"]["days"] == {"type": "integer", "minimum": 1, "maximum": 60}


def test_api_gateways_own_400s_keep_intakes_error_body(synth):
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in synth.resources("AWS::ApiGateway::GatewayResponse").values()
    }
    for kind in ("BAD_REQUEST_BODY", "BAD_REQUEST_PARAMETERS"):
        body = json.loads(responses[kind]["ResponseTemplates"]["application/json"])
        assert responses[kind]["StatusCode"] == "400"
        assert body["error"] == "invalid request" and [set(f) for f in body["fields"]] == [{"field", "message"}]
        assert "$" not in json.dumps(body), "no $context.error.validationErrorString: it may quote the value"


def test_stage_throttled_traced_and_access_logged(synth):
    _, stage = synth.one("AWS::ApiGateway::Stage")
    props = stage["Properties"]
    assert props["TracingEnabled"] is True
    log_group = props["AccessLogSetting"]["DestinationArn"]["Fn::Join"][1][-1]["Ref"]
    assert synth.resources("AWS::Logs::LogGroup")[log_group]["Properties"]["RetentionInDays"] == 90
    assert "$context.requestId" in props["AccessLogSetting"]["Format"]
    settings = next(s for s in props["MethodSettings"] if s["ResourcePath"] == "/*")
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
    dlq_id, _ = synth.queue("Triggers")
    _, rule = synth.crm_rule()
    props = rule["Properties"]
    assert props["EventBusName"] == "default"
    assert props["EventPattern"] == {"source": ["crm"], "detail-type": ["Data Subject Request"]}
    (target,) = props["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [intake_id, "Arn"]}
    assert target["RetryPolicy"] == {"MaximumEventAgeInSeconds": 86400, "MaximumRetryAttempts": 185}
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [dlq_id, "Arn"]}}


def test_failed_async_invocations_of_intake_land_in_the_dlq(synth):
    intake_id, _ = synth.function("intake")
    dlq_id, _ = synth.queue("Triggers")
    (config,) = [
        c
        for c in synth.resources("AWS::Lambda::EventInvokeConfig").values()
        if c["Properties"]["FunctionName"] == {"Ref": intake_id}
    ]
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
    key_id, _ = synth.archive_key()
    dlq_id, dlq = synth.queue("Triggers")
    assert dlq["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    (policy,) = [
        p for p in synth.resources("AWS::SQS::QueuePolicy").values() if {"Ref": dlq_id} in p["Properties"]["Queues"]
    ]
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in statements
    )
    # The queue policy allows one principal, EventBridge, and only for the CRM rule (aws:SourceArn)...
    rule_id, _ = synth.crm_rule()
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
    dlq_id, _ = synth.queue("Triggers")
    alarms = [
        a["Properties"]
        for a in synth.resources("AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
        and a["Properties"]["Dimensions"][0]["Value"] == {"Fn::GetAtt": [dlq_id, "QueueName"]}
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
    rule_id, _ = synth.crm_rule()
    permissions = list(synth.resources("AWS::Lambda::Permission").values())
    by_principal: dict[str, list[dict]] = {}
    sweep = {"Fn::GetAtt": [synth.function("sweep")[0], "Arn"]}
    callback = {"Fn::GetAtt": [synth.function("callback")[0], "Arn"]}
    callbacks = []
    for permission in permissions:
        props = permission["Properties"]
        if props["FunctionName"] == sweep:  # its hourly schedule only: tests/infra/test_infra_watch.py
            continue
        if props["FunctionName"] == callback:  # the vendors' route, from the deployed stage only
            callbacks.append(props)
            continue
        if props["FunctionName"] == {"Fn::GetAtt": [synth.function("bulk")[0], "Arn"]}:  # test_infra_bulk.py
            continue
        assert props["FunctionName"] == {"Fn::GetAtt": [intake_id, "Arn"]}, "only intake is invoked from outside"
        assert props["Action"] == "lambda:InvokeFunction"
        by_principal.setdefault(props["Principal"], []).append(props)
    assert set(by_principal) == {"apigateway.amazonaws.com", "events.amazonaws.com"}
    api = by_principal["apigateway.amazonaws.com"]
    assert len(api) == len(ROUTES)  # one per method
    for props in api:
        parts = props["SourceArn"]["Fn::Join"][1]
        assert {"Ref": stage_id} in parts, parts
        assert not any(isinstance(p, str) and "test-invoke-stage" in p for p in parts)
    (crm,) = by_principal["events.amazonaws.com"]
    assert crm["SourceArn"] == {"Fn::GetAtt": [rule_id, "Arn"]}
    (only,) = callbacks
    assert only["Principal"] == "apigateway.amazonaws.com" and {"Ref": stage_id} in only["SourceArn"]["Fn::Join"][1]
