"""Runtime API clients nobody here wrote, through the real gateway and proxy: AWS's Python runtime interface client
(awslambdaric 4.2.2 from PyPI, run by the system's /usr/bin/python3) and AWS's Go library (aws-lambda-go, a function
built by the test with `go build`). Both are fetched and built once per session into a temporary directory.

Without network access to PyPI or the Go module proxy, or without Go, these tests skip (with CI=true they fail:
CI's machine has both; .ci/run installs Go where it is missing).
"""

from __future__ import annotations

import base64
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROLE, invoke_json, make_zip

SYSTEM_PYTHON = "/usr/bin/python3"
AWSLAMBDARIC = "awslambdaric==4.2.2"
AWS_LAMBDA_GO = "github.com/aws/aws-lambda-go v1.47.0"
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
RIC_BOOTSTRAP = f"#!/bin/sh\nexec {SYSTEM_PYTHON} -m awslambdaric app.handler\n"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _go() -> str | None:
    return shutil.which("go") or next(
        (p for p in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go") if os.access(p, os.X_OK)), None
    )


def build_go_bootstrap(directory: Path) -> Path:
    """A Go function's `bootstrap` built with aws-lambda-go (a static binary, no RPC: provided.* runtimes)."""
    go = _go()
    if go is None:
        _unavailable("no Go toolchain")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "main.go").write_text(GO_SOURCE)
    module, version = AWS_LAMBDA_GO.split()
    (directory / "go.mod").write_text(f"module example.com/fn\n\ngo 1.18\n\nrequire {module} {version}\n")
    env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0", "GOOS": "linux"}
    done = subprocess.run(
        [str(go), "build", "-tags", "lambda.norpc", "-o", "bootstrap", "."],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        _unavailable(f"go build failed (no module proxy?): {done.stderr[-2000:]}")
    return directory / "bootstrap"


def install_awslambdaric(directory: Path) -> Path:
    """awslambdaric and its dependencies as wheels for the system Python, in `directory` (the function's code)."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        _unavailable("no system /usr/bin/python3")
    version = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(directory), "--only-binary=:all:",
         "--python-version", version, "--implementation", "cp", "--platform", f"manylinux2014_{platform.machine()}",
         AWSLAMBDARIC],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    if done.returncode != 0:
        _unavailable(f"pip could not install {AWSLAMBDARIC} for Python {version}: {done.stderr[-2000:]}")
    return directory


@pytest.fixture(scope="session")
def go_zip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    binary = build_go_bootstrap(tmp_path_factory.mktemp("go-function"))
    return make_zip({"bootstrap": binary.read_bytes()}, executable={"bootstrap"})


@pytest.fixture(scope="session")
def ric_zip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    root = install_awslambdaric(tmp_path_factory.mktemp("awslambdaric"))
    files: dict[str, str | bytes] = {"bootstrap": RIC_BOOTSTRAP, "app.py": RIC_APP}
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            files[str(path.relative_to(root))] = path.read_bytes()
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
    assert body["errorType"] == "Runtime.ExitError"
    assert body["errorMessage"] == "Runtime exited with error: exit status 4"
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
