"""Streamed responses on the gateway's side (gateway/execution/streams.py): CHUNK frames from a fake runtime on a
socketpair, joined for a synchronous Invoke or read as they come by InvokeWithResponseStream; the limits, the pause of
a slow reader's environment, and the frames that kill an environment."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from gateway.contracts import environment as wire
from gateway.execution import streams
from gateway.execution.environment import Environment, EnvironmentDied, connect
from tests.conftest import FakeRuntime


@pytest.fixture
async def env(runtime: FakeRuntime) -> AsyncIterator[Environment]:
    environment = await connect(("f", "1"), runtime.forked)
    await runtime.ready()
    await environment.wait_ready(2)
    yield environment
    environment.kill()


Invocation = asyncio.Future[tuple[wire.Reply, float, float]]


async def _start(runtime: FakeRuntime, env: Environment, sink: streams.Stream | None = None) -> tuple[Invocation, int]:
    """An invocation under way, and its id as the runtime read it."""
    task = asyncio.ensure_future(env.invoke(b"{}", "rid", "arn:f", None, 5.0, sink))
    frame = await runtime.next_frame()
    return task, frame[1]


async def test_a_synchronous_invoke_gets_the_pieces_joined_before_the_results_payload(
    runtime: FakeRuntime, env: Environment
) -> None:
    task, inv_id = await _start(runtime, env)
    for piece in (b"one ", b"two ", b""):
        await runtime.send(wire.encode_chunk(inv_id, piece))
    await runtime.result(inv_id, b"three")
    reply, _, _ = await task
    assert isinstance(reply, wire.Result) and reply.payload == b"one two three"
    task, inv_id = await _start(runtime, env)  # the next invocation does not stream: its reply as it is
    await runtime.result(inv_id, b'"plain"')
    assert (await task)[0].payload == b'"plain"'


async def test_more_than_six_megabytes_is_response_size_too_large_at_once_and_the_environment_killed(
    runtime: FakeRuntime, env: Environment
) -> None:
    """A synchronous Invoke's answer can only be an error once the pieces pass 6 MB: the gateway reads no further
    (the function would go on streaming up to 200 MB), as for any overflow."""
    task, inv_id = await _start(runtime, env)
    for _ in range(7):  # no RESULT: the reply comes from the piece that passed the limit
        await runtime.send(wire.encode_chunk(inv_id, b"x" * wire.MAX_CHUNK))
    reply, _, _ = await asyncio.wait_for(task, 2)
    assert isinstance(reply, wire.Error) and reply.error_type == "Function.ResponseSizeTooLarge"
    size = 7 * wire.MAX_CHUNK
    assert size > wire.MAX_SYNC_RESPONSE >= size - wire.MAX_CHUNK
    assert json.loads(reply.error_body)["errorMessage"] == (
        f"Response payload size ({size} bytes) exceeded maximum allowed payload size (6291556 bytes)."
    )
    assert env.dead


async def test_pieces_within_six_megabytes_and_a_larger_result_are_too_large_and_the_environment_lives(
    runtime: FakeRuntime, env: Environment
) -> None:
    task, inv_id = await _start(runtime, env)
    for _ in range(6):
        await runtime.send(wire.encode_chunk(inv_id, b"x" * wire.MAX_CHUNK))
    await runtime.result(inv_id, b"y" * 1000)
    reply, _, _ = await task
    assert isinstance(reply, wire.Error) and reply.error_type == "Function.ResponseSizeTooLarge"
    assert not env.dead  # the function ended normally: its environment serves again
    task, inv_id = await _start(runtime, env)
    await runtime.result(inv_id, b"1")
    assert (await task)[0].payload == b"1"


async def test_an_error_after_pieces_is_the_reply(runtime: FakeRuntime, env: Environment) -> None:
    task, inv_id = await _start(runtime, env)
    await runtime.send(wire.encode_chunk(inv_id, b"partial"))
    await runtime.send(wire.encode_reply(wire.error_head(inv_id, "Oops", b'{"errorType": "Oops"}'), 1.0, 1, 0, b""))
    reply, _, _ = await task
    assert isinstance(reply, wire.Error) and reply.error_body == b'{"errorType": "Oops"}'


async def test_a_stream_reads_the_pieces_before_the_invocation_ends(runtime: FakeRuntime, env: Environment) -> None:
    stream = streams.Stream()
    task, inv_id = await _start(runtime, env, stream)
    await runtime.send(wire.encode_chunk(inv_id, b"first"))
    assert await asyncio.wait_for(stream.read(), 2) == b"first"
    await runtime.send(wire.encode_chunk(inv_id, b"second") + wire.encode_chunk(inv_id, b"third"))
    got = b""
    while len(got) < len(b"secondthird"):
        got += await asyncio.wait_for(stream.read(), 2)
    assert got == b"secondthird" and not task.done()
    await runtime.result(inv_id, b"")
    reply, _, _ = await task
    assert isinstance(reply, wire.Result) and reply.payload == b""  # the stream had the pieces, not the reply
    stream.close()
    assert await stream.read() == b""


@pytest.mark.parametrize("when", ["after its reply", "for an invocation never started"])
async def test_a_piece_of_no_invocation_in_flight_kills_it(runtime: FakeRuntime, env: Environment, when: str) -> None:
    task, inv_id = await _start(runtime, env)
    if when == "after its reply":
        await runtime.result(inv_id, b"1")
        await task
    await runtime.send(wire.encode_chunk(inv_id + (when != "after its reply") * 7, b"forged"))
    for _ in range(100):
        if env.dead:
            break
        await asyncio.sleep(0.01)
    assert env.dead
    if not task.done():
        with pytest.raises(EnvironmentDied):
            await task


@pytest.mark.parametrize("with_stream", [False, True])
async def test_past_the_streaming_limit_the_invocation_fails_and_the_environment_is_killed(
    runtime: FakeRuntime, env: Environment, monkeypatch: pytest.MonkeyPatch, with_stream: bool
) -> None:
    monkeypatch.setattr(streams, "MAX_STREAM", 1000)  # as 200 MB would, without sending them
    monkeypatch.setattr(streams, "MAX_SYNC_RESPONSE", 500)
    monkeypatch.setattr(streams, "MIN_CHUNK_COST", 100)
    task, inv_id = await _start(runtime, env, streams.Stream() if with_stream else None)
    runtime.print(b"streaming\n")
    await runtime.send(wire.encode_chunk(inv_id, b"x" * 600) + wire.encode_chunk(inv_id, b"x" * 600))
    reply, _, _ = await asyncio.wait_for(task, 2)
    assert isinstance(reply, wire.Error) and reply.error_type == "Function.ResponseSizeTooLarge"
    message = json.loads(reply.error_body)["errorMessage"]
    if with_stream:  # a streamed response goes to MAX_STREAM
        assert "(1200 bytes) exceeded maximum allowed payload size (1000 bytes)" in message
    else:  # a synchronous Invoke's stops at the first piece past MAX_SYNC_RESPONSE
        assert "(600 bytes) exceeded maximum allowed payload size (500 bytes)" in message
    assert reply.log == b"streaming\n"
    assert env.dead


class _Transport:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")


async def test_a_slow_reader_pauses_the_environments_socket_until_it_reads() -> None:
    stream = streams.Stream()
    transport = _Transport()
    stream.attach(transport)
    assert stream.write(b"x" * streams.HIGH_WATER) and transport.calls == []
    assert stream.write(b"y") and transport.calls == ["pause"]
    assert stream.write(b"z") and transport.calls == ["pause"]  # once
    assert await stream.read() == b"x" * streams.HIGH_WATER + b"yz"
    assert transport.calls == ["pause", "resume"]


async def test_a_discarded_stream_drops_what_comes_and_lets_the_function_run_on() -> None:
    stream = streams.Stream()
    transport = _Transport()
    stream.attach(transport)
    stream.write(b"x" * (streams.HIGH_WATER + 1))
    stream.discard()
    assert transport.calls == ["pause", "resume"]
    assert stream.write(b"x" * (streams.HIGH_WATER + 1)) and transport.calls == ["pause", "resume"]
    stream.close()
    assert await stream.read() == b""


async def test_a_reader_waiting_on_an_empty_stream_wakes_at_its_close() -> None:
    stream = streams.Stream()
    reader = asyncio.ensure_future(stream.read())
    await asyncio.sleep(0.01)
    assert not reader.done()
    stream.close()
    assert await asyncio.wait_for(reader, 1) == b""


def test_a_collector_passes_an_error_and_counts_what_it_does_not_keep() -> None:
    collector = streams.Collector()
    assert collector.write(b"a" * 10)
    error = wire.Error(wire.ERROR, 1, "E", b"{}", 1.0, 1, 0, b"")
    assert collector.end(error) is error
    assert collector.total == 10


@pytest.mark.parametrize("sink", [streams.Collector, streams.Stream])
def test_tiny_pieces_count_as_min_chunk_cost_toward_the_limit(sink: type[streams.Collector | streams.Stream]) -> None:
    """However small the pieces, a response is at most MAX_STREAM / MIN_CHUNK_COST frames (each costs a decode)."""
    taker = sink()
    pieces = wire.MAX_STREAM // wire.MIN_CHUNK_COST
    assert all(taker.write(b"x") for _ in range(pieces))
    assert not taker.write(b"x")
    assert taker.total == pieces + 1


async def test_begun_waits_for_the_environment_or_the_end() -> None:
    stream = streams.Stream()
    waiting = asyncio.ensure_future(stream.begun())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    stream.attach(None)
    await asyncio.wait_for(waiting, 1)
    ended = streams.Stream()
    ended.close()  # over before it reached an environment (no room, no runtime): begun returns too
    await asyncio.wait_for(ended.begun(), 1)


def test_an_overflow_of_tiny_pieces_says_so() -> None:
    for sink in (streams.Stream(), streams.Collector()):
        sink.total = 300_000
        error = streams.overflowed(1, sink, b"")
        message = json.loads(error.error_body)["errorMessage"]
        assert "maximum allowed number of pieces (204800)" in message and "300000 bytes" in message
    sink = streams.Stream()
    sink.total = wire.MAX_STREAM + 1
    error = streams.overflowed(1, sink, b"")
    assert f"({wire.MAX_STREAM + 1} bytes) exceeded" in json.loads(error.error_body)["errorMessage"]


async def test_a_head_frame_gives_the_stream_its_content_type(runtime: FakeRuntime, env: Environment) -> None:
    stream = streams.Stream()
    task, inv_id = await _start(runtime, env, stream)
    await runtime.send(wire.encode((wire.HEAD, inv_id, "text/event-stream")) + wire.encode_chunk(inv_id, b"data"))
    assert await asyncio.wait_for(stream.read(), 2) == b"data" and stream.content_type == "text/event-stream"
    await runtime.result(inv_id, b"")
    await task
    task, inv_id = await _start(runtime, env)  # without a stream (a synchronous Invoke) it is kept and ignored
    await runtime.send(wire.encode((wire.HEAD, inv_id, "text/plain")) + wire.encode_chunk(inv_id, b"x"))
    await runtime.result(inv_id, b"y")
    assert (await task)[0].payload == b"xy"


@pytest.mark.parametrize("content_type", ["text/plain\r\nSet-Cookie: a=b", "x" * (wire.MAX_CONTENT_TYPE + 1)])
async def test_a_head_a_header_cannot_carry_kills_the_environment(
    runtime: FakeRuntime, env: Environment, content_type: str
) -> None:
    task, inv_id = await _start(runtime, env, streams.Stream())
    await runtime.send(wire.encode((wire.HEAD, inv_id, content_type)))
    with pytest.raises(EnvironmentDied):
        await asyncio.wait_for(task, 2)
    assert env.dead


async def test_a_head_of_no_invocation_in_flight_kills_it(runtime: FakeRuntime, env: Environment) -> None:
    task, inv_id = await _start(runtime, env)
    await runtime.send(wire.encode((wire.HEAD, inv_id + 7, "text/plain")))
    with pytest.raises(EnvironmentDied):
        await asyncio.wait_for(task, 2)


@pytest.mark.parametrize("sink", [streams.Stream, None])
@pytest.mark.parametrize("after", ["head", "chunk"])
async def test_a_head_after_the_response_began_kills_the_environment(
    runtime: FakeRuntime, env: Environment, sink: type[streams.Stream] | None, after: str
) -> None:
    """HEAD comes once, before the first CHUNK: a second one, or one after a piece, is a broken runtime's."""
    task, inv_id = await _start(runtime, env, None if sink is None else sink())
    first = wire.encode((wire.HEAD, inv_id, "text/plain")) if after == "head" else wire.encode_chunk(inv_id, b"x")
    await runtime.send(first + wire.encode((wire.HEAD, inv_id, "text/html")))
    with pytest.raises(EnvironmentDied):
        await asyncio.wait_for(task, 2)
    assert env.dead


@pytest.mark.parametrize("sink", [streams.Collector, streams.Stream])
def test_a_head_counts_as_a_piece_toward_the_limit(sink: type[streams.Collector | streams.Stream]) -> None:
    taker = sink()
    assert taker.head("text/plain") and taker.content_type == "text/plain"
    assert not taker.head("text/html") and taker.content_type == "text/plain"  # once
    pieces = wire.MAX_STREAM // wire.MIN_CHUNK_COST - 1  # the head took one piece's cost
    assert all(taker.write(b"x") for _ in range(pieces))
    assert not taker.write(b"x")
    late = sink()
    assert late.write(b"x") and not late.head("text/plain")  # after the first piece: too late
