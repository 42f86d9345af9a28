"""Lambda's filter pattern language (gateway.events.filters): each operator by example and by property (hypothesis),
malformed patterns refused with InvalidParameterValueException, matching that never raises."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import InvalidParameterValueException
from gateway.events.filters import MAX_FILTERS, Filters, PatternError, compile_pattern

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**9), 10**9), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)  # fmt: skip
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip


def matches(pattern: Any, record: Any) -> bool:
    return compile_pattern(json.dumps(pattern))(record)


@pytest.mark.parametrize(
    ("pattern", "record", "expected"),
    [
        ({"a": ["x"]}, {"a": "x"}, True),
        ({"a": ["x"]}, {"a": "X"}, False),
        ({"a": [5]}, {"a": 5.0}, True),
        ({"a": [True]}, {"a": 1}, False),
        ({"a": [None]}, {"a": None}, True),
        ({"a": [None]}, {}, False),
        ({"a": ["x"]}, {"a": ["y", "x"]}, True),
        ({"a": {"b": ["x"]}}, {"a": {"b": "x"}}, True),
        ({"a": {"b": ["x"]}}, {"a": [{"b": "y"}, {"b": "x"}]}, True),
        ({"a": {"b": ["x"]}}, {"a": "x"}, False),
        ({"a": [{"prefix": "ab"}]}, {"a": "abc"}, True),
        ({"a": [{"suffix": "bc"}]}, {"a": "abc"}, True),
        ({"a": [{"prefix": {"equals-ignore-case": "AB"}}]}, {"a": "abc"}, True),
        ({"a": [{"equals-ignore-case": "ABC"}]}, {"a": "aBc"}, True),
        ({"a": [{"anything-but": ["x", "y"]}]}, {"a": "z"}, True),
        ({"a": [{"anything-but": ["x", "y"]}]}, {"a": "x"}, False),
        ({"a": [{"anything-but": "x"}]}, {}, False),
        ({"a": [{"anything-but": {"prefix": "in"}}]}, {"a": "out"}, True),
        ({"a": [{"anything-but": {"prefix": "in"}}]}, {"a": "inside"}, False),
        ({"a": [{"numeric": [">", 0, "<=", 5]}]}, {"a": 5}, True),
        ({"a": [{"numeric": [">", 0, "<=", 5]}]}, {"a": 0}, False),
        ({"a": [{"numeric": ["=", 3]}]}, {"a": "3"}, False),
        ({"a": [{"exists": True}]}, {"a": 0}, True),
        ({"a": [{"exists": True}]}, {}, False),
        ({"a": [{"exists": False}]}, {}, True),
        ({"a": [{"exists": False}]}, {"a": 1}, False),
        ({"$or": [{"a": [1]}, {"b": [2]}]}, {"b": 2}, True),
        ({"$or": [{"a": [1]}, {"b": [2]}]}, {"a": 2, "b": 1}, False),
        ({"c": ["k"], "$or": [{"a": [1]}, {"b": [2]}]}, {"a": 1}, False),
        ({"a": ["x"], "b": [{"exists": False}]}, {"a": "x"}, True),
    ],
)
def test_examples(pattern: Any, record: Any, expected: bool) -> None:
    assert matches(pattern, record) is expected


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[]",
        '"a"',
        '{"a": "x"}',
        '{"a": 1}',
        '{"a": []}',
        '{"a": [[1]]}',
        '{"a": [{"nope": 1}]}',
        '{"a": [{"prefix": 1}]}',
        '{"a": [{"numeric": [">"]}]}',
        '{"a": [{"numeric": ["~", 1]}]}',
        '{"a": [{"numeric": [">", "1"]}]}',
        '{"a": [{"exists": "yes"}]}',
        '{"a": [{"anything-but": {"wildcard": "x"}}]}',
        '{"a": [{"anything-but": []}]}',
        '{"a": [{"prefix": "x", "suffix": "y"}]}',
        '{"$or": [{"a": [1]}]}',
        '{"$or": {"a": [1]}}',
        "x" * 5000,
        '{"a":' * 40 + "[1]" + "}" * 40,
    ],
)
def test_malformed_patterns_are_invalid_parameter_values(text: str) -> None:
    with pytest.raises(InvalidParameterValueException):
        compile_pattern(text)


def test_at_most_five_filters_and_no_filter_passes_everything() -> None:
    assert Filters.compile([]).match({"anything": 1})
    with pytest.raises(PatternError):
        Filters.compile(['{"a": [1]}'] * (MAX_FILTERS + 1))
    two = Filters.compile(['{"a": [1]}', '{"b": [2]}'])
    assert two.match({"b": 2}) and not two.match({"a": 2})


@given(scalars)
def test_a_value_matches_itself(value: Any) -> None:
    assert matches({"k": [value]}, {"k": value})
    assert matches({"k": [value]}, {"k": ["other", value]})


@given(st.text(max_size=10), st.text(max_size=10))
def test_prefix_and_suffix(head: str, tail: str) -> None:
    assert matches({"k": [{"prefix": head}]}, {"k": head + tail})
    assert matches({"k": [{"suffix": tail}]}, {"k": head + tail})
    assert matches({"k": [{"prefix": head}]}, {"k": tail}) is tail.startswith(head)


@given(st.text(max_size=5), st.lists(st.text(max_size=5), min_size=1, max_size=4))
def test_anything_but_is_not_in(value: str, excluded: list[str]) -> None:
    assert matches({"k": [{"anything-but": excluded}]}, {"k": value}) is (value not in excluded)


@given(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6), st.floats(-1e6, 1e6))
def test_numeric_ranges(value: float, low: float, high: float) -> None:
    assert matches({"k": [{"numeric": [">=", low, "<", high]}]}, {"k": value}) is (low <= value < high)


@given(st.dictionaries(st.sampled_from("abc"), scalars, max_size=3), scalars, scalars)
def test_or_is_either(record: dict[str, Any], x: Any, y: Any) -> None:
    first, second = {"a": [x]}, {"b": [y]}
    assert matches({"$or": [first, second]}, record) is (matches(first, record) or matches(second, record))


@given(st.dictionaries(st.sampled_from("ab"), scalars, max_size=2))
def test_exists_true_and_false_are_complements_for_leaves(record: dict[str, Any]) -> None:
    assert matches({"a": [{"exists": True}]}, record) is not matches({"a": [{"exists": False}]}, record)


@given(json_values)
def test_any_json_pattern_compiles_or_is_refused_cleanly(pattern: Any) -> None:
    try:
        compile_pattern(json.dumps(pattern))
    except PatternError:
        pass


@given(json_values)
def test_matching_never_raises(record: Any) -> None:
    pattern = {
        "a": [{"prefix": "x"}, {"numeric": [">", 1]}, {"anything-but": ["y"]}, {"exists": False}, None, 3],
        "$or": [{"b": {"c": [{"exists": True}]}}, {"d": [{"equals-ignore-case": "Q"}, {"suffix": "z"}]}],
    }
    assert matches(pattern, record) in (True, False)
