"""SigV4 on a live gateway: boto3 signs as usual; unsigned, wrongly signed and unknown-key requests get AWS's 403s."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import GatewayFactory, RunningGateway, create_function, invoke_json

CREDENTIALS = {"GATEWAY_ACCESS_KEY_ID": "test", "GATEWAY_SECRET_ACCESS_KEY": "test"}  # what gw.client() signs with
ECHO = "def lambda_handler(event, context):\n    print('hello from', context.function_name)\n    return event\n"


def _client(gw: RunningGateway, key: str, secret: str) -> Any:
    cfg = Config(retries={"total_max_attempts": 1})
    client = boto3.client(
        "lambda", endpoint_url=gw.url, region_name="us-east-1", config=cfg,
        aws_access_key_id=key, aws_secret_access_key=secret,
    )  # fmt: skip
    gw.clients.append(client)
    return client


def _code(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    return exc.value.response["ResponseMetadata"]["HTTPStatusCode"], exc.value.response["Error"]["Code"]


@pytest.fixture
def secured(gateway_factory: GatewayFactory) -> RunningGateway:
    return gateway_factory(env=CREDENTIALS)


def test_signed_requests_work_as_usual(secured: RunningGateway) -> None:
    assert secured.health()["auth"] == "sigv4"  # /healthz stays open for probes
    lam = secured.client()
    create_function(lam, "echo", ECHO)
    version = lam.publish_version(FunctionName="echo")["Version"]
    lam.create_alias(FunctionName="echo", Name="live", FunctionVersion=version)
    assert invoke_json(lam, "echo", {"n": 1})[1] == {"n": 1}
    assert invoke_json(lam, "echo:live", {"n": 2})[1] == {"n": 2}  # a ':' in the path, signed and verified
    assert invoke_json(lam, "echo", {"n": 3}, Qualifier="live")[1] == {"n": 3}  # a query string
    pages = lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 1})
    assert [f["FunctionName"] for page in pages for f in page["Functions"]] == ["echo"]
    status, _, _ = secured.request("GET", "/metrics")
    assert status == 200  # Prometheus does not sign


def test_wrong_secret_unknown_key_and_unsigned_requests_are_refused(secured: RunningGateway) -> None:
    create_function(secured.client(), "echo", ECHO)
    with pytest.raises(ClientError) as wrong:
        _client(secured, "test", "not-the-secret").list_functions()
    assert _code(wrong) == (403, "InvalidSignatureException")
    with pytest.raises(ClientError) as unknown:
        _client(secured, "AKIDUNKNOWN", "test").invoke(FunctionName="echo", Payload=b"{}")
    assert _code(unknown) == (403, "UnrecognizedClientException")
    status, headers, body = secured.request(
        "POST", "/2015-03-31/functions/echo/invocations", b"{}", {"Content-Type": "application/json"}
    )
    assert status == 403 and headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert json.loads(body)["message"] == "Missing Authentication Token"
    status, headers, _ = secured.request("GET", "/2015-03-31/no-such-operation")
    assert status == 403  # the signature is checked before the operation is looked up


def test_gateway_logs_signs_with_the_same_credentials(secured: RunningGateway) -> None:
    lam = secured.client()
    create_function(lam, "echo", ECHO)
    invoke_json(lam, "echo", {})
    env = {**os.environ, **CREDENTIALS}
    cmd = [sys.executable, "-m", "gateway", "logs", "echo", "--url", secured.url]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr
    assert "hello from echo" in done.stdout
    unsigned = {k: v for k, v in env.items() if not k.startswith("GATEWAY_")}
    refused = subprocess.run(cmd, env=unsigned, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "Missing Authentication Token" in refused.stderr


def test_binding_beyond_loopback_without_credentials_is_refused(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "gateway", "serve", "--host", "0.0.0.0", "--port", "1", "--data-dir", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent)
    assert done.returncode != 0
    assert "--insecure-no-auth" in done.stderr and "credentials" in done.stderr
