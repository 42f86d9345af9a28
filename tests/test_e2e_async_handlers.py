"""Several invocations in flight in one environment: `async def` handlers with PerExecutionEnvironmentMaxConcurrency.

Three layers: the API member (CapacityProviderConfig) and its validation; the runtime driven directly
through a zygote and an `Environment` (several INVOKEs on one socket, no pool involved); and the whole
path through a gateway with boto3. The gateway-level tests that send concurrent calls assert that they
share one environment, which needs the pool to hand a busy environment more invocations.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ParamValidationError

from gateway.contracts import environment as wire
from gateway.contracts.environment import EnvironmentSpec, Mount
from gateway.execution.environment import Environment, EnvironmentDied, connect
from gateway.execution.zygote import Zygote
from gateway.isolation.sandbox import Sandbox
from tests.conftest import ROLE, RUNTIME, RunningGateway, create_function, invoke_json, make_zip

CAPACITY_ARN = "arn:aws:lambda:us-east-1:123456789012:capacity-provider:local"
MANAGED = "LambdaManagedInstancesCapacityProviderConfig"
WHERE = "capacityProviderConfig.lambdaManagedInstancesCapacityProviderConfig"


def capacity(max_concurrency: int, **extra: Any) -> dict[str, Any]:
    """A CapacityProviderConfig as boto3 wants it (the model requires CapacityProviderArn)."""
    return {
        MANAGED: {
            "CapacityProviderArn": CAPACITY_ARN,
            "PerExecutionEnvironmentMaxConcurrency": max_concurrency,
            **extra,
        }
    }


ASYNC_SOURCE = """
import asyncio, logging, os, sys
log = logging.getLogger("app")
running = 0
most = 0

async def lambda_handler(event, context):
    global running, most
    running += 1
    most = max(most, running)
    try:
        n = event.get("n")
        before = context.get_remaining_time_in_millis()
        log.warning("before %s", n)
        print("print", n)
        await asyncio.sleep(event.get("sleep", 0.5))
        print("stderr", n, file=sys.stderr)
        log.warning("after %s", n)
        if event.get("fail"):
            raise ValueError(f"failed {n}")
        if event.get("exit"):
            os._exit(event["exit"])
        return {"n": n, "pid": os.getpid(), "rid": context.aws_request_id, "before": before,
                "after": context.get_remaining_time_in_millis(), "most": most}
    finally:
        running -= 1
"""

SYNC_SOURCE = """
import os, time
def lambda_handler(event, context):
    time.sleep(event.get("sleep", 0.5))
    return {"pid": os.getpid(), "rid": context.aws_request_id}
