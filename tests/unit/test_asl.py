"""Static checks of statemachines/dsr.asl.json: the contract the handlers, the engine and CDK rely on."""

from __future__ import annotations

import json
import re

import core.errors
from core.errors import TRANSIENT_ERRORS, DsrError
from core.tasks import AWS_ERRORS
from statemachines import ASL_FILE as ASL
from statemachines import SUBSTITUTIONS

# Re-running these is safe (submit reconciles with its submission record, check only reads, collect reuses
# a stored archive), so each is retried exactly once on the errors that say "the function died".
RERUN_ONCE = {"Lambda.Unknown", "Sandbox.Timedout", "Lambda.ClientExecutionTimeoutException", "TaskCrashed"}


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
    # approval (ask, await), submit, the wait for a vendor slot, the wait for a vendor's callback, check,
    # collect, record, package, finalize
    assert len(tasks) == 10
    for name, state in tasks:
        assert state.get("Catch"), name
        if name == "Await the vendor's callback":
            # Not retried: any failure of the park falls back to the plain wait (polling), which costs fewer
            # history events than retries would (core/history.py).
            assert "Retry" not in state
            catch_all = next(c for c in state["Catch"] if c["ErrorEquals"] == ["States.ALL"])
            assert catch_all["Next"] == "Wait for vendor"
            continue
        retried = {e for r in state["Retry"] for e in r["ErrorEquals"]}
        assert "Lambda.ServiceException" in retried, name


def test_vendor_tasks_retry_the_transient_errors_by_name():
    states = {n: s for n, s, _ in walk(json.loads(ASL.read_text())["States"])}
    for name in ("Submit vendor job", "Check vendor job", "Collect archives"):
        retried = {e for r in states[name]["Retry"] for e in r["ErrorEquals"]}
        assert "VendorTransientError" in retried
    collect = {e for r in states["Collect archives"]["Retry"] for e in r["ErrorEquals"]}
    assert set(TRANSIENT_ERRORS) <= collect
    for name in ("Submit vendor job", "Check vendor job"):
        retried = {e for r in states[name]["Retry"] for e in r["ErrorEquals"]}
        assert set(TRANSIENT_ERRORS) - {"ArchiveTransferError"} <= retried


def test_job_tasks_rerun_once_when_the_function_died():
    states = {n: s for n, s, _ in walk(json.loads(ASL.read_text())["States"])}
    for name in ("Submit vendor job", "Check vendor job", "Collect archives"):
        once = [r for r in states[name]["Retry"] if RERUN_ONCE & set(r["ErrorEquals"])]
        assert len(once) == 1 and set(once[0]["ErrorEquals"]) == RERUN_ONCE, name
        assert once[0]["MaxAttempts"] == 1, name
        # A vendor's refusal is final: retrying VendorError would only repeat it (and re-create jobs).
        assert not any(
            {"VendorError", "States.ALL", "States.TaskFailed"} & set(r["ErrorEquals"]) for r in states[name]["Retry"]
        )


def test_every_error_name_is_raised_by_the_code_or_documented_by_aws():
    ours = {cls.__name__ for cls in vars(core.errors).values() if isinstance(cls, type) and issubclass(cls, DsrError)}
    for name, state, _ in walk(json.loads(ASL.read_text())["States"]):
        for rule in state.get("Retry", []) + state.get("Catch", []):
            for error in rule["ErrorEquals"]:
                assert error in ours or error in AWS_ERRORS or error == "States.ALL", f"{name}: {error}"


def test_failures_are_recorded_with_their_step():
    states = {n: s for n, s, _ in walk(json.loads(ASL.read_text())["States"])}
    expected = {"Submit vendor job": "submit", "Check vendor job": "check", "Collect archives": "collect"}
    for task, step in expected.items():
        target = states[task]["Catch"][0]["Next"]
        assert states[target]["Parameters"]["step"] == step, task
    assert states["Record vendor failure"]["Parameters"]["step"] == "check"


def test_every_next_exists_and_waits_use_the_connector_schedule():
    for name, state, scope in walk(json.loads(ASL.read_text())["States"]):
        targets = [state.get("Next"), state.get("Default")]
        targets += [c["Next"] for c in state.get("Choices", []) + state.get("Catch", [])]
        for target in filter(None, targets):
            assert target in scope, f"{name} -> {target}"
        if state["Type"] == "Wait":
            assert state["TimestampPath"] == "$.next_check_at"


def test_export_runs_before_erase_one_action_at_a_time():
    states = {n: s for n, s, _ in walk(json.loads(ASL.read_text())["States"])}
    assert states["For each action (export, then erase)"]["MaxConcurrency"] == 1


def test_finalize_retries_an_undelivered_event_with_backoff_before_the_catch_all():
    """finalize raises EventNotDelivered when EventBridge rejects the completion event (core/events.py): retried
    by name, with growing pauses, and ahead of States.TaskFailed (the first matching retrier is the one used)."""
    finalize = json.loads(ASL.read_text())["States"]["Finalize manifest"]
    names = [rule["ErrorEquals"] for rule in finalize["Retry"]]
    (rule,) = [r for r in finalize["Retry"] if "EventNotDelivered" in r["ErrorEquals"]]
    assert rule["ErrorEquals"] == ["EventNotDelivered"]
    assert rule["MaxAttempts"] >= 3 and rule["BackoffRate"] > 1 and rule["IntervalSeconds"] >= 5
    assert names.index(["EventNotDelivered"]) < names.index(["States.TaskFailed"])
    assert issubclass(core.errors.EventNotDelivered, DsrError)


def test_an_undelivered_completion_event_does_not_claim_the_manifest_is_missing():
    states = json.loads(ASL.read_text())["States"]
    catches = states["Finalize manifest"]["Catch"]
    assert catches[0]["ErrorEquals"] == ["EventNotDelivered"]
    assert states[catches[0]["Next"]] == {**states[catches[0]["Next"]], "Type": "Fail", "Error": "EventNotDelivered"}
    assert catches[-1]["ErrorEquals"] == ["States.ALL"] and catches[-1]["Next"] == "Manifest not written"


def test_a_lambda_throttle_is_waited_out_for_minutes_without_more_attempts():
    """A Lambda throttle (or service error) is retried with a long back-off, not more attempts: each attempt costs
    history events (core/history.py), waiting does not. The waits before the last attempt add up to over 10
    minutes (each capped by MaxDelaySeconds; full jitter spreads a burst of throttled branches)."""
    for name, state, _ in walk(json.loads(ASL.read_text())["States"]):
        for retrier in state.get("Retry", []):
            if "Lambda.TooManyRequestsException" not in retrier["ErrorEquals"]:
                continue
            assert retrier["MaxAttempts"] == 6, name
            delays = [
                min(retrier["IntervalSeconds"] * retrier["BackoffRate"] ** n, retrier["MaxDelaySeconds"])
                for n in range(retrier["MaxAttempts"])
            ]
            assert sum(delays) >= 600, (name, delays)
            assert retrier["JitterStrategy"] == "FULL", name
