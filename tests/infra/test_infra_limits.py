"""Per-vendor limits (context vendorLimits → VENDOR_LIMITS, core/limits.py) and vendor callbacks (context
callbacks, core/callbacks.py): the settings reach exactly the functions that use them, each with access to its
own items of the ledger's table only (dynamodb:LeadingKeys), and nothing is granted without them."""

from __future__ import annotations

import json

import pytest

from infra.functions import CALLBACK_ITEM_ACTIONS, LIMIT_ITEM_ACTIONS, LIMIT_WAKERS

pytestmark = pytest.mark.slow

USERS = ("submit", "check", "collect", "record", "park", "sweep")


def _keyed_statements(synth, name: str, prefix: str) -> list[dict]:
    role = synth.function(name)[1]["Properties"]["Role"]["Fn::GetAtt"][0]
    return [s for s in synth.role_statements(role) if f'"{prefix}*"' in json.dumps(s.get("Condition", {}))]


def _limit_statements(synth, name: str) -> list[dict]:
    return _keyed_statements(synth, name, "LIMIT#")


def _wakes(synth, name: str) -> bool:
    role = synth.function(name)[1]["Properties"]["Role"]["Fn::GetAtt"][0]
    return any("states:SendTaskSuccess" in synth.actions(s) for s in synth.role_statements(role))


def test_limits_reach_exactly_their_users_with_the_limit_items_only(variant):
    assert set(LIMIT_ITEM_ACTIONS) == set(USERS)
    for name in USERS:
        env = variant.function(name)[1]["Properties"]["Environment"]["Variables"]
        assert json.loads(env["VENDOR_LIMITS"]) == {"qualifio": {"jobs": 2, "callsPerSecond": 5.0}}
        (statement,) = _limit_statements(variant, name)
        assert statement["Condition"] == {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["LIMIT#*"]}}
        assert set(variant.actions(statement)) == set(LIMIT_ITEM_ACTIONS[name])
        assert "dynamodb:Scan" not in variant.actions(statement)
        assert _wakes(variant, name) == (name in LIMIT_WAKERS)
    for name in ("intake", "finalize", "approval", "package"):
        env = variant.function(name)[1]["Properties"]["Environment"]["Variables"]
        assert "VENDOR_LIMITS" not in env and not _limit_statements(variant, name)


def test_without_limits_nothing_is_granted(synth):
    for name in USERS:
        env = synth.function(name)[1]["Properties"]["Environment"]["Variables"]
        assert "VENDOR_LIMITS" not in env
        assert not _limit_statements(synth, name)
    assert not _wakes(synth, "check") and not _wakes(synth, "sweep") and not _wakes(synth, "record")


def test_a_wrong_limit_fails_the_synth_naming_it(tmp_path):
    from infra.config import DeployConfigError
    from tests.infra.conftest import synthesize

    with pytest.raises(DeployConfigError, match=r"vendorLimits\.qualifio\.jobs"):
        synthesize(tmp_path / "a", {"skipLambdaDeps": "true", "vendorLimits": '{"qualifio": {"jobs": 0}}'})
    with pytest.raises(DeployConfigError, match="not enabled: acme"):
        synthesize(tmp_path / "b", {"skipLambdaDeps": "true", "vendorLimits": '{"acme": {"jobs": 1}}'})


def test_callbacks_reach_exactly_their_users_with_the_callback_items_only(synth):
    assert set(CALLBACK_ITEM_ACTIONS) == {"submit", "park", "callback"}
    for name, actions in CALLBACK_ITEM_ACTIONS.items():
        (statement,) = _keyed_statements(synth, name, "CALLBACK#")
        assert statement["Condition"] == {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["CALLBACK#*"]}}
        assert set(synth.actions(statement)) == set(actions)
    assert _wakes(synth, "park") and _wakes(synth, "callback") and not _wakes(synth, "submit")
    for name in ("intake", "check", "collect", "finalize", "approval", "record", "package", "sweep"):
        assert not _keyed_statements(synth, name, "CALLBACK#"), name
    env = synth.function("callback")[1]["Properties"]["Environment"]["Variables"]
    assert "VENDOR_SECRETS" not in env and "LEDGER_TABLE" in env


def test_callbacks_off_removes_the_route_and_the_grants(tmp_path):
    from tests.infra.conftest import synthesize

    off = synthesize(tmp_path, {"skipLambdaDeps": "true", "callbacks": "false"})
    methods = off.resources("AWS::ApiGateway::Method").values()
    assert all(m["Properties"]["AuthorizationType"] == "AWS_IAM" for m in methods)
    assert "CALLBACK_BASE_URL" not in off.function("submit")[1]["Properties"]["Environment"]["Variables"]
    for name in CALLBACK_ITEM_ACTIONS:
        assert not _keyed_statements(off, name, "CALLBACK#"), name
    assert not _wakes(off, "callback") and not _wakes(off, "park")