"""


def _log(resp: dict[str, Any]) -> str:
    return base64.b64decode(resp["LogResult"]).decode()


def _concurrently(lam: Any, name: str, events: list[dict[str, Any]], **kwargs: Any) -> list[tuple[dict[str, Any], Any]]:
    with ThreadPoolExecutor(len(events)) as ex:
        return list(ex.map(lambda event: invoke_json(lam, name, event, **kwargs), events))


# -- the API member --------------------------------------------------------------------------------------


def test_capacity_provider_config_round_trip(lam: Any, fname: str) -> None:
    created = create_function(
        lam, fname, ASYNC_SOURCE, CapacityProviderConfig=capacity(4, ExecutionEnvironmentMemoryGiBPerVCpu=2)
    )
    expected = capacity(4, ExecutionEnvironmentMemoryGiBPerVCpu=2.0)
    assert created["CapacityProviderConfig"] == expected
    assert lam.get_function_configuration(FunctionName=fname)["CapacityProviderConfig"] == expected
    updated = lam.update_function_configuration(FunctionName=fname, CapacityProviderConfig=capacity(16))
    assert updated["CapacityProviderConfig"] == capacity(16)
    assert lam.get_function(FunctionName=fname)["Configuration"]["CapacityProviderConfig"] == capacity(16)
    assert invoke_json(lam, fname, {"n": 1, "sleep": 0})[1]["n"] == 1


def test_without_the_member_nothing_is_echoed(lam: Any, fname: str) -> None:
    assert "CapacityProviderConfig" not in create_function(lam, fname, SYNC_SOURCE)


def _create_body(name: str, extra: dict[str, Any]) -> bytes:
    zipped = base64.b64encode(make_zip({"lambda_function.py": "def h(e, c): return 1\n"})).decode()
    body = {"FunctionName": name, "Runtime": RUNTIME, "Role": ROLE, "Handler": "lambda_function.h"}
    return json.dumps({**body, "Code": {"ZipFile": zipped}, **extra}).encode()


@pytest.mark.parametrize(
    ("member", "code"),
    [
        ("x", "InvalidRequestContentException"),
        ({"Evil": 1}, "InvalidRequestContentException"),
        ({MANAGED: {"Evil": 1}}, "InvalidRequestContentException"),
        ({MANAGED: []}, "InvalidRequestContentException"),
        ({MANAGED: {"PerExecutionEnvironmentMaxConcurrency": "4"}}, "InvalidRequestContentException"),
        ({MANAGED: {"PerExecutionEnvironmentMaxConcurrency": True}}, "InvalidRequestContentException"),
        ({MANAGED: {"PerExecutionEnvironmentMaxConcurrency": 2.5}}, "InvalidRequestContentException"),
        ({MANAGED: {"ExecutionEnvironmentMemoryGiBPerVCpu": "2"}}, "InvalidRequestContentException"),
        ({MANAGED: {"CapacityProviderArn": 5}}, "InvalidRequestContentException"),
        ({}, "ValidationException"),
        ({MANAGED: None}, "ValidationException"),
        ({MANAGED: {"PerExecutionEnvironmentMaxConcurrency": 0}}, "ValidationException"),
        ({MANAGED: {"PerExecutionEnvironmentMaxConcurrency": 1601}}, "ValidationException"),
        ({MANAGED: {"ExecutionEnvironmentMemoryGiBPerVCpu": 1.5}}, "ValidationException"),
        ({MANAGED: {"ExecutionEnvironmentMemoryGiBPerVCpu": 9}}, "ValidationException"),
        ({MANAGED: {"CapacityProviderArn": "arn:aws:lambda:us-east-1:123456789012:function:f"}}, "ValidationException"),
    ],
)
def test_capacity_provider_config_is_validated(gateway: RunningGateway, fname: str, member: Any, code: str) -> None:
    status, headers, _ = gateway.request(
        "POST", "/2015-03-31/functions", _create_body(fname, {"CapacityProviderConfig": member})
    )
    assert (status, headers["x-amzn-ErrorType"]) == (400, code)


def test_validation_messages_use_the_model_wording(gateway: RunningGateway, fname: str) -> None:
    member = {MANAGED: {"PerExecutionEnvironmentMaxConcurrency": 1601, "ExecutionEnvironmentMemoryGiBPerVCpu": 1}}
    status, _, body = gateway.request(
        "POST", "/2015-03-31/functions", _create_body(fname, {"CapacityProviderConfig": member})
    )
    assert status == 400
    assert json.loads(body)["message"] == (
        f"2 validation errors detected: Value '1601' at '{WHERE}.perExecutionEnvironmentMaxConcurrency' failed to "
        "satisfy constraint: Member must have value less than or equal to 1600; Value '1.0' at "
        f"'{WHERE}.executionEnvironmentMemoryGiBPerVCpu' failed to satisfy constraint: Member must have value "
        "greater than or equal to 2"
    )
    status, _, body = gateway.request(
        "POST", "/2015-03-31/functions", _create_body(fname, {"CapacityProviderConfig": {}})
    )
    assert json.loads(body)["message"] == (
        f"1 validation error detected: Value null at '{WHERE}' failed to satisfy constraint: Member must not be null"
    )


def test_update_validates_the_member(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, SYNC_SOURCE)
    body = json.dumps({"CapacityProviderConfig": {MANAGED: {"PerExecutionEnvironmentMaxConcurrency": 0}}}).encode()
    status, headers, _ = gateway.request("PUT", f"/2015-03-31/functions/{fname}/configuration", body)
    assert (status, headers["x-amzn-ErrorType"]) == (400, "ValidationException")
    assert "CapacityProviderConfig" not in lam.get_function_configuration(FunctionName=fname)


def test_boto3_refuses_a_config_without_arn(lam: Any, fname: str) -> None:
    """The model requires CapacityProviderArn, so boto3 checks it client-side (the gateway itself does not)."""
    with pytest.raises(ParamValidationError):
        create_function(lam, fname, SYNC_SOURCE, CapacityProviderConfig={MANAGED: {}})


def test_arn_is_optional_over_raw_http(gateway: RunningGateway, fname: str) -> None:
    member = {MANAGED: {"PerExecutionEnvironmentMaxConcurrency": 3}}
    status, _, body = gateway.request(
        "POST", "/2015-03-31/functions", _create_body(fname, {"CapacityProviderConfig": member})
    )
    assert status == 201
    assert json.loads(body)["CapacityProviderConfig"] == member


# -- the runtime, driven directly (no pool) --------------------------------------------------------------


@pytest.fixture
async def zygote(tmp_path: Path) -> AsyncIterator[Zygote]:
    (tmp_path / "envs").mkdir()
    sandbox = Sandbox.choose("auto")
    z = Zygote(sys.executable, [RUNTIME], tmp_path / "envs", sandbox)
    supervisor = asyncio.create_task(z.supervise())
    try:
        await z.wait_ready(30)
        yield z
    finally:
        await z.close()
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor
        sandbox.close()


@contextlib.asynccontextmanager
async def environment(zygote: Zygote, tmp_path: Path, source: str, max_concurrency: int) -> AsyncIterator[Environment]:
    """One environment running `source`'s lambda_handler; killed on exit."""
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / "lambda_function.py").write_text(source)
    spec = EnvironmentSpec(
        env={"PATH": "/usr/bin:/bin", "AWS_LAMBDA_FUNCTION_NAME": "f"},
        code_dir=str(code),
        handler="lambda_function.lambda_handler",
        extra_paths=[],
        max_concurrency=max_concurrency,
        mounts=[Mount(str(code), [str(code)])],
        memory_size=128,
        ephemeral_storage=512,
        network=True,
    )
    env = await connect(("f", "$LATEST"), await zygote.fork(spec))
    try:
        await env.wait_ready()
        yield env
    finally:
        env.kill()


