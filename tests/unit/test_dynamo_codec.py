"""core.dynamo against boto3's TypeSerializer / TypeDeserializer, on generated values (issue 11: the ledger no
longer imports boto3 for them, so these hold the replacement to boto3's answers)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer
from hypothesis import given, settings
from hypothesis import strategies as st

from core.dynamo import from_attr, to_attr

# What DynamoDB can hold exactly: 38 significant digits, exponents within -128..126.
numbers = st.one_of(
    st.integers(min_value=-(10**37), max_value=10**37),
    st.decimals(allow_nan=False, allow_infinity=False, places=6, min_value=-(10**20), max_value=10**20),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=20), st.binary(max_size=20))
sets = st.one_of(
    st.frozensets(st.integers(-1000, 1000), min_size=1, max_size=5),
    st.frozensets(st.text(max_size=5), min_size=1, max_size=5),
    st.frozensets(st.binary(max_size=5), min_size=1, max_size=5),
)
values = st.recursive(
    st.one_of(scalars, sets),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)


def _sorted_sets(attr: Any) -> Any:
    """Set members come out in iteration order: compare them as sorted lists."""
    if isinstance(attr, dict):
        return {k: sorted(v) if k in ("SS", "NS", "BS") else _sorted_sets(v) for k, v in attr.items()}
    if isinstance(attr, list):
        return [_sorted_sets(v) for v in attr]
    return attr


def _plain(value: Any) -> Any:
    if isinstance(value, Binary):
        return bytes(value.value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, set):
        return {_plain(v) for v in value}
    return value


@settings(max_examples=300, deadline=None)
@given(values)
def test_serialized_as_boto3_serializes(value: Any) -> None:
    assert _sorted_sets(to_attr(value)) == _sorted_sets(TypeSerializer().serialize(value))


@settings(max_examples=300, deadline=None)
@given(values)
def test_deserialized_as_boto3_deserializes(value: Any) -> None:
    attr = TypeSerializer().serialize(value)
    assert from_attr(attr) == _plain(TypeDeserializer().deserialize(attr))


@pytest.mark.parametrize(
    "value", [1.5, float("nan"), Decimal("NaN"), Decimal("Infinity"), object(), Decimal("1." + "1" * 40)]
)
def test_what_dynamodb_cannot_hold_exactly_is_refused_as_boto3_refuses_it(value: Any) -> None:
    with pytest.raises(Exception) as ours:
        to_attr(value)
    with pytest.raises(Exception) as theirs:
        TypeSerializer().serialize(value)
    assert type(ours.value) is type(theirs.value)


def test_an_empty_set_is_refused_where_boto3_would_send_what_dynamodb_refuses() -> None:
    assert TypeSerializer().serialize(set()) == {"NS": []}  # DynamoDB answers ValidationException to it
    with pytest.raises(TypeError):
        to_attr(set())


def test_an_unknown_type_is_refused() -> None:
    with pytest.raises(TypeError, match="XX"):
        from_attr({"XX": "1"})
    with pytest.raises(TypeError):
        from_attr({})
