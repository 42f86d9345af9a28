"""Requests to a function as a web app: through its function URL with an ordinary HTTP client (http.client, the
standard library's), in the Host form (`Host: <url-id>.lambda-url.us-east-1.localhost:<port>`, the connection to
127.0.0.1) or the path form (`/lambda-url/<url-id>/<path>`), or through the Invoke API with a hand-built payload
format 2.0 event and Lambda's mapping of the result back to HTTP, the way apps were driven before the gateway had
URLs (and a reference the URL forms must agree with).

`App.send(via, method, path, ...)` answers a `Reply` whichever way it went; `via` is one of `VIAS`. A function whose
gateway answers CreateFunctionUrlConfig with 501 (no function URLs yet) has `url` None, and the URL forms skip.
"""

from __future__ import annotations

import base64
import http.client
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from botocore.exceptions import ClientError

#: how a request reaches the function: its URL by Host, its URL by path, Invoke with a 2.0 event
VIAS = ("host", "path", "invoke")
ACCOUNT = "123456789012"


@dataclass
class Reply:
    status: int
    #: (lower-cased name, value) as received, repeated headers (set-cookie) once each
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name.lower()), None)

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


def add_url(client: Any, name: str, invoke_mode: str = "BUFFERED", **config: Any) -> str | None:
    """An AuthType NONE URL for `name` and the two statements AWS requires for one (since October 2025):
    `lambda:InvokeFunctionUrl` with FunctionUrlAuthType NONE, `lambda:InvokeFunction` with InvokedViaFunctionUrl.
    None when this gateway has no function URLs or permissions yet (501)."""
    try:
        url = client.create_function_url_config(FunctionName=name, AuthType="NONE", InvokeMode=invoke_mode, **config)
        client.add_permission(FunctionName=name, StatementId="url", Action="lambda:InvokeFunctionUrl",
                              Principal="*", FunctionUrlAuthType="NONE")  # fmt: skip
        client.add_permission(FunctionName=name, StatementId="url-invoke", Action="lambda:InvokeFunction",
                              Principal="*", InvokedViaFunctionUrl=True)  # fmt: skip
    except ClientError as exc:
        if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 501:
            return None
        raise
    return str(url["FunctionUrl"])


@dataclass
class App:
    """A deployed function and, when the gateway has them, its URL."""

    client: Any
    port: int
    name: str
    url: str | None
    timeout: float = 60.0
    conns: dict[str, http.client.HTTPConnection] = field(default_factory=dict)

    @property
    def url_id(self) -> str:
        assert self.url is not None
        return str(urlsplit(self.url).hostname).split(".")[0]

    @property
    def host(self) -> str:
        """The Host header of the Host form: `<url-id>.lambda-url.<region>.localhost:<port>`."""
        assert self.url is not None
        return urlsplit(self.url).netloc

    def target(self, via: str, path: str) -> tuple[str, dict[str, str]]:
        """(request target, headers) of `path` in the `via` form."""
        if self.url is None:
            pytest.skip("this gateway has no function URLs yet (CreateFunctionUrlConfig answered 501)")
        if via == "host":
            return path, {"Host": self.host}
        return f"/lambda-url/{self.url_id}{path}", {}

    def send(self, via: str, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Reply:
        if via == "invoke":
            return self.invoke(method, path, body, headers or {})
        target, extra = self.target(via, path)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            conn.request(method, target, body=body or None, headers={**extra, **(headers or {})})
            resp = conn.getresponse()
            return Reply(resp.status, [(k.lower(), v) for k, v in resp.getheaders()], resp.read())
        finally:
            conn.close()

    def invoke(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Reply:
        event = url_event(method, path, body, headers, domain=f"{self.name}.lambda-url.us-east-1.localhost")
        resp = self.client.invoke(FunctionName=self.name, Payload=json.dumps(event).encode())
        payload = resp["Payload"].read()
        if "FunctionError" in resp:
            return Reply(502, [("content-type", "application/json")], b'{"Message":"Internal Server Error"}')
        return http_reply(json.loads(payload))


def url_event(method: str, path: str, body: bytes, headers: dict[str, str], domain: str) -> dict[str, Any]:
    """Lambda's payload format 2.0 for a function URL request (the shape AWS documents for function URLs)."""
    raw_path, _, query = path.partition("?")
    lower = {k.lower(): v for k, v in headers.items()}
    cookies = [c.strip() for c in lower.pop("cookie", "").split(";") if c.strip()]
    lower.setdefault("host", domain)
    params: dict[str, list[str]] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        params.setdefault(key, []).append(value)
    try:
        text, binary = body.decode(), False
    except UnicodeDecodeError:
        text, binary = base64.b64encode(body).decode(), True
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": query,
        "headers": lower,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": domain.split(".")[0],
            "domainName": domain,
            "domainPrefix": domain.split(".")[0],
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": lower.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": binary,
    }
    if cookies:
        event["cookies"] = cookies
    if params:
        event["queryStringParameters"] = {k: ",".join(v) for k, v in params.items()}
    if body:
        event["body"] = text
    return event


def http_reply(result: Any) -> Reply:
    """Lambda's mapping of a URL function's result to HTTP: a dict with statusCode is a response (headers, cookies as
    set-cookie, body base64-decoded when isBase64Encoded); anything else is a 200 JSON document."""
    if not isinstance(result, dict) or "statusCode" not in result:
        return Reply(200, [("content-type", "application/json")], json.dumps(result).encode())
    headers = [(k.lower(), str(v)) for k, v in (result.get("headers") or {}).items()]
    headers += [("set-cookie", c) for c in result.get("cookies") or []]
    body = result.get("body") or ""
    data = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
    return Reply(int(result["statusCode"]), headers, data)
