"""One execution environment: a runtime process, its socket, its in-flight invocations, its deadlines.

`Environment` is an `asyncio.Protocol` on the gateway's end of the environment's socket: one future per
invocation, resolved by `data_received`, and no task of its own. Invariants:

- an environment that timed out, sent a bad or oversized frame, or lost its socket is dead for good: its
  process group is SIGKILLed, every in-flight invocation fails, and it is never used again (a late reply
  must not answer the next request);
- `invoke()` returns the RESULT/ERROR frame or raises `InvocationTimeout` / `EnvironmentDied`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import socket
import time
from typing import Any

from gateway import protocol

#: Lambda gives Init 10 seconds
INIT_TIMEOUT = 10.0


class EnvironmentDied(Exception):
    """The environment's process ended (or was killed) before it replied."""

    def __init__(self, reason: str, exit_status: asyncio.Future[int | None] | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_status = exit_status


class InvocationTimeout(Exception):
    """The invocation ran past its deadline; the environment has been killed."""


class Environment(asyncio.Protocol):
    """The gateway's handle on one runtime process. Created by `spawn()`; one invocation at a time by default."""

    __slots__ = (
        "_decoder",
        "_ids",
        "_inflight",
        "_ready",
        "_transport",
        "dead",
        "exit_status",
        "init_error",
        "init_ms",
        "initialization_type",
        "key",
        "last_used",
        "pid",
        "tmp_dir",
    )

    def __init__(self, key: Any, pid: int, exit_status: asyncio.Future[int | None], tmp_dir: str) -> None:
        self.key = key
        self.pid = pid
        self.exit_status = exit_status
        self.tmp_dir = tmp_dir
        self.dead = False
        self.init_ms = 0.0
        self.init_error: dict[str, Any] | None = None
        self.last_used = time.monotonic()
        self.initialization_type = "on-demand"
        self._transport: asyncio.Transport | None = None
        self._decoder = protocol.FrameDecoder()
        self._inflight: dict[int, asyncio.Future[list[Any]]] = {}
        self._ids = itertools.count(1)
        self._ready: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol ---------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a stream transport (uvloop's is not a subclass)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._decoder.feed(data)
        except protocol.ProtocolError as exc:
            self.kill(f"bad frame from the environment: {exc}")
            return
        inflight = self._inflight
        for frame in frames:
            kind = frame[0]
            if kind == protocol.RESULT or kind == protocol.ERROR:
                fut = inflight.pop(frame[1], None)
                if fut is not None and not fut.done():
                    fut.set_result(frame)
            elif kind == protocol.READY and not self._ready.done():
                self._ready.set_result(frame)
            else:
                self.kill(f"unexpected frame kind {kind}")
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all("Runtime exited")
        self.kill("socket closed")

    # -- lifecycle ----------------------------------------------------------------------------------------
    @property
    def busy(self) -> int:
        return len(self._inflight)

    async def wait_ready(self, timeout: float = INIT_TIMEOUT) -> None:
        """Wait for READY. Sets `init_ms` and `init_error`; raises EnvironmentDied / InvocationTimeout."""
        try:
            frame = await asyncio.wait_for(self._ready, timeout)
        except TimeoutError:
            self.kill("init timed out")
            raise InvocationTimeout(f"Init timed out after {timeout:.2f} seconds") from None
        _, _pid, self.init_ms, self.init_error = frame

    async def invoke(
        self,
        payload: bytes,
        request_id: str,
        invoked_arn: str,
        client_context: bytes | None,
        timeout: float,
    ) -> list[Any]:
        """Run one invocation under `timeout` seconds; return its RESULT or ERROR frame."""
        if self.dead or self._transport is None:
            raise EnvironmentDied("environment is dead", self.exit_status)
        loop = asyncio.get_running_loop()
        inv_id = next(self._ids)
        fut: asyncio.Future[list[Any]] = loop.create_future()
        self._inflight[inv_id] = fut
        deadline_ms = int((time.time() + timeout) * 1000)
        self._transport.write(
            protocol.encode_invoke(inv_id, payload, deadline_ms, request_id, invoked_arn, client_context)
        )
        timer = loop.call_later(timeout, self._on_timeout, inv_id)
        try:
            return await fut
        except asyncio.CancelledError:
            # The caller gave up while the function runs: never hand this environment out half-busy.
            self.kill("invocation cancelled")
            raise
        finally:
            timer.cancel()
            self._inflight.pop(inv_id, None)
            self.last_used = time.monotonic()

    def _on_timeout(self, inv_id: int) -> None:
        fut = self._inflight.pop(inv_id, None)
        if fut is not None and not fut.done():
            fut.set_exception(InvocationTimeout())
        self.kill("invocation timed out")

    def _fail_all(self, reason: str) -> None:
        for fut in self._inflight.values():
            if not fut.done():
                fut.set_exception(EnvironmentDied(reason, self.exit_status))
        self._inflight.clear()
        if not self._ready.done():
            self._ready.set_exception(EnvironmentDied(reason, self.exit_status))

    def kill(self, reason: str = "killed") -> None:
        """SIGKILL the environment's whole process group and drop the connection. Idempotent."""
        if not self.dead:
            self.dead = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)  # the handler's own children too
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGKILL)  # in case it died before setsid()
            if self._transport is not None:
                self._transport.abort()
            _remove_later(self.tmp_dir)
        self._fail_all(reason)

    def shutdown(self) -> None:
        """Ask an idle environment to exit, then make sure it does (it is idle, so no work is lost)."""
        if not self.dead and self._transport is not None and not self._transport.is_closing():
            self._transport.write(protocol.encode((protocol.SHUTDOWN,)))
        self.kill("shut down")


def _remove_later(path: str) -> None:
    """Remove an environment's private /tmp off the event loop (it may hold up to EphemeralStorage bytes)."""
    try:
        asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, path, True)
    except RuntimeError:  # no running loop (interpreter shutdown): do it now
        shutil.rmtree(path, ignore_errors=True)


async def connect(
    key: Any, pid: int, sock: socket.socket, exit_status: asyncio.Future[int | None], tmp_dir: str
) -> Environment:
    """Wrap a freshly forked environment's socket in an `Environment` protocol."""
    loop = asyncio.get_running_loop()
    env = Environment(key, pid, exit_status, tmp_dir)
    try:
        await loop.create_unix_connection(lambda: env, sock=sock)
    except BaseException:
        sock.close()
        env.kill("could not connect")
        raise
    return env
