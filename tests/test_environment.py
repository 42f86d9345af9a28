"""The gateway's handle on one environment (gateway/execution/environment.py) against a fake runtime on a socketpair:
READY, INVOKE answered by RESULT or ERROR, output from the pipe joined to the reply, and the rules that kill it (a bad
frame, a reply nobody asked for, a deadline, an exit)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest

from gateway.contracts import environment as wire
from gateway.execution.environment import Environment, EnvironmentDied, InvocationTimeout, connect
from tests.conftest import FakeRuntime


@pytest.fixture
async def env(runtime: FakeRuntime) -> AsyncIterator[Environment]:
    environment = await connect(("f", "1"), runtime.forked)
    yield environment
    environment.kill()


async def _ready(runtime: FakeRuntime, env: Environment) -> None:
    await runtime.ready()
    await env.wait_ready(2)


async def test_ready_ends_init_with_its_figures_and_log(runtime: FakeRuntime, env: Environment) -> None:
    runtime.print(b"init output\n")
    await asyncio.sleep(0.05)
    await runtime.ready(capacity=3)
    await env.wait_ready(2)
    assert (env.init_ms, env.capacity, env.init_error, env.init_log) == (1.5, 3, None, b"init output\n")


async def test_ready_with_an_init_error(runtime: FakeRuntime, env: Environment) -> None:
    await runtime.ready(error_type="Runtime.ImportModuleError", message="Unable to import module 'x'")
    await env.wait_ready(2)
    assert env.init_error == {
        "errorType": "Runtime.ImportModuleError",
        "errorMessage": "Unable to import module 'x'",
        "stackTrace": b"[]",
    }


async def test_init_that_never_ends_times_out(env: Environment) -> None:
    with pytest.raises(InvocationTimeout, match=r"Init timed out after 0\.05 seconds"):
        await env.wait_ready(0.05)
    assert env.dead


async def test_invoke_sends_invoke_and_returns_the_result_with_its_output(
    runtime: FakeRuntime, env: Environment
) -> None:
    await _ready(runtime, env)
    invocation = asyncio.ensure_future(env.invoke(b'{"a": 1}', "rid-1", "arn:f", b'{"c": 1}', 5.0))
    frame = wire.Invoke._make(await runtime.next_frame())
    assert (frame.kind, frame.payload, frame.request_id, frame.invoked_arn) == (
        wire.INVOKE,
        b'{"a": 1}',
        "rid-1",
        "arn:f",
    )
    assert frame.client_context == b'{"c": 1}'
    assert abs(frame.deadline_ms - (time.time() + 5.0) * 1000) < 1000
    runtime.print(b"printed\n")
    await runtime.result(frame.inv_id, b'"ok"', log=b"from the frame\n", pending=len(b"printed\n"))
    reply, written_at, replied_at = await invocation
    assert isinstance(reply, wire.Result) and written_at <= replied_at
    assert (reply.inv_id, reply.payload, reply.duration_ms, reply.max_rss_kb) == (frame.inv_id, b'"ok"', 2.0, 1024)
    assert reply.log == b"printed\nfrom the frame\n"  # the pipe's output first, then what the frame carried
    assert not env.dead


async def test_invoke_returns_an_error_reply(runtime: FakeRuntime, env: Environment) -> None:
    await _ready(runtime, env)
    invocation = asyncio.ensure_future(env.invoke(b"{}", "rid", "arn:f", None, 5.0))
    frame = await runtime.next_frame()
    body = json.dumps({"errorType": "ValueError", "errorMessage": "no"}).encode()
    await runtime.send(wire.encode_reply(wire.error_head(frame[wire.INV_ID], "ValueError", body), 1.0, 1, 0, b""))
    reply, _, _ = await invocation
    assert isinstance(reply, wire.Error) and (reply.error_type, reply.error_body) == ("ValueError", body)


async def test_a_bad_frame_kills_it(runtime: FakeRuntime, env: Environment) -> None:
    await _ready(runtime, env)
    invocation = asyncio.ensure_future(env.invoke(b"{}", "rid", "arn:f", None, 5.0))
    await runtime.next_frame()
    await runtime.send(b"\x00\x00\x00\x02\xc1\xc1")  # a frame that is not msgpack
    with pytest.raises(EnvironmentDied, match="bad frame"):
        await invocation
    assert env.dead
    assert await runtime.next_frame() == []  # the gateway dropped the connection


async def test_a_reply_nobody_asked_for_kills_it(runtime: FakeRuntime, env: Environment) -> None:
    await _ready(runtime, env)
    await runtime.result(99, b"1")
    assert await runtime.next_frame() == []
    assert env.dead
    with pytest.raises(EnvironmentDied):
        await env.invoke(b"{}", "rid", "arn:f", None, 5.0)


async def test_a_deadline_kills_it(runtime: FakeRuntime, env: Environment) -> None:
    await _ready(runtime, env)
    runtime.print(b"working\n")
    with pytest.raises(InvocationTimeout):
        await env.invoke(b"{}", "rid", "arn:f", None, 0.1)
    assert env.dead and env.last_output == b"working\n"  # what it printed is kept for the timeout's log


async def test_an_exit_fails_what_is_in_flight_after_the_replies_it_sent(
    runtime: FakeRuntime, env: Environment
) -> None:
    await _ready(runtime, env)
    env.capacity = 2
    first = asyncio.ensure_future(env.invoke(b"{}", "a", "arn:f", None, 5.0))
    second = asyncio.ensure_future(env.invoke(b"{}", "b", "arn:f", None, 5.0))
    answered = await runtime.next_frame()
    await runtime.next_frame()
    await runtime.result(answered[wire.INV_ID], b"1")
    runtime.exit_status.set_result(9)  # the zygote reaped it, socket still open (a grandchild holds it)
    reply, _, _ = await first
    assert isinstance(reply, wire.Result)
    with pytest.raises(EnvironmentDied, match="Runtime exited"):
        await second
    assert env.dead


async def test_the_init_log_of_an_environment_that_ends_right_after_ready(
    runtime: FakeRuntime, env: Environment
) -> None:
    """A Runtime API environment ends as soon as its runtime posted init/error: READY, then its end, may both be in
    before Init's waiter wakes up; what Init printed is its log all the same."""
    runtime.print(b"Uncaught Exception\n")
    await runtime.ready(error_type="Runtime.ImportModuleError", message="Cannot find module 'x'")
    runtime.close()
    runtime.exit_status.set_result(0)
    await asyncio.sleep(0.1)  # the end is seen before anyone awaits READY
    assert env.dead
    await env.wait_ready(2)
    assert env.init_error is not None and env.init_log == b"Uncaught Exception\n"


