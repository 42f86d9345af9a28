"""The gateway's zygote client (gateway/execution/zygote.py) against a fake zygote speaking the contract over a
socketpair: HELLO, forks answered with FORKED or FORK_FAILED, spares taken without a round trip, exits reported."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.contracts import environment as wire
from gateway.contracts import zygote as control
from gateway.execution.zygote import Zygote, ZygoteUnavailable, describe_wait_status
from gateway.isolation.sandbox import Sandbox
from tests.conftest import NO_PID, RUNTIME, FakeZygote, sample_spec


@pytest.fixture
async def fake() -> AsyncIterator[FakeZygote]:
    zygote = FakeZygote()
    yield zygote
    zygote.close()


@pytest.fixture
async def client(fake: FakeZygote, tmp_path: Path) -> AsyncIterator[Zygote]:
    z = Zygote(sys.executable, [RUNTIME], tmp_path / "envs", Sandbox(jail=False, cgroups=None))
    z.attach(fake.gateway_end)
    yield z
    await z.close()


async def _hello(fake: FakeZygote, client: Zygote, features: control.Features | None = None) -> None:
    fake.send(control.Hello(1234, features or control.Features(private_tmp=True, jail=False, seccomp=True)))
    await client.wait_ready(2)


async def test_hello_makes_it_ready_with_its_features(fake: FakeZygote, client: Zygote) -> None:
    readied: list[bool] = []
    client.on_ready.connect(lambda: readied.append(True))
    assert not client.ready
    await _hello(fake, client)
    assert (client.ready, client.pid, readied) == (True, 1234, [True])
    assert (client.private_tmp, client.jailed, client.seccomp) == (True, False, True)


async def test_fork_sends_the_spec_and_two_descriptors_and_returns_the_environment(
    fake: FakeZygote, client: Zygote, tmp_path: Path
) -> None:
    await _hello(fake, client)
    forks: list[float] = []
    client.on_fork.connect(forks.append)
    spec = sample_spec()
    fork = asyncio.ensure_future(client.fork(spec))
    request, fds = await fake.receive()
    assert isinstance(request, control.Fork) and request.spec == spec and len(fds) == 2
    env_fd, output_w = fds
    fake.send(control.Forked(request.req_id, NO_PID, str(tmp_path / "env")))
    forked = await fork
    assert (forked.pid, forked.env_dir, len(forks)) == (NO_PID, str(tmp_path / "env"), 1)
    # the descriptors are the environment's ends of its socket and of its output pipe
    os.write(env_fd, b"ping")
    assert forked.sock.recv(4) == b"ping"
    os.write(output_w, b"printed")
    assert os.read(forked.output, 100) == b"printed"
    # EXITED resolves its exit status
    fake.send(control.Exited(NO_PID, 256))
    assert await asyncio.wait_for(forked.exit_status, 2) == 256
    assert describe_wait_status(256) == "exit status 1"
    forked.sock.close()
    os.close(forked.output)


async def test_fork_failed_is_tried_once_more_then_unavailable(fake: FakeZygote, client: Zygote) -> None:
    await _hello(fake, client)
    fork = asyncio.ensure_future(client.fork(sample_spec()))
    for _ in range(2):
        request, _fds = await fake.receive()
        assert isinstance(request, control.Fork)
        fake.send(control.ForkFailed(request.req_id, "no pids left"))
    with pytest.raises(ZygoteUnavailable, match="fork failed: no pids left"):
        await fork


async def test_a_spare_is_taken_without_a_round_trip(fake: FakeZygote, client: Zygote, tmp_path: Path) -> None:
    await _hello(fake, client)
    spare_sock, spare_output = fake.spare(4321, str(tmp_path / "spare"))
    await asyncio.sleep(0.05)  # the client reads the announcement
    spec = sample_spec(max_concurrency=2)
    forked = await client.fork(spec)
    assert (forked.pid, forked.env_dir) == (4321, str(tmp_path / "spare"))
    request, fds = await fake.receive()
    assert request == control.Taken(4321) and fds == []
    # the spare found its spec on its socket, as the SPEC frame
    frames = wire.FrameDecoder(wire.FROM_GATEWAY).feed(spare_sock.recv(1 << 16))
    assert [(f[0], wire.EnvironmentSpec.from_wire(f[1])) for f in frames] == [(wire.SPEC, spec)]
    spare_sock.close()
    os.close(spare_output)
    forked.sock.close()
    os.close(forked.output)


async def test_a_malformed_message_is_logged_and_ignored(
    fake: FakeZygote, client: Zygote, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="gateway.zygote"):
        fake.send_raw(b"\x93\x05")  # EXITED's array header, cut short
        fake.send(control.Spare(1, "/x"))  # a spare without its descriptors
        await _hello(fake, client)  # still listening
    assert sum("malformed message" in r.getMessage() for r in caplog.records) == 2


async def test_losing_the_zygote_fails_forks_and_exits(
    fake: FakeZygote, client: Zygote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.execution.zygote.READY_WAIT", 0.1)  # the retry waits this long for a restart
    await _hello(fake, client)
    fork = asyncio.ensure_future(client.fork(sample_spec()))
    request, _fds = await fake.receive()
    assert isinstance(request, control.Fork)
    fake.send(control.Forked(request.req_id, NO_PID, str(tmp_path / "env")))
    forked = await fork
    pending = asyncio.ensure_future(client.fork(sample_spec()))
    await fake.receive()
    fake.sock.close()  # the zygote died
    with pytest.raises(ZygoteUnavailable):
        await pending
    assert await asyncio.wait_for(forked.exit_status, 2) is None  # unknown: its environments die with it
    assert not client.ready
    forked.sock.close()
    os.close(forked.output)


async def test_close_says_stop(fake: FakeZygote, client: Zygote) -> None:
    await _hello(fake, client)
    await client.close()
    request, _fds = await fake.receive()
    assert request == control.Stop()
    assert fake.sock.recv(1) == b""  # then closes the socket
