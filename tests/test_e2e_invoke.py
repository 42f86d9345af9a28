"""Invoke through the real gateway and real environments: results, errors, headers, limits, name forms."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import RUNTIME, RunningGateway, create_function, invoke_json

ECHO = """
import os
def lambda_handler(event, context):
    print("echo", json_dumps(event))
    return {"event": event, "version": context.function_version}
from json import dumps as json_dumps
"""


@pytest.fixture
def echo(lam: Any, fname: str) -> str:
    create_function(lam, fname, ECHO)
    return fname


def test_invoke_returns_result_and_headers(lam: Any, echo: str) -> None:
    resp, body = invoke_json(lam, echo, {"a": 1})
    assert resp["StatusCode"] == 200
    assert resp["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in resp
    assert body == {"event": {"a": 1}, "version": "$LATEST"}


@pytest.mark.parametrize(
    "form",
    [
        "{n}",
        "{n}:$LATEST",
        "arn:aws:lambda:us-east-1:123456789012:function:{n}",
        "arn:aws:lambda:us-east-1:123456789012:function:{n}:$LATEST",
        "123456789012:function:{n}",
    ],
)
def test_every_name_form_invokes(lam: Any, echo: str, form: str) -> None:
    resp, body = invoke_json(lam, form.format(n=echo), {"x": form})
    assert resp["StatusCode"] == 200
    assert body["event"] == {"x": form}


def test_qualifier_query_and_conflict(gateway: RunningGateway, echo: str) -> None:
    status, _, _ = gateway.request("POST", f"/2015-03-31/functions/{echo}/invocations?Qualifier=$LATEST", b"{}")
    assert status == 200
    status, headers, body = gateway.request(
        "POST", f"/2015-03-31/functions/{echo}:$LATEST/invocations?Qualifier=7", b"{}"
    )
    assert status == 400
    assert headers["x-amzn-ErrorType"] == "InvalidParameterValueException"
    assert json.loads(body)["Type"] == "User"


def test_unknown_function_is_404(lam: Any) -> None:
    with pytest.raises(ClientError) as exc:
        lam.invoke(FunctionName="no-such-function", Payload=b"{}")
    err = exc.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert err["Error"]["Code"] == "ResourceNotFoundException"
    assert "function:no-such-function" in err["Error"]["Message"]


def test_empty_body_is_empty_object_and_bad_json_is_400(gateway: RunningGateway, echo: str) -> None:
    path = f"/2015-03-31/functions/{echo}/invocations"
    status, _, body = gateway.request("POST", path, b"")
    assert status == 200
    assert json.loads(body)["event"] == {}
    status, headers, body = gateway.request("POST", path, b"{not json")
    assert status == 400
    assert headers["x-amzn-ErrorType"] == "InvalidRequestContentException"
    assert json.loads(body)["message"].startswith("Could not parse request body into json")


def test_dry_run_and_event(lam: Any, echo: str) -> None:
    resp = lam.invoke(FunctionName=echo, InvocationType="DryRun")
    assert resp["StatusCode"] == 204
    resp = lam.invoke(FunctionName=echo, InvocationType="Event", Payload=b"{}")
    assert resp["StatusCode"] == 202  # tests/test_e2e_async.py has the rest


def test_log_tail_has_start_output_end_report(lam: Any, echo: str) -> None:
    first = lam.invoke(FunctionName=echo, Payload=b'{"n": 1}', LogType="Tail")
    second = lam.invoke(FunctionName=echo, Payload=b'{"n": 2}', LogType="Tail")
    log1 = base64.b64decode(first["LogResult"]).decode()
    log2 = base64.b64decode(second["LogResult"]).decode()
    rid = first["ResponseMetadata"]["RequestId"]
    assert log1.startswith(f"START RequestId: {rid} Version: $LATEST\n")
    assert 'echo {"n": 1}' in log1
    assert f"END RequestId: {rid}" in log1
    report = next(line for line in log1.splitlines() if line.startswith("REPORT"))
    for field in (
        "Duration: ",
        "Billed Duration: ",
        "Memory Size: 128 MB",
        "Max Memory Used: ",
        "Init Duration: ",
    ):
        assert field in report
    assert "Init Duration" not in log2  # warm: no init
    assert 'echo {"n": 1}' not in log2  # output is captured per invocation
    assert 'echo {"n": 2}' in log2


def test_log_tail_is_last_4k(lam: Any, fname: str) -> None:
    create_function(lam, fname, "def lambda_handler(e, c):\n    print('x' * 10000)\n    return 1\n")
    resp = lam.invoke(FunctionName=fname, LogType="Tail")
    log = base64.b64decode(resp["LogResult"])
    assert len(log) == 4096
    assert log.rstrip().split(b"\n")[-1].startswith(b"REPORT")


def test_function_error_is_unhandled_200(lam: Any, fname: str) -> None:
    create_function(lam, fname, "def lambda_handler(e, c):\n    raise KeyError('boom')\n")
    resp, body = invoke_json(lam, fname)
    assert resp["StatusCode"] == 200
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "KeyError"
    assert body["errorMessage"] == "'boom'"
    assert body["requestId"] == resp["ResponseMetadata"]["RequestId"]
    assert any("lambda_function.py" in line for line in body["stackTrace"])


@pytest.mark.parametrize(
    ("source", "handler", "error_type", "message"),
    [
        (
            "x = 1\n",
            "missing_module.handler",
            "Runtime.ImportModuleError",
            "Unable to import module 'missing_module': No module named 'missing_module'",
        ),
        (
            "x = 1\n",
            "lambda_function.nope",
            "Runtime.HandlerNotFound",
            "Handler 'nope' missing on module 'lambda_function'",
        ),
        (
            "def lambda_handler(e, c)\n    return 1\n",
            "lambda_function.lambda_handler",
            "Runtime.UserCodeSyntaxError",
            "Syntax error in module 'lambda_function'",
        ),
        ("x = 1\n", "lambda_function", "Runtime.MalformedHandlerName", "Bad handler 'lambda_function'"),
        ("raise ValueError('bad init')\n", "lambda_function.h", "ValueError", "bad init"),
    ],
)
def test_init_errors(lam: Any, fname: str, source: str, handler: str, error_type: str, message: str) -> None:
    create_function(lam, fname, source, handler=handler)
    for _ in range(2):  # init is retried on the next invoke, and fails the same way
        resp, body = invoke_json(lam, fname)
        assert resp["StatusCode"] == 200
        assert resp["FunctionError"] == "Unhandled"
        assert body["errorType"] == error_type
        assert body["errorMessage"].startswith(message)
        # Lambda's Python runtime: an Init error belongs to no invocation ("requestId" empty), with its stack
        assert sorted(body) == ["errorMessage", "errorType", "requestId", "stackTrace"]
        assert body["requestId"] == "" and isinstance(body["stackTrace"], list)


def test_result_that_cannot_be_serialized(lam: Any, fname: str) -> None:
    create_function(lam, fname, "def lambda_handler(e, c):\n    return {'s': {1, 2}}\n")
    resp, body = invoke_json(lam, fname)
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.MarshalError"


def test_payload_limits(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, "def lambda_handler(e, c):\n    return 'x' * e['n']\n")
    big = b'{"pad": "' + b"x" * (6 * 1024 * 1024) + b'"}'
    status, headers, _ = gateway.request("POST", f"/2015-03-31/functions/{fname}/invocations", big)
    assert status == 413
    assert headers["x-amzn-ErrorType"] == "RequestEntityTooLargeException"
    resp, body = invoke_json(lam, fname, {"n": 5 * 1024 * 1024})
    assert "FunctionError" not in resp
    assert len(body) == 5 * 1024 * 1024
    resp, body = invoke_json(lam, fname, {"n": 7 * 1024 * 1024})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Function.ResponseSizeTooLarge"


CONTEXT = """
import os, resource, sys
def lambda_handler(event, context):
    return {
        "attrs": {k: getattr(context, k) for k in ("function_name", "function_version", "invoked_function_arn",
                  "memory_limit_in_mb", "aws_request_id", "log_group_name", "log_stream_name")},
        "remaining": context.get_remaining_time_in_millis(),
        "identity": [context.identity.cognito_identity_id, context.identity.cognito_identity_pool_id],
        "client_context": context.client_context and context.client_context.custom,
        "env": dict(os.environ),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
        "nproc": resource.getrlimit(resource.RLIMIT_NPROC),
        "session_leader": os.getsid(0) == os.getpid(),
        "cwd": os.getcwd(),
    }
