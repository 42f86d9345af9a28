"""The lifecycle of an environment with extensions (runtimes/proxy/lifecycle.py) on a socketpair to a test standing
in for the gateway, with an extension driven through the Extensions API's handlers (tests/conftest.py's Recorded) and
a real process standing in for the runtime: how SHUTDOWN ends what runs or waits."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from gateway.contracts import environment as wire
from gateway.contracts.environment import Invoke
from runtimes.proxy.lifecycle import ExtensionLink
from tests.conftest import Recorded

ENV = {"AWS_LAMBDA_FUNCTION_NAME": "f", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "_HANDLER": "app.handler"}


class Proxy:
    """An ExtensionLink with one extension "ext" (INVOKE and SHUTDOWN), its socket's other end (the gateway's), what
    it delivered to the runtime, how it ended, and the telemetry it emitted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gateway, self.proxy_end = socket.socketpair()
        self.gateway.setblocking(False)
        self.delivered: list[Invoke] = []
        self.ended: list[int] = []
        self.link = ExtensionLink(
            self.proxy_end, self.delivered.append, self.ended.append, ENV, ["/opt/extensions/ext"], 128,
            time.perf_counter(), lambda: 0,
        )  # fmt: skip
        self.emitted: list[tuple[str, Any]] = []
        monkeypatch.setattr(self.link.telemetry, "emit", lambda kind, record: self.emitted.append((kind, record)))
        registration = Recorded(
            {"Lambda-Extension-Name": "ext"}, json.dumps({"events": ["INVOKE", "SHUTDOWN"]}).encode()
        )
        self.link.extensions.register(registration)  # type: ignore[arg-type]
        assert registration.answer is not None
        self.ext_id = registration.answer[2].split(": ")[1].strip()
        self._decoder = wire.FrameDecoder()

    def next_event(self) -> Recorded:
        exchange = Recorded({"Lambda-Extension-Identifier": self.ext_id})
        self.link.extensions.next(exchange)  # type: ignore[arg-type]
        return exchange

    async def send(self, frame: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.gateway, frame)
        await asyncio.sleep(0.05)  # the link's reader has it

    async def frame(self) -> list[Any]:
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.gateway, 1 << 16), 2)
        frames = self._decoder.feed(data)
        assert len(frames) == 1
        return frames[0]


@pytest.fixture
async def proxy(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Proxy]:
    made = Proxy(monkeypatch)
    made.link.start(asyncio.get_running_loop())
    yield made
    if made.link._shutdown_task is not None:
        await made.link._shutdown_task
    made.gateway.close()
    made.proxy_end.close()


@pytest.fixture
def runtime() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(["sleep", "30"])
    yield process
    process.kill()
    process.wait()


def invoke(inv_id: int, request_id: str, timeout: float) -> bytes:
    return wire.encode_invoke(inv_id, b"{}", int((time.time() + timeout) * 1000), request_id, "arn:f", None)


async def test_shutdown_while_an_invocation_waits_for_the_extensions_times_it_out(
    proxy: Proxy, runtime: subprocess.Popen[bytes]
) -> None:
    """The runtime answered; the extension still works on that INVOKE, so the next one waits (held). SHUTDOWN then
    means the gateway timed the held one out: the runtime is killed (not asked to stop), the extension's SHUTDOWN
    says "timeout", and the held request's runtimeDone and report say "timeout"."""
    link = proxy.link
    link.runtime_pid = lambda: runtime.pid
    waiting = proxy.next_event()  # the extension's Init is over; it waits for its first event
    link.ready(1.0)
    assert (await proxy.frame())[0] == wire.READY
    await proxy.send(invoke(1, "first", 30))
    assert [i.request_id for i in proxy.delivered] == ["first"] and waiting.document["eventType"] == "INVOKE"
    link.reply(wire.result_head(1, b"1"), 1.0, 1024, 0)
    assert (await proxy.frame())[0] == wire.RESULT  # the caller is answered; the extension is still busy
    await proxy.send(invoke(2, "held", 1))
    assert [i.request_id for i in proxy.delivered] == ["first"]  # held behind the extension
    await proxy.send(wire.encode((wire.SHUTDOWN,)))  # the gateway timed "held" out
    assert await asyncio.wait_for(asyncio.to_thread(runtime.wait), 2) == -signal.SIGKILL
    shutdown = proxy.next_event()
    for _ in range(100):
        if shutdown.answer is not None:
            break
        await asyncio.sleep(0.01)
    assert shutdown.document["eventType"] == "SHUTDOWN" and shutdown.document["shutdownReason"] == "timeout"
    proxy.next_event()  # done with it: the shutdown phase ends
    assert link._shutdown_task is not None
    await asyncio.wait_for(link._shutdown_task, 3)
    assert proxy.ended == [0]
    statuses = [(k, r.get("requestId"), r.get("status")) for k, r in proxy.emitted if k.startswith("platform.")]
    assert ("platform.report", "first", "success") in statuses  # the first is complete, its extension time cut
    assert ("platform.start", "held", None) in statuses
    assert ("platform.runtimeDone", "held", "timeout") in statuses
    assert ("platform.report", "held", "timeout") in statuses
