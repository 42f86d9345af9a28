"""A request through a function URL as Lambda's event: payload format version 2.0 (pure: no I/O, no aiohttp).

Lambda's documented shape (developer guide, "Invoking Lambda function URLs": request payload), field by field:

- `version` "2.0", `routeKey` "$default", `rawPath` (the path as the client sent it, still percent-encoded),
  `rawQueryString` (as sent, without "?"; "" when none);
- `cookies`: the `Cookie` header(s) split on "; ", absent when the request has none; the `cookie` header itself is
  then not among `headers` (API Gateway's 2.0 rule, which function URLs share);
- `headers`: names lower-cased, repeated headers joined with "," in the order they came; `x-forwarded-for` (the
  client's chain, then its address), `x-forwarded-proto` and `x-forwarded-port` as Lambda's front end adds them;
- `queryStringParameters`: each name's values percent-decoded ("+" stays "+", as API Gateway leaves it) and joined
  with ","; absent when the query string is empty;
- `requestContext`: `accountId` ("anonymous" for a NONE URL, the caller's account for AWS_IAM), `apiId` (the URL
  id), `authorizer` ({"iam": {...}} for AWS_IAM only), `domainName` (the Host the client sent, without its port),
  `domainPrefix` (its first label), `http` {method, path (= rawPath), protocol, sourceIp, userAgent}, `requestId`
  (the invocation's), `routeKey` and `stage` "$default", `time` ("07/Dec/2026:13:40:00 +0000"), `timeEpoch` (ms);
- `body`: absent for an empty body; the text as is when the request's content type is textual (`is_text`), else
  base64 with `isBase64Encoded` true. A textual body that is not UTF-8 is base64 too (it could not be JSON text).

`is_text` follows what AWS was observed to do (its docs say only "if the content type of the request is binary"):
`text/*`, `application/json`, `application/javascript`, `application/xml` (and `+json` / `+xml` suffixes) are text;
everything else is binary, a missing content type and `application/x-www-form-urlencoded` included.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

ANONYMOUS = "anonymous"
_TEXT_TYPES = frozenset({"application/json", "application/javascript", "application/xml"})
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def is_text(content_type: str | None) -> bool:
    """Whether a request body of this content type reaches the function as text (see the module's docstring)."""
    if not content_type:
        return False
    mime = content_type.partition(";")[0].strip().lower()
    return mime.startswith("text/") or mime in _TEXT_TYPES or mime.endswith(("+json", "+xml"))


def headers_of(raw: Iterable[tuple[str, str]]) -> tuple[dict[str, str], list[str]]:
    """(`headers`, `cookies`) of the request's header lines: names lower-cased, repeated values joined with ","; the
    Cookie lines split on ";" into `cookies` (each stripped), and left out of `headers`."""
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in raw:
        key = name.lower()
        if key == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        known = headers.get(key)
        headers[key] = value if known is None else f"{known},{value}"
    return headers, cookies


def query_parameters(raw_query: str) -> dict[str, str] | None:
    """`queryStringParameters`: names and values percent-decoded, a name's values joined with ","; None when empty."""
    if not raw_query:
        return None
    params: dict[str, str] = {}
    for pair in raw_query.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        key, decoded = unquote(name), unquote(value)
        known = params.get(key)
        params[key] = decoded if known is None else f"{known},{decoded}"
    return params or None


def clf_time(epoch: float) -> str:
    """`requestContext.time`: the request's time in Common Log Format, UTC ("07/Dec/2026:13:40:00 +0000")."""
    t = time.gmtime(epoch)
    return f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"


def body_fields(body: bytes, content_type: str | None) -> dict[str, Any]:
    """`body` and `isBase64Encoded` (see the module's docstring)."""
    if not body:
        return {"isBase64Encoded": False}
    if is_text(content_type):
        try:
            return {"body": body.decode("utf-8"), "isBase64Encoded": False}
        except UnicodeDecodeError:
            pass
    return {"body": base64.b64encode(body).decode("ascii"), "isBase64Encoded": True}


def build_event(
    *,
    url_id: str,
    method: str,
    raw_path: str,
    raw_query: str,
    header_lines: Iterable[tuple[str, str]],
    body: bytes,
    source_ip: str,
    protocol: str,
    scheme: str,
    host: str,
    request_id: str,
    account_id: str,
    iam: Mapping[str, Any] | None,
    epoch: float,
) -> dict[str, Any]:
    """The 2.0 event of one request. `host` is the Host header as sent (a port is dropped for `domainName`);
    `iam` the AWS_IAM caller's `authorizer.iam` (None for a NONE URL, whose `accountId` is then "anonymous")."""
    headers, cookies = headers_of(header_lines)
    forwarded = headers.get("x-forwarded-for")
    headers["x-forwarded-for"] = source_ip if not forwarded else f"{forwarded}, {source_ip}"
    headers["x-forwarded-proto"] = scheme
    domain, sep, port = host.rpartition(":")
    if not (sep and port.isdigit()):
        domain, port = host, ""
    headers["x-forwarded-port"] = port or ("443" if scheme == "https" else "80")
    event: dict[str, Any] = {"version": "2.0", "routeKey": "$default", "rawPath": raw_path, "rawQueryString": raw_query}
    if cookies:
        event["cookies"] = cookies
    event["headers"] = headers
    params = query_parameters(raw_query)
    if params is not None:
        event["queryStringParameters"] = params
    context: dict[str, Any] = {"accountId": ANONYMOUS if iam is None else str(iam.get("accountId", ANONYMOUS))}
    context["apiId"] = url_id
    if iam is not None:
        context["authorizer"] = {"iam": dict(iam)}
    context["domainName"] = domain
    context["domainPrefix"] = domain.partition(".")[0]
    context["http"] = {
        "method": method,
        "path": raw_path,
        "protocol": protocol,
        "sourceIp": source_ip,
        "userAgent": headers.get("user-agent", ""),
    }
    context["requestId"] = request_id
    context["routeKey"] = "$default"
    context["stage"] = "$default"
    context["time"] = clf_time(epoch)
    context["timeEpoch"] = int(epoch * 1000)
    event["requestContext"] = context
    event.update(body_fields(body, headers.get("content-type")))
    return event
