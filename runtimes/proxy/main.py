"""A Runtime API environment's main: serve the Runtime API, run the runtime, relay between it and the gateway.

Called by runtimes/python/bootstrap.py `run()` once the sandbox is sealed, when the spec's `bootstrap` is not empty
(the Python fast path otherwise). Contract with the gateway (gateway/contracts/environment.py), as the fast path's:

- READY once: when the runtime first asks for an invocation (`invocation/next`; init_ms from the seal), with the
  runtime's error when it posts `init/error` (the body it posted is the document the caller gets), or an error the
  platform words (no document: the gateway answers "RequestId: <id> Error: <message>"): Runtime.InvalidEntrypoint
  when the bootstrap cannot be started, Runtime.ExitError ("Runtime exited with error: exit status 1") when the
  runtime ends before either; after an Init error the environment ends (ExitCode.OK), as the fast path's does;
- one RESULT or ERROR per INVOKE (capacity 1), `max_rss_kb` the runtime's peak RSS, `pending` what its output holds;
- when the runtime ends after Init while it has an invocation it has not answered, the proxy ends the same way (its
  exit code or signal) once it has sent what it can: the gateway then fails that invocation with Runtime.ExitError
  and Lambda's "exit status N", as it does for any environment that dies;
- when it ends after answering (no invocation handed out: Node.js exits 129 after posting an uncaught exception),
  the proxy starts it again (a re-Init: same command line, environment, wrapper; extensions keep running), as
  Lambda does; an INVOKE that comes meanwhile waits for the new runtime's `next`. If that re-Init fails (the
  runtime exits before taking an invocation, posts init/error, or cannot be started), the proxy sends RESET, the
  waiting invocation (and any sent before the gateway saw RESET) gets Lambda's Init failure (Runtime.ExitError
  "RequestId: ... Error: Runtime exited with error: ...", or the runtime's init/error document), and SHUTDOWN ends
  the environment: at most one restart per invocation the runtime took, never a loop;
- SHUTDOWN or the socket's end stop the runtime and end the proxy (ExitCode.OK).

Where the Runtime API listens (AWS_LAMBDA_RUNTIME_API): in a jail, 127.0.0.1:9001 of the environment's own network
namespace, as on Lambda, reachable by nothing outside the environment. Without a jail (no root, or isolation off)
there is no namespace of its own: 127.0.0.1 on a free port, which other local processes of the host (other
functions' environments included) could connect to; run the gateway as root where functions do not trust each other.

The runtime (runtimes/proxy/process.py) is the proxy's child, in its process group; its output goes down the
environment's output pipe (fds 1 and 2), which the gateway reads as it does the fast path's. One event loop, one
thread: the HTTP server (runtimes/proxy/server.py), the gateway's socket (runtimes/proxy/link.py), SIGCHLD.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import NoReturn

from gateway.contracts.environment import EnvironmentSpec, Invoke
from gateway.contracts.zygote import ExitCode
from runtimes.proxy import process, streaming
from runtimes.proxy.lifecycle import ExtensionLink
from runtimes.proxy.link import GatewayLink
from runtimes.proxy.runtime_api import RuntimeApi
from runtimes.proxy.server import Router, listen

#: where a jailed environment's Runtime API listens, as on Lambda
JAILED_ADDRESS = ("127.0.0.1", 9001)
EXIT_ERROR = "Runtime.ExitError"


class Proxy:
    """One environment's proxy: owns the runtime's pid and decides how the environment ends."""

    def __init__(
        self, sock: socket.socket, spec: EnvironmentSpec, init_start: float, pending: Callable[[], int]
    ) -> None:
        self.spec = spec
        self.extensions: ExtensionLink | None = None
        self.link: GatewayLink
        if spec.extensions:  # Lambda's lifecycle with extensions (runtimes/proxy/lifecycle.py)
            self.link = self.extensions = ExtensionLink(
                sock,
                lambda invoke: self.api.invoke(invoke),
                self.end,
                spec.env,
                spec.extensions,
                spec.memory_size,
                init_start,
                pending,
                spec.extension_emulators,
            )
            self.extensions.runtime_pid = lambda: self.pid
        else:
            self.link = GatewayLink(sock, lambda invoke: self.api.invoke(invoke), self.end)
        self.memory = process.MemoryProbe(os.getpid())  # replaced by the runtime's once it runs
        self.api = RuntimeApi(self.link, init_start, pending, lambda: self.memory.peak_kb())
        self.api.on_init_error = lambda: self.end(ExitCode.OK)
        self.api.on_reinit_error = self._reinit_failed
        streaming.install(self.api, self.link)  # streamed responses: CHUNK frames as the body arrives
        self.pid = 0
        self.port = 0

    def end(self, code: int) -> NoReturn:
        """End the environment: the runtime first (it shares our group, but may be waiting on nothing of ours)."""
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass
        os._exit(code)

    def start_runtime(self, port: int) -> bool:
        """Start the runtime with AWS_LAMBDA_RUNTIME_API; False (and READY with the error sent) if it cannot be."""
        self.port = port
        message = self._spawn()
        if message is not None:
            self.link.ready(self._init_ms(), process.INVALID_ENTRYPOINT, message, b"")
            return False
        return True

    def _spawn(self) -> str | None:
        """Start the runtime process (at Init, or again: a re-Init); Runtime.InvalidEntrypoint's message if it
        cannot be started (written to the output as Lambda does), else None."""
        env = dict(self.spec.env)
        env["AWS_LAMBDA_RUNTIME_API"] = f"127.0.0.1:{self.port}"
        argv = process.command(self.spec.bootstrap, env)
        output = self.extensions.runtime_output() if self.extensions is not None else None
        try:
            self.pid = process.spawn(argv, env, self.spec.code_dir, output)
        except OSError as exc:
            if output is not None:
                os.close(output)
            message = process.entrypoint_error(argv[0], exc, env)
            sys.stderr.write(f"{process.INVALID_ENTRYPOINT}: {message}\n")
            return message
        if output is not None:
            os.close(output)  # the runtime holds it: the relay sees EOF when the runtime (and its children) end
        self.memory = process.MemoryProbe(self.pid)
        return None

    def _init_ms(self) -> float:
        return (time.perf_counter() - self.api.init_start) * 1000.0

    def reap(self) -> None:
        """SIGCHLD: collect every child that ended; the runtime's end ends the environment."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.pid:
                self.pid = 0
                if self.extensions is None or not self.extensions.shutting_down:
                    self._runtime_ended(status)
            elif self.extensions is not None:
                self.extensions.extensions.exited(pid, status)

    def _runtime_ended(self, status: int) -> None:
        """The runtime process ended (see the module's docstring for what follows from when it did)."""
        what = f"Runtime exited with error: {process.describe(status)}"
        if not self.link.ready_sent:  # it died in Init: that is Init's error (the environment is then discarded)
            self.link.ready(self._init_ms(), EXIT_ERROR, what)
            os._exit(ExitCode.OK)
        api = self.api
        if api.failure is not None:  # its re-Init failed and was reported: SHUTDOWN ends the environment
            return
        if api.current is not None:  # mid-invocation: the gateway fails it with Runtime.ExitError ("exit status N")
            process.end_like(status)
        if api.handed == 0:  # it got nothing since it (re)started: starting it again could loop
            self._reinit_failed(EXIT_ERROR, what, b"")
            return
        # It answered and then exited (Node.js after an uncaught exception): as Lambda, Init it again for the next
        # invocation, which waits (queued) until the new runtime asks for it. This runs when the proxy is thawed if
        # the runtime's end came while the environment was frozen, before or after that invocation's INVOKE.
        api.handed, api.reinit, api.waiter = 0, True, None
        message = self._spawn()
        if message is not None:
            self._reinit_failed(process.INVALID_ENTRYPOINT, message, b"")

    def _reinit_failed(self, error_type: str, message: str, document: bytes) -> None:
        """The runtime's re-Init failed (it exited, posted init/error, or could not be started): the invocation
        waiting for it, and any the gateway sends before it sees RESET, fail as Lambda fails an invocation whose
        Init fails: with the document the runtime posted to init/error, as it is, or (`document` empty) with the
        platform's {"errorMessage": "RequestId: ... Error: <message>", "errorType"} (Runtime.ExitError,
        Runtime.InvalidEntrypoint); the environment ends at SHUTDOWN."""
        exited = error_type == EXIT_ERROR

        def failure(invoke: Invoke) -> tuple[str, bytes]:
            if document:
                return error_type, document
            if exited:  # the gateway's line for a crash (Runtime.InvalidEntrypoint's was written when it happened)
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                sys.stderr.write(f"{stamp} {invoke.request_id} {message}\n")
            doc = {"errorMessage": f"RequestId: {invoke.request_id} Error: {message}", "errorType": error_type}
            return error_type, json.dumps(doc).encode()

        self.link.reset(f"the runtime cannot serve again: {error_type}: {message}")
        self.api.fail(failure)


