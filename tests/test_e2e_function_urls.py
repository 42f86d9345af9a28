"""Function URLs through the real gateway, requested with an ordinary HTTP client (urllib3) in the path form
`/lambda-url/<url-id>/...`: the 2.0 event the function sees, the response Lambda makes of its result, the URL's own
errors (502, 413, 429), CORS, per-URL metrics; and RESPONSE_STREAM with Node.js, whose pieces reach the client as
they are written.

`url_for` creates the URL with CreateFunctionUrlConfig (and the policy a NONE URL needs) when the gateway has them,
else through branch urlserve's stand-in route (removed at merge).
"""

from __future__ import annotations

import base64
import json
import re
import socket
import time
from typing import Any

import pytest
import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.conftest import RunningGateway, create_function, wait_for
from tests.test_e2e_node import create_node_function

HANDLER = """
import base64, json, time

def lambda_handler(event, context):
    path = event["rawPath"]
    if path.startswith("/echo"):
        return {"statusCode": 200, "body": json.dumps({"event": event, "id": context.aws_request_id})}
    if path == "/string":
        return "Hello, world!"
    if path == "/object":
        return {"message": "Hello, world!"}
    if path == "/custom":
        return {"statusCode": 201, "headers": {"Content-Type": "image/png", "My-Custom-Header": "Custom Value"},
                "cookies": ["a=1; Max-Age=60", "b=2"], "body": base64.b64encode(b"\\x89PNG\\x00").decode(),
                "isBase64Encoded": True}
    if path == "/error":
        raise ValueError("boom")
    if path == "/malformed":
        return {"statusCode": "two hundred"}
    if path == "/inject":
        return {"statusCode": 200, "headers": {"x-a": "1\\r\\nSet-Cookie: evil=1"}, "body": "x"}
    if path == "/cors":
        return {"statusCode": 200, "headers": {"Access-Control-Allow-Origin": "*", "X-Ok": "1"}, "body": "x"}
    if path == "/sleep":
        time.sleep(float(event["queryStringParameters"]["s"]))
        return "slept"
    return {"statusCode": 500 if event["requestContext"]["http"]["method"] == "OPTIONS" else 404, "body": path}
"""

http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=60))


def url_for(gateway: RunningGateway, lam: Any, function: str, qualifier: str | None = None, **config: Any) -> str:
    """The base of `function`'s URL in the path form (`http://127.0.0.1:<port>/lambda-url/<id>`), NONE auth."""
    params: dict[str, Any] = {"FunctionName": function, "AuthType": config.get("auth_type", "NONE")}
    if qualifier:
        params["Qualifier"] = qualifier
    if "cors" in config:
        params["Cors"] = config["cors"]
    if "invoke_mode" in config:
        params["InvokeMode"] = config["invoke_mode"]
    created = lam.create_function_url_config(**params)
    url_id = re.match(r"https?://([a-z0-9]+)\.", created["FunctionUrl"]).group(1)  # type: ignore[union-attr]
    if params["AuthType"] == "NONE":  # a NONE URL answers only with AWS's two statements in the function's policy
        permission = {"FunctionName": function, "Principal": "*", **({"Qualifier": qualifier} if qualifier else {})}
        lam.add_permission(
            StatementId="url", Action="lambda:InvokeFunctionUrl", FunctionUrlAuthType="NONE", **permission
        )
        lam.add_permission(
            StatementId="invoke", Action="lambda:InvokeFunction", InvokedViaFunctionUrl=True, **permission
        )
    return f"{gateway.url}/lambda-url/{url_id}"


@pytest.fixture
def site(gateway: RunningGateway, lam: Any, fname: str) -> str:
    create_function(lam, fname, HANDLER, Timeout=5)
    return url_for(gateway, lam, fname)


