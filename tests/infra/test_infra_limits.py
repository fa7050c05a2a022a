"""Per-vendor limits (context vendorLimits → VENDOR_LIMITS, core/limits.py): the settings reach exactly the
functions that use them, with access to the limit items only, and nothing is granted without them."""

from __future__ import annotations

import json

import pytest

from infra.functions import LIMIT_ITEM_ACTIONS, LIMIT_WAKERS

pytestmark = pytest.mark.slow

USERS = ("submit", "check", "collect", "record", "park", "sweep")


def _limit_statements(synth, name: str) -> list[dict]:
    role = synth.function(name)[1]["Properties"]["Role"]["Fn::GetAtt"][0]
    return [s for s in synth.role_statements(role) if "dynamodb:LeadingKeys" in json.dumps(s.get("Condition", {}))]


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
    assert not _wakes(synth, "park") and not _wakes(synth, "check")


def test_a_wrong_limit_fails_the_synth_naming_it(tmp_path):
    from infra.config import DeployConfigError
    from tests.infra.conftest import synthesize

    with pytest.raises(DeployConfigError, match=r"vendorLimits\.qualifio\.jobs"):
        synthesize(tmp_path / "a", {"skipLambdaDeps": "true", "vendorLimits": '{"qualifio": {"jobs": 0}}'})
    with pytest.raises(DeployConfigError, match="not enabled: acme"):
        synthesize(tmp_path / "b", {"skipLambdaDeps": "true", "vendorLimits": '{"acme": {"jobs": 1}}'})