async def _serve(proxy: Proxy, jailed: bool) -> None:
    loop = asyncio.get_running_loop()
    router = Router()
    proxy.api.add_routes(router)
    host, port = JAILED_ADDRESS if jailed else ("127.0.0.1", 0)
    try:
        server, port = await listen(router, host, port)
    except OSError:  # 9001 taken (cannot happen in a fresh namespace): any port will do, the runtime is told which
        server, port = await listen(router, host, 0)
    loop.add_signal_handler(signal.SIGCHLD, proxy.reap)
    if proxy.extensions is not None:  # they register first; then the runtime starts (runtimes/proxy/lifecycle.py)
        proxy.extensions.begin(router, port, lambda: None if proxy.start_runtime(port) else proxy.end(ExitCode.OK))
    elif not proxy.start_runtime(port):
        proxy.end(ExitCode.OK)
    proxy.reap()  # it may have ended before the handler was there to see it
    proxy.link.start(loop)
    async with server:
        await loop.create_future()  # runs until the proxy ends the process


def serve(fd: int, spec: EnvironmentSpec, pending: Callable[[], int], init_start: float, jailed: bool) -> NoReturn:
    """The environment's main from the seal on (see the module's docstring). Never returns."""
    os.set_inheritable(fd, False)  # the runtime must not hold the gateway's connection
    sock = socket.socket(fileno=fd)
    proxy = Proxy(sock, spec, init_start, pending)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_serve(proxy, jailed))
    except BaseException as exc:  # a bug of ours: say so where the gateway's log of this environment shows it
        sys.stderr.write(f"the Runtime API proxy failed: {exc!r}\n")
    proxy.end(ExitCode.FAILED)
