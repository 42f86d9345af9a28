"""An environment's life after the zygote forked it: sandbox set-up, its spec, Init, READY, then the serving loop.

Runs in the forked child only; `main()` never returns. Contract with the gateway (gateway/contracts/environment.py):
send READY once (with the init error, if Init failed, after which the gateway discards this environment), then
answer every INVOKE with exactly one RESULT or ERROR frame carrying the same id. The steps, each in a module of its
own:

- runtimes/python/sandbox.py: `prepare()` (a spare, before its spec; then `serving.rehearse()`), `Prepared.seal()`;
- runtimes/python/init.py: the function's environment and handler (an Init error is a READY, not a crash);
- runtimes/python/serving.py: the sequential loop (the default, and the hot path), or
  runtimes/python/concurrent.py: an asyncio loop, for async handlers with `max_concurrency` > 1 (Lambda's
  PerExecutionEnvironmentMaxConcurrency). With `max_concurrency > 1` and a plain `def` handler, invocations run
  sequentially (Lambda requires async handlers for this) and the init log says so.

A spec whose `bootstrap` is not empty makes a Runtime API environment instead: once sealed, the process becomes the
proxy (runtimes/proxy/main.py: it serves the Runtime API and runs that command line as the runtime, under the same
contract with the gateway); the steps after the seal above are then not run.

The process ends with an `ExitCode` (gateway/contracts/zygote.py) unless the function's code ends it first.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from typing import NamedTuple, NoReturn

from gateway.contracts import environment as wire
from gateway.contracts.environment import SPEC, EnvironmentSpec
from gateway.contracts.zygote import ExitCode
from runtimes.proxy import main as proxy
from runtimes.python import serving
from runtimes.python.init import initialize
from runtimes.python.isolation import Isolation
from runtimes.python.sandbox import Prepared, prepare

_connection: socket.socket | None = None


class Child(NamedTuple):
    """What a child of the zygote becomes an environment with."""

    socket_fd: int  # the environment's end of its socket to the gateway
    output_fd: int  # the write end of its output pipe (the gateway holds the read end)
    env_dir: str  # its directory (its tmp/, or its jail's root), named by the zygote
    spec: EnvironmentSpec | None  # None: a spare, whose spec comes later, as the first frame on its socket
    zygote_pid: int
    isolation: Isolation


def main(child: Child) -> NoReturn:
    """The environment's main, in a child that has dropped the zygote's state. Never returns."""
    code: int = ExitCode.FAILED
    try:
        spec = child.spec
        connect = spec is None or spec.network  # GATEWAY_NETWORK=none known already: no veth pair to make
        prepared = prepare(child.zygote_pid, child.env_dir, child.output_fd, child.isolation, connect)
        if spec is None:
            serving.rehearse()  # nobody is waiting yet
            spec = read_spec(child.socket_fd)
        run(child.socket_fd, spec, prepared)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else ExitCode.FAILED
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def read_spec(fd: int) -> EnvironmentSpec:
    """In a spare: block until the gateway's SPEC frame arrives on the environment socket; exit on EOF."""
    decoder = wire.FrameDecoder(wire.FROM_GATEWAY)
    while True:
        data = os.read(fd, 1 << 16)
        if not data:
            os._exit(ExitCode.OK)  # the gateway dropped the spare (it restarts, stops, or lost its zygote)
        try:
            frames = decoder.feed(data)
            if frames:
                if len(frames) != 1 or frames[0][0] != SPEC:
                    os._exit(ExitCode.BAD_FRAME)
                return EnvironmentSpec.from_wire(frames[0][1])
        except (wire.ProtocolError, wire.SpecError):
            os._exit(ExitCode.BAD_FRAME)


def run(fd: int, spec: EnvironmentSpec, prepared: Prepared) -> NoReturn:
    """Seal the sandbox, Init, say READY, serve. Exits when the gateway closes the socket or says SHUTDOWN."""
    init_start = time.perf_counter()
    prepared.seal(spec)
    if spec.bootstrap:  # a Runtime API environment: the proxy runs the runtime (imported once, in the zygote)
        proxy.serve(fd, spec, prepared.capture.pending, init_start, prepared.uid is not None)
    os.set_inheritable(fd, False)  # a handler's subprocess must not hold the gateway's connection open
    global _connection
    # Held in a global so that an exiting handler (sys.exit) does not close it before the exit status is set.
    sock = _connection = socket.socket(fileno=fd)
    init = initialize(spec, prepared.tmp_dir)
    init_ms = (time.perf_counter() - init_start) * 1000.0
    capacity = spec.max_concurrency if init.concurrent else 1
    if init.error is None:
        sock.sendall(wire.encode_ready(os.getpid(), init_ms, capacity, None, "", b""))
    else:  # a flat frame: the stack travels as JSON text (see gateway/contracts/environment.py)
        error, stack = init.error, json.dumps(init.error["stackTrace"]).encode()
        ready = wire.encode_ready(os.getpid(), init_ms, capacity, error["errorType"], str(error["errorMessage"]), stack)
        sock.sendall(ready)
    if init.handler is None:
        os._exit(ExitCode.OK)
    if init.concurrent:
        from runtimes.python.concurrent import serve_concurrently  # only functions that opted in pay the import

        serve_concurrently(sock, init.handler, prepared.capture, spec.env, spec.max_concurrency)
    serving.serve(sock, init.handler, prepared.capture, init.log_handler, spec.env)