"""


def test_context_environment_and_limits(lam: Any, fname: str) -> None:
    create_function(lam, fname, CONTEXT, Timeout=7, MemorySize=256, Environment={"Variables": {"MY_SETTING": "on"}})
    ctx = base64.b64encode(json.dumps({"custom": {"k": "v"}}).encode()).decode()
    arn = f"arn:aws:lambda:us-east-1:123456789012:function:{fname}"
    resp, body = invoke_json(lam, arn, ClientContext=ctx)
    attrs = body["attrs"]
    assert attrs["function_name"] == fname
    assert attrs["function_version"] == "$LATEST"
    assert attrs["invoked_function_arn"] == arn
    assert attrs["memory_limit_in_mb"] == "256"
    assert attrs["aws_request_id"] == resp["ResponseMetadata"]["RequestId"]
    assert attrs["log_group_name"] == f"/aws/lambda/{fname}"
    assert "[$LATEST]" in attrs["log_stream_name"]
    assert 6000 < body["remaining"] <= 7000
    assert body["identity"] == [None, None]
    assert body["client_context"] == {"k": "v"}
    env = body["env"]
    assert env["MY_SETTING"] == "on"
    for key, value in {
        "_HANDLER": "lambda_function.lambda_handler",
        "AWS_REGION": "us-east-1",
        "AWS_LAMBDA_FUNCTION_NAME": fname,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{RUNTIME}",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "TZ": ":UTC",
    }.items():
        assert env[key] == value
    assert env["LAMBDA_TASK_ROOT"] == body["cwd"]
    assert "GATEWAY_LOG_LEVEL" not in env and "GATEWAY_PID" not in env  # never the gateway's own
    assert body["nofile"] == [1024, 1024]
    assert body["nproc"] == [1024, 1024]
    assert body["session_leader"] is True


def test_bad_client_context_is_rejected(lam: Any, echo: str) -> None:
    with pytest.raises(ClientError) as exc:
        lam.invoke(FunctionName=echo, ClientContext="not base64!!")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI is not installed")
def test_aws_cli_invoke(gateway: RunningGateway, echo: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    out = tmp_path / "out.json"
    cmd = [
        "aws",
        "--endpoint-url",
        gateway.url,
        "lambda",
        "invoke",
        "--function-name",
        echo,
        "--cli-binary-format",
        "raw-in-base64-out",
        "--payload",
        '{"from": "cli"}',
        "--log-type",
        "Tail",
        str(out),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    if "Unknown options: --cli-binary-format" in done.stderr:  # AWS CLI v1: payloads are raw already
        cmd = [c for c in cmd if c not in ("--cli-binary-format", "raw-in-base64-out")]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    meta = json.loads(done.stdout)
    assert meta["StatusCode"] == 200
    assert meta["ExecutedVersion"] == "$LATEST"
    assert "START RequestId" in base64.b64decode(meta["LogResult"]).decode()
    assert json.loads(out.read_text())["event"] == {"from": "cli"}


FDS = """
import os
def lambda_handler(event, context):
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return fds
"""


def test_no_gateway_descriptor_leaks_into_user_code(lam: Any, fname: str) -> None:
    create_function(lam, fname, FDS)
    fds = invoke_json(lam, fname)[1]
    extra = {fd: target for fd, target in fds.items() if fd not in ("0", "1", "2")}
    sockets = [t for t in extra.values() if t.startswith("socket:")]
    assert len(sockets) == 1, extra  # the environment's own connection, nothing else of the gateway's
    others = [t for t in extra.values() if not t.startswith("socket:") and not t.startswith("/proc/")]
    assert others == [], extra


OUTPUT = """
import logging, subprocess, sys, time
print("init says hi")
def lambda_handler(event, context):
    print("from print")
    sys.stderr.write("from stderr\\n")
    logging.getLogger().warning("from logging")
    logging.getLogger().info("not shown: below WARNING")
    subprocess.run(["echo", "from a subprocess"], check=True)
    if event.get("sleep"):
        print("before the timeout", flush=True)
        time.sleep(event["sleep"])
    return 1
