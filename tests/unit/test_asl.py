"""Static checks of statemachines/dsr.asl.json: the contract the handlers, the engine and CDK rely on."""

from __future__ import annotations

import json
import re

from core.errors import TRANSIENT_ERRORS
from statemachines import ASL_FILE as ASL
from statemachines import SUBSTITUTIONS



def walk(states: dict):
    for name, state in states.items():
        yield name, state, states
        for nested in (state.get("ItemProcessor"), state.get("Iterator"), *state.get("Branches", [])):
            if nested:
                yield from walk(nested["States"])


def test_substitutions_are_exactly_the_engine_and_stack_names():
    text = ASL.read_text()
    assert set(re.findall(r"\$\{(\w+)\}", text)) == set(SUBSTITUTIONS)


def test_every_task_has_a_catch_and_retries_lambda_errors():
    tasks = [(n, s) for n, s, _ in walk(json.loads(ASL.read_text())["States"]) if s["Type"] == "Task"]
    assert len(tasks) == 4
    for name, state in tasks:
        assert state.get("Catch"), name
        retried = {e for r in state["Retry"] for e in r["ErrorEquals"]}
        assert "Lambda.ServiceException" in retried, name


def test_vendor_tasks_retry_the_transient_errors_by_name():
    states = {n: s for n, s, _ in walk(json.loads(ASL.read_text())["States"])}
    for name in ("Submit vendor job", "Check vendor job", "Collect archives"):
        retried = {e for r in states[name]["Retry"] for e in r["ErrorEquals"]}
        assert "VendorTransientError" in retried
    collect = {e for r in states["Collect archives"]["Retry"] for e in r["ErrorEquals"]}
    assert set(TRANSIENT_ERRORS) <= collect


def test_every_next_exists_and_waits_use_the_connector_schedule():
    for name, state, scope in walk(json.loads(ASL.read_text())["States"]):
        targets = [state.get("Next"), state.get("Default")]
        targets += [c["Next"] for c in state.get("Choices", []) + state.get("Catch", [])]
        for target in filter(None, targets):
            assert target in scope, f"{name} -> {target}"
        if state["Type"] == "Wait":
            assert state["TimestampPath"] == "$.wait_until"


def test_export_runs_before_erase_one_action_at_a_time():
    states = {n: s for n, s, _ in walk(json.loads(ASL.read_text())["States"])}
    assert states["For each action (export, then erase)"]["MaxConcurrency"] == 1
