"""core/limits.py against moto's DynamoDB: slots, the first-come queue with hand-over, the pace, the settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from core.errors import ConfigError
from core.limits import Limits, VendorBusy, VendorLimit, parse_limits

TABLE = "ledger"
SOON = datetime.now(UTC) + timedelta(days=1)


class FakeSfn:
    """Records wake-ups; tokens in `dead` answer like a branch that has moved on."""

    class exceptions:  # mirrors boto3's client.exceptions
        class TaskTimedOut(Exception): ...

        class InvalidToken(Exception): ...

        class TaskDoesNotExist(Exception): ...

    def __init__(self, dead: tuple[str, ...] = ()):
        self.woken: list[str] = []
        self.dead = set(dead)

    def send_task_success(self, taskToken: str, output: str) -> None:  # boto3's name
        if taskToken in self.dead:
            raise self.exceptions.TaskTimedOut()
        self.woken.append(taskToken)


@contextmanager
def moto_table() -> Iterator[Any]:
    """A pk/sk table in moto's DynamoDB, shaped like the ledger's (test_callbacks.py uses it too)."""
    with mock_aws():
        client = boto3.client("dynamodb", region_name="eu-west-1")
        client.create_table(
            TableName=TABLE,
            AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("pk", "sk")],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield client


@pytest.fixture
def ddb() -> Iterator[Any]:
    with moto_table() as client:
        yield client


def limits(ddb: Any, sfn: Any = None, **kw: Any) -> Limits:
    return Limits(ddb, TABLE, {"qualifio": VendorLimit(jobs=2, **kw)}, sfn=sfn or FakeSfn())


def test_slots_hold_the_limit_and_a_rerun_keeps_its_own(ddb):
    lim = limits(ddb)
    assert lim.acquire("qualifio", "a#1#export", SOON)
    assert lim.acquire("qualifio", "b#1#export", SOON)
    assert not lim.acquire("qualifio", "c#1#export", SOON)
    assert lim.acquire("qualifio", "a#1#export", SOON)  # the same submit again: its slot
    assert lim.acquire("elevate", "x#1#export", SOON)  # no limit for elevate


def test_a_limited_submit_reads_the_vendors_items_once_when_nobody_waits(ddb):
    queries: list[str] = []
    ddb.meta.events.register("before-call.dynamodb.Query", lambda **kw: queries.append("query"))
    lim = limits(ddb)
    assert lim.acquire("qualifio", "a#1#export", SOON)
    assert queries == ["query"]  # settle's read serves acquire too
    assert lim.acquire("qualifio", "b#1#export", SOON)
    assert not lim.acquire("qualifio", "c#1#export", SOON)
    assert len(queries) == 3


def test_an_expired_lease_frees_its_slot(ddb):
    lim = limits(ddb)
    past = datetime.now(UTC) - timedelta(days=1)
    assert lim.acquire("qualifio", "a#1#export", past - timedelta(hours=2))  # lease ended an hour ago
    assert lim.acquire("qualifio", "b#1#export", SOON)
    assert lim.acquire("qualifio", "c#1#export", SOON)


def test_a_freed_slot_goes_to_the_oldest_waiter_before_any_newcomer(ddb):
    sfn = FakeSfn()
    lim = limits(ddb, sfn)
    assert lim.acquire("qualifio", "a#1#export", SOON) and lim.acquire("qualifio", "b#1#export", SOON)
    t0 = datetime.now(UTC)
    assert not lim.acquire("qualifio", "c#1#export", SOON)
    lim.park("qualifio", "c#1#export", "token-c", since=t0, until=SOON)
    assert not lim.acquire("qualifio", "d#1#export", SOON)
    lim.park("qualifio", "d#1#export", "token-d", since=t0 + timedelta(seconds=1), until=SOON)
    assert sfn.woken == []

    assert lim.release("qualifio", "a#1#export") == 1
    assert sfn.woken == ["token-c"]  # handed over and woken, oldest first
    assert not lim.acquire("qualifio", "e#1#export", SOON)  # a newcomer cannot jump the queue
    assert lim.acquire("qualifio", "c#1#export", SOON)  # the woken waiter finds its slot

    lim.release("qualifio", "b#1#export")
    assert sfn.woken == ["token-c", "token-d"]


def test_a_waiter_that_moved_on_is_dropped_and_the_next_one_served(ddb):
    sfn = FakeSfn(dead=("token-gone",))
    lim = limits(ddb, sfn)
    assert lim.acquire("qualifio", "a#1#export", SOON) and lim.acquire("qualifio", "b#1#export", SOON)
    t0 = datetime.now(UTC)
    lim.park("qualifio", "gone#1#export", "token-gone", since=t0, until=SOON)
    lim.park("qualifio", "next#1#export", "token-next", since=t0 + timedelta(seconds=1), until=SOON)
    lim.release("qualifio", "a#1#export")
    assert sfn.woken == ["token-next"]
    assert lim.acquire("qualifio", "next#1#export", SOON)
    assert not lim.acquire("qualifio", "z#1#export", SOON)  # both slots held: b and next


def test_park_wakes_at_once_when_a_slot_was_freed_meanwhile(ddb):
    sfn = FakeSfn()
    lim = limits(ddb, sfn)
    lim.park("qualifio", "c#1#export", "token-c", since=datetime.now(UTC), until=SOON)
    assert sfn.woken == ["token-c"]


def test_the_pace_spaces_calls_and_refuses_a_wait_longer_than_allowed(ddb):
    now = [1000.0]
    slept: list[float] = []
    lim = Limits(
        ddb,
        TABLE,
        {"bloomreach": VendorLimit(calls_per_second=2)},
        clock=lambda: now[0],
        sleep=slept.append,
    )
    assert lim.pace("bloomreach", max_wait=5) == 0
    assert lim.pace("bloomreach", max_wait=5) == pytest.approx(0.5)
    assert lim.pace("bloomreach", max_wait=5) == pytest.approx(1.0)
    assert slept == [pytest.approx(0.5), pytest.approx(1.0)]
    with pytest.raises(VendorBusy, match="2 calls per second"):
        lim.pace("bloomreach", max_wait=1.2)  # the next turn is 1.5 s away: nothing reserved
    now[0] += 10
    assert lim.pace("bloomreach", max_wait=0) == 0
    assert lim.pace("qualifio", max_wait=0) == 0  # not paced


def test_limits_settings_name_the_wrong_field():
    assert parse_limits('{"qualifio": {"jobs": 2, "callsPerSecond": 5}}')["qualifio"].calls_per_second == 5
    assert parse_limits(None) == {}
    with pytest.raises(ConfigError, match="VENDOR_LIMITS.qualifio.jobs"):
        parse_limits({"qualifio": {"jobs": 0}})
    with pytest.raises(ConfigError, match="VENDOR_LIMITS.qualifio.slots"):
        parse_limits({"qualifio": {"slots": 2}})
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_limits("{")
