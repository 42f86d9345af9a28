"""Lambda's execution-environment lifecycle for an environment with external extensions: the proxy's gateway link
(runtimes/proxy/link.py) with the Extensions and Telemetry APIs' phases woven into it.

`ExtensionLink` is a `GatewayLink` that the proxy (runtimes/proxy/main.py) uses instead of the plain one when the
spec names extensions; without extensions nothing here runs, and the hot path is the plain link's. What it changes:

- READY waits until every extension has asked for its first event (the runtime's first `next` asks for READY; an
  extension's failure answers READY with its error instead, then the environment ends);
- an INVOKE goes to the extensions registered for INVOKE as it goes to the runtime (`platform.start`); the reply
  goes to the gateway at once (the caller is answered) after the runtime's output is relayed
  (`platform.runtimeDone`); the invocation is complete when every such extension has asked for its next event
  (`platform.report`); an INVOKE that comes before that waits, up to the previous invocation's deadline;
- an extension that overruns that deadline, exits, or posts `exit/error` resets the environment, as on Lambda: RESET
  tells the gateway to hand it no more invocations (what is in flight, or already sent, is still served) and to
  end it with SHUTDOWN (shutdownReason "failure");
- SHUTDOWN (the gateway retires the environment: idle reaping, an update or a deletion of the function) becomes the
  shutdown phase: what telemetry holds delivered, SIGTERM to the runtime, SHUTDOWN events ("spindown"), and the end
  within SHUTDOWN_MS; SHUTDOWN while an invocation runs, or waits for the extensions to finish the previous one,
  means the gateway timed it out: the runtime is killed, the invocation's telemetry says "timeout", and so does the
  extensions' SHUTDOWN; the gateway kills the environment's process group a little after (its grace).

Concurrency model: callbacks of the proxy's event loop, one thread; the shutdown phase is the one task.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

from gateway.contracts import environment as wire
from gateway.contracts.environment import ERROR, RESET, Invoke, ReplyHead
from gateway.contracts.zygote import ExitCode
from runtimes.proxy import relay, telemetry
from runtimes.proxy.extensions import Extensions, invoke_event, now_ms, shutdown_event
from runtimes.proxy.link import GatewayLink
from runtimes.proxy.runtime_api import trace_id
from runtimes.proxy.server import Router

#: Lambda's shutdown phase for a function with external extensions: 2 s in all
SHUTDOWN_MS = 2000
#: of it, what buffered telemetry may take to be delivered before SHUTDOWN goes out, and what is kept to end
SHUTDOWN_FLUSH_MS = 500
SHUTDOWN_MARGIN_MS = 100
#: how long a reply waits for the runtime's relayed output to reach the environment's output pipe
FLUSH_WAIT = 0.05


class ExtensionLink(GatewayLink):
    """The gateway link of an environment with extensions (see the module's docstring)."""

    def __init__(
        self,
        sock: socket.socket,
        on_invoke: Callable[[Invoke], None],
        on_end: Callable[[int], None],
        spec_env: dict[str, str],
        extensions: list[str],
        memory_mb: int,
        init_start: float,
        pending: Callable[[], int],
        emulators: dict[str, str] | None = None,
    ) -> None:
        super().__init__(sock, self._invoke, self._end)
        self._deliver = on_invoke
        self._end_now = on_end
        self._pending = pending
        self.init_start = init_start
        self.env = spec_env
        self.memory_mb = memory_mb
        self.telemetry = telemetry.Telemetry()
        self.writer = relay.Writer()
        self.extensions = Extensions(extensions, spec_env, self.telemetry, self.writer, emulators)
        self.extensions.on_change = self._check
        self.runtime_relay: relay.Relay | None = None
        self.runtime_pid: Callable[[], int] = lambda: 0
        self.init_type = spec_env.get("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
        self.init_ms: float | None = None  # reported in the first invocation's platform.report
        self._held_ready = False  # the runtime asked for READY; extensions are not ready yet
        self._current: Invoke | None = None  # the invocation not complete yet
        self._answered = False  # its reply went to the gateway
        self._started = 0.0
        self._status = "success"
        self._max_rss_kb = 0
        self._held: Invoke | None = None  # an INVOKE waiting for the current one to complete
        self._held_at = 0.0  # since when (perf_counter)
        self._overrun: asyncio.TimerHandle | None = None
        #: the shutdown phase has begun: the runtime's end no longer ends the environment (runtimes/proxy/main.py)
        self.shutting_down = False
        self._shutdown_task: asyncio.Future[None] | None = None
        self._json_logs = spec_env.get("AWS_LAMBDA_LOG_FORMAT") == "JSON"
        version = spec_env.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        runtime = spec_env.get("AWS_EXECUTION_ENV", "").replace("AWS_Lambda_", "")
        name = spec_env.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.telemetry.emit("platform.initStart", telemetry.init_start(self.init_type, name, version, runtime))

    def begin(self, router: Router, port: int, start_runtime: Callable[[], None]) -> None:
        """Serve the Extensions and Telemetry APIs on `router` and start the extensions; `start_runtime` runs once
        they have all registered."""
        self.extensions.add_routes(router)
        self.extensions.on_registered = start_runtime
        self.extensions.launch(f"127.0.0.1:{port}", self.env.get("LAMBDA_TASK_ROOT", "/"))

    # -- the runtime's output -------------------------------------------------------------------------------------
    def runtime_output(self) -> int:
        """The write end of a pipe for the runtime's fds 1 and 2 (the caller closes it once the runtime runs): its
        output is relayed to the environment's, and becomes "function" telemetry records for those who want them."""
        read_end, write_end = relay.pipe_for_child()
        self.runtime_relay = relay.Relay(read_end, self.writer, self._function_line)
        return write_end

    def _function_line(self, line: str) -> None:
        if self.telemetry.wants("function"):
            self.telemetry.emit("function", telemetry.log_record(line, self._json_logs))

    # -- Init -----------------------------------------------------------------------------------------------------
    def ready(self, init_ms: float, error_type: str | None = None, message: str = "", stack: bytes = b"") -> None:
        if self.ready_sent:
            return
        self.extensions.runtime_ready = True
        if error_type is None and (not self.extensions.all_ready or self.extensions.failure is not None):
            self._held_ready = True  # sent by _check once the extensions are ready (or fail Init instead)
            self._check()
            return
        self._ready(error_type, message, stack)

    def _ready(self, error_type: str | None, message: str, stack: bytes) -> None:
        self._held_ready = False
        init_ms = (time.perf_counter() - self.init_start) * 1000.0
        self.init_ms = init_ms
        status = "success" if error_type is None else "error"
        self.telemetry.emit("platform.initRuntimeDone", telemetry.init_runtime_done(self.init_type, status, error_type))
        self.telemetry.emit("platform.initReport", telemetry.init_report(self.init_type, status, init_ms, error_type))
        self.telemetry.end_init()
        super().ready(init_ms, error_type, message, stack)

    def _check(self) -> None:
        """Something changed (an extension asked for its next event, exited or failed): move on where we can."""
        extensions = self.extensions
        if not self.ready_sent:
            if extensions.failure is not None:
                error_type, message = extensions.failure
                sys.stderr.write(f"{error_type}: {message}\n")
                self._ready(error_type, message, b"")
                extensions.kill()
                self._end_now(ExitCode.OK)
            elif self._held_ready and extensions.all_ready:
                self._ready(None, "", b"")
            return
        if self._current is not None and self._answered and extensions.idle:
            self._complete()
        elif self._current is None and extensions.failure is not None and not self.shutting_down:
            self.reset(f"{extensions.failure[0]}: {extensions.failure[1]}")

    # -- Invoke ---------------------------------------------------------------------------------------------------
    def _invoke(self, invoke: Invoke) -> None:
        if self._current is not None:
            self._held, self._held_at = invoke, time.perf_counter()  # the gateway sends one at a time: one waits
            return
        self._current = invoke
        self._answered = False
        self._status = "success"
        self._started = time.perf_counter()
        trace = trace_id()
        self.extensions.dispatch(
            "INVOKE", invoke_event(invoke.request_id, invoke.deadline_ms, invoke.invoked_arn, trace)
        )
        version = self.env.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.telemetry.emit("platform.start", telemetry.start(invoke.request_id, version, trace))
        self._deliver(invoke)

    def reply(self, head: ReplyHead, duration_ms: float, max_rss_kb: int, pending: int) -> None:
        current = self._current
        if self.extensions.failure is not None:  # known already: RESET before the reply, so the gateway retires us
            self.reset(f"{self.extensions.failure[0]}: {self.extensions.failure[1]}")
        if self.runtime_relay is not None:  # what the runtime printed before answering belongs to this invocation
            self.runtime_relay.drain()
            self.writer.wait_empty(FLUSH_WAIT)
            pending = self._pending()
        super().reply(head, duration_ms, max_rss_kb, pending)
        if current is None:
            return
        self._answered = True
        self._max_rss_kb = max_rss_kb
        error_type = head[2] if head[0] == ERROR and isinstance(head[2], str) else None
        self._status = "success" if error_type is None else "error"
        produced = len(head[2]) if head[0] != ERROR and isinstance(head[2], bytes) else 0
        record = telemetry.runtime_done(current.request_id, self._status, duration_ms, produced, error_type)
        self.telemetry.emit("platform.runtimeDone", record)
        self.telemetry.emit("platform.end", {"requestId": current.request_id})  # for Logs API subscriptions
        if self.extensions.idle:
            self._complete()
            return
        delay = max(current.deadline_ms - now_ms(), 0) / 1000.0
        self._overrun = asyncio.get_event_loop().call_later(delay, self._overran, current)

    def _complete(self) -> None:
        current, self._current = self._current, None
        if self._overrun is not None:
            self._overrun.cancel()
            self._overrun = None
        if current is None:
            return
        duration_ms = (time.perf_counter() - self._started) * 1000.0
        max_mb = max(self._max_rss_kb // 1024, 1)
        init_ms, self.init_ms = self.init_ms, None
        record = telemetry.report(current.request_id, self._status, duration_ms, self.memory_mb, max_mb, init_ms, None)
        self.telemetry.emit("platform.report", record)
        if self.extensions.failure is not None:
            self.reset(f"{self.extensions.failure[0]}: {self.extensions.failure[1]}")
        held, self._held = self._held, None
        if held is not None:
            self._invoke(held)

    def _overran(self, invoke: Invoke) -> None:
        if self._current is invoke:
            busy = [e.name for e in self.extensions.extensions if e.busy and e.alive]
            why = f"extensions {busy} did not finish invocation {invoke.request_id} by its deadline"
            self.reset(f"Extension.TimeoutError: {why}")
            self._status = "timeout"
            self._complete()  # over, as far as the invocation that may wait is concerned

    def reset(self, why: str) -> None:
        """This environment must take no more invocations (an extension failed or overran; Lambda resets such an
        environment): RESET tells the gateway, which sends SHUTDOWN once what is in flight is answered."""
        if not self.reset_sent:
            self.reset_sent = True
            self.writer.write(f"[gateway] the execution environment is reset: {why}\n".encode())
            self._write(wire.encode((RESET,)))

    # -- Shutdown -------------------------------------------------------------------------------------------------
    def _end(self, code: int) -> None:
        """SHUTDOWN or the socket's end (GatewayLink's `on_end`)."""
        if self.shutting_down:
            return
        self.shutting_down = True
        try:
            asyncio.get_event_loop().remove_reader(self._sock.fileno())  # the socket's end is read once
        except (OSError, ValueError):
            pass
        if code != ExitCode.OK or not self.ready_sent:
            self.extensions.kill()
            self._end_now(code)
            return
        self._shutdown_task = asyncio.ensure_future(self._shutdown())

    async def _shutdown(self) -> None:
        start = time.monotonic()
        deadline_ms = now_ms() + SHUTDOWN_MS
        current = self._current if not self._answered else None  # SHUTDOWN mid-invocation: the gateway timed it out
        if self._held is not None:  # the gateway timed out the invocation that waited for the extensions
            current = self._start_held()
        pid = self.runtime_pid()
        if current is not None:
            self._kill_runtime(pid, signal.SIGKILL)  # stuck in the handler: it gets no say, as on Lambda
            self._timed_out(current)
        # What telemetry holds (the last invocation's platform.report) first: extensions flush and exit at SHUTDOWN.
        await self.telemetry.flush(SHUTDOWN_FLUSH_MS / 1000.0)
        if current is None:
            self._kill_runtime(pid, signal.SIGTERM)
        reason = "timeout" if current is not None else "failure" if self.reset_sent else "spindown"
        self.extensions.dispatch("SHUTDOWN", shutdown_event(reason, deadline_ms))
        wait = (SHUTDOWN_MS - SHUTDOWN_MARGIN_MS) / 1000.0
        while not self.extensions.idle and time.monotonic() - start < wait:
            await asyncio.sleep(0.01)
        self.writer.wait_empty(FLUSH_WAIT)
        self.extensions.kill()
        self._end_now(ExitCode.OK)

    @staticmethod
    def _kill_runtime(pid: int, sig: int) -> None:
        if pid:
            try:
                os.kill(pid, sig)
            except OSError:
                pass

    def _start_held(self) -> Invoke:
        """The held invocation, begun as far as telemetry is concerned (it timed out waiting): the one it waited for
        is complete (its report), and the held one's timing starts when it came."""
        held, self._held = self._held, None
        assert held is not None
        self._complete()
        self._current, self._started = held, self._held_at
        version = self.env.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.telemetry.emit("platform.start", telemetry.start(held.request_id, version, trace_id()))
        return held

    def _timed_out(self, current: Invoke) -> None:
        """The telemetry of an invocation the gateway timed out (Lambda's status "timeout")."""
        duration_ms = (time.perf_counter() - self._started) * 1000.0
        record = telemetry.runtime_done(current.request_id, "timeout", duration_ms, 0, "Sandbox.Timedout")
        self.telemetry.emit("platform.runtimeDone", record)
        max_mb = max(self._max_rss_kb // 1024, 1)
        report = telemetry.report(current.request_id, "timeout", duration_ms, self.memory_mb, max_mb, None, None)
        self.telemetry.emit("platform.report", report)
