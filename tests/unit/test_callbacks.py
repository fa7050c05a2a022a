"""core/callbacks.py against moto's DynamoDB: the token is kept only as its hash, a callback wakes its branch
once whichever comes first (the call or the park), and anything else changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core import callbacks
from core.callbacks import Callbacks
from tests.unit.test_limits import TABLE, FakeSfn, moto_table

SOON = datetime.now(UTC) + timedelta(days=1)


@pytest.fixture
def ddb() -> Iterator[Any]:
    with moto_table() as client:
        yield client


def _register(book: Callbacks, token: str, until: datetime = SOON) -> str:
    return book.register(token, request_id="r-1", vendor="qualifio", action="export", attempt=1, until=until)


def test_tokens_are_unguessable_and_strictly_shaped():
    token = callbacks.mint()
    assert callbacks.valid(token) and len(token) == 43
    assert token != callbacks.mint()
    for bad in ("", "x" * 42, "x" * 44, "a/" + "x" * 41, "x" * 42 + "=", "../" + "x" * 40):
        assert not callbacks.valid(bad), bad


def test_only_the_hash_is_kept(ddb):
    book = Callbacks(ddb, TABLE)
    token = callbacks.mint()
    callback_id = _register(book, token)
    assert callback_id == callbacks.digest(token)[:32]
    assert token not in str(ddb.scan(TableName=TABLE)["Items"])


def test_a_callback_wakes_the_parked_branch_once(ddb):
    sfn = FakeSfn()
    book = Callbacks(ddb, TABLE, sfn=sfn)
    token = callbacks.mint()
    callback_id = _register(book, token)
    assert book.park(callback_id, "task-1") is False  # nothing came yet: it waits
    assert book.called(token) == "woken"
    assert sfn.woken == ["task-1"]
    assert book.called(token) == "repeated"  # again: acknowledged, wakes nothing
    assert book.park(callback_id, "task-2") is False  # a later wait of the same job is not woken by it again
    assert sfn.woken == ["task-1"]


def test_a_callback_before_the_park_wakes_the_branch_as_it_parks(ddb):
    sfn = FakeSfn()
    book = Callbacks(ddb, TABLE, sfn=sfn)
    token = callbacks.mint()
    callback_id = _register(book, token)
    assert book.called(token) == "recorded"
    assert book.park(callback_id, "task-1") is True
    assert sfn.woken == ["task-1"]


def test_unknown_and_expired_tokens_change_nothing(ddb):
    sfn = FakeSfn()
    book = Callbacks(ddb, TABLE, sfn=sfn)
    assert book.called(callbacks.mint()) == "unknown"
    token = callbacks.mint()
    _register(book, token, until=datetime.now(UTC) - timedelta(days=2))  # expired a day ago (MARGIN: 1 day)
    assert book.called(token) == "unknown"
    assert sfn.woken == []
    assert all("called_at" not in i for i in ddb.scan(TableName=TABLE)["Items"])
