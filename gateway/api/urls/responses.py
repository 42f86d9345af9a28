"""A function's result as the HTTP response of its URL, as Lambda maps it; and the URL's own error answers.

`map_result(payload)` (pure) reads a buffered invocation's result (JSON text):

- an object with `statusCode` is a response: `statusCode` (an integer 200..599: a 1xx is no final status, and
  101 would claim the connection switched protocols), `headers` (names to strings; numbers and booleans are written
  as JSON writes them), `cookies` (each one `Set-Cookie`), `body` (a string; with `isBase64Encoded` true, base64 of
  the bytes; another JSON value is sent as its JSON text), `isBase64Encoded`; its content type is `application/json`
  unless `headers` set one;
- a string is sent as its text (not JSON-quoted: what AWS answers, though its guide's table shows the quotes),
  any other JSON value without `statusCode` (an object, an array, a number, true, null) as the JSON text the function
  returned: both are 200 `application/json`;
- anything else is malformed (`None`): not JSON, a `statusCode` that is not an integer status, a header that is not
  a string, a name or value HTTP cannot carry (a function cannot add a header line or split the response), a body
  that is not base64 when it says it is. The caller answers it as a function error: `bad_gateway()`.

Headers the gateway owns are not taken from the function: the framing (`Content-Length`, `Transfer-Encoding`,
`Connection`, `Keep-Alive`, `Upgrade`, `TE`, `Trailer`, `Proxy-Connection`) and `x-amzn-RequestId`.

`parse_prelude(data)` reads the head of a streamed response written by `awslambda.HttpResponseStream.from` (its JSON
`{statusCode, headers, cookies}` then 8 NUL bytes), with the same rules (a status outside 200..599 is malformed).

`url_error(status, message, error_type)`: how a URL answers what is not the function's answer (a JSON document
`{"Message": ...}`, `x-amzn-ErrorType`, `x-amzn-RequestId`): 403 `{"Message":"Forbidden"}` (AccessDeniedException)
for a refused caller, `{"Message":null}` for an unknown URL; 413 for a request over 6 MB (RequestTooLargeException);
429 `{"Message":"Rate Exceeded."}` (TooManyRequestsException). A function error, a timeout or a malformed result is
502 with the text `Internal Server Error` (`bad_gateway`), as AWS answers it.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

#: the content type of a streamed response that starts with a prelude (runtimes/node/streaming.mjs)
PRELUDE_CONTENT_TYPE = "application/vnd.awslambda.http-integration-response"
PRELUDE_DELIMITER = b"\0" * 8
#: the longest prelude read before the stream is treated as a malformed response (AWS does not say; its headers and
#: cookies are a response's head, which servers cap near this)
MAX_PRELUDE = 64 * 1024
_OWNED = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer", "proxy-connection"}
    | {"x-amzn-requestid"}
)
#: RFC 9110 token characters: what a header name may be
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
#: a field value: visible characters, spaces and tabs (obs-text allowed), no CR, LF or NUL
_VALUE = re.compile(r"[\t\x20-\x7e\x80-\U0010ffff]*\Z")
JSON = "application/json"


@dataclass(slots=True)
class Mapped:
    """An HTTP response as the function described it: status, header lines (cookies as Set-Cookie), body."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def _text(value: Any) -> str | None:
    """A header's value as text: strings as they are, numbers and booleans as JSON writes them; else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return orjson.dumps(value).decode()
    return None


def _head(doc: dict[str, Any]) -> Mapped | None:
    """Status, headers and cookies of a response object (`statusCode` present), or None if malformed."""
    status = doc.get("statusCode")
    if type(status) is not int or not 200 <= status <= 599:  # a final status: 1xx would be an interim one
        return None
    mapped = Mapped(status)
    headers = doc.get("headers") or {}
    cookies = doc.get("cookies") or []
    if not isinstance(headers, dict) or not isinstance(cookies, list):
        return None
    typed = False
    for name, raw in headers.items():
        value = _text(raw)
        if value is None or not _TOKEN.match(name) or not _VALUE.match(value):
            return None
        lower = name.lower()
        if lower in _OWNED:
            continue
        typed = typed or lower == "content-type"
        mapped.headers.append((name, value))
    for cookie in cookies:
        if not isinstance(cookie, str) or not _VALUE.match(cookie):
            return None
        mapped.headers.append(("Set-Cookie", cookie))
    if not typed:
        mapped.headers.append(("Content-Type", JSON))
    return mapped


def map_result(payload: bytes) -> Mapped | None:
    """The response for a buffered result (see the module's docstring); None if it is malformed."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, str):
        return Mapped(200, [("Content-Type", JSON)], doc.encode())
    if not isinstance(doc, dict) or "statusCode" not in doc:
        return Mapped(200, [("Content-Type", JSON)], payload)
    mapped = _head(doc)
    if mapped is None:
        return None
    body = doc.get("body")
    if body is None:
        return mapped
    if not isinstance(body, str):
        mapped.body = orjson.dumps(body)
    elif doc.get("isBase64Encoded") is True:
        try:
            mapped.body = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return None
    else:
        mapped.body = body.encode()
    return mapped


def parse_prelude(data: bytes) -> tuple[Mapped | None, bytes] | None:
    """The head a streamed response's prelude describes and the body bytes after it; None while `data` holds no
    delimiter yet (read more, up to MAX_PRELUDE); (None, b"") if the prelude is malformed."""
    prelude, sep, rest = data.partition(PRELUDE_DELIMITER)
    if not sep:
        return (None, b"") if len(data) > MAX_PRELUDE else None
    try:
        doc = orjson.loads(prelude) if prelude.strip() else {}
    except orjson.JSONDecodeError:
        return None, b""
    if not isinstance(doc, dict):
        return None, b""
    doc.setdefault("statusCode", 200)
    return _head(doc), rest


def header_lines(mapped: Mapped, request_id: str) -> CIMultiDict[str]:
    """`mapped`'s header lines, repeated names kept (Set-Cookie), and the invocation's request id."""
    headers = CIMultiDict(mapped.headers)
    headers["x-amzn-RequestId"] = request_id
    return headers


def response(mapped: Mapped, request_id: str) -> web.Response:
    """A buffered `web.Response` of `mapped`, with the invocation's request id."""
    return web.Response(status=mapped.status, headers=header_lines(mapped, request_id), body=mapped.body)


def url_error(
    status: int, message: str | None, error_type: str | None = None, request_id: str | None = None
) -> web.Response:
    """A URL's own answer: `{"Message": message}` with `x-amzn-ErrorType` (when given) and `x-amzn-RequestId`."""
    headers = {"Content-Type": JSON}
    if error_type is not None:
        headers["x-amzn-ErrorType"] = error_type
    if request_id is not None:
        headers["x-amzn-RequestId"] = request_id
    return web.Response(status=status, body=orjson.dumps({"Message": message}), headers=headers)


def forbidden(request_id: str | None = None) -> web.Response:
    """403 for a caller the URL refuses (bad or missing signature, no policy allowing it)."""
    return url_error(403, "Forbidden", "AccessDeniedException", request_id)


def unknown_url(request_id: str | None = None) -> web.Response:
    """403 for a URL id that names no URL (as AWS answers a host that is no function URL)."""
    return url_error(403, None, "AccessDeniedException", request_id)


def too_large(limit: int, request_id: str | None = None) -> web.Response:
    """413 for a request whose event would be over `limit` bytes."""
    message = f"Request must be smaller than {limit} bytes for the InvokeFunction operation"
    return url_error(413, message, "RequestTooLargeException", request_id)


def throttled(request_id: str | None = None) -> web.Response:
    """429: the function's reserved concurrency (or the account's) is used up."""
    return url_error(429, "Rate Exceeded.", "TooManyRequestsException", request_id)


def bad_gateway(request_id: str) -> web.Response:
    """502: the function failed (raised, timed out, crashed) or returned what is no response."""
    headers = {"Content-Type": "text/plain; charset=utf-8", "x-amzn-RequestId": request_id}
    return web.Response(status=502, body=b"Internal Server Error", headers=headers)
