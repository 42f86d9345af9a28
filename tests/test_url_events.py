"""gateway/api/urls/events.py: a request as Lambda's payload format 2.0 event."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from gateway.api.urls import events

BASE: dict[str, Any] = {
    "url_id": "abcdefghijklmnopqrstuvwxyz012345",
    "method": "POST",
    "raw_path": "/my/path",
    "raw_query": "",
    "header_lines": [],
    "body": b"",
    "source_ip": "10.0.0.7",
    "protocol": "HTTP/1.1",
    "scheme": "http",
    "host": "abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.localhost:9000",
    "request_id": "e1506fd5-9e7b-434f-bd42-4f8fa224b599",
    "account_id": "123456789012",
    "iam": None,
    "epoch": 1796650800.123,
}


def event(**changes: Any) -> dict[str, Any]:
    return events.build_event(**{**BASE, **changes})


def test_the_documented_shape() -> None:
    ev = event(
        raw_query="parameter1=value1&parameter1=value2&parameter2=value",
        header_lines=[("Header1", "value1"), ("Header2", "value1"), ("header2", "value2"), ("User-Agent", "agent")],
        body=b'{"a": 1}',
    )
    ev["headers"].pop("content-type", None)
    assert ev["version"] == "2.0" and ev["routeKey"] == "$default"
    assert ev["rawPath"] == "/my/path"
    assert ev["rawQueryString"] == "parameter1=value1&parameter1=value2&parameter2=value"
    assert ev["queryStringParameters"] == {"parameter1": "value1,value2", "parameter2": "value"}
    assert ev["headers"]["header1"] == "value1" and ev["headers"]["header2"] == "value1,value2"
    ctx = ev["requestContext"]
    assert ctx["accountId"] == "anonymous" and "authorizer" not in ctx
    assert ctx["apiId"] == BASE["url_id"]
    assert ctx["domainName"] == "abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.localhost"
    assert ctx["domainPrefix"] == BASE["url_id"]
    assert ctx["http"] == {
        "method": "POST",
        "path": "/my/path",
        "protocol": "HTTP/1.1",
        "sourceIp": "10.0.0.7",
        "userAgent": "agent",
    }
    assert ctx["requestId"] == BASE["request_id"]
    assert ctx["routeKey"] == "$default" and ctx["stage"] == "$default"
    assert ctx["timeEpoch"] == 1796650800123
    assert ev["isBase64Encoded"] is True  # no content type: binary
    assert base64.b64decode(ev["body"]) == b'{"a": 1}'


def test_time_is_in_common_log_format() -> None:
    assert events.clf_time(1796650800) == "07/Dec/2026:13:40:00 +0000"
    assert events.clf_time(0) == "01/Jan/1970:00:00:00 +0000"


def test_no_query_no_cookies_no_body_means_absent_fields() -> None:
    ev = event(method="GET")
    assert "queryStringParameters" not in ev and "cookies" not in ev and "body" not in ev
    assert ev["rawQueryString"] == "" and ev["isBase64Encoded"] is False


def test_cookies_are_split_and_not_a_header() -> None:
    ev = event(header_lines=[("Cookie", "a=1; b=2"), ("cookie", "c=3")])
    assert ev["cookies"] == ["a=1", "b=2", "c=3"]
    assert "cookie" not in ev["headers"]


def test_forwarded_headers_as_the_front_end_adds_them() -> None:
    ev = event(header_lines=[("X-Forwarded-For", "1.2.3.4")])
    assert ev["headers"]["x-forwarded-for"] == "1.2.3.4, 10.0.0.7"
    assert ev["headers"]["x-forwarded-proto"] == "http" and ev["headers"]["x-forwarded-port"] == "9000"
    bare = event(host="example.test")
    assert bare["headers"]["x-forwarded-port"] == "80" and bare["requestContext"]["domainName"] == "example.test"


def test_aws_iam_callers_account_and_authorizer() -> None:
    iam = {"accessKey": "AKIA", "accountId": "123456789012", "userArn": "arn:aws:iam::123456789012:root"}
    ctx = event(iam=iam)["requestContext"]
    assert ctx["accountId"] == "123456789012" and ctx["authorizer"] == {"iam": iam}


def test_which_bodies_are_text() -> None:
    for text in ("text/plain", "text/html; charset=utf-8", "application/json", "Application/JSON", "application/xml",
                 "application/javascript", "application/problem+json", "application/atom+xml"):  # fmt: skip
        assert events.is_text(text), text
    for binary in (None, "", "application/octet-stream", "application/x-www-form-urlencoded", "image/png",
                   "multipart/form-data; boundary=x"):  # fmt: skip
        assert not events.is_text(binary), binary


def test_text_that_is_not_utf8_is_base64() -> None:
    ev = event(header_lines=[("Content-Type", "text/plain")], body=b"\xff\xfe")
    assert ev["isBase64Encoded"] is True and base64.b64decode(ev["body"]) == b"\xff\xfe"


def test_query_values_are_decoded_and_plus_stays() -> None:
    assert events.query_parameters("a=%20x&b=1+2&c&=v&&d=") == {"a": " x", "b": "1+2", "c": "", "": "v", "d": ""}


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).filter(lambda n: n != "cookie")
values = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=",;"), max_size=20)


@given(st.lists(st.tuples(names, values), max_size=8))
def test_any_headers_reach_the_function(lines: list[tuple[str, str]]) -> None:
    ev = event(header_lines=[(n.upper(), v) for n, v in lines])
    for name in {n for n, _ in lines} - {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-port"}:
        assert ev["headers"][name] == ",".join(v for n, v in lines if n == name)


@given(st.lists(st.tuples(st.text(min_size=1, max_size=8), st.text(max_size=8)), min_size=1, max_size=6))
def test_any_query_reaches_the_function(pairs: list[tuple[str, str]]) -> None:
    raw = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)
    params = event(raw_query=raw)["queryStringParameters"]
    expected: dict[str, list[str]] = {}
    for k, v in pairs:
        expected.setdefault(k, []).append(v)
    assert params == {k: ",".join(v) for k, v in expected.items()}


cookie_chars = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=";=")
cookie_part = st.text(alphabet=cookie_chars, min_size=1)


@given(st.lists(st.tuples(cookie_part, cookie_part), min_size=1, max_size=6))
def test_any_cookies_reach_the_function(pairs: list[tuple[str, str]]) -> None:
    cookies = [f"{k}={v}" for k, v in pairs]
    assert event(header_lines=[("Cookie", "; ".join(cookies))])["cookies"] == cookies


@given(st.binary(max_size=64), st.sampled_from(["application/json", "image/png", None]))
def test_any_body_round_trips(body: bytes, content_type: str | None) -> None:
    lines = [] if content_type is None else [("Content-Type", content_type)]
    ev = event(header_lines=lines, body=body)
    seen = base64.b64decode(ev["body"]) if ev["isBase64Encoded"] else ev.get("body", "").encode()
    assert seen == body