async def _invoke(env: Environment, event: dict[str, Any], request_id: str, timeout: float = 10) -> wire.Reply:
    reply, _, _ = await env.invoke(json.dumps(event).encode(), request_id, "arn:f", None, timeout)
    return reply


async def test_runtime_runs_invocations_concurrently_with_their_own_context(zygote: Zygote, tmp_path: Path) -> None:
    async with environment(zygote, tmp_path, ASYNC_SOURCE, 4) as env:
        assert env.init_log == b""
        start = time.monotonic()
        frames = await asyncio.gather(*(_invoke(env, {"n": i}, f"rid-{i}") for i in range(4)))
        assert time.monotonic() - start < 1.5  # four 0.5 s sleeps, overlapped
        for i, frame in enumerate(frames):
            assert isinstance(frame, wire.Result)
            result = json.loads(frame.payload)
            assert (result["n"], result["rid"], result["pid"]) == (i, f"rid-{i}", env.pid)
            assert result["most"] == 4
            log = frame.log.decode()
            # its own output only: print, stderr and logging lines with its own request id
            assert f"print {i}\n" in log and f"stderr {i}\n" in log
            assert f"\trid-{i}\tbefore {i}\n" in log and f"\trid-{i}\tafter {i}\n" in log
            assert not any(f"rid-{j}" in log or f"print {j}" in log for j in range(4) if j != i)


async def test_runtime_deadlines_are_per_invocation(zygote: Zygote, tmp_path: Path) -> None:
    async with environment(zygote, tmp_path, ASYNC_SOURCE, 2) as env:
        first = asyncio.ensure_future(_invoke(env, {"n": 0, "sleep": 0.6}, "a", timeout=5))
        await asyncio.sleep(0.3)
        second = json.loads((await _invoke(env, {"n": 1, "sleep": 0.6}, "b", timeout=5)).payload)
        first_result = json.loads((await first).payload)
        for result in (first_result, second):  # each counts down from its own 5 s
            assert 4500 <= result["before"] <= 5000
            assert 4100 <= result["after"] <= result["before"] - 500


