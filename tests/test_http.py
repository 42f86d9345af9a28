"""Units of gateway.api.http: Jackson's words for a payload that is not UTF-8 (issue 18 cause 11)."""

from __future__ import annotations

import pytest

from gateway.api.http import jackson_utf8_error

WHERE = "\n at [Source: REDACTED (`StreamReadFeature.INCLUDE_SOURCE_IN_LOCATION` disabled); line: {}, column: {}]"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'"\xaf"', "Invalid UTF-8 start byte 0xaf" + WHERE.format(1, 3)),
        (b'"\xe3-"', "Invalid UTF-8 middle byte 0x2d" + WHERE.format(1, 4)),
        (b'{"a": [\n "x\xff"]}', "Invalid UTF-8 start byte 0xff" + WHERE.format(2, 5)),
        (b'"\\"\xc3("', "Invalid UTF-8 middle byte 0x28" + WHERE.format(1, 6)),
    ],
)
def test_jackson_words(payload: bytes, expected: str) -> None:
    assert jackson_utf8_error(payload) == expected


@pytest.mark.parametrize("payload", [b'"\xc3\xa9"', b"\xff", b'"ok" \xff', b'"\xe3\x81', b'"\xed\xa0\x80"', b"{}"])
def test_none_where_jackson_says_something_else(payload: bytes) -> None:
    """Valid UTF-8, a bad byte outside a string, a sequence cut short, a surrogate (Jackson takes it): not ours."""
    assert jackson_utf8_error(payload) is None


def test_an_escaped_backslash_before_a_quote_ends_the_string() -> None:
    """`"x\\\\"` is a string ending in a backslash: the bad byte after the next opening quote is inside a string."""
    payload = b'{"a": "x\\\\", "b": "\xaf"}'
    assert (jackson_utf8_error(payload) or "").startswith("Invalid UTF-8 start byte 0xaf")
