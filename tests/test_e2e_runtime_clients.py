"""Runtime API clients nobody here wrote, through the real gateway and proxy: AWS's Python runtime interface client
(awslambdaric 4.2.2 from PyPI, run by the system's /usr/bin/python3) and AWS's Go library (aws-lambda-go, a function
built by the test with `go build`). Both are fetched and built once per session into a temporary directory
(bench/runtime_builds.py, which the bench suite's `runtimes` scenario uses too).

Without network access to PyPI or the Go module proxy, or without Go, these tests skip (with CI=true they fail:
CI's machine has both; .ci/run installs Go where it is missing).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from bench import runtime_builds
from tests.conftest import ROLE, GatewayFactory, invoke_json, make_zip, unavailable

GO_SOURCE = """package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

func handler(ctx context.Context, event map[string]any) (map[string]any, error) {
	lc, _ := lambdacontext.FromContext(ctx)
	fmt.Println("go event:", event["n"])
	if message, ok := event["fail"].(string); ok {
		return nil, errors.New(message)
	}
	if _, ok := event["exit"]; ok {
		os.Exit(5)
	}
	return map[string]any{"echo": event, "request_id": lc.AwsRequestID, "pid": os.Getpid()}, nil
}

func main() {
	if os.Getenv("INIT_FAIL") != "" {
		fmt.Println("failing init")
		os.Exit(4)
	}
	lambda.Start(handler)
}
"""
RIC_APP = """import os
def handler(event, context):
    print("ric event:", event.get("n"))
    if "fail" in event:
        raise ValueError(event["fail"])
    if "exit" in event:
        os._exit(event["exit"])
    return {"echo": event, "request_id": context.aws_request_id, "pid": os.getpid(),
            "remaining": context.get_remaining_time_in_millis()}
"""


@pytest.fixture(scope="session")
def go_zip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    try:
        binary = runtime_builds.go_bootstrap(tmp_path_factory.mktemp("go-function"), GO_SOURCE)
    except runtime_builds.Unavailable as exc:
        unavailable(str(exc))
    return make_zip({"bootstrap": binary.read_bytes()}, executable={"bootstrap"})


@pytest.fixture(scope="session")
def ric_zip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    try:
        root = runtime_builds.awslambdaric_tree(tmp_path_factory.mktemp("awslambdaric"))
    except runtime_builds.Unavailable as exc:
        unavailable(str(exc))
    files = {**runtime_builds.tree_files(root), "bootstrap": runtime_builds.RIC_BOOTSTRAP, "app.py": RIC_APP}
    return make_zip(files, executable={"bootstrap"})


def _create(lam: Any, name: str, code: bytes, **kwargs: Any) -> None:
    lam.create_function(
        FunctionName=name, Runtime="provided.al2023", Role=ROLE, Handler="app.handler", Code={"ZipFile": code}, **kwargs
    )


def test_aws_lambda_go(lam: Any, fname: str, go_zip: bytes) -> None:
    _create(lam, fname, go_zip)
    first = lam.invoke(FunctionName=fname, Payload=b'{"n": 1}', LogType="Tail")
    body = json.loads(first["Payload"].read())
    assert "FunctionError" not in first
    assert body["echo"] == {"n": 1} and body["request_id"] == first["ResponseMetadata"]["RequestId"]
    log = base64.b64decode(first["LogResult"]).decode()
    assert "go event: 1" in log and "Init Duration" in log
    resp, again = invoke_json(lam, fname, {"n": 2})
    assert again["pid"] == body["pid"]  # warm
    resp, error = invoke_json(lam, fname, {"fail": "boom"})
    assert resp["FunctionError"] == "Unhandled"
    assert error["errorMessage"] == "boom" and error["errorType"] == "errorString"
    resp, died = invoke_json(lam, fname, {"exit": True})
    assert resp["FunctionError"] == "Unhandled" and died["errorType"] == "Runtime.ExitError"
    assert died["errorMessage"].endswith("Runtime exited with error: exit status 5")


def test_aws_lambda_go_init_failure(lam: Any, fname: str, go_zip: bytes) -> None:
    _create(lam, fname, go_zip, Environment={"Variables": {"INIT_FAIL": "1"}})
    first = lam.invoke(FunctionName=fname, Payload=b"{}", LogType="Tail")
    body = json.loads(first["Payload"].read())
    assert first["FunctionError"] == "Unhandled"
    rid = first["ResponseMetadata"]["RequestId"]
    assert body == {  # Lambda's words for an Init that ended with the runtime, as for one that ends mid-invocation
        "errorMessage": f"RequestId: {rid} Error: Runtime exited with error: exit status 4",
        "errorType": "Runtime.ExitError",
    }
    assert "failing init" in base64.b64decode(first["LogResult"]).decode()


def test_awslambdaric(lam: Any, fname: str, ric_zip: bytes) -> None:
    _create(lam, fname, ric_zip, Timeout=10)
    first = lam.invoke(FunctionName=fname, Payload=b'{"n": 1}', LogType="Tail")
    body = json.loads(first["Payload"].read())
    assert "FunctionError" not in first, body
    assert body["echo"] == {"n": 1} and body["request_id"] == first["ResponseMetadata"]["RequestId"]
    assert 0 < body["remaining"] <= 10000
    assert "ric event: 1" in base64.b64decode(first["LogResult"]).decode()
    _, again = invoke_json(lam, fname, {"n": 2})
    assert again["pid"] == body["pid"]
    resp, error = invoke_json(lam, fname, {"fail": "bad value"})
    assert resp["FunctionError"] == "Unhandled"
    assert error["errorType"] == "ValueError" and error["errorMessage"] == "bad value"
    assert any("raise ValueError" in line for line in error["stackTrace"])
    lam.update_function_configuration(FunctionName=fname, Handler="app.missing")
    resp, error = invoke_json(lam, fname, {})
    assert resp["FunctionError"] == "Unhandled"
    assert error["errorType"] == "Runtime.HandlerNotFound"  # awslambdaric's init/error, passed on


def test_aws_lambda_go_without_a_jail(gateway_factory: GatewayFactory, go_zip: bytes) -> None:
    """Without a jail the runtime runs under the rlimits that stand in for cgroups (an address-space limit among
    them): a Go runtime starts and answers all the same."""
    lam = gateway_factory(env={"GATEWAY_SANDBOX": "rlimits"}).client()
    _create(lam, "go-unjailed", go_zip)
    resp = lam.invoke(FunctionName="go-unjailed", Payload=b'{"n": 1}', LogType="Tail")
    body = json.loads(resp["Payload"].read())
    assert "FunctionError" not in resp, (body, base64.b64decode(resp["LogResult"]).decode())
    assert body["echo"] == {"n": 1}
