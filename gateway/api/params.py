"""Request bodies of the Lambda API: their JSON shape and the model's constraints, with Lambda's wording. Pure.

Lambda checks in this order: the JSON shape first (a wrong type or an unknown field →
InvalidRequestContentException, in Jackson's words), then the model's constraints, all reported together in one
ValidationException (`1 validation error detected: Value '1200' at 'timeout' failed to satisfy constraint: ...`).
Each operation's own rules come after (InvalidParameterValueException), in its module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.errors import InvalidRequestContentException, ValidationException

JAVA_TYPES = {
    str: "java.lang.String",
    int: "java.lang.Integer",
    float: "java.lang.Double",
    bool: "java.lang.Boolean",
    dict: "Map",
}


class Violations:
    """Constraint violations, reported together as Lambda does."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, value: object, member: str, constraint: str, *, sensitive: bool = False) -> None:
        shown = "" if sensitive else "null " if value is None else f"'{value}' "
        self.items.append(f"Value {shown}at '{member}' failed to satisfy constraint: {constraint}")

    def raise_if_any(self) -> None:
        n = len(self.items)
        if n:
            plural = "s" if n > 1 else ""
            raise ValidationException(f"{n} validation error{plural} detected: " + "; ".join(self.items))


def shape_error(key: str, value: object, expected: type) -> InvalidRequestContentException:
    java = JAVA_TYPES.get(expected, expected.__name__)
    got = "null" if value is None else type(value).__name__
    return InvalidRequestContentException(
        f"Could not parse request body into json: Cannot deserialize value of type `{java}` from {got} value at '{key}'"
    )


def check_members(body: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    for key in body:
        if key not in known:
            raise InvalidRequestContentException(
                f'Could not parse request body into json: Unrecognized field "{key}" ({where}), not marked as ignorable'
            )


def opt(body: Mapping[str, Any], key: str, expected: type) -> Any:
    """`body[key]` if it is of type `expected` (a float member also takes a JSON integer), None if absent or null."""
    value = body.get(key)
    if value is None:
        return None
    if expected is float and type(value) is int:
        return float(value)
    # bool is an int in Python; JSON true is not a number
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise shape_error(key, value, expected)
    return value


def str_map(body: Mapping[str, Any], key: str) -> dict[str, str] | None:
    value: dict[str, str] | None = opt(body, key, dict)
    if value is not None and not all(isinstance(v, str) for v in value.values()):
        raise shape_error(key, value, dict)
    return value


def bounded(v: Violations, value: float | None, member: str, low: float, high: float) -> None:
    if value is None:
        return
    if value < low:
        v.add(value, member, f"Member must have value greater than or equal to {low}")
    elif value > high:
        v.add(value, member, f"Member must have value less than or equal to {high}")
