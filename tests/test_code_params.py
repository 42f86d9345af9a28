"""Unit tests of gateway/api/functions/code_params.py: which package a request names, and the model's constraints on
its S3 members (botocore's lambda/2015-03-31 model: S3Bucket 3..63 `[0-9A-Za-z\\.\\-_]*(?<!\\.)`, S3Key and
S3ObjectVersion 1..1024, S3ObjectStorageMode COPY|REFERENCE)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.api.functions.code_params import (
    BOTH_SOURCES,
    INCOMPLETE_S3,
    NO_SOURCE,
    CodeSource,
    check_s3_members,
    code_source,
)
from gateway.api.params import Violations
from gateway.errors import InvalidParameterValueException, InvalidRequestContentException, ValidationException


def _violations(source: dict[str, Any], prefix: str = "code.") -> list[str]:
    v = Violations()
    check_s3_members(source, v, prefix)
    return v.items


@pytest.mark.parametrize(
    "source",
    [
        {"S3Bucket": "abc", "S3Key": "k"},
        {"S3Bucket": "a" * 63, "S3Key": "k" * 1024, "S3ObjectVersion": "v" * 1024},
        {"S3Bucket": "My_Bucket-1.x", "S3Key": "../any thing?#%", "S3ObjectStorageMode": "COPY"},
        {"ZipFile": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="},
    ],
)
def test_valid_members(source: dict[str, Any]) -> None:
    assert _violations(source) == []


def test_each_violation_is_reported_with_its_member() -> None:
    got = _violations({"S3Bucket": "a.", "S3Key": "", "S3ObjectVersion": "v" * 1025, "S3ObjectStorageMode": "x"})
    assert got == [
        "Value 'a.' at 'code.s3Bucket' failed to satisfy constraint: Member must have length greater than or equal "
        "to 3",
        "Value '' at 'code.s3Key' failed to satisfy constraint: Member must have length greater than or equal to 1",
        f"Value '{'v' * 1025}' at 'code.s3ObjectVersion' failed to satisfy constraint: Member must have length less "
        "than or equal to 1024",
        "Value 'x' at 'code.s3ObjectStorageMode' failed to satisfy constraint: Member must satisfy enum value set: "
        "[COPY, REFERENCE]",
    ]


@pytest.mark.parametrize("bucket", ["bkt/x", "bkt.", "b:ket", "b@ket", "b%2fk", "bück"])
def test_bucket_pattern(bucket: str) -> None:
    assert _violations({"S3Bucket": bucket}, "") == [
        f"Value '{bucket}' at 's3Bucket' failed to satisfy constraint: Member must satisfy regular expression "
        "pattern: [0-9A-Za-z\\.\\-_]*(?<!\\.)"
    ]


def test_a_member_of_the_wrong_type_is_a_shape_error() -> None:
    with pytest.raises(InvalidRequestContentException):
        _violations({"S3Bucket": 12})


def test_violations_raise_together() -> None:
    v = Violations()
    check_s3_members({"S3Bucket": "ab", "S3Key": ""}, v)
    with pytest.raises(ValidationException, match=r"^2 validation errors detected"):
        v.raise_if_any()


def test_sources() -> None:
    assert code_source({"ZipFile": "eA=="}, "Code.ZipFile") == CodeSource(zip_b64="eA==")
    s3 = code_source({"S3Bucket": "bkt", "S3Key": "k", "S3ObjectVersion": "3"}, "Code.ZipFile")
    assert s3 == CodeSource(s3_bucket="bkt", s3_key="k", s3_object_version="3")
    assert s3.in_s3 and not CodeSource(zip_b64="").in_s3


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"ZipFile": "eA==", "S3Bucket": "bkt", "S3Key": "k"}, BOTH_SOURCES),
        ({"ZipFile": "eA==", "S3Key": "k"}, BOTH_SOURCES),
        ({"ZipFile": "eA==", "S3ObjectStorageMode": "COPY"}, BOTH_SOURCES),
        ({"S3Bucket": "bkt"}, INCOMPLETE_S3),
        ({"S3Key": "k"}, INCOMPLETE_S3),
        ({"S3ObjectVersion": "1"}, INCOMPLETE_S3),
        ({"S3Bucket": "", "S3Key": "k"}, INCOMPLETE_S3),
        ({}, NO_SOURCE),
    ],
)
def test_refused_sources(source: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidParameterValueException) as exc:
        code_source(source, "Code.ZipFile")
    assert exc.value.message == message


def test_a_layers_content_in_its_own_words() -> None:
    """A layer request has no FunctionCode: its refusals name Content and layer content."""
    with pytest.raises(InvalidParameterValueException) as exc:
        code_source({"ZipFile": "eA==", "S3Bucket": "bkt", "S3Key": "k"}, "Content.ZipFile", layer=True)
    assert exc.value.message == "Please do not provide other Content parameters when providing a ZipFile."
    with pytest.raises(InvalidParameterValueException) as exc:
        code_source({}, "Content.ZipFile", layer=True)
    assert exc.value.message == "Please provide a source for layer content."