"""


def test_every_kind_of_output_is_captured(lam: Any, fname: str) -> None:
    create_function(lam, fname, OUTPUT, Timeout=1)
    first = base64.b64decode(lam.invoke(FunctionName=fname, LogType="Tail")["LogResult"]).decode()
    assert first.index("init says hi") < first.index("START RequestId")  # Init output comes before START
    body = first[first.index("START") :]
    for text in ("from print", "from stderr", "from a subprocess"):
        assert text in body
    assert "[WARNING]\t" in body and "\tfrom logging" in body
    assert "not shown" not in body
    second = base64.b64decode(lam.invoke(FunctionName=fname, LogType="Tail")["LogResult"]).decode()
    assert "init says hi" not in second
    timed_out = lam.invoke(FunctionName=fname, Payload=b'{"sleep": 5}', LogType="Tail")
    log = base64.b64decode(timed_out["LogResult"]).decode()
    assert "before the timeout" in log  # what it printed before it was killed is kept
    assert "Task timed out after 1.00 seconds" in log
    assert "Status: timeout" in log


def test_huge_error_message_is_cut_not_fatal(lam: Any, fname: str) -> None:
    create_function(lam, fname, "def lambda_handler(e, c):\n    raise ValueError('x' * 7_000_000)\n")
    resp, body = invoke_json(lam, fname)
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "ValueError"
    assert 1000 < len(body["errorMessage"]) < 1_000_000


def test_json_that_orjson_refuses_but_lambda_accepts(gateway: RunningGateway, echo: str) -> None:
    status, _, _ = gateway.request("POST", f"/2015-03-31/functions/{echo}/invocations", b'{"a": 1e400}')
    assert status == 200


@pytest.mark.parametrize("depth", [1025, 100_000])
def test_deeply_nested_json_is_400_not_500(gateway: RunningGateway, echo: str, depth: int) -> None:
    path = f"/2015-03-31/functions/{echo}/invocations"
    for body in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth, b"[" * depth):
        status, headers, answer = gateway.request("POST", path, body)
        assert status == 400, answer[:200]
        assert headers["x-amzn-ErrorType"] == "InvalidRequestContentException"
        assert json.loads(answer)["message"].startswith("Could not parse request body into json")
    status, _, _ = gateway.request("POST", path, b"[" * 100 + b"]" * 100)  # nesting within limits is fine
    assert status == 200
