"""Function names, ARNs and qualifiers as the API accepts them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import (
    AccessDeniedException,
    InvalidParameterValueException,
    ResourceNotFoundException,
    ValidationException,
)
from gateway.store.names import FunctionRef, check_create_name, check_home, home_of, parse_function_name

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


# -- the region and account an ARN names (issue 18, cause 2) ---------------------------------------------------------
# Sources: LocalStack's recording of AWS (tests/aws/services/lambda_/test_lambda_api.snapshot.json,
# TestLambdaFunction::test_function_arns: another region is a 404 "Functions from 'R' are not reachable in this
# region ('ours')", another account a 403 AccessDeniedException); AWS's region pattern from botocore's model.

ROOT = "arn:aws:iam::123456789012:root"


@pytest.mark.parametrize(
    ("raw", "home"),
    [
        ("f", (None, None)),
        ("f:3", (None, None)),
        ("111111111111:function:f", (None, "111111111111")),
        (f"{ARN}:f:live", ("us-east-1", "123456789012")),
        ("arn:aws-us-gov:lambda:us-gov-west-1:123456789012:function:f", ("us-gov-west-1", "123456789012")),
        ("arn:aws-iso-b:lambda:us-isob-east-1:123456789012:function:f", ("us-isob-east-1", "123456789012")),
        ("arn:aws-eusc:lambda:eusc-de-east-1:123456789012:function:f", ("eusc-de-east-1", "123456789012")),
        ("not a name", (None, None)),
    ],
)
def test_home_of(raw: str, home: tuple[str | None, str | None]) -> None:
    assert home_of(raw) == home


@pytest.mark.parametrize("raw", ["f", "f:1", f"{ARN}:f", f"{ARN}:f:$LATEST", "123456789012:function:f", "bad name"])
def test_check_home_lets_this_region_and_account_through(raw: str) -> None:
    check_home(raw, "us-east-1", "123456789012", ROOT, "lambda:GetFunction")


def test_check_home_refuses_another_region_as_aws() -> None:
    with pytest.raises(ResourceNotFoundException) as exc:
        check_home("arn:aws:lambda:eu-west-1:123456789012:function:f", "us-west-2", "123456789012", ROOT, "x")
    assert exc.value.message == "Functions from 'eu-west-1' are not reachable in this region ('us-west-2')"


def test_check_home_refuses_another_account_first() -> None:
    with pytest.raises(AccessDeniedException) as exc:
        check_home("arn:aws:lambda:eu-west-1:999999999999:function:f:7", "us-east-1", "123456789012", ROOT, "lambda:A")
    assert exc.value.message == (
        f"User: {ROOT} is not authorized to perform: lambda:A on resource: "
        "arn:aws:lambda:eu-west-1:999999999999:function:f:7 because no resource-based policy allows the lambda:A action"
    )
    with pytest.raises(AccessDeniedException) as exc:
        check_home("999999999999:function:f", "cn-north-1", "123456789012", ROOT, "lambda:A")
    assert "resource: arn:aws-cn:lambda:cn-north-1:999999999999:function:f because" in exc.value.message
