"""One execution environment: a runtime process, its socket, its in-flight invocations, its deadlines.

`Environment` is an `asyncio.Protocol` on the gateway's end of the environment's socket: one future per
invocation, resolved by `data_received`, and no task of its own. Invariants:

- an environment that timed out, sent a bad or oversized frame, or lost its socket is dead for good: its
  process group is SIGKILLed, every in-flight invocation fails, and it is never used again (a late reply
  must not answer the next request);
- `invoke()` returns the RESULT/ERROR frame (with when the payload went out and the reply came back) or
  raises `InvocationTimeout` / `EnvironmentDied`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gateway import cgroups, protocol

log = logging.getLogger("gateway.environment")

#: how long a process whose socket closed may take to exit before it is SIGKILLed
LINGER = 0.1
#: Lambda gives Init 10 seconds
INIT_TIMEOUT = 10.0


class EnvironmentDied(Exception):
    """The environment's process ended (or was killed) before it replied."""

    def __init__(
        self, reason: str, exit_status: asyncio.Future[int | None] | None, oom_peak: int | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_status = exit_status
        #: time.perf_counter() when the gateway learnt of the death: an invocation's Duration ends here
        self.at = time.perf_counter()
        #: the memory group's peak usage (bytes) when the kernel's OOM killer ended the environment, else None
        self.oom_peak = oom_peak


class InvocationTimeout(Exception):
    """The invocation ran past its deadline; the environment has been killed."""


class Environment(asyncio.Protocol):
    """The gateway's handle on one runtime process. Created by `spawn()`; one invocation at a time by default."""

    __slots__ = (
        "_decoder",
        "_finished",
        "_ids",
        "_inflight",
        "_ready",
        "_transport",
        "capacity",
        "dead",
        "env_dir",
        "exit_status",
        "init_error",
        "init_log",
        "init_ms",
        "initialization_type",
        "key",
        "last_output",
        "last_used",
        "load",
        "oom_peak",
        "pid",
    )

    def __init__(self, key: Any, pid: int, exit_status: asyncio.Future[int | None], env_dir: str) -> None:
        self.key = key
        self.pid = pid
        self.exit_status = exit_status
        self.env_dir = env_dir
        self.dead = False
        self._finished = False
        self.init_ms = 0.0
        self.init_error: dict[str, Any] | None = None
        self.init_log = b""
        self.capacity = 1  # invocations it runs at once, as its READY frame says
        #: what an invocation printed before the environment was killed under it (timeout, crash)
        self.last_output = b""
        #: set when it died: see EnvironmentDied.oom_peak
        self.oom_peak: int | None = None
        self.last_used = time.monotonic()
        self.initialization_type = "on-demand"
        #: invocations the pool has given this environment and not yet taken back (shared environments)
        self.load = 0
        self._transport: asyncio.Transport | None = None
        self._decoder = protocol.FrameDecoder()
        self._inflight: dict[int, asyncio.Future[tuple[list[Any], float]]] = {}
        self._ids = itertools.count(1)
        self._ready: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol ---------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a stream transport (uvloop's is not a subclass)

    def data_received(self, data: bytes) -> None:
        received = time.perf_counter()
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
                    fut.set_result((frame, received))
            elif kind == protocol.READY and not self._ready.done():
                self._ready.set_result(frame)
            else:
                self.kill(f"unexpected frame kind {kind}")
                return

    def connection_lost(self, exc: Exception | None) -> None:
        # Usually the process is exiting: give the zygote a moment to report how, before making sure.
        self.dead = True
        self._keep_output()
        if not self._finished:  # it died on its own: did the OOM killer (which counts first) end it?
            self.oom_peak = cgroups.out_of_memory(self.env_dir)
        self._fail_all("Runtime exited")
        if self.exit_status.done():
            self.kill("socket closed")
        else:
            asyncio.get_running_loop().call_later(LINGER, self.kill, "socket closed")

    # -- lifecycle ----------------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Whether Init is over (READY arrived, or the environment died first)."""
        return self._ready.done()

    @property
    def provisioned(self) -> bool:
        return self.initialization_type == "provisioned-concurrency"

    async def wait_ready(self, timeout: float = INIT_TIMEOUT) -> None:
        """Wait for READY. Sets `init_ms` and `init_error`; raises EnvironmentDied / InvocationTimeout."""
        try:
            frame = await asyncio.wait_for(self._ready, timeout)
        except TimeoutError:
            self.kill("init timed out")
            raise InvocationTimeout(f"Init timed out after {timeout:.2f} seconds") from None
        _, _pid, self.init_ms, self.init_error, self.init_log, self.capacity = frame

    async def invoke(
        self,
        payload: bytes,
        request_id: str,
        invoked_arn: str,
        client_context: bytes | None,
        timeout: float,
    ) -> tuple[list[Any], float, float]:
        """Run one invocation under `timeout` seconds: its RESULT or ERROR frame, and the perf_counter() times
        at which the payload was written and the reply arrived."""
        if self.dead or self._transport is None:
            raise EnvironmentDied("environment is dead", self.exit_status)
        loop = asyncio.get_running_loop()
        inv_id = next(self._ids)
        fut: asyncio.Future[tuple[list[Any], float]] = loop.create_future()
        self._inflight[inv_id] = fut
        deadline_ms = int((time.time() + timeout) * 1000)
        self._transport.write(
            protocol.encode_invoke(inv_id, payload, deadline_ms, request_id, invoked_arn, client_context)
        )
        written_at = time.perf_counter()
        timer = loop.call_later(timeout, self._on_timeout, inv_id)
        try:
            frame, replied_at = await fut
        except asyncio.CancelledError:
            # The caller gave up while the function runs: never hand this environment out half-busy.
            self.kill("invocation cancelled")
            raise
        finally:
            timer.cancel()
            self._inflight.pop(inv_id, None)
            self.last_used = time.monotonic()
        return frame, written_at, replied_at

    def _on_timeout(self, inv_id: int) -> None:
        fut = self._inflight.pop(inv_id, None)
        if fut is not None and not fut.done():
            fut.set_exception(InvocationTimeout())
        self.kill("invocation timed out")

    def _fail_all(self, reason: str) -> None:
        for fut in self._inflight.values():
            if not fut.done():
                fut.set_exception(EnvironmentDied(reason, self.exit_status, self.oom_peak))
        self._inflight.clear()
        if not self._ready.done():
            self._ready.set_exception(EnvironmentDied(reason, self.exit_status, self.oom_peak))

    def kill(self, reason: str = "killed") -> None:
        """SIGKILL the environment's whole process group and drop the connection. Idempotent.

        An environment the zygote has already reaped is not signalled: its pid may belong to another
        process by now. The handler's own children share its process group and die with it.
        """
        if not self._finished:
            self._finished = True
            self.dead = True
            if not self.exit_status.done():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(self.pid, signal.SIGKILL)  # in case it died before setsid()
            if self._transport is not None:
                self._transport.abort()
            if reason != "shut down":  # it may have been running an invocation
                self._keep_output()
            remove_later(self.env_dir)
        if reason.startswith("bad frame") or reason.startswith("unexpected frame"):
            log.warning("environment %s (pid %s) killed: %s", self.key, self.pid, reason)
        self._fail_all(reason)

    def _keep_output(self) -> None:
        """Read what the current invocation printed, before the directory goes (once per environment)."""
        if not self.last_output:
            self.last_output = _read_tail(os.path.join(self.env_dir, "output"))

    def shutdown(self) -> None:
        """Stop an idle environment (it is idle, so no work is lost; SIGKILL is the quickest clean exit)."""
        self.kill("shut down")


def _read_tail(path: str, limit: int = protocol.MAX_LOG) -> bytes:
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(size - limit, 0))
            return f.read()
    except OSError:
        return b""


#: removals wait for killed processes to leave their cgroups: in threads of their own, not the loop's default
#: executor, which the registry and the log store use
_CLEANUP = ThreadPoolExecutor(max_workers=2, thread_name_prefix="environment-cleanup")


def remove_later(path: str) -> None:
    """Remove an environment's directory (its private /tmp may hold up to EphemeralStorage bytes) and its cgroups,
    with whatever still runs in them, off the event loop."""
    try:
        asyncio.get_running_loop().run_in_executor(_CLEANUP, _remove, path)
    except RuntimeError:  # no running loop (interpreter shutdown): do it now
        _remove(path)


def _remove(path: str) -> None:
    cgroups.remove(path)
    shutil.rmtree(path, ignore_errors=True)


async def connect(
    key: Any, pid: int, sock: socket.socket, exit_status: asyncio.Future[int | None], env_dir: str
) -> Environment:
    """Wrap a freshly forked environment's socket in an `Environment` protocol."""
    loop = asyncio.get_running_loop()
    env = Environment(key, pid, exit_status, env_dir)
    try:
        await loop.create_unix_connection(lambda: env, sock=sock)
    except BaseException:
        sock.close()
        env.kill("could not connect")
        raise
    return env


def sweep_leftovers(envs_root: Path, always: bool = False) -> int:
    """Remove what environments of an earlier gateway left behind (after a SIGKILL of the gateway).

    Processes started by a handler can outlive their environment (a process group is not a container; with
    cgroups, gateway.cgroups removes them). Those whose mount namespace holds a mount from the data directory (a
    private /tmp under `envs_root`, or a jail's code) are killed; then every leftover environment directory is
    removed. The scan of /proc runs when directories are left
    over, or `always` (at shutdown, when directories may already be gone). Returns how many it killed.
    """
    killed = 0
    if envs_root.is_dir() and (always or any(envs_root.iterdir())):
        marker = " " + _path_in_mountinfo(envs_root.parent) + "/"
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/mountinfo") as f:
                    if marker not in f.read():  # the root of a bind mount of its lies in our data directory
                        continue
                os.kill(int(entry), signal.SIGKILL)
                killed += 1
            except (OSError, ProcessLookupError):
                continue
        for child in envs_root.iterdir():
            shutil.rmtree(child, ignore_errors=True)
    return killed


def _path_in_mountinfo(path: Path) -> str:
    """How `path` appears as a mount root in /proc/*/mountinfo: relative to its filesystem's root."""
    real = str(path.resolve())
    best_point, best_root = "/", "/"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            root, point = fields[3], fields[4]
            if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) > len(best_point):
                best_point, best_root = point, root
    rest = real[len(best_point) :].lstrip("/") if best_point != "/" else real.lstrip("/")
    return best_root.rstrip("/") + "/" + rest
