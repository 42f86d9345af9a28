"""gateway/api/urls/responses.py: a function's result as its URL's HTTP response; the URL's own errors."""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.api.urls import responses
from gateway.api.urls.responses import Mapped, map_result, parse_prelude


def mapped(result: Any) -> Mapped | None:
    return map_result(orjson.dumps(result))


def test_a_response_object_is_mapped() -> None:
    out = mapped(
        {
            "statusCode": 201,
            "headers": {"Content-Type": "text/plain", "My-Custom-Header": "Custom Value"},
            "body": "hello",
            "cookies": ["Cookie_1=Value1; Expires=21 Oct 2021 07:48 GMT", "Cookie_2=Value2; Max-Age=78000"],
            "isBase64Encoded": False,
        }
    )
    assert out == Mapped(
        201,
        [
            ("Content-Type", "text/plain"),
            ("My-Custom-Header", "Custom Value"),
            ("Set-Cookie", "Cookie_1=Value1; Expires=21 Oct 2021 07:48 GMT"),
            ("Set-Cookie", "Cookie_2=Value2; Max-Age=78000"),
        ],
        b"hello",
    )


def test_inferred_responses() -> None:
    json_type = [("Content-Type", "application/json")]
    assert mapped({"message": "Hello, world!"}) == Mapped(200, json_type, b'{"message":"Hello, world!"}')
    assert mapped("Hello, world!") == Mapped(200, json_type, b"Hello, world!")
    assert mapped([1, 2]) == Mapped(200, json_type, b"[1,2]")
    assert mapped(3) == Mapped(200, json_type, b"3")
    assert mapped(None) == Mapped(200, json_type, b"null")
    assert map_result(b'{ "body": "x" }') == Mapped(200, json_type, b'{ "body": "x" }')  # as returned


def test_defaults_of_a_response_object() -> None:
    assert mapped({"statusCode": 204}) == Mapped(204, [("Content-Type", "application/json")], b"")
    out = mapped({"statusCode": 200, "body": {"a": 1}, "headers": {"x-n": 1, "x-b": True}})
    assert out is not None and out.body == b'{"a":1}'
    assert ("x-n", "1") in out.headers and ("x-b", "true") in out.headers


def test_base64_bodies() -> None:
    png = bytes(range(256))
    out = mapped({"statusCode": 200, "body": base64.b64encode(png).decode(), "isBase64Encoded": True})
    assert out is not None and out.body == png
    assert mapped({"statusCode": 200, "body": "not base64!", "isBase64Encoded": True}) is None


@pytest.mark.parametrize(
    "result",
    [
        {"statusCode": "200"},
        {"statusCode": 200.0},
        {"statusCode": True},
        {"statusCode": 99},
        {"statusCode": 600},
        {"statusCode": 101},  # Switching Protocols would hand the connection over: no final status below 200
        {"statusCode": 100},
        {"statusCode": 199},
        {"statusCode": 200, "headers": ["x"]},
        {"statusCode": 200, "headers": {"x": {"nested": 1}}},
        {"statusCode": 200, "headers": {"x": "a\r\nSet-Cookie: injected=1"}},  # no header line may be added
        {"statusCode": 200, "headers": {"x": "a\nb"}},
        {"statusCode": 200, "headers": {"bad name": "v"}},
        {"statusCode": 200, "headers": {"x:y": "v"}},
        {"statusCode": 200, "cookies": "a=b"},
        {"statusCode": 200, "cookies": ["a=b\r\nX-Evil: 1"]},
        {"statusCode": 200, "cookies": [1]},
    ],
)
def test_malformed_responses(result: Any) -> None:
    assert mapped(result) is None


def test_not_json_is_malformed() -> None:
    assert map_result(b"{") is None and map_result(b"\xff") is None


def test_headers_the_gateway_owns_are_not_the_functions() -> None:
    out = mapped({
        "statusCode": 200,
        "body": "abc",
        "headers": {"Content-Length": "999", "Transfer-Encoding": "chunked", "Connection": "close",
                    "x-amzn-RequestId": "forged", "X-Ok": "1"},
    })  # fmt: skip
    assert out is not None and out.headers == [("X-Ok", "1"), ("Content-Type", "application/json")]


def test_the_prelude_of_a_streamed_response() -> None:
    head = orjson.dumps({"statusCode": 201, "headers": {"x-a": "b"}, "cookies": ["c=d"]})
    assert parse_prelude(head) is None  # no delimiter yet: read on
    parsed = parse_prelude(head + b"\0" * 8 + b"body")
    assert parsed == (Mapped(201, [("x-a", "b"), ("Set-Cookie", "c=d"), ("Content-Type", "application/json")]), b"body")
    assert parse_prelude(b"\0" * 8 + b"x") == (Mapped(200, [("Content-Type", "application/json")]), b"x")
    assert parse_prelude(b"{bad" + b"\0" * 8) == (None, b"")
    assert parse_prelude(b"[1]" + b"\0" * 8) == (None, b"")
    assert parse_prelude(b"{" * (responses.MAX_PRELUDE + 1)) == (None, b"")  # a prelude without end is refused
    for status in (101, 100, 199, 600):  # only a final status: 200..599
        assert parse_prelude(orjson.dumps({"statusCode": status}) + b"\0" * 8) == (None, b"")


def test_url_errors() -> None:
    forbidden = responses.forbidden("rid")
    assert forbidden.status == 403 and json.loads(forbidden.body) == {"Message": "Forbidden"}  # type: ignore[arg-type]
    assert forbidden.headers["x-amzn-ErrorType"] == "AccessDeniedException"
    assert forbidden.headers["x-amzn-RequestId"] == "rid"
    assert json.loads(responses.unknown_url().body) == {"Message": None}  # type: ignore[arg-type]
    assert responses.throttled().status == 429
    assert json.loads(responses.throttled().body) == {"Message": "Rate Exceeded."}  # type: ignore[arg-type]
    assert responses.too_large(6291456).status == 413
    bad = responses.bad_gateway("rid")
    assert bad.status == 502 and bad.body == b"Internal Server Error"


safe_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=12)


@given(
    st.integers(200, 599),
    st.dictionaries(token.filter(lambda t: t not in ("connection", "te", "trailer", "upgrade")), safe_text),
    st.lists(safe_text, max_size=4),
    st.binary(max_size=64),
)
def test_any_response_round_trips(status: int, headers: dict[str, str], cookies: list[str], body: bytes) -> None:
    result = {"statusCode": status, "headers": headers, "cookies": cookies}
    result |= {"body": base64.b64encode(body).decode(), "isBase64Encoded": True}
    out = mapped(result)
    assert out is not None and out.status == status and out.body == body
    assert [v for n, v in out.headers if n == "Set-Cookie"] == cookies
    for name, value in headers.items():
        if name not in ("content-length", "transfer-encoding", "keep-alive", "proxy-connection"):
            assert (name, value) in out.headers
