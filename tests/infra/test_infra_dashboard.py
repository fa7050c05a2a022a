"""The CloudWatch dashboard (infra/dashboard.py): its name is a stack output, it plots what OPERATIONS.md promises,
and every dsrflow metric on it is one the functions put: same namespace, name and dimensions.

What the functions put is read from their source, not from a list kept by hand: every `add_metric(name=...)`
under functions/, its f-string placeholders expanded from the code's own vocabularies (the connector registry's
vendors, core.tasks.STEP_NAMES, the status words of core.domain / core.models / core.tasks.summarise). A
placeholder or an indirect name this test does not know fails it, so a new way of naming a metric is noticed.
"""

from __future__ import annotations

import ast
import json
import typing
from typing import Any

import pytest

from infra.config import FUNCTIONS_DIR

pytestmark = pytest.mark.slow

NAMESPACE = "dsrflow"  # POWERTOOLS_METRICS_NAMESPACE
DIMENSIONS = {"service": "dsrflow"}  # what Powertools writes for Metrics(service="dsrflow")
AWS_NAMESPACES = {"AWS/Lambda", "AWS/States", "AWS/SQS"}


# --- what the code emits ---------------------------------------------------------------------------------------


def _literals(annotation: Any) -> set[str]:
    return {a for a in typing.get_args(annotation) if isinstance(a, str)}


def _vocabulary() -> dict[str, set[str]]:
    """The values each f-string placeholder of an add_metric name stands for, from the code that produces them."""
    from connectors.registry import CONNECTORS
    from core import tasks
    from core.domain import Progress
    from core.models import OUTCOME_STATUSES

    vendors = set(CONNECTORS)
    finished = _literals(typing.get_args(typing.get_type_hints(tasks.summarise)["return"])[1])
    # job_task's status: the check's progress, collect's outcome, else "submitted" (handlers/observability.py).
    step_status = _literals(Progress.model_fields["status"].annotation) | set(OUTCOME_STATUSES) | {"submitted"}
    assert vendors and finished and step_status
    return {
        "task.vendor": vendors,
        "outcome['vendor']": vendors,
        "name": set(tasks.STEP_NAMES),  # job_task: the step function's __name__ (tasks.submit, check, collect)
        "status": step_status,
        "summary['status']": finished,  # finalize: core.tasks.summarise
        "outcome['status']": set(OUTCOME_STATUSES),  # record
    }


def _callee(call: ast.Call) -> str | None:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def _metric_argument(call: ast.Call) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == "name":
            return keyword.value
    return call.args[0] if call.args else None


def _expand(node: ast.JoinedStr, vocabulary: dict[str, set[str]], where: str) -> set[str]:
    names = {""}
    for part in node.values:
        if isinstance(part, ast.Constant):
            names = {n + str(part.value) for n in names}
            continue
        assert isinstance(part, ast.FormattedValue)
        expr = ast.unparse(part.value).replace('"', "'")
        assert expr in vocabulary, f"{where}: metric name placeholder {{{expr}}} is unknown to this test: add it"
        names = {n + value for n in names for value in vocabulary[expr]}
    return names


def _trees() -> dict[str, ast.Module]:
    return {
        str(path.relative_to(FUNCTIONS_DIR)): ast.parse(path.read_text())
        for path in sorted(FUNCTIONS_DIR.rglob("*.py"))
    }


def emitted_names() -> set[str]:
    """Every metric name the Lambda code can put."""
    from core.watch import METRICS as SWEEP_METRICS

    trees = _trees()
    # A metric function handed to core code, which calls it with the name: metric("LedgerWriteFailed").
    handed: set[str] = {
        arg.value
        for tree in trees.values()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and _callee(node) == "metric"
        for arg in node.args[:1]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
    }
    # Where add_metric gets its name as a variable: the names that variable takes.
    indirect = {
        "handlers/sweep.py": set(SWEEP_METRICS),  # core.watch.sweep calls metric(name, value) for each
        "handlers/runtime.py": handed,  # the ledger's metric (core/ledger.py)
    }
    vocabulary = _vocabulary()
    names: set[str] = set()
    for where, tree in trees.items():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and _callee(node) == "add_metric"):
                continue
            arg = _metric_argument(node)
            at = f"functions/{where}:{node.lineno}"
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.add(arg.value)
            elif isinstance(arg, ast.JoinedStr):
                names |= _expand(arg, vocabulary, at)
            else:
                assert where in indirect, f"{at}: add_metric with a name this test cannot read: teach it"
                names |= indirect[where]
    return names


