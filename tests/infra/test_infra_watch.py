"""The deadline watch (infra/watch.py): the hourly schedule into the sweep function, its alarms, and the sweep
role's exact access (Query on the open-by-deadline index only, UpdateItem on the table, PutEvents on the bus)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def _sweep(synth) -> tuple[str, dict]:
    return synth.function("sweep")


def _role(synth) -> str:
    return _sweep(synth)[1]["Properties"]["Role"]["Fn::GetAtt"][0]


def _alarms(synth) -> dict[str, dict]:
    return {a["Properties"]["AlarmName"]: a["Properties"] for a in synth.resources("AWS::CloudWatch::Alarm").values()}


def test_sweep_function_sizing_and_environment(synth):
    table_id, _ = synth.one("AWS::DynamoDB::Table")
    props = _sweep(synth)[1]["Properties"]
    assert props["MemorySize"] == 256 and props["Timeout"] == 120
    env = props["Environment"]["Variables"]
    assert env["EVENT_BUS_NAME"] == "default"
    assert env["LEDGER_TABLE"] == {"Ref": table_id}
    assert "VENDOR_SECRETS" not in env and "STATE_MACHINE_ARN" not in env and "APPROVAL_MODE" not in env


def test_an_hourly_schedule_invokes_the_sweep(synth):
    fn_id, _ = _sweep(synth)
    scheduled = [
        (k, r) for k, r in synth.resources("AWS::Events::Rule").items() if "ScheduleExpression" in r["Properties"]
    ]
    assert len(scheduled) == 1
    rule_id, rule = scheduled[0][0], scheduled[0][1]["Properties"]
    assert rule["ScheduleExpression"] == "rate(1 hour)"
    assert rule["State"] == "ENABLED"
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [fn_id, "Arn"]}
    permissions = [
        p["Properties"]
        for p in synth.resources("AWS::Lambda::Permission").values()
        if p["Properties"]["FunctionName"] == {"Fn::GetAtt": [fn_id, "Arn"]}
    ]
    assert [p["Principal"] for p in permissions] == ["events.amazonaws.com"]
    assert permissions[0]["SourceArn"] == {"Fn::GetAtt": [rule_id, "Arn"]}  # this rule only


def _powertools_metric(alarm: dict, name: str) -> None:
    assert alarm["Namespace"] == "dsrflow"  # POWERTOOLS_METRICS_NAMESPACE
    assert alarm["MetricName"] == name
    assert alarm["Dimensions"] == [{"Name": "service", "Value": "dsrflow"}]  # as Powertools writes it


def test_alarm_on_overdue_requests(synth):
    alarm = _alarms(synth)["dsrflow-dev-requests-overdue"]
    _powertools_metric(alarm, "RequestsOverdue")
    assert alarm["Statistic"] == "Maximum" and alarm["Period"] == 3600
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold" and alarm["Threshold"] == 0
    assert alarm["EvaluationPeriods"] == 1
    assert alarm["TreatMissingData"] == "notBreaching"


def test_alarm_on_requests_finished_past_their_deadline(synth):
    alarm = _alarms(synth)["dsrflow-dev-requests-past-deadline"]
    _powertools_metric(alarm, "RequestsPastDeadline")  # put by handlers/finalize.py
    assert alarm["Statistic"] == "Sum"
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold" and alarm["Threshold"] == 0
    assert alarm["TreatMissingData"] == "notBreaching"


def test_alarm_when_the_watch_itself_is_silent(synth):
    alarm = _alarms(synth)["dsrflow-dev-deadline-watch-silent"]
    _powertools_metric(alarm, "OpenRequests")  # put on every sweep, 0 included
    assert alarm["Statistic"] == "SampleCount" and alarm["Period"] == 3600
    assert alarm["ComparisonOperator"] == "LessThanThreshold" and alarm["Threshold"] == 1
    assert alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"] == 3
    assert alarm["TreatMissingData"] == "breaching"


def test_metric_names_match_what_the_code_puts():
    from core.watch import METRICS

    assert METRICS == ("OpenRequests", "RequestsDueSoon", "RequestsOverdue")


def test_no_alarm_actions_without_a_topic_and_the_topic_on_every_watch_alarm(synth, variant):
    for name in ("requests-overdue", "requests-past-deadline", "deadline-watch-silent"):
        assert "AlarmActions" not in _alarms(synth)[f"dsrflow-dev-{name}"]
        assert _alarms(variant)[f"dsrflow-prod-{name}"]["AlarmActions"] == [
            "arn:aws:sns:eu-west-1:123456789012:privacy-pager"
        ]


def test_sweep_role_has_exactly_its_access(synth):
    table_id, _ = synth.one("AWS::DynamoDB::Table")
    key_id, _ = synth.archive_key()
    fn_id, fn = _sweep(synth)
    log_group = fn["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
    granted: dict[str, list] = {}
    for statement in synth.role_statements(_role(synth)):
        assert statement["Effect"] == "Allow"
        for action in synth.actions(statement):
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            granted.setdefault(action, []).extend((r, json.dumps(statement.get("Condition"))) for r in resources)
    assert set(granted) == {
        "dynamodb:Query",
        "dynamodb:UpdateItem",
        "events:PutEvents",
        "kms:Decrypt",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
    }
    # Query on the open-by-deadline index only, never on the table (which would read every audit item).
    index = {"Fn::Join": ["", [{"Fn::GetAtt": [table_id, "Arn"]}, "/index/open-by-deadline"]]}
    assert granted["dynamodb:Query"] == [(index, "null")]
    assert granted["dynamodb:UpdateItem"] == [({"Fn::GetAtt": [table_id, "Arn"]}, "null")]
    ((bus, condition),) = granted["events:PutEvents"]
    assert bus["Fn::Join"][1][-1] == ":event-bus/default" and condition == "null"
    ((key, via),) = granted["kms:Decrypt"]
    assert key == {"Fn::GetAtt": [key_id, "Arn"]} and "kms:ViaService" in via and "dynamodb." in via
    for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
        assert [r for r, _ in granted[action]] == [{"Fn::GetAtt": [log_group, "Arn"]}]
    for action in ("xray:PutTraceSegments", "xray:PutTelemetryRecords"):
        assert [r for r, _ in granted[action]] == ["*"]


def test_no_function_scans_the_ledger(synth):
    """The sweep reads the open requests through the sparse index, never by scanning every item."""
    from handlers.catalog import HANDLERS

    for name in HANDLERS:
        role = synth.function(name)[1]["Properties"]["Role"]["Fn::GetAtt"][0]
        actions = {a for s in synth.role_statements(role) for a in synth.actions(s)}
        assert "dynamodb:Scan" not in actions, name


def test_the_variant_bus_is_the_one_the_sweep_writes_to(variant):
    env = variant.function("sweep")[1]["Properties"]["Environment"]["Variables"]
    assert env["EVENT_BUS_NAME"] == "crm-bus"
    role = variant.function("sweep")[1]["Properties"]["Role"]["Fn::GetAtt"][0]
    puts = [s for s in variant.role_statements(role) if "events:PutEvents" in variant.actions(s)]
    assert len(puts) == 1 and puts[0]["Resource"]["Fn::Join"][1][-1] == ":event-bus/crm-bus"