def test_the_function_sees_the_request_as_a_2_0_event(site: str) -> None:
    resp = http.request(
        "GET",
        f"{site}/echo/a%20b?x=1&x=2&y=%2F",
        headers={"Cookie": "s=1; t=2", "X-Custom": "v", "User-Agent": "ua/1", "Host": "my.example:8443"},
    )
    assert resp.status == 200 and resp.headers["Content-Type"] == "application/json"
    seen = json.loads(resp.data)
    event = seen["event"]
    assert event["version"] == "2.0" and event["routeKey"] == "$default"
    assert event["rawPath"] == "/echo/a%20b" and event["rawQueryString"] == "x=1&x=2&y=%2F"
    assert event["queryStringParameters"] == {"x": "1,2", "y": "/"}
    assert event["cookies"] == ["s=1", "t=2"] and "cookie" not in event["headers"]
    assert event["headers"]["x-custom"] == "v" and event["headers"]["host"] == "my.example:8443"
    ctx = event["requestContext"]
    assert ctx["accountId"] == "anonymous" and ctx["domainName"] == "my.example" and ctx["domainPrefix"] == "my"
    assert ctx["http"] == {
        "method": "GET",
        "path": "/echo/a%20b",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "ua/1",
    }
    assert ctx["stage"] == "$default" and abs(ctx["timeEpoch"] / 1000 - time.time()) < 60
    assert ctx["requestId"] == seen["id"] == resp.headers["x-amzn-RequestId"]  # one id: the invocation's
    assert "body" not in event and event["isBase64Encoded"] is False


def test_an_aws_iam_caller_is_in_the_event_and_its_signed_body_too(
    gateway: RunningGateway, lam: Any, fname: str
) -> None:
    create_function(lam, fname, HANDLER)
    site = url_for(gateway, lam, fname, auth_type="AWS_IAM")
    request = AWSRequest("POST", f"{site}/echo", data=b'{"signed": true}', headers={"Content-Type": "application/json"})
    credentials = Credentials("test", "test")  # the test gateway runs open: any operator key
    SigV4Auth(credentials, "lambda", "us-east-1").add_auth(request)
    resp = http.request("POST", f"{site}/echo", body=request.body, headers=dict(request.headers))
    assert resp.status == 200, resp.data
    event = json.loads(resp.data)["event"]
    assert event["body"] == '{"signed": true}' and event["requestContext"]["accountId"] == "123456789012"
    iam = event["requestContext"]["authorizer"]["iam"]
    assert iam["accountId"] == "123456789012" and iam["userArn"] == "arn:aws:iam::123456789012:root"


def test_bodies_are_text_or_base64_by_content_type(site: str) -> None:
    for content_type, body, encoded in [
        ("application/json", b'{"k": "v"}', False),
        ("text/plain; charset=utf-8", "héllo".encode(), False),
        ("application/octet-stream", b"\x00\xff", True),
        ("application/x-www-form-urlencoded", b"a=1&b=2", True),
    ]:
        resp = http.request("POST", f"{site}/echo", body=body, headers={"Content-Type": content_type})
        event = json.loads(resp.data)["event"]
        assert event["isBase64Encoded"] is encoded, content_type
        assert (base64.b64decode(event["body"]) if encoded else event["body"].encode()) == body


def test_results_become_responses_as_lambda_maps_them(site: str) -> None:
    resp = http.request("GET", f"{site}/string")
    assert (resp.status, resp.headers["Content-Type"], resp.data) == (200, "application/json", b"Hello, world!")
    resp = http.request("GET", f"{site}/object")
    assert resp.status == 200 and json.loads(resp.data) == {"message": "Hello, world!"}
    resp = http.request("GET", f"{site}/custom")
    assert (resp.status, resp.data, resp.headers["Content-Type"]) == (201, b"\x89PNG\x00", "image/png")
    assert resp.headers["My-Custom-Header"] == "Custom Value"
    assert resp.headers.getlist("Set-Cookie") == ["a=1; Max-Age=60", "b=2"]


def test_function_errors_and_malformed_results_are_502(site: str) -> None:
    for path in ("/error", "/malformed", "/inject"):
        resp = http.request("GET", f"{site}{path}")
        assert (resp.status, resp.data) == (502, b"Internal Server Error"), path
        assert "evil=1" not in str(resp.headers.getlist("Set-Cookie")) and "x-amzn-RequestId" in resp.headers


