"""FilterCriteria: Lambda's filter pattern language (EventBridge's), compiled once, matched per record. Pure.

A pattern is a JSON object. Each key names a field of the record; its value is either an object (a pattern for the
nested object) or an array of matchers, any of which may match. A field whose value in the record is an array
matches when any element does. Matchers:

- a string, number, boolean or null: that exact value (numbers compare numerically: 5 matches 5.0);
- `{"prefix": "s"}`, `{"suffix": "s"}` (either may hold `{"equals-ignore-case": "s"}`), `{"equals-ignore-case": "s"}`;
- `{"anything-but": v}` with v a value, an array of values, or `{"prefix": "s"}` / `{"suffix": "s"}`;
- `{"numeric": [">", 0, "<=", 5]}`: one or two comparisons (`=`, `<`, `<=`, `>`, `>=`) on a number;
- `{"exists": true|false}`: the field is there (with a value that is not an object) or not.

`{"$or": [pattern, ...]}` at any level matches when one of its patterns does (besides the other keys there). Every
matcher but `exists: false` needs the field to be there. A record passes the FilterCriteria when any filter matches
(`Filters.match`); with no filters every record passes.

`compile_pattern` raises InvalidParameterValueException with a reason for a malformed pattern (not JSON, not an
object, a leaf that is not an array, an empty array, an unknown operator, a wrong operand), as Lambda does at
Create/Update. Matching never raises and takes time linear in the pattern's size times the record's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import InvalidParameterValueException

#: Lambda's limits: patterns per mapping and their length (the model's Pattern max)
MAX_FILTERS = 5
MAX_PATTERN_LENGTH = 4096
#: nesting deeper than this is refused (a pattern is configuration, not data; keeps matching cheap)
MAX_DEPTH = 32

_MISSING = object()
_NUMERIC_OPS: dict[str, Callable[[float, float], bool]] = {
    "=": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}

#: matches one value of the record (`_MISSING` when the field is absent)
Leaf = Callable[[Any], bool]
#: matches an object of the record
Node = Callable[[Any], bool]


class PatternError(InvalidParameterValueException):
    """A malformed filter pattern (answered 400 InvalidParameterValueException)."""


def _bad(reason: str) -> PatternError:
    return PatternError(f"Invalid filter pattern definition. {reason}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(expected: Any) -> Leaf:
    if _is_number(expected):
        return lambda v: _is_number(v) and v == expected
    if isinstance(expected, bool):
        return lambda v: isinstance(v, bool) and v is expected
    return lambda v: type(v) is type(expected) and v == expected


def _string_operand(value: Any, name: str) -> tuple[str, bool]:
    """(operand, ignore_case) of prefix/suffix: a string or {"equals-ignore-case": string}."""
    if isinstance(value, str):
        return value, False
    if (
        isinstance(value, dict)
        and list(value) == ["equals-ignore-case"]
        and isinstance(value["equals-ignore-case"], str)
    ):
        return value["equals-ignore-case"], True
    raise _bad(f'"{name}" takes a string.')


def _affix(name: str, operand: Any) -> Leaf:
    text, fold = _string_operand(operand, name)
    if fold:
        text = text.casefold()
    test = str.startswith if name == "prefix" else str.endswith

    def match(v: Any) -> bool:
        return isinstance(v, str) and test(v.casefold() if fold else v, text)

    return match


def _numeric(operand: Any) -> Leaf:
    if not isinstance(operand, list) or len(operand) not in (2, 4):
        raise _bad('"numeric" takes one or two comparisons, e.g. [">", 0, "<=", 5].')
    checks: list[tuple[Callable[[float, float], bool], float]] = []
    for op, bound in zip(operand[::2], operand[1::2], strict=True):
        if op not in _NUMERIC_OPS or not _is_number(bound):
            raise _bad(f'"numeric": {op!r} {bound!r} is not a comparison with a number.')
        checks.append((_NUMERIC_OPS[op], float(bound)))
    return lambda v: _is_number(v) and all(test(float(v), bound) for test, bound in checks)


def _anything_but(operand: Any) -> Leaf:
    if isinstance(operand, dict):
        if list(operand) not in (["prefix"], ["suffix"]):
            raise _bad('"anything-but" takes a value, a list of values, or {"prefix"|"suffix": string}.')
        (name,) = operand
        inner = _affix(name, operand[name])
        return lambda v: isinstance(v, str) and not inner(v)
    values = operand if isinstance(operand, list) else [operand]
    if not values or any(isinstance(x, dict | list) for x in values):
        raise _bad('"anything-but" takes a value, a list of values, or {"prefix"|"suffix": string}.')
    tests = [_equal(x) for x in values]
    return lambda v: v is not _MISSING and v is not None and not isinstance(v, dict) and not any(t(v) for t in tests)


def _operator(matcher: dict[str, Any]) -> Leaf:
    if len(matcher) != 1:
        raise _bad(f"A matcher has one operator: {orjson.dumps(matcher).decode()[:200]}")
    ((name, operand),) = matcher.items()
    if name in ("prefix", "suffix"):
        return _affix(name, operand)
    if name == "equals-ignore-case":
        if not isinstance(operand, str):
            raise _bad('"equals-ignore-case" takes a string.')
        folded = operand.casefold()
        return lambda v: isinstance(v, str) and v.casefold() == folded
    if name == "anything-but":
        return _anything_but(operand)
    if name == "numeric":
        return _numeric(operand)
    if name == "exists":
        if not isinstance(operand, bool):
            raise _bad('"exists" takes true or false.')
        if operand:
            return lambda v: v is not _MISSING and not isinstance(v, dict)
        return lambda v: v is _MISSING
    raise _bad(f"Unknown operator {name!r}.")


def _leaf(key: str, matchers: list[Any]) -> Callable[[dict[str, Any]], bool]:
    if not matchers:
        raise _bad(f"The array of {key!r} is empty.")
    tests = [_operator(m) if isinstance(m, dict) else _value(key, m) for m in matchers]
    absent_ok = [t for t in tests if t(_MISSING)]

    def match(record: dict[str, Any]) -> bool:
        value = record.get(key, _MISSING)
        if value is _MISSING:
            return bool(absent_ok)
        if isinstance(value, list):
            return any(t(x) for x in value for t in tests)
        return any(t(value) for t in tests)

    return match


def _value(key: str, expected: Any) -> Leaf:
    if isinstance(expected, list):
        raise _bad(f"The array of {key!r} holds an array.")
    return _equal(expected)


def _object(pattern: Any, depth: int) -> Node:
    if not isinstance(pattern, dict):
        raise _bad("A pattern is a JSON object.")
    if depth > MAX_DEPTH:
        raise _bad(f"A pattern nests at most {MAX_DEPTH} levels.")
    parts: list[Node] = []
    for key, sub in pattern.items():
        if key == "$or":
            if not isinstance(sub, list) or len(sub) < 2:
                raise _bad('"$or" takes an array of at least two patterns.')
            parts.append(_any_of([_object(p, depth + 1) for p in sub]))
        elif isinstance(sub, dict):
            parts.append(_nested(key, _object(sub, depth + 1)))
        elif isinstance(sub, list):
            parts.append(_leaf(key, sub))
        else:
            raise _bad(f"The value of {key!r} must be an array or an object.")
    return lambda record: isinstance(record, dict) and all(p(record) for p in parts)


def _any_of(alternatives: list[Node]) -> Node:
    return lambda record: any(a(record) for a in alternatives)


def _nested(key: str, inner: Node) -> Node:
    def match(record: dict[str, Any]) -> bool:
        value = record.get(key, _MISSING)
        if isinstance(value, list):
            return any(inner(x) for x in value)
        return isinstance(value, dict) and inner(value)

    return match


def compile_pattern(text: str) -> Node:
    """The matcher of one filter's Pattern (JSON text); PatternError if it is malformed."""
    if len(text) > MAX_PATTERN_LENGTH:
        raise _bad(f"A pattern is at most {MAX_PATTERN_LENGTH} characters.")
    try:
        pattern = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"The pattern is not JSON: {exc}") from None
    return _object(pattern, 0)


@dataclass(frozen=True, slots=True)
class Filters:
    """A mapping's FilterCriteria, compiled."""

    patterns: tuple[Node, ...] = ()

    @classmethod
    def compile(cls, texts: Sequence[str]) -> Filters:
        """Compile each pattern (PatternError for a malformed one or too many)."""
        if len(texts) > MAX_FILTERS:
            raise PatternError(f"FilterCriteria holds at most {MAX_FILTERS} filters.")
        return cls(tuple(compile_pattern(t) for t in texts))

    def match(self, view: dict[str, Any]) -> bool:
        """Whether a record (its `filter_view`) passes: no filters, or any filter matches."""
        return not self.patterns or any(p(view) for p in self.patterns)