# --- what the dashboard plots ----------------------------------------------------------------------------------


def _token(value: Any) -> str:
    """A CloudFormation token inside the body, as a readable string: ${Logical} or ${Logical.Attribute}."""
    if isinstance(value, dict) and "Ref" in value:
        return "${" + str(value["Ref"]) + "}"
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return "${" + ".".join(value["Fn::GetAtt"]) + "}"
    return "${" + json.dumps(value, sort_keys=True).replace('"', "'").replace("\\", "") + "}"


def dashboard(synth) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(logical id, properties, the parsed body) of the one dashboard."""
    logical, resource = synth.one("AWS::CloudWatch::Dashboard")
    props = resource["Properties"]
    body = props["DashboardBody"]
    if isinstance(body, dict):
        separator, parts = body["Fn::Join"]
        body = separator.join(p if isinstance(p, str) else _token(p) for p in parts)
    return logical, props, json.loads(body)


def plotted(body: dict[str, Any]) -> list[tuple[str, str, dict[str, str], dict[str, Any], str]]:
    """(namespace, name, dimensions, options, widget title) of every metric of every metric widget; math
    expressions' inputs included (they are plotted through the expression)."""
    found = []
    for widget in body["widgets"]:
        if widget["type"] != "metric":
            continue
        previous: list[Any] = []
        for entry in widget["properties"]["metrics"]:
            if isinstance(entry[0], dict):
                continue  # a math expression: its inputs are entries of their own
            strings = [e for e in entry if not isinstance(e, dict)]
            options = next((e for e in entry if isinstance(e, dict)), {})
            # CloudWatch's "." repeats the previous entry's value at that position.
            strings = [previous[i] if s == "." and i < len(previous) else s for i, s in enumerate(strings)]
            previous = strings
            namespace, name, *dims = strings
            assert len(dims) % 2 == 0, f"{widget['properties'].get('title')}: odd dimensions {dims}"
            found.append(
                (namespace, name, dict(zip(dims[::2], dims[1::2], strict=True)), options, widget["properties"]["title"])
            )
    return found


def _custom(synth) -> list[tuple[str, str, dict[str, str], dict[str, Any], str]]:
    return [m for m in plotted(dashboard(synth)[2]) if not m[0].startswith("AWS/")]


# --- tests -----------------------------------------------------------------------------------------------------


def test_the_dashboard_name_is_a_stack_output(synth):
    logical, props, _ = dashboard(synth)
    assert props["DashboardName"] == "dsrflow-dev"
    assert synth.json["Outputs"]["DashboardName"]["Value"] == {"Ref": logical}


def test_the_emitted_names_are_read_from_the_code():
    names = emitted_names()
    # Spot checks of each way a name is written: literal, f-string (job_task, finalize, record), indirect.
    for name in (
        "RequestsReceived",  # handlers/intake.py
        "RequestsPastDeadline",  # handlers/finalize.py
        "Requests_partially_failed",
        "elevate.collect.error",  # handlers/observability.py (job_task)
        "qualifio.check.duration",
        "bloomreach.check.pending",
        "bloomreach.time_to_complete",
        "elevate.failed",  # handlers/record.py
        "OpenRequests",  # handlers/sweep.py, through core.watch
        "LedgerWriteFailed",  # handlers/runtime.py, through core.ledger
    ):
        assert name in names, name
    # ... and it is a real check: names nobody puts are not in it.
    for name in ("Requests_received", "Requests_cancelled", "elevate.submit.errors", "acme.submit.error"):
        assert name not in names, name


def test_every_dsrflow_metric_plotted_is_one_the_code_emits(synth):
    names = emitted_names()
    custom = _custom(synth)
    assert len(custom) >= 20
    for namespace, name, dims, _, title in custom:
        assert namespace == NAMESPACE, f"{title}: {name} is in namespace {namespace}"
        assert name in names, f"{title}: {name} is plotted but no function puts it"
        assert dims == DIMENSIONS, f"{title}: {name} has dimensions {dims}, Powertools writes {DIMENSIONS}"