def test_a_function_that_times_out_is_502(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, HANDLER, Timeout=1)
    site = url_for(gateway, lam, fname)
    resp = http.request("GET", f"{site}/sleep?s=3")
    assert (resp.status, resp.data) == (502, b"Internal Server Error")
    assert http.request("GET", f"{site}/string").status == 200  # a new environment for the next request


def test_a_body_over_6_mb_is_413_before_anything_runs(site: str) -> None:
    resp = http.request("POST", f"{site}/echo", body=b"x" * (6 * 1024 * 1024 + 1))
    assert resp.status == 413 and resp.headers["x-amzn-ErrorType"] == "RequestTooLargeException"
    assert "Message" in json.loads(resp.data)


def test_a_throttled_url_is_429(site: str, lam: Any, fname: str) -> None:
    lam.put_function_concurrency(FunctionName=fname, ReservedConcurrentExecutions=0)
    try:
        resp = http.request("GET", f"{site}/echo")
        assert resp.status == 429 and json.loads(resp.data) == {"Message": "Rate Exceeded."}
        assert resp.headers["x-amzn-ErrorType"] == "TooManyRequestsException"
    finally:
        lam.delete_function_concurrency(FunctionName=fname)


CORS = {"AllowOrigins": ["https://app.example"], "AllowMethods": ["GET", "POST"], "AllowHeaders": ["x-h"],
        "ExposeHeaders": ["X-Ok"], "MaxAge": 60}  # fmt: skip