async def test_runtime_queues_invocations_beyond_the_limit(zygote: Zygote, tmp_path: Path) -> None:
    async with environment(zygote, tmp_path, ASYNC_SOURCE, 2) as env:
        start = time.monotonic()
        frames = await asyncio.gather(*(_invoke(env, {"n": i, "sleep": 0.3}, f"r{i}") for i in range(5)))
        elapsed = time.monotonic() - start
        assert max(json.loads(f.payload)["most"] for f in frames) == 2
        assert 0.9 <= elapsed < 1.5  # three waves of at most two


async def test_runtime_errors_stay_with_their_invocation(zygote: Zygote, tmp_path: Path) -> None:
    async with environment(zygote, tmp_path, ASYNC_SOURCE, 4) as env:
        frames = await asyncio.gather(
            _invoke(env, {"n": 0}, "ok"), _invoke(env, {"n": 1, "fail": True}, "bad"), _invoke(env, {"n": 2}, "ok2")
        )
        assert [type(f) for f in frames] == [wire.Result, wire.Error, wire.Result]
        error = json.loads(frames[1].error_body)
        assert (error["errorType"], error["errorMessage"], error["requestId"]) == ("ValueError", "failed 1", "bad")
        assert "raise ValueError" in error["stackTrace"][-1]
        assert "lambda_handler" in error["stackTrace"][0]  # the runtime's own frame is left out
        assert "[ERROR] ValueError: failed 1" in frames[1].log.decode()
        assert "[ERROR]" not in frames[0].log.decode()


async def test_runtime_marshal_and_size_errors_match_the_sequential_path(zygote: Zygote, tmp_path: Path) -> None:
    source = """
async def lambda_handler(event, context):
    return object() if event["kind"] == "odd" else "x" * 6291556
"""
    async with environment(zygote, tmp_path, source, 2) as env:
        odd, big = await asyncio.gather(_invoke(env, {"kind": "odd"}, "r1"), _invoke(env, {"kind": "big"}, "r2"))
        assert odd.error_type == "Runtime.MarshalError"
        assert json.loads(odd.error_body)["errorMessage"].startswith(
            "Unable to marshal response: Object of type object"
        )
        assert big.error_type == "Function.ResponseSizeTooLarge"
        assert json.loads(big.error_body)["errorMessage"] == (
            "Response payload size (6291558 bytes) exceeded maximum allowed payload size (6291556 bytes)."
        )


async def test_runtime_sync_handler_runs_one_at_a_time_and_says_so(zygote: Zygote, tmp_path: Path) -> None:
    async with environment(zygote, tmp_path, SYNC_SOURCE, 4) as env:
        assert b"PerExecutionEnvironmentMaxConcurrency is 4, but handler 'lambda_function.lambda_handler' is not an " \
            b"async def function: this environment runs one invocation at a time." in env.init_log  # fmt: skip
        start = time.monotonic()
        frames = await asyncio.gather(*(_invoke(env, {"sleep": 0.2}, f"r{i}") for i in range(3)))
        assert time.monotonic() - start >= 0.6
        assert [json.loads(f.payload)["rid"] for f in frames] == ["r0", "r1", "r2"]


async def test_runtime_async_handler_with_default_concurrency_is_sequential(zygote: Zygote, tmp_path: Path) -> None:
    """max_concurrency 1 keeps today's loop, where an async handler's coroutine is not a JSON value."""
    async with environment(zygote, tmp_path, ASYNC_SOURCE, 1) as env:
        frame = await _invoke(env, {"n": 0}, "r")
        assert isinstance(frame, wire.Error) and frame.error_type == "Runtime.MarshalError"
        assert env.init_log == b""


async def test_runtime_exit_in_one_invocation_fails_all_in_flight(zygote: Zygote, tmp_path: Path) -> None:
    async with environment(zygote, tmp_path, ASYNC_SOURCE, 4) as env:
        results = await asyncio.gather(
            _invoke(env, {"n": 0, "sleep": 0.2, "exit": 3}, "dies"),
            _invoke(env, {"n": 1, "sleep": 2}, "bystander"),
            return_exceptions=True,
        )
        assert all(isinstance(r, EnvironmentDied) for r in results)
        assert await env.exit_status is not None


# -- the whole path: boto3 -> gateway -> one environment --------------------------------------------------
# These need the pool to send several invocations to one environment (up to the function's setting).


