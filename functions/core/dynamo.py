"""DynamoDB attribute values to and from Python, by boto3's rules (TypeSerializer, TypeDeserializer).

Here rather than imported from boto3: `boto3.dynamodb.types` imports boto3 itself, and with it s3transfer
(core/aws.py), for two small pure functions (issue 11, cold start). tests/unit/test_dynamo_codec.py holds
these to boto3's answers on generated values:

    None -> NULL, bool -> BOOL, int and Decimal -> N (a float is refused: DynamoDB numbers are decimal and a
    binary float would be rounded silently), str -> S, bytes -> B, a set of numbers, strings or bytes -> NS,
    SS or BS, a list or tuple -> L, a mapping -> M. N comes back as Decimal, B as bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from decimal import Clamped, Context, Decimal, Inexact, Overflow, Rounded, Underflow
from typing import Any

# DynamoDB's numbers: 38 significant digits, exponents -128..126, and any rounding is an error.
_NUMBERS = Context(Emin=-128, Emax=126, prec=38, traps=[Clamped, Overflow, Inexact, Rounded, Underflow])


def _number(value: Any) -> str:
    number = str(_NUMBERS.create_decimal(value))
    if number in ("Infinity", "-Infinity", "NaN", "sNaN"):
        raise TypeError("Infinity and NaN not supported")
    return number


def _kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, (int, Decimal)):
        return "N"
    if isinstance(value, float):
        raise TypeError("Float types are not supported. Use Decimal types instead.")
    if isinstance(value, str):
        return "S"
    if isinstance(value, (bytes, bytearray)):
        return "B"
    return None


def to_attr(value: Any) -> dict[str, Any]:
    """The attribute value DynamoDB's low-level API takes for `value`."""
    if value is None:
        return {"NULL": True}
    kind = _kind(value)
    if kind == "N":
        return {"N": _number(value)}
    if kind is not None:
        return {kind: bytes(value) if kind == "B" else value}
    if isinstance(value, Set):
        kinds = {_kind(v) for v in value}
        if len(kinds) == 1 and kinds <= {"N", "S", "B"}:
            (one,) = kinds
            items = [_number(v) if one == "N" else bytes(v) if one == "B" else v for v in value]
            return {f"{one}S": items}
    elif isinstance(value, Mapping):
        return {"M": {k: to_attr(v) for k, v in value.items()}}
    elif isinstance(value, (list, tuple)):
        return {"L": [to_attr(v) for v in value]}
    raise TypeError(f'Unsupported type "{type(value)}" for value "{value}"')


def from_attr(attr: Mapping[str, Any]) -> Any:
    """The Python value of one attribute value from DynamoDB's low-level API."""
    if not attr:
        raise TypeError("Value must be a nonempty dictionary whose key is a valid dynamodb type.")
    kind, value = next(iter(attr.items()))
    if kind == "S" or kind == "BOOL":
        return value
    if kind == "N":
        return _NUMBERS.create_decimal(value)
    if kind == "NULL":
        return None
    if kind == "M":
        return {k: from_attr(v) for k, v in value.items()}
    if kind == "L":
        return [from_attr(v) for v in value]
    if kind == "B":
        return bytes(value)
    if kind == "SS":
        return set(value)
    if kind == "NS":
        return {_NUMBERS.create_decimal(v) for v in value}
    if kind == "BS":
        return {bytes(v) for v in value}
    raise TypeError(f"Dynamodb type {kind} is not supported")