def test_cors_preflight_is_answered_without_invoking(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, HANDLER)
    site = url_for(gateway, lam, fname, cors=CORS)
    asked = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    resp = http.request("OPTIONS", f"{site}/anything", headers=asked)
    assert resp.status == 200 and resp.data == b""  # the function would have answered 500
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert (
        resp.headers["Access-Control-Allow-Methods"] == "GET, POST" and resp.headers["Access-Control-Max-Age"] == "60"
    )
    refused = http.request("OPTIONS", f"{site}/x", headers={**asked, "Origin": "https://evil.example"})
    assert refused.status == 200 and "Access-Control-Allow-Origin" not in refused.headers
    resp = http.request("GET", f"{site}/cors", headers={"Origin": "https://app.example"})
    assert resp.headers.getlist("Access-Control-Allow-Origin") == ["https://app.example"]  # the URL's, not the "*"
    assert resp.headers["Access-Control-Expose-Headers"] == "X-Ok" and resp.headers["X-Ok"] == "1"
    resp = http.request("GET", f"{site}/cors", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers  # a function cannot widen what its URL allows


def test_without_cors_options_reaches_the_function(site: str) -> None:
    asked = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    assert http.request("OPTIONS", f"{site}/x", headers=asked).status == 500


def test_metrics_per_url_and_alias(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, HANDLER)
    version = lam.publish_version(FunctionName=fname)["Version"]
    lam.create_alias(FunctionName=fname, Name="live", FunctionVersion=version)
    site = url_for(gateway, lam, fname, "live")
    assert http.request("GET", f"{site}/string").status == 200
    assert http.request("GET", f"{site}/error").status == 502
    text = http.request("GET", f"{gateway.url}/metrics").data.decode()
    labels = f'function="{fname}",resource="{fname}:live"'
    assert f'lambda_url_requests_total{{{labels},status_class="2xx"}} 1.0' in text
    assert f'lambda_url_requests_total{{{labels},status_class="5xx"}} 1.0' in text
    assert f"lambda_url_request_duration_seconds_count{{{labels}}} 2.0" in text
    executed = f'lambda_invocations_total{{function="{fname}",resource="{fname}:live",version="{version}"}} 2.0'
    assert executed in text  # the invocations are the alias's, as through Invoke with the alias


STREAMING = """
export const handler = awslambda.streamifyResponse(async (event, responseStream) => {
  responseStream.setContentType("text/plain; charset=utf-8");
  for (let i = 0; i < 3; i++) {
    responseStream.write(`piece ${i};`);
    await new Promise((r) => setTimeout(r, 400));
  }
  responseStream.end();
});
export const http = awslambda.streamifyResponse(async (event, responseStream) => {
  const stream = awslambda.HttpResponseStream.from(responseStream, {
    statusCode: 201, headers: { "x-a": "b", "content-type": "text/html" }, cookies: ["c=d"] });
  stream.write("<p>");
  await new Promise((r) => setTimeout(r, 100));
  stream.end(event.rawPath + "</p>");
});
export const inject = awslambda.streamifyResponse(async (event, responseStream) => {
  const stream = awslambda.HttpResponseStream.from(responseStream, {
    statusCode: 200, headers: { "x-a": "1\\r\\nSet-Cookie: evil=1" } });
  stream.end("body");
});
export const endless = awslambda.streamifyResponse(async (event, responseStream) => {
  responseStream.setContentType("application/vnd.awslambda.http-integration-response");
  responseStream.end("{".repeat(100000));  // a prelude that never ends
});
export const long = awslambda.streamifyResponse(async (event, responseStream) => {
  for (let i = 0; i < 30; i++) {
    responseStream.write("x".repeat(1024));
    await new Promise((r) => setTimeout(r, 100));
  }
  responseStream.end();
});
"""


def test_a_streamed_response_reaches_the_client_as_it_is_written(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_node_function(lam, fname, {"index.mjs": STREAMING}, Timeout=10)
    site = url_for(gateway, lam, fname, invoke_mode="RESPONSE_STREAM")
    resp = http.request("GET", f"{site}/", preload_content=False)
    assert resp.status == 200 and resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    arrivals = [(time.monotonic(), piece) for piece in resp.read_chunked()]
    assert b"".join(p for _, p in arrivals) == b"piece 0;piece 1;piece 2;"
    assert arrivals[-1][0] - arrivals[0][0] >= 0.6  # as written, not all at the end


def test_a_streamed_http_response_takes_its_head_from_the_prelude(
    gateway: RunningGateway, lam: Any, fname: str
) -> None:
    create_node_function(lam, fname, {"index.mjs": STREAMING}, handler="index.http", Timeout=10)
    site = url_for(gateway, lam, fname, invoke_mode="RESPONSE_STREAM")
    resp = http.request("GET", f"{site}/page")
    assert (resp.status, resp.data) == (201, b"<p>/page</p>")
    assert resp.headers["x-a"] == "b" and resp.headers["Content-Type"] == "text/html"
    assert resp.headers.getlist("Set-Cookie") == ["c=d"]


def test_a_function_that_does_not_stream_behind_a_streaming_url(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, HANDLER)
    site = url_for(gateway, lam, fname, invoke_mode="RESPONSE_STREAM")
    resp = http.request("GET", f"{site}/object")
    assert resp.status == 200 and json.loads(resp.data) == {"message": "Hello, world!"}
    assert http.request("GET", f"{site}/error").status == 502


def test_a_client_that_leaves_mid_stream_holds_nothing(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_node_function(lam, fname, {"index.mjs": STREAMING}, handler="index.long", Timeout=10)
    site = url_for(gateway, lam, fname, invoke_mode="RESPONSE_STREAM")
    path = site.removeprefix(gateway.url) + "/"
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")  # the head, then it leaves
    # the gateway answers others meanwhile, and the function runs to its end (Lambda does not stop it)
    assert http.request("GET", f"{gateway.url}/healthz").status == 200
    text = wait_for(
        lambda: (
            (t := http.request("GET", f"{gateway.url}/metrics").data.decode())
            and f'lambda_invocations_total{{function="{fname}",resource="{fname}",version="$LATEST"}} 1.0' in t
            and t
        ),
        timeout=20,
        what="the invocation's end",
    )
    assert f'lambda_url_requests_total{{function="{fname}",resource="{fname}",status_class="2xx"}} 1.0' in text


@pytest.mark.parametrize("handler", ["index.inject", "index.endless"])
def test_a_streamed_prelude_cannot_forge_a_response(
    gateway: RunningGateway, lam: Any, fname: str, handler: str
) -> None:
    create_node_function(lam, fname, {"index.mjs": STREAMING}, handler=handler, Timeout=10)
    site = url_for(gateway, lam, fname, invoke_mode="RESPONSE_STREAM")
    resp = http.request("GET", f"{site}/")
    assert (resp.status, resp.data) == (502, b"Internal Server Error")
    assert "evil=1" not in str(resp.headers)