@pytest.fixture
def async_function(lam: Any, fname: str) -> str:
    create_function(lam, fname, ASYNC_SOURCE, Timeout=10, CapacityProviderConfig=capacity(4))
    return fname


def test_concurrent_invocations_share_one_environment(lam: Any, async_function: str) -> None:
    warm = invoke_json(lam, async_function, {"n": -1, "sleep": 0})[1]
    start = time.monotonic()
    results = _concurrently(lam, async_function, [{"n": i} for i in range(4)])
    elapsed = time.monotonic() - start
    assert {body["pid"] for _, body in results} == {warm["pid"]}
    assert elapsed < 1.5  # not 4 x 0.5 s
    assert len({body["rid"] for _, body in results}) == 4
    for resp, body in results:
        assert "FunctionError" not in resp
        assert body["rid"] == resp["ResponseMetadata"]["RequestId"]
        assert 9000 <= body["before"] <= 10000
        assert body["after"] <= body["before"] - 450


def test_log_lines_carry_their_own_request_id(lam: Any, async_function: str) -> None:
    invoke_json(lam, async_function, {"n": -1, "sleep": 0})
    results = _concurrently(lam, async_function, [{"n": i} for i in range(4)], LogType="Tail")
    assert len({body["pid"] for _, body in results}) == 1
    for resp, body in results:
        log, rid, n = _log(resp), body["rid"], body["n"]
        assert f"\t{rid}\tbefore {n}\n" in log and f"\t{rid}\tafter {n}\n" in log
        assert f"print {n}\n" in log and f"stderr {n}\n" in log
        others = [r for _, r in results if r["rid"] != rid]
        assert not any(o["rid"] in log or f"print {o['n']}\n" in log for o in others)


def test_sync_handler_with_the_setting_runs_one_at_a_time(lam: Any, fname: str) -> None:
    create_function(lam, fname, SYNC_SOURCE, CapacityProviderConfig=capacity(4))
    resp, _ = invoke_json(lam, fname, {"sleep": 0}, LogType="Tail")
    assert "is not an async def function: this environment runs one invocation at a time." in _log(resp)
    results = _concurrently(lam, fname, [{"sleep": 0.5}] * 3)
    assert len({body["pid"] for _, body in results}) == 3


def test_an_exception_does_not_disturb_the_others(lam: Any, async_function: str) -> None:
    warm = invoke_json(lam, async_function, {"n": -1, "sleep": 0})[1]
    results = _concurrently(lam, async_function, [{"n": i, "fail": i == 1} for i in range(4)])
    failed = results[1]
    assert failed[0]["FunctionError"] == "Unhandled"
    assert (failed[1]["errorType"], failed[1]["errorMessage"]) == ("ValueError", "failed 1")
    for resp, body in results[:1] + results[2:]:
        assert "FunctionError" not in resp
        assert body["pid"] == warm["pid"]
    assert invoke_json(lam, async_function, {"n": 9, "sleep": 0})[1]["pid"] == warm["pid"]  # still serving


def test_a_timeout_ends_the_environment_under_the_others(lam: Any, fname: str) -> None:
    """The gateway kills an environment whose invocation timed out; those in flight on it fail with
    Runtime.ExitError, as on Lambda when an execution environment dies under concurrent invocations."""
    create_function(lam, fname, ASYNC_SOURCE, Timeout=2, CapacityProviderConfig=capacity(4))
    warm = invoke_json(lam, fname, {"n": -1, "sleep": 0})[1]
    with ThreadPoolExecutor(3) as ex:
        slow = ex.submit(invoke_json, lam, fname, {"n": 0, "sleep": 10})
        time.sleep(1.0)  # the others start later, so their own deadlines are after the slow one's
        others = [ex.submit(invoke_json, lam, fname, {"n": i, "sleep": 1.5}) for i in (1, 2)]
        resp, body = slow.result()
        assert (resp["FunctionError"], body["errorType"]) == ("Unhandled", "Sandbox.Timedout")
        for future in others:
            resp, body = future.result()
            assert (resp["FunctionError"], body["errorType"]) == ("Unhandled", "Runtime.ExitError")
    after = invoke_json(lam, fname, {"n": 3, "sleep": 0})[1]
    assert after["pid"] != warm["pid"]  # a fresh environment
