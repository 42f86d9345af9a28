"""Recognising and authorising function URL requests on a live gateway, with an ordinary HTTP client that sets Host
(as curl and browsers do with `*.localhost`) and with botocore's own SigV4 signer: the Host and path forms, AWS_IAM
signed, unsigned and forged, the resource policy NONE needs, and that neither form ever reaches the Lambda API."""

from __future__ import annotations

import http.client
import json
import timeit
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from gateway.api.urls.router import looks_like_url, url_target
from tests.conftest import GatewayFactory, RunningGateway, create_function, free_port, invoke_json

#: the function answers what it was asked: the same keys as the router's stand-in serve
SOURCE = """
import json
def lambda_handler(event, context):
    return {"path": event["rawPath"], "query": event["rawQueryString"]}
"""
CREDENTIALS = {"GATEWAY_ACCESS_KEY_ID": "test", "GATEWAY_SECRET_ACCESS_KEY": "test"}  # what gw.client() signs with
FORBIDDEN = {"Message": "Forbidden"}


def _request(
    gw: RunningGateway, method: str, path: str, host: str | None = None, body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    try:
        sent = dict(headers or {})
        if host is not None:
            sent["Host"] = host
        conn.request(method, path, body=body, headers=sent)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            payload: Any = json.loads(raw)
        except ValueError:
            payload = raw
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload
    finally:
        conn.close()


def _signed(
    gw: RunningGateway, method: str, path: str, host: str, body: bytes = b"", key: str = "test", secret: str = "test",
    service: str = "lambda",
) -> dict[str, str]:  # fmt: skip
    """The headers botocore's SigV4Auth adds for this request (service `lambda`, us-east-1)."""
    request = AWSRequest(method=method, url=f"http://{host}{path}", data=body, headers={"Host": host})
    SigV4Auth(Credentials(key, secret), service, "us-east-1").add_auth(request)
    return dict(request.headers.items())


def _url(lam: Any, name: str, auth: str = "NONE", **kwargs: Any) -> tuple[str, str]:
    """A URL for `name`: (its id, the Host its URL names)."""
    created = lam.create_function_url_config(FunctionName=name, AuthType=auth, **kwargs)
    host = created["FunctionUrl"].removeprefix("http://").rstrip("/")
    return host.split(".", 1)[0], host


def _allow_url(lam: Any, name: str, auth: str = "NONE") -> None:
    """The two statements AWS's console adds for a URL."""
    lam.add_permission(FunctionName=name, StatementId="url", Action="lambda:InvokeFunctionUrl", Principal="*",
                       FunctionUrlAuthType=auth)  # fmt: skip
    lam.add_permission(FunctionName=name, StatementId="invoke", Action="lambda:InvokeFunction", Principal="*",
                       InvokedViaFunctionUrl=True)  # fmt: skip


@pytest.fixture
def open_url(gateway: RunningGateway, lam: Any, fname: str) -> tuple[str, str]:
    create_function(lam, fname, SOURCE)
    url_id, host = _url(lam, fname)
    _allow_url(lam, fname)
    return url_id, host


# -- recognising -------------------------------------------------------------------------------------------------


def test_the_host_form(gateway: RunningGateway, open_url: tuple[str, str]) -> None:
    url_id, host = open_url
    status, _, answer = _request(gateway, "GET", "/hello/world?x=1&y=2", host)
    assert (status, answer) == (200, {"path": "/hello/world", "query": "x=1&y=2"})
    for other in (f"{url_id}.lambda-url.eu-west-1.example.test", f"{url_id.upper()}.LAMBDA-URL.localhost:1"):
        status, _, answer = _request(gateway, "POST", "/", other, b"{}")
        assert (status, answer) == (200, {"path": "/", "query": ""}), other


def test_the_path_form(gateway: RunningGateway, open_url: tuple[str, str]) -> None:
    url_id, _ = open_url
    for path, expected in ((f"/lambda-url/{url_id}/x/y?z=1", ("/x/y", "z=1")), (f"/lambda-url/{url_id}/", ("/", "")),
                           (f"/lambda-url/{url_id}/?q", ("/", "q"))):  # fmt: skip
        status, _, answer = _request(gateway, "GET", path)
        assert (status, answer) == (200, {"path": expected[0], "query": expected[1]}), path
    # the root without its slash is redirected to it, so that a page's relative links resolve under the URL
    for path, location in ((f"/lambda-url/{url_id}", f"/lambda-url/{url_id}/"),
                           (f"/lambda-url/{url_id.upper()}?q", f"/lambda-url/{url_id.upper()}/?q")):  # fmt: skip
        status, headers, _ = _request(gateway, "GET", path)
        assert (status, headers["location"]) == (308, location), path


def test_a_preflight_of_an_aws_iam_url_needs_no_signature(gateway: RunningGateway, lam: Any, fname: str) -> None:
    """Browsers never sign a preflight: with Cors configured the URL answers it before authentication, without
    invoking; the request that follows must be signed."""
    create_function(lam, fname, SOURCE)
    cors = {"AllowOrigins": ["https://app.example"], "AllowMethods": ["POST"], "AllowHeaders": ["authorization"]}
    _, host = _url(lam, fname, "AWS_IAM", Cors=cors)
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    status, headers, _ = _request(gateway, "OPTIONS", "/", host, headers=preflight)
    assert status == 200 and headers["access-control-allow-origin"] == "https://app.example"
    status, _, answer = _request(gateway, "POST", "/", host, b"{}", {"Origin": "https://app.example"})
    assert (status, answer) == (403, FORBIDDEN)


def test_unknown_and_malformed_urls_are_forbidden(gateway: RunningGateway, open_url: tuple[str, str]) -> None:
    url_id, _ = open_url
    hosts = [
        "0" * 32 + ".lambda-url.us-east-1.localhost",  # well-formed, unknown
        ".lambda-url.localhost",  # no id
        url_id + "0.lambda-url.localhost",  # too long
        url_id[:-1] + ".lambda-url.localhost",  # too short
        url_id[:-1] + "_.lambda-url.localhost",  # not [a-z0-9]
        "x" * 4000 + ".lambda-url.localhost",
        "é" * 32 + ".lambda-url.localhost",
    ]
    for host in hosts:
        status, headers, answer = _request(gateway, "GET", "/", host)
        assert (status, headers["x-amzn-errortype"]) == (403, "AccessDeniedException"), host
        assert set(answer) == {"Message"}  # a URL's error document, not the API's
    for path in ("/lambda-url/", "/lambda-url//x", f"/lambda-url/{'0' * 32}/x", "/lambda-url/../2015-03-31/functions"):
        status, headers, answer = _request(gateway, "GET", path)
        assert (status, headers["x-amzn-errortype"]) == (403, "AccessDeniedException"), path
        assert set(answer) == {"Message"}
    assert gateway.health()["status"] == "ok"


def test_url_requests_never_reach_the_api(gateway: RunningGateway, lam: Any, open_url: tuple[str, str]) -> None:
    url_id, host = open_url
    status, _, answer = _request(gateway, "GET", "/2015-03-31/functions/", host)
    assert (status, answer) == (200, {"path": "/2015-03-31/functions/", "query": ""})  # the function's path
    status, _, answer = _request(gateway, "GET", "/2015-03-31/functions/", "0" * 32 + ".lambda-url.localhost")
    assert status == 403 and set(answer) == {"Message"}
    status, _, answer = _request(gateway, "GET", f"/lambda-url/{url_id}/2015-03-31/functions/")
    assert answer == {"path": "/2015-03-31/functions/", "query": ""}


def test_api_requests_whose_host_mentions_lambda_url_are_the_api_s(gateway: RunningGateway, lam: Any) -> None:
    for host in ("api.example.lambda-url.localhost", "lambda-url.localhost", "lambda-url", "x.lambda-urls.localhost"):
        status, _, answer = _request(gateway, "GET", "/2015-03-31/functions/", host)
        assert status == 200 and "Functions" in answer, host
    status, _, answer = _request(gateway, "GET", "/lambda-urlx/abc")
    assert status == 501  # an unknown path of the API, not a URL


def test_recognising_costs_the_hot_path_a_string_test() -> None:
    host, path = "127.0.0.1:9000", "/2015-03-31/functions/f/invocations"
    assert not looks_like_url(host, path)
    assert url_target("abc.lambda-url.x", "/p?q") == ("abc", "/p?q")
    per_call = min(timeit.repeat(lambda: looks_like_url(host, path), number=100_000, repeat=3)) / 100_000
    assert per_call < 5e-6, per_call  # well under a microsecond on a quiet machine; generous for a busy one


# -- authorising ---------------------------------------------------------------------------------------------------


@pytest.fixture
def signed_gateway(gateway_factory: GatewayFactory) -> RunningGateway:
    return gateway_factory(env=CREDENTIALS)


def test_aws_iam_needs_a_valid_signature(signed_gateway: RunningGateway, fname: str) -> None:
    gw = signed_gateway
    lam = gw.client()
    create_function(lam, fname, SOURCE)
    _, host = _url(lam, fname, "AWS_IAM")
    body = b'{"hello": "world"}'
    ok = _signed(gw, "POST", "/p?a=1", host, body)
    status, _, answer = _request(gw, "POST", "/p?a=1", host, body, ok)
    assert (status, answer) == (200, {"path": "/p", "query": "a=1"})
    refused = {
        "unsigned": {},
        "another secret": _signed(gw, "POST", "/p?a=1", host, body, secret="nope"),
        "an unknown key": _signed(gw, "POST", "/p?a=1", host, body, key="AKIDUNKNOWN"),
        "another service": _signed(gw, "POST", "/p?a=1", host, body, service="execute-api"),
        "a malformed header": {**ok, "Authorization": "AWS4-HMAC-SHA256 nonsense"},
    }
    for what, headers in refused.items():
        status, headers_back, answer = _request(gw, "POST", "/p?a=1", host, body, headers)
        assert (status, answer) == (403, FORBIDDEN), what
        assert headers_back["x-amzn-errortype"] == "AccessDeniedException"
    status, _, answer = _request(gw, "POST", "/p?a=1", host, b'{"hello": "there"}', ok)  # another body
    assert (status, answer) == (403, FORBIDDEN)
    status, _, answer = _request(gw, "POST", "/p?a=2", host, body, ok)  # another query
    assert (status, answer) == (403, FORBIDDEN)
    path_form = f"/lambda-url/{host.split('.', 1)[0]}/p"  # the path form signs its own path
    status, _, _ = _request(gw, "GET", path_form, host="127.0.0.1", headers=_signed(gw, "GET", path_form, "127.0.0.1"))
    assert status == 200


def test_a_none_url_needs_no_signature_even_when_the_api_does(signed_gateway: RunningGateway, fname: str) -> None:
    gw = signed_gateway
    lam = gw.client()
    create_function(lam, fname, SOURCE)
    _, host = _url(lam, fname, "NONE")
    _allow_url(lam, fname)
    status, _, answer = _request(gw, "GET", "/x", host)
    assert (status, answer) == (200, {"path": "/x", "query": ""})
    status, _, answer = _request(gw, "GET", "/2015-03-31/functions/")  # the API still wants its signature
    assert status == 403 and answer.get("Message") != "Forbidden"


def test_open_gateway_takes_any_key_but_not_no_signature(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    _, host = _url(lam, fname, "AWS_IAM")
    status, _, answer = _request(gateway, "GET", "/", host, headers=_signed(gateway, "GET", "/", host, key="anyone"))
    assert (status, answer) == (200, {"path": "/", "query": ""})
    for headers in ({}, {"Authorization": "Bearer x"}, _signed(gateway, "GET", "/", host, service="s3")):
        status, _, answer = _request(gateway, "GET", "/", host, headers=headers)
        assert (status, answer) == (403, FORBIDDEN), headers


def test_none_needs_the_function_s_policy(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    _, host = _url(lam, fname, "NONE")
    status, _, answer = _request(gateway, "GET", "/", host)
    assert (status, answer) == (403, FORBIDDEN)  # no statement grants the URL yet
    _allow_url(lam, fname)
    status, _, answer = _request(gateway, "GET", "/", host)
    assert (status, answer) == (200, {"path": "/", "query": ""})


# -- functions as callers ------------------------------------------------------------------------------------------

URL_CALLER = r"""
import os, urllib.error, urllib.request
import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

def lambda_handler(event, context):
    if "create" in event:  # a function's credentials may not make or change URLs
        import boto3
        from botocore.exceptions import ClientError
        try:
            boto3.client("lambda").create_function_url_config(FunctionName=event["create"], AuthType="NONE")
            return {"status": 201, "body": "created"}
        except ClientError as exc:
            return {"status": exc.response["ResponseMetadata"]["HTTPStatusCode"], "body": exc.response["Error"]["Code"]}
    url = os.environ["AWS_ENDPOINT_URL_LAMBDA"] + event["path"]
    headers = {}
    if event.get("sign"):
        request = AWSRequest(method="GET", url=url)
        credentials = botocore.session.Session().get_credentials()
        if event.get("forge"):  # a made-up key: not an operator's, whatever the gateway's own configuration
            from botocore.credentials import Credentials
            credentials = Credentials("AKIAFORGEDOPERATOR00", "x" * 40)
        SigV4Auth(credentials, "lambda", os.environ["AWS_REGION"]).add_auth(request)
        headers = dict(request.headers.items())
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as resp:
            return {"status": resp.status, "body": resp.read().decode()}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "body": exc.read().decode()}
"""


def test_functions_call_urls_with_their_own_credentials(gateway_factory: GatewayFactory) -> None:
    """A handler reaches URLs through the environments' listener (where the API needs a signature): an AWS_IAM URL
    with its session credentials, a NONE URL without; unsigned, the AWS_IAM one is refused."""
    port = free_port()
    env = {**CREDENTIALS, "GATEWAY_SANDBOX": "rlimits", "GATEWAY_ENVIRONMENT_LISTEN": f"127.0.0.2:{port}"}
    gw = gateway_factory(env=env)
    lam = gw.client()
    create_function(lam, "url-caller", URL_CALLER, Timeout=30)
    create_function(lam, "iam-callee", SOURCE)
    create_function(lam, "open-callee", SOURCE)
    iam_id, _ = _url(lam, "iam-callee", "AWS_IAM")
    open_id, _ = _url(lam, "open-callee", "NONE")
    _allow_url(lam, "open-callee")

    def call(path: str, sign: bool) -> dict[str, Any]:
        _, answer = invoke_json(lam, "url-caller", {"path": path, "sign": sign})
        assert isinstance(answer, dict) and "status" in answer, answer
        return answer

    signed = call(f"/lambda-url/{iam_id}/who", True)
    assert signed["status"] == 200 and json.loads(signed["body"]) == {"path": "/who", "query": ""}, signed
    unsigned = call(f"/lambda-url/{iam_id}/who", False)
    assert unsigned["status"] == 403 and json.loads(unsigned["body"]) == FORBIDDEN
    public = call(f"/lambda-url/{open_id}/", False)
    assert public["status"] == 200, public
    api = call("/2015-03-31/functions/", False)  # the API itself still wants a signature there
    assert api["status"] == 403 and json.loads(api["body"]).get("Message") != "Forbidden"
    _, denied = invoke_json(lam, "url-caller", {"create": "url-caller"})
    assert denied == {"status": 403, "body": "AccessDeniedException"}
    assert lam.list_function_url_configs(FunctionName="url-caller")["FunctionUrlConfigs"] == []


def test_on_an_open_gateway_a_function_cannot_sign_as_an_operator(gateway_factory: GatewayFactory) -> None:
    """The gateway runs open (no operator credentials; the main listener takes any key as an operator's), but a
    request from an environment counts only with real credentials: a made-up key is refused, and in policy mode the
    function's own session is held to the callee's policy."""
    gw = gateway_factory(env={"GATEWAY_FUNCTION_INVOKE": "policy"})  # a jail: environments reach only their listener
    lam = gw.client()
    create_function(lam, "url-caller", URL_CALLER, Timeout=30)
    create_function(lam, "iam-callee", SOURCE)
    iam_id, _ = _url(lam, "iam-callee", "AWS_IAM")

    def call(**event: Any) -> dict[str, Any]:
        _, answer = invoke_json(lam, "url-caller", {"path": f"/lambda-url/{iam_id}/who", "sign": True, **event})
        assert isinstance(answer, dict) and "status" in answer, answer
        return answer

    assert call(forge=True)["status"] == 403
    assert call()["status"] == 403  # its session: no statement grants its role yet
    _allow_url(lam, "iam-callee", "AWS_IAM")  # to "*": any signed caller
    assert call()["status"] == 200
    assert call(forge=True)["status"] == 403


def test_an_aws_iam_signature_must_cover_the_body(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    _, host = _url(lam, fname, "AWS_IAM")
    body = b'{"a": 1}'
    request = AWSRequest(method="POST", url=f"http://{host}/", data=body,
                         headers={"Host": host, "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})  # fmt: skip
    SigV4Auth(Credentials("anyone", "x"), "lambda", "us-east-1").add_auth(request)
    status, _, answer = _request(gateway, "POST", "/", host, body, dict(request.headers.items()))
    assert (status, answer) == (403, FORBIDDEN)
    status, _, _ = _request(gateway, "POST", "/", host, body, _signed(gateway, "POST", "/", host, body, key="anyone"))
    assert status == 200