def test_the_functions_put_their_metrics_where_the_dashboard_reads_them(synth):
    """Namespace and dimension as deployed: every function's POWERTOOLS_METRICS_NAMESPACE, and every Powertools
    Metrics of the code built with service="dsrflow" (the `service` dimension)."""
    for fn in synth.resources("AWS::Lambda::Function").values():
        assert fn["Properties"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"] == NAMESPACE
    built = [
        (where, node)
        for where, tree in _trees().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and _callee(node) == "Metrics"
    ]
    assert built
    for where, node in built:
        service = {k.arg: k.value for k in node.keywords}.get("service")
        assert isinstance(service, ast.Constant) and service.value == DIMENSIONS["service"], f"functions/{where}"


def test_it_plots_requests_deadlines_and_each_vendors_steps(synth):
    custom = {
        (name, options.get("stat", "Average"), options.get("period", 300)) for _, name, _, options, _ in _custom(synth)
    }
    day, hour = 86400, 3600
    for name in ("RequestsReceived", "Requests_completed", "Requests_partially_failed", "Requests_failed"):
        assert (name, "Sum", day) in custom, name
    for name in ("OpenRequests", "RequestsDueSoon", "RequestsOverdue"):
        assert (name, "Maximum", hour) in custom, name
    for vendor in ("elevate", "bloomreach", "qualifio"):  # the dev stage's vendors
        for step in ("submit", "check", "collect"):
            assert (f"{vendor}.{step}.error", "Sum", hour) in custom
            assert (f"{vendor}.{step}.duration", "p95", hour) in custom
        assert (f"{vendor}.time_to_complete", "Average", day) in custom
        assert (f"{vendor}.time_to_complete", "Maximum", day) in custom


def test_it_plots_the_aws_metrics_of_the_functions_workflow_and_dead_letters(synth):
    aws = [m for m in plotted(dashboard(synth)[2]) if m[0].startswith("AWS/")]
    assert {m[0] for m in aws} == AWS_NAMESPACES
    functions = {"${" + k + "}" for k in synth.resources("AWS::Lambda::Function")}
    for metric, stat in (("Errors", "Sum"), ("Throttles", "Sum"), ("Duration", "p95")):
        plotted_for = {
            m[2]["FunctionName"] for m in aws if m[:2] == ("AWS/Lambda", metric) and m[3].get("stat") == stat
        }
        assert plotted_for == functions, metric
    machine, _ = synth.dsr_state_machine()
    states = {(m[1], m[2]["StateMachineArn"], m[3]["stat"]) for m in aws if m[0] == "AWS/States"}
    assert states == {
        ("ExecutionsFailed", "${" + machine + "}", "Sum"),
        ("ExecutionsTimedOut", "${" + machine + "}", "Sum"),
    }
    dlq = synth.json["Outputs"]["IntakeDeadLetterQueueUrl"]["Value"]["Ref"]
    (sqs,) = [m for m in aws if m[0] == "AWS/SQS"]
    assert sqs[1:3] == ("ApproximateNumberOfMessagesVisible", {"QueueName": "${" + dlq + ".QueueName}"})
    assert sqs[3]["stat"] == "Maximum"


def test_it_shows_every_alarm(synth):
    _, _, body = dashboard(synth)
    (widget,) = [w for w in body["widgets"] if w["type"] == "alarm"]
    shown = set(widget["properties"]["alarms"])
    assert shown == {"${" + k + ".Arn}" for k in synth.resources("AWS::CloudWatch::Alarm")}


def test_the_dashboard_follows_the_stage_and_its_vendors(variant):
    _, props, body = dashboard(variant)
    assert props["DashboardName"] == "dsrflow-prod"
    vendors = {name.split(".")[0] for _, name, _, _, _ in _custom(variant) if "." in name}
    assert vendors == {"elevate", "qualifio"}
    names = emitted_names()
    assert all(name in names for _, name, _, _, _ in _custom(variant))
