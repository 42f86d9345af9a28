"""Function names, ARNs and qualifiers as the API accepts them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import InvalidParameterValueException, ValidationException
from gateway.store.names import FunctionRef, check_create_name, parse_function_name

ARN = "arn:aws:lambda:us-east-1:123456789012:function"


@pytest.mark.parametrize(
    ("raw", "qualifier", "expected"),
    [
        ("f", None, FunctionRef("f", None)),
        ("f", "$LATEST", FunctionRef("f", "$LATEST")),
        ("f:$LATEST", None, FunctionRef("f", "$LATEST")),
        ("f:live", "live", FunctionRef("f", "live")),
        (f"{ARN}:f", None, FunctionRef("f", None)),
        (f"{ARN}:f:7", None, FunctionRef("f", "7")),
        ("123456789012:function:f", None, FunctionRef("f", None)),
        ("123456789012:function:f:$LATEST", None, FunctionRef("f", "$LATEST")),
        ("arn:aws-cn:lambda:cn-north-1:123456789012:function:f", None, FunctionRef("f", None)),
    ],
)
def test_accepted_forms(raw: str, qualifier: str | None, expected: FunctionRef) -> None:
    assert parse_function_name(raw, qualifier) == expected


@pytest.mark.parametrize("raw", ["", "f/g", "function:f", "f:", "f:a:b", "arn:aws:s3:::bucket", "f g"])
def test_malformed_names(raw: str) -> None:
    with pytest.raises(ValidationException):
        parse_function_name(raw)


def test_long_names_and_lowercase_latest_parse() -> None:
    """Issue 18 cause 9: AWS answers a 65-character name, or the qualifier `$latest`, with 404 (no such function),
    not a validation error: they parse; CreateFunction checks its own limits (64 for a name, 140 for an ARN)."""
    assert parse_function_name("a" * 65) == FunctionRef("a" * 65, None)
    assert parse_function_name("f", "$latest") == FunctionRef("f", "$latest")
    check_create_name("a" * 64, FunctionRef("a" * 64, None))
    with pytest.raises(ValidationException, match=r"less than or equal to 64$"):
        check_create_name("a" * 65, FunctionRef("a" * 65, None))
    arn = "arn:aws:lambda:us-east-1:123456789012:function:" + "a" * 64
    check_create_name(arn, FunctionRef("a" * 64, None))
    with pytest.raises(ValidationException, match=r"less than or equal to 64$"):
        check_create_name(arn + "a", FunctionRef("a" * 65, None))


def test_conflicting_qualifiers() -> None:
    with pytest.raises(InvalidParameterValueException):
        parse_function_name("f:1", "2")


@given(st.text(max_size=200))
def test_any_text_is_parsed_or_rejected_cleanly(raw: str) -> None:
    try:
        ref = parse_function_name(raw)
    except (ValidationException, InvalidParameterValueException):
        return
    assert 1 <= len(ref.name) <= 64
    assert ref.name in raw
