"""One execution environment: a runtime process, its socket, its output pipe, its in-flight invocations, deadlines.

`Environment` is an `asyncio.Protocol` on the gateway's end of the environment's socket: one future per
invocation, resolved by `data_received`, and no task of its own. Invariants:

- an environment that timed out, sent a bad or oversized frame or a reply nobody waits for, lost its socket, or
  exited (the zygote says so, even while a process it forked still holds its socket) is dead for good: its
  process group is SIGKILLed, every in-flight invocation fails at once, and it is never used again (a late reply
  must not answer the next request); a shutdown with a grace (extensions) fails what is in flight but lets the
  environment end: the replies and pieces those invocations had sent already are late, and dropped, not forged;
- `invoke()` returns the reply, a `Result` or an `Error` record (with when the payload went out and the reply came
  back) or raises `InvocationTimeout` / `EnvironmentDied`; CHUNK frames before the reply (a streamed response) go
  to the invocation's sink (gateway/execution/streams.py), which makes the reply what the caller gets;
- output: the environment's fds 1 and 2 are a pipe whose read end is ours, read by a loop reader into a buffer
  that keeps the last OUTPUT_LIMIT bytes (older ones are counted, and the log says how many were dropped). At a
  reply the pipe is drained (without blocking: what the environment wrote before replying is in it) and the
  buffer becomes the reply's log (READY: the Init log); when it dies, what it printed last is `last_output`.
  Nothing goes to disk, and the gateway holds at most about OUTPUT_LIMIT bytes per environment. While no
  invocation runs and the buffer has overflowed, reading pauses: a process printing in the background then
  waits on a full pipe rather than costing the gateway CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import os
import signal
import sys
import termios
import time
from typing import TYPE_CHECKING, Any

from gateway.contracts import environment as wire
from gateway.contracts.environment import CHUNK, ERROR, INV_ID, LOG, PENDING, READY, RESULT, Error, Result, typed
from gateway.execution import streams
from gateway.execution.cleanup import remove_later as remove_later  # zygote.py's, too
from gateway.execution.failures import EnvironmentDied as EnvironmentDied  # the invoker's, the tests'
from gateway.execution.failures import InvocationTimeout as InvocationTimeout
from gateway.isolation import cgroups
from gateway.isolation.freezer import Freezer

if TYPE_CHECKING:
    from gateway.execution.zygote import Forked

log = logging.getLogger("gateway.environment")

#: how long a process whose socket closed may take to exit before it is SIGKILLed
LINGER = 0.1
#: Lambda gives Init 10 seconds
INIT_TIMEOUT = 10.0
#: what one invocation's log keeps of its output (and Init's of its own): the last this many bytes
OUTPUT_LIMIT = wire.MAX_LOG
#: reads of an output pipe at a reply or a death: the pipe holds at most ~1 MB, one read takes it all, unless a
#: process keeps writing (whatever it writes later belongs to the next invocation)
DRAIN_READS = 2
#: how much of the socket is read (replies sent before the end) when the zygote reports an exit before its EOF
EXIT_DRAIN_BYTES = 2 * wire.MAX_FRAME
#: the record of each reply kind
_REPLIES: dict[int, type[Result] | type[Error]] = {RESULT: Result, ERROR: Error}
_DEVNULL: list[int] = []


def _devnull() -> int:
    if not _DEVNULL:
        _DEVNULL.append(os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC))
    return _DEVNULL[0]


#: one buffer for every read of an output pipe (the loop is single-threaded): a read allocates nothing
_READ_BUFFER = bytearray(1 << 20)
_READ_VIEW = memoryview(_READ_BUFFER)
_READ_BUFFERS = [_READ_BUFFER]


class Environment(asyncio.Protocol):
    """The gateway's handle on one runtime process. Created by `spawn()`; one invocation at a time by default."""

    __slots__ = (
        "_abandoned",
        "_decoder",
        "_dropped",
        "_ending",
        "_finished",
        "_ids",
        "_inflight",
        "_out",
        "_out_fd",
        "_reading",
        "_ready",
        "_sinks",
        "_transport",
        "capacity",
        "dead",
        "env_dir",
        "exit_status",
        "freezer",
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
        "shutdown_grace",
        "started",
    )

    def __init__(self, key: Any, pid: int, exit_status: asyncio.Future[int | None], env_dir: str, output: int) -> None:
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
        self.started = self.last_used  # its session credentials were minted just before (gateway.isolation.credentials)
        self.initialization_type = "on-demand"
        #: invocations the pool has given this environment and not yet taken back (shared environments)
        self.load = 0
        self._transport: asyncio.Transport | None = None
        self._decoder = wire.FrameDecoder()
        self._inflight: dict[int, asyncio.Future[tuple[wire.Reply, float]]] = {}
        self._sinks: dict[int, streams.Sink] = {}  # of invocations that stream (see `_chunk`)
        self._ids = itertools.count(1)
        loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[wire.Ready] = loop.create_future()
        #: its group's freezer, once the pool has opened it (gateway/isolation/freezer.py); None: never frozen
        self.freezer: Freezer | None = None
        self.shutdown_grace, self._ending = 0.0, False  # a `shutdown` with a grace (extensions), and one under way
        #: while it ends, the invocations that shutdown failed: what they had sent already is late, not forged
        self._abandoned: set[int] = set()
        self._out = bytearray()  # the current invocation's output (its last OUTPUT_LIMIT bytes)
        self._dropped = 0  # bytes of it that were dropped
        self._out_fd = output
        loop.add_reader(output, self._on_output)
        self._reading = True
        # Reaped, or its zygote is gone (then its PDEATHSIG is pending, and acts once it is thawed): never frozen again.
        exit_status.add_done_callback(self._exited)
        exit_status.add_done_callback(self._on_exit)

    # -- asyncio.Protocol ---------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a stream transport (uvloop's is not a subclass)

    def data_received(self, data: bytes) -> None:
        received = time.perf_counter()
        try:
            frames = self._decoder.feed(data)
        except wire.ProtocolError as exc:
            self.kill(f"bad frame from the environment: {exc}")
            return
        inflight = self._inflight
        for frame in frames:  # checked by the decoder: each is a valid frame of its kind
            kind = frame[0]
            reply = _REPLIES.get(kind)
            if reply is not None:
                fut = inflight.pop(frame[INV_ID], None)
                if fut is None and frame[INV_ID] in self._abandoned:  # sent before SHUTDOWN: dropped
                    self._abandoned.discard(frame[INV_ID])
                    continue
                if fut is None or fut.done():  # nobody asked: a forged or repeated reply
                    self.kill(f"unexpected frame: a reply to invocation {frame[INV_ID]}, which is not in flight")
                    return
                frame[LOG] = self.take_output(frame[LOG], frame[PENDING] != 0)
                fut.set_result((typed(reply, frame), received))
            elif kind == CHUNK or kind == wire.HEAD:
                if not self._chunk(frame[INV_ID], frame[2], kind == wire.HEAD):
                    return
            elif kind == READY and not self._ready.done():
                self._ready.set_result(typed(wire.Ready, frame))
            elif kind == wire.RESET:  # it takes no more invocations (its extensions failed): what runs may finish
                self.dead = True
                if not inflight:
                    self.shutdown("reset")
            else:
                self.kill(f"unexpected frame kind {kind}")
                return

    def _chunk(self, inv_id: int, data: Any, head: bool = False) -> bool:
        """A piece of `inv_id`'s streamed response (`head`: its content type, a HEAD frame's), for its sink (a
        `Collector` unless the caller gave one). False if that killed it: a piece of no invocation in flight, a HEAD
        out of place (a second one, or after a piece), or past the sink's limit (Function.ResponseSizeTooLarge)."""
        fut = self._inflight.get(inv_id)
        if fut is None and inv_id in self._abandoned:  # sent before SHUTDOWN: dropped
            return True
        if fut is None or fut.done():
            self.kill(f"unexpected frame: a piece of invocation {inv_id}, which is not in flight")
            return False
        sink = self._sinks.get(inv_id) or self._sinks.setdefault(inv_id, streams.Collector())
        if head:
            if sink.head(data):  # once, before the first piece: see streams.Sink
                return True
            self.kill(f"bad frame from the environment: a second HEAD, or one after a CHUNK, of invocation {inv_id}")
            return False
        if sink.write(data):
            return True
        fut.set_result((streams.overflowed(inv_id, sink, self.take_output()), time.perf_counter()))
        self.kill("its streamed response exceeded the limit")
        return False

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

    def _on_exit(self, exit_status: asyncio.Future[int | None]) -> None:
        """The zygote reaped the process (or was lost): fail what is in flight now, without waiting for the socket's
        EOF, which a process it forked may hold off for ever. Replies it sent before exiting are read first."""
        if self._finished:
            return
        if not self._drain_socket():  # what it sent was a bad frame: killed already
            return
        self.dead = True
        self.oom_peak = cgroups.out_of_memory(self.env_dir)
        self._keep_output()
        self._fail_all("Runtime exited")
        # Its pid was reaped a moment ago; the group lives on in whatever it forked, and a pid is handed out
        # again only after the kernel's pid counter wraps: this cannot hit an unrelated group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.kill("exited")

    def _drain_socket(self) -> bool:
        """Read, without blocking, what the socket holds (at most EXIT_DRAIN_BYTES) and decode it as if it arrived.
        False if that killed the environment (a bad frame)."""
        sock = self._transport.get_extra_info("socket") if self._transport is not None else None
        fd = sock.fileno() if sock is not None else -1
        left = EXIT_DRAIN_BYTES if fd >= 0 else 0
        while left > 0 and not self._finished:
            try:
                data = os.read(fd, min(left, 1 << 20))
            except OSError:  # BlockingIOError: all read; others: the socket is gone
                break
            if not data:
                break
            left -= len(data)
            self.data_received(data)
        return not self._finished

    # -- output -------------------------------------------------------------------------------------------
    def _on_output(self) -> None:
        """The output pipe is readable (a loop reader): one read's worth into the buffer. What the pipe holds beyond
        the last OUTPUT_LIMIT bytes is dropped unread (spliced to /dev/null: no copy), so a function printing
        gigabytes costs the gateway little more than the system calls."""
        fd = self._out_fd
        try:
            excess = int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder) - OUTPUT_LIMIT
            if excess > 0 and (moved := os.splice(fd, _devnull(), excess)) > 0:
                self._dropped += len(self._out) + moved  # newer bytes follow: all of the buffer goes too
                self._out.clear()
        except OSError:  # no splice here, or the pipe is gone: read it as it is
            pass
        self._read_output(1)
        if self._dropped and not self._inflight and self._ready.done() and self._reading:
            # Nothing runs, yet output overflows: a background process. Let it wait on a full pipe until the next
            # invocation (or its end) rather than spend the gateway's CPU.
            asyncio.get_running_loop().remove_reader(self._out_fd)
            self._reading = False

    def _read_output(self, reads: int) -> None:
        fd = self._out_fd
        if fd < 0:
            return
        for _ in range(reads):
            try:
                n = os.readv(fd, _READ_BUFFERS)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                n = 0
            if n == 0:  # every writer is gone
                if self._reading:
                    asyncio.get_running_loop().remove_reader(fd)
                    self._reading = False
                return
            self._append(_READ_VIEW[:n])

    def _append(self, data: bytes | memoryview) -> None:
        if len(data) >= OUTPUT_LIMIT:
            self._dropped += len(self._out) + len(data) - OUTPUT_LIMIT
            self._out[:] = data[-OUTPUT_LIMIT:]
            return
        out = self._out
        out += data
        excess = len(out) - OUTPUT_LIMIT
        if excess > 0:
            del out[:excess]
            self._dropped += excess

    def take_output(self, extra: bytes = b"", drain: bool = True) -> bytes:
        """The output since the last call, drained from the pipe (unless not `drain`: the environment said it is
        empty), then `extra` (a frame's log), within OUTPUT_LIMIT bytes; when some were dropped, it starts at a
        whole line, after `wire.truncation_marker`."""
        if drain:
            self._read_output(DRAIN_READS)
        if extra:
            self._append(extra)
        out = self._out
        if not out and not self._dropped:
            return b""
        data = bytes(out)
        out.clear()
        dropped, self._dropped = self._dropped, 0
        if dropped:
            cut = data.find(b"\n", 0, 4096)
            if cut >= 0:
                data = data[cut + 1 :]
                dropped += cut + 1
            data = wire.truncation_marker(dropped, OUTPUT_LIMIT) + data
        return data

    def _close_output(self) -> None:
        if self._out_fd >= 0:
            if self._reading:
                asyncio.get_running_loop().remove_reader(self._out_fd)
                self._reading = False
            os.close(self._out_fd)
            self._out_fd = -1

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
            ready = await asyncio.wait_for(self._ready, timeout)
        except TimeoutError:
            self.kill("init timed out")
            raise InvocationTimeout(f"Init timed out after {timeout:.2f} seconds") from None
        except EnvironmentDied as exc:  # sys.exit() in the module, a crash: what Init printed goes with it
            exc.output = self.last_output  # kept when it died, before its pipe was closed
            raise
        self.init_ms, self.capacity = ready.init_ms, ready.capacity
        if ready.error_type is not None:
            self.init_error = {
                "errorType": ready.error_type,
                "errorMessage": ready.error_message,
                "stackTrace": ready.stack_trace,
            }
        self.init_log = self.last_output + self.take_output()  # ended since READY (init/error): kept at its end

    async def invoke(
        self,
        payload: bytes,
        request_id: str,
        invoked_arn: str,
        client_context: bytes | None,
        timeout: float,
        sink: streams.Stream | None = None,
    ) -> tuple[wire.Reply, float, float]:
        """Run one invocation under `timeout` seconds: its reply (a `Result` or an `Error`, whose `log` is what the
        invocation printed), and the perf_counter() times at which the payload was written and the reply arrived.
        `sink` takes the pieces of a streamed response as they come (without one, they are joined into the reply)."""
        if self.dead or self._transport is None:
            raise EnvironmentDied("environment is dead", self.exit_status)
        loop = asyncio.get_running_loop()
        if not self._reading and self._out_fd >= 0:  # paused while it was idle: see _on_output
            loop.add_reader(self._out_fd, self._on_output)
            self._reading = True
        inv_id = next(self._ids)
        fut: asyncio.Future[tuple[wire.Reply, float]] = loop.create_future()
        self._inflight[inv_id] = fut
        if sink is not None:
            sink.attach(self._transport)
            self._sinks[inv_id] = sink
        deadline_ms = int((time.time() + timeout) * 1000)
        self._transport.write(wire.encode_invoke(inv_id, payload, deadline_ms, request_id, invoked_arn, client_context))
        written_at = time.perf_counter()
        freezer = self.freezer
        if freezer is not None and freezer.frozen:  # after the write: it finds the frame as soon as it runs
            freezer.thaw()
        timer = loop.call_later(timeout, self._on_timeout, inv_id)
        try:
            reply, replied_at = await fut
        except asyncio.CancelledError:
            # The caller gave up while the function runs: never hand this environment out half-busy.
            self.kill("invocation cancelled")
            raise
        finally:
            timer.cancel()
            self._inflight.pop(inv_id, None)
            self.last_used = time.monotonic()
            streamed = self._sinks.pop(inv_id, None) if self._sinks else None
        if streamed is not None:
            reply = streamed.end(reply)
        return reply, written_at, replied_at

    def freeze(self) -> None:
        """Stop it from running until its next invocation (isolation/freezer.py). A no-op without a freezer, once
        dead or exited, and while it has an invocation in flight."""
        if self.freezer is None or self.dead or self._inflight or self.load > 0 or self.exit_status.done():
            return
        self.freezer.freeze()

    def _exited(self, _: asyncio.Future[int | None]) -> None:
        if self.freezer is not None:
            self.freezer.thaw()

    def _on_timeout(self, inv_id: int) -> None:
        fut = self._inflight.get(inv_id)  # left in flight: a shutdown with a grace drops its late reply
        if fut is not None and not fut.done():
            fut.set_exception(InvocationTimeout())
        self.shutdown("invocation timed out")

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
            if self.freezer is not None:  # after the signal: frozen, it could not act on it; thawed, it dies at once
                self.freezer.close()
            if self._transport is not None:
                self._transport.abort()
            if reason != "shut down":  # it may have been running an invocation
                self._keep_output()
            self._close_output()
            remove_later(self.env_dir)
        if reason.startswith("bad frame") or reason.startswith("unexpected frame"):
            log.warning("environment %s (pid %s) killed: %s", self.key, self.pid, reason)
        self._fail_all(reason)

    def _keep_output(self) -> None:
        """Keep what the current invocation printed, before the pipe is closed (once per environment)."""
        if not self.last_output:
            self.last_output = self.take_output()

    def shutdown(self, reason: str = "shut down") -> None:
        """Stop an idle environment: SIGKILL (no work lost). With a `shutdown_grace` (extensions: Lambda's shutdown
        phase), SHUTDOWN first (during an invocation: its timeout), SIGKILL once the grace is over."""
        if self.shutdown_grace <= 0 or self._finished or self._transport is None or self.exit_status.done():
            self.kill(reason)
        elif not self._ending:
            self._ending = self.dead = True
            self._keep_output()  # what a timed-out invocation printed, for its caller's log, as kill() keeps it
            self._abandoned.update(self._inflight)  # at most `capacity` ids, once: its replies may be on their way
            self._fail_all(reason)
            self._transport.write(wire.encode((wire.SHUTDOWN,)))
            asyncio.get_running_loop().call_later(self.shutdown_grace, self.kill, reason)


async def connect(key: Any, forked: Forked) -> Environment:
    """Wrap a freshly forked environment's socket in an `Environment` protocol (which owns its output pipe)."""
    loop = asyncio.get_running_loop()
    env = Environment(key, forked.pid, forked.exit_status, forked.env_dir, forked.output)
    try:
        await loop.create_unix_connection(lambda: env, sock=forked.sock)
    except BaseException:
        forked.sock.close()
        env.kill("could not connect")
        raise
    return env