async def _still_connected(runtime: FakeRuntime) -> bool:
    """Whether the gateway keeps the connection open (a kill aborts it: the fake reads EOF)."""
    try:
        await asyncio.wait_for(runtime.next_frame(), 0.1)
    except TimeoutError:
        return True
    return False


async def test_a_reply_that_crosses_the_timeout_does_not_cut_the_shutdown_grace(
    runtime: FakeRuntime, env: Environment, caplog: pytest.LogCaptureFixture
) -> None:
    """With a grace (extensions), a timeout sends SHUTDOWN: a reply the runtime sent as the deadline fired is late,
    not forged; it is dropped, and the extensions keep their shutdown phase (no kill, no warning)."""
    await _ready(runtime, env)
    env.shutdown_grace = 0.5
    invocation = asyncio.ensure_future(env.invoke(b"{}", "rid", "arn:f", None, 0.05))
    frame = await runtime.next_frame()
    assert (await runtime.next_frame())[0] == wire.SHUTDOWN  # the deadline: the shutdown phase begins
    with pytest.raises(InvocationTimeout):
        await invocation
    await runtime.result(frame[wire.INV_ID], b'"too late"')
    assert await _still_connected(runtime)
    assert "unexpected frame" not in caplog.text
    assert await asyncio.wait_for(runtime.next_frame(), 2) == []  # killed once the grace is over


async def test_pieces_and_replies_of_invocations_a_shutdown_failed_are_dropped(
    runtime: FakeRuntime, env: Environment, caplog: pytest.LogCaptureFixture
) -> None:
    """`shutdown()` with a grace fails what is in flight; what the environment had already sent of it (a streamed
    response's pieces, its reply) is dropped, while a reply to an invocation never sent still kills it."""
    await _ready(runtime, env)
    env.capacity, env.shutdown_grace = 2, 0.5
    first = asyncio.ensure_future(env.invoke(b"{}", "a", "arn:f", None, 5.0))
    second = asyncio.ensure_future(env.invoke(b"{}", "b", "arn:f", None, 5.0))
    ids = [(await runtime.next_frame())[wire.INV_ID], (await runtime.next_frame())[wire.INV_ID]]
    env.shutdown()
    assert (await runtime.next_frame())[0] == wire.SHUTDOWN
    for invocation in (first, second):
        with pytest.raises(EnvironmentDied):
            await invocation
    await runtime.send(wire.encode_chunk(ids[0], b"piece") + wire.encode_chunk(ids[0], b"another"))
    await runtime.result(ids[0], b"1")
    await runtime.result(ids[1], b"2")
    assert await _still_connected(runtime)
    assert "unexpected frame" not in caplog.text
    await runtime.result(ids[0], b"1")  # answered already: a repeated reply is forged, as before
    assert await asyncio.wait_for(runtime.next_frame(), 2) == []
    assert "unexpected frame" in caplog.text
