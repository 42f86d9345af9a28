"""An environment's life after the zygote forked it: sandbox set-up, Init, then the invoke loop.

Runs in the forked child only; `run()` never returns. Contract with the gateway (see gateway.contracts.environment):
send READY once (with the init error, if Init failed, after which the gateway discards this
environment), then answer every INVOKE with exactly one RESULT or ERROR frame carrying the same id.

Two ways to serve, chosen once after Init:

- sequential (the default, and the hot path): a blocking loop runs one invocation at a time. Output
  written to fds 1 and 2 (print, logging, subprocesses) goes down the output pipe, which the gateway reads
  (runtimes/python/output.py): nothing of it travels in the reply.
- concurrent (`spec["max_concurrency"] > 1` and an `async def` handler, Lambda's
  PerExecutionEnvironmentMaxConcurrency): an asyncio loop runs each INVOKE as a task, at most
  `max_concurrency` at once (extras wait in a semaphore), and replies as each finishes. Every
  invocation has its own context, deadline and request id (in log lines, via a ContextVar), and its own
  output: `sys.stdout`/`sys.stderr` append to the current invocation's buffer. Limit: what bypasses
  `sys.stdout` (subprocesses, C extensions writing to fd 1, threads that do not carry the invocation's
  context) goes down the output pipe and is shipped with whichever invocation finishes next; and when the
  environment is killed (a timeout, a crash) the buffered output of the invocations in flight is lost,
  only what went down the pipe is left for the gateway to report.

With `max_concurrency > 1` and a plain `def` handler, invocations run sequentially (Lambda requires
async handlers for this) and the init log says so.
"""

from __future__ import annotations

import decimal
import importlib
import inspect
import json
import logging
import os
import resource
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from gateway.contracts import environment as protocol
from gateway.isolation import cgroups, uids
from gateway.isolation.cgroups import Hierarchy
from gateway.isolation.uids import UidRange
from runtimes.python import jail, seccomp
from runtimes.python.context import LambdaContext
from runtimes.python.jail import PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG, _libc, private_tmp_mount
from runtimes.python.output import LOG_LEVELS as _LOG_LEVELS
from runtimes.python.output import LambdaLogHandler as _LambdaLogHandler
from runtimes.python.output import OutputCapture as _OutputCapture
from runtimes.python.output import format_stack as _format_stack
from runtimes.python.output import log_line as _log_line
from runtimes.python.output import route_output as _route_output

#: error documents are cut to fit a frame: Lambda's own limits are of this order
MAX_ERROR_MESSAGE = 256 * 1024
MAX_STACK_BYTES = 256 * 1024
#: Lambda's response limit; the error message reports this figure
MAX_RESPONSE = 6291556
#: bytes read from the gateway's socket at a time by the sequential loop
RECV_BUFFER = 256 * 1024
ENV_LIMITS = {resource.RLIMIT_NOFILE: 1024, resource.RLIMIT_NPROC: 1024}
#: without a jail: CPU seconds a process the handler started may use before the kernel ends it (a backstop)
CPU_BACKSTOP_SECONDS = 3600
#: without a jail: address space beyond MemorySize (a process maps much more than it uses)
AS_HEADROOM_MB = 1024

_connection: socket.socket | None = None

#: LoggingConfig.LogFormat JSON (`AWS_LAMBDA_LOG_FORMAT=JSON`): log records and errors as JSON objects, one a line
_json_logs = False


class InitError(Exception):
    """Init failed; `body` is the Lambda error document (errorType, errorMessage, stackTrace)."""

    def __init__(self, error_type: str, message: str, stack: list[str] | None = None) -> None:
        super().__init__(message)
        self.body = {"errorMessage": message, "errorType": error_type, "stackTrace": stack or []}


def _decimal_default(obj: Any) -> Any:
    if isinstance(obj, decimal.Decimal):
        return float(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _clip_stack(stack: Sequence[str]) -> list[str]:
    """The innermost frames of a stack trace, within MAX_STACK_BYTES."""
    kept: list[str] = []
    total = 0
    for line in reversed(stack):
        total += len(line)
        if total > MAX_STACK_BYTES:
            break
        kept.append(line)
    return kept[::-1]


def load_handler(handler: str) -> Callable[[Any, Any], Any]:
    """Import `module.function` the way Lambda's Python runtime does, mapping failures to its error types."""
    try:
        modname, fname = handler.rsplit(".", 1)
    except ValueError as exc:
        raise InitError("Runtime.MalformedHandlerName", f"Bad handler '{handler}': {exc}") from None
    if not modname or not fname:
        raise InitError("Runtime.MalformedHandlerName", f"Bad handler '{handler}': empty module or function")
    try:
        module = importlib.import_module(modname.replace("/", "."))
    except SyntaxError as exc:
        stack = [f'  File "{exc.filename}" Line {exc.lineno}\n    {exc.text}']
        raise InitError("Runtime.UserCodeSyntaxError", f"Syntax error in module '{modname}': {exc}", stack) from None
    except ImportError as exc:
        raise InitError("Runtime.ImportModuleError", f"Unable to import module '{modname}': {exc}") from None
    except Exception as exc:
        tb = exc.__traceback__
        raise InitError(type(exc).__name__, str(exc), _format_stack(tb.tb_next if tb else None)) from None
    func = getattr(module, fname, None)
    if func is None:
        raise InitError("Runtime.HandlerNotFound", f"Handler '{fname}' missing on module '{modname}'")
    if not callable(func):
        raise InitError("Runtime.HandlerNotFound", f"Handler '{fname}' on module '{modname}' is not callable")
    return func  # type: ignore[no-any-return]


class Isolation:
    """How the zygote isolates every environment, decided once at its start (see gateway/isolation/sandbox.py).

    `jail_expose` (the directories of the interpreter and runtime): each environment gets a jail (its own root
    filesystem and uid, runtimes/python/jail.py); None: rlimits only, and a private /tmp when `private_tmp`.
    `cgroups`: each environment gets its own groups (isolation/cgroups.py), or None. A jailed environment's uid and gid
    come from `uids` (gateway/isolation/uids.py): no other process has it, whichever zygote or gateway forked them.
    A jailed environment has its own network namespace: connected to the gateway's bridge in slot `network`
    (gateway/isolation/network.py), or with only lo when None.
    `seccomp`: the two parts of the seccomp filter (runtimes/python/seccomp.py), or None: the first installed once
    the spare's jail is built, the second (the calls that set-up makes) last, before Init.
    """

    def __init__(
        self,
        private_tmp: bool,
        jail_expose: list[str] | None,
        cgroups: Hierarchy | None,
        uids: UidRange,
        network: int | None = None,
    ) -> None:
        self.private_tmp = private_tmp
        self.jail_expose = jail_expose
        self.cgroups = cgroups
        self.uids = uids
        self.network = network
        self.seccomp: tuple[seccomp.Filter, seccomp.Filter] | None = None


class Prepared:
    """What `prepare()` set up: the environment's directory, its /tmp as the function will see it, its output,
    and what `seal()` still has to do once the spec is known."""

    def __init__(self, env_dir: str, tmp_dir: str, capture: _OutputCapture, zygote_pid: int, uid: int | None) -> None:
        self.env_dir = env_dir
        self.tmp_dir = tmp_dir
        self.capture = capture
        self.zygote_pid = zygote_pid
        self.uid = uid  # the jail's uid; None: no jail
        self.cgroup_version = 0
        self.cgroup_fds: dict[str, int] = {}
        self.seccomp: seccomp.Filter | None = None

    def seal(self, spec: dict[str, Any]) -> None:
        """Apply the limits and mounts that depend on the function's configuration; in a jail, drop root. Runs
        before any of the function's code, and ends the process if any step fails."""
        memory_mb: int = spec["memory_size"]
        try:
            if self.cgroup_fds:
                cgroups.limit(self.cgroup_version, self.cgroup_fds, memory_mb)
            if self.uid is not None:
                jail.seal(spec["mounts"], spec["ephemeral_storage"], spec["network"], self.uid, self.zygote_pid)
            for limit, (soft, hard) in rlimits_for(memory_mb, spec["ephemeral_storage"], self.uid is not None).items():
                resource.setrlimit(limit, (soft, hard))
            if self.uid is None:
                signal.signal(signal.SIGXCPU, _extend_cpu_backstop)
            if self.seccomp is not None:  # last: the steps above mount and unshare (see runtimes/python/seccomp.py)
                self.seccomp.load()
        except (OSError, ValueError) as exc:
            sys.stderr.write(f"the environment's sandbox could not be set up: {exc}\n")
            os._exit(4)


def rlimits_for(memory_mb: int, tmp_mb: int, jailed: bool) -> dict[int, tuple[int, int]]:
    """Limits set once the configuration is known. Always: the size of any one file written (EphemeralStorage; output
    goes down a pipe, which this does not limit). Without a jail, which has cgroups and a /tmp of that size, the limits
    that stand in for them (a weaker guarantee, see SECURITY.md): address space (MemoryError rather than an OOM kill;
    the headroom is for what a process maps but does not use: thread stacks, malloc arenas), and CPU time as a
    backstop for the processes a handler starts, which the gateway's timeout may not reach (the environment itself
    extends its own limit on SIGXCPU)."""
    limits = {resource.RLIMIT_FSIZE: (tmp_mb * 1024 * 1024,) * 2}
    if not jailed:
        limits[resource.RLIMIT_AS] = ((memory_mb + AS_HEADROOM_MB) * 1024 * 1024,) * 2
        limits[resource.RLIMIT_CPU] = (CPU_BACKSTOP_SECONDS, resource.RLIM_INFINITY)
    return limits


def _extend_cpu_backstop(signum: int, frame: Any) -> None:
    """SIGXCPU: the environment has used CPU_BACKSTOP_SECONDS more; it lives on (the gateway times invocations)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (soft + CPU_BACKSTOP_SECONDS, hard))


def prepare(
    zygote_pid: int, env_dir: str, output_fd: int, rehearse: bool, isolation: Isolation, connect: bool = True
) -> Prepared:
    """The part of an environment's set-up that needs no spec, done ahead of demand in a spare child of the
    zygote: own session and process group, death with the zygote, no new privileges, batch scheduling (a woken
    environment never preempts the gateway), rlimits, its directory (`env_dir`), fds 1 and 2 on `output_fd` (the
    write end of the output pipe whose read end the gateway holds), its own cgroups and, with
    `isolation.jail_expose`, its jail (sealed later, with its uid); or without a jail, `tmp/` under `env_dir`
    bind-mounted at /tmp in a private mount namespace when `isolation.private_tmp`; then the first part of the
    seccomp filter; and with `rehearse` (nobody is waiting yet) a dry run of the set-up and invoke paths. A jail's
    network namespace is connected to the gateway's bridge unless not `connect` (the spec, known already, says
    GATEWAY_NETWORK=none: no veth pair to make and remove)."""
    os.setsid()
    if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != zygote_pid:
        os._exit(1)
    # Nothing the function runs may gain privileges: setuid binaries and file capabilities are ignored from here.
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        os._exit(1)
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError:  # a policy this host does not allow: the default one does, at some cost to the gateway
        pass
    for limit, value in ENV_LIMITS.items():
        try:
            resource.setrlimit(limit, (value, value))
        except (ValueError, OSError):
            pass
    os.makedirs(env_dir, mode=0o700, exist_ok=True)
    capture = _OutputCapture(output_fd)
    prepared = Prepared(env_dir, os.path.join(env_dir, "tmp"), capture, zygote_pid, None)
    try:
        if isolation.cgroups is not None:
            prepared.cgroup_version = isolation.cgroups.version
            prepared.cgroup_fds = cgroups.join(isolation.cgroups, os.path.basename(env_dir), env_dir)
        if isolation.jail_expose is not None:
            # Ahead of demand: a uid of its own (isolation/uids.py), cleared of every process by a thread, and if one
            # of its processes would not go (a zombie nobody reaps), the next free one. Before the jail is built, not
            # while: its namespaces, the uid drop and the seccomp filter want a process with one thread (overlapping
            # them, about one spare in 200 aborted).
            uid = uids.allocate(isolation.uids)
            uids.record(env_dir, uid)
            jail.build(env_dir, isolation.jail_expose, network_slot=isolation.network if connect else None)
            prepared.tmp_dir, prepared.uid = "/tmp", uid
            jail.name_user(uid)
    except OSError as exc:
        sys.stderr.write(f"the environment's sandbox could not be set up: {exc}\n")
        os._exit(4)
    if prepared.uid is None:
        os.makedirs(prepared.tmp_dir, mode=0o700, exist_ok=True)
        if isolation.private_tmp and private_tmp_mount(prepared.tmp_dir):
            prepared.tmp_dir = "/tmp"
    if isolation.seccomp is not None:  # most of the filter, ahead of demand: nothing from here on needs those calls
        early, prepared.seccomp = isolation.seccomp
        try:
            early.load()
        except OSError as exc:
            sys.stderr.write(f"the environment's sandbox could not be set up: {exc}\n")
            os._exit(4)
    if rehearse:
        _rehearse()
    return prepared


def _rehearse() -> None:
    """Run the common code of Init and of an invocation once, on throwaway values.

    A forked child shares its memory with the zygote until it writes to it, and CPython writes to every object it
    touches (reference counts): the first run of any code path in a new environment takes page faults. Taking
    them here, in a spare nobody waits for, makes the Init and the first invocation a caller waits for cheaper.
    """
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(saved)
    time.tzset()
    os.makedirs(os.getcwd(), exist_ok=True)
    os.path.join(os.getcwd(), "tmp")
    handler = _LambdaLogHandler(False)
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger().setLevel(logging.WARNING)
    importlib.invalidate_caches()
    frame = (protocol.INVOKE, 1, b'{"k": [1, 2.5, "s", null, true]}', 0, "rid", "arn", None)
    for _, _, payload, deadline_ms, request_id, arn, client_context in protocol.FrameDecoder(
        protocol.FROM_GATEWAY
    ).feed(protocol.encode(frame)):
        _context(request_id, arn, deadline_ms, client_context, saved)
        reply = _result_reply(1, request_id, json.loads(payload))
        protocol.encode((*reply, 0.0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, 0, b""))


def run(fd: int, spec: dict[str, Any], prepared: Prepared) -> None:
    """The environment's main, after `prepare()`.

    Never returns; exits when the gateway closes the socket or says SHUTDOWN.
    """
    init_start = time.perf_counter()
    prepared.seal(spec)
    os.set_inheritable(fd, False)  # a handler's subprocess must not hold the gateway's connection open
    global _connection
    # Held in a global so that an exiting handler (sys.exit) does not close it before the exit status is set.
    sock = _connection = socket.socket(fileno=fd)
    code_dir = spec["code_dir"]
    tmp_dir, capture = prepared.tmp_dir, prepared.capture
    environ: dict[str, str] = spec["env"]
    os.environ.clear()
    os.environ.update(environ)
    os.environ["TMPDIR"] = tmp_dir
    tempfile.tempdir = tmp_dir
    time.tzset()
    os.chdir(code_dir)
    sys.path[:0] = [code_dir, *spec.get("extra_paths", ())]
    global _json_logs
    _json_logs = environ.get("AWS_LAMBDA_LOG_FORMAT") == "JSON"
    log_handler = _LambdaLogHandler(_json_logs)
    root = logging.getLogger()
    root.handlers[:] = [log_handler]
    if _json_logs:
        root.setLevel(_LOG_LEVELS.get(environ.get("AWS_LAMBDA_LOG_LEVEL", "INFO").upper(), logging.INFO))
    else:
        root.setLevel(logging.WARNING)
    max_concurrency: int = spec.get("max_concurrency", 1)
    if max_concurrency > 1:
        _route_output()  # before user code can keep a reference to the plain streams

    init_error = None
    handler: Callable[[Any, Any], Any] | None = None
    try:
        handler = load_handler(spec["handler"])
    except InitError as exc:
        init_error = exc.body
    except BaseException as exc:  # SystemExit and friends in module code
        init_error = {"errorMessage": str(exc), "errorType": type(exc).__name__, "stackTrace": []}
    init_ms = (time.perf_counter() - init_start) * 1000.0
    if init_error is not None:
        init_error["errorMessage"] = init_error["errorMessage"][:MAX_ERROR_MESSAGE]
        init_error["stackTrace"] = _clip_stack(init_error["stackTrace"])
    concurrent = max_concurrency > 1 and handler is not None and inspect.iscoroutinefunction(handler)
    if max_concurrency > 1 and handler is not None and not concurrent:
        sys.stdout.write(
            _log_line(
                "WARNING",
                time.time(),
                "",
                f"PerExecutionEnvironmentMaxConcurrency is {max_concurrency}, but handler '{spec['handler']}' "
                "is not an async def function: this environment runs one invocation at a time.",
            )
        )
    err: dict[str, Any] = init_error or {"errorType": None, "errorMessage": ""}  # a flat frame: see protocol
    stack = b"" if init_error is None else json.dumps(err["stackTrace"]).encode()
    ready = (protocol.READY, os.getpid(), init_ms, max_concurrency if concurrent else 1, err["errorType"])
    sock.sendall(protocol.encode((*ready, str(err["errorMessage"]), stack)))
    if handler is None:
        os._exit(0)
    if concurrent:
        from runtimes.python.concurrent import serve_concurrently  # only functions that opted in pay the import

        serve_concurrently(sock, handler, capture, environ, max_concurrency)
    else:
        _serve(sock, handler, capture, log_handler, environ)


def _invocations(decoder: protocol.FrameDecoder, data: bytes) -> list[list[Any]]:
    """The INVOKE frames `data` completes. SHUTDOWN ends the process; anything else from the gateway is a bug
    on its side or garbage on the socket, and ends it too (the gateway then reports the environment gone)."""
    try:
        frames = decoder.feed(data)
    except protocol.ProtocolError:
        os._exit(3)
    for frame in frames:
        if frame[0] == protocol.SHUTDOWN:
            os._exit(0)
        if frame[0] != protocol.INVOKE:
            os._exit(3)
    return frames


def _serve(
    sock: socket.socket,
    handler: Callable[[Any, Any], Any],
    capture: _OutputCapture,
    log_handler: _LambdaLogHandler,
    environ: dict[str, str],
) -> NoReturn:
    """Sequential mode's main (the hot path): one invocation at a time, blocking reads and writes."""
    decoder = protocol.FrameDecoder(protocol.FROM_GATEWAY)
    # One receive buffer for the life of the process: recv(n) would allocate (and, for a large n, mmap and
    # page-fault in) n fresh bytes on every call.
    buffer = bytearray(RECV_BUFFER)
    view = memoryview(buffer)
    recv_into = sock.recv_into
    send = sock.sendall
    getrusage = resource.getrusage
    perf = time.perf_counter
    pending = capture.pending
    while True:
        received = recv_into(buffer)
        if not received:
            os._exit(0)
        for frame in _invocations(decoder, view[:received].tobytes()):
            _, inv_id, payload, deadline_ms, request_id, arn, client_context = frame
            log_handler.request_id = request_id
            start = perf()
            reply: tuple[Any, ...]
            try:
                event = json.loads(payload)
                result = handler(event, _context(request_id, arn, deadline_ms, client_context, environ))
                reply = _result_reply(inv_id, request_id, result)
            except Exception as exc:
                reply = _exception_reply(inv_id, request_id, exc)
            duration_ms = (perf() - start) * 1000.0
            max_rss_kb = getrusage(resource.RUSAGE_SELF).ru_maxrss
            # The output went down the pipe as it was written: the gateway has read it by the time this arrives.
            send(protocol.encode((*reply, duration_ms, max_rss_kb, pending(), b"")))


def _context(
    request_id: str, arn: str, deadline_ms: int, client_context: bytes | None, environ: dict[str, str]
) -> LambdaContext:
    return LambdaContext(request_id, arn, deadline_ms, json.loads(client_context) if client_context else None, environ)


def _result_reply(inv_id: int, request_id: str, result: Any) -> tuple[Any, ...]:
    """RESULT with the handler's return value as JSON, or the ERROR Lambda gives for a value it cannot send."""
    try:
        out = json.dumps(result, default=_decimal_default).encode()
    except Exception as exc:
        return _error_reply(inv_id, request_id, "Runtime.MarshalError", f"Unable to marshal response: {exc}", [])
    if len(out) > MAX_RESPONSE:
        return _error_reply(
            inv_id,
            request_id,
            "Function.ResponseSizeTooLarge",
            f"Response payload size ({len(out)} bytes) exceeded maximum allowed payload size ({MAX_RESPONSE} bytes).",
            None,
        )
    return (protocol.RESULT, inv_id, out)


def _exception_reply(inv_id: int, request_id: str, exc: BaseException) -> tuple[Any, ...]:
    """ERROR for an exception the handler raised; its traceback also goes to the invocation's log (stdout).

    The first traceback entry is the runtime's frame that called the handler, and is left out.
    """
    stack = _format_stack(exc.__traceback__.tb_next if exc.__traceback__ else None)
    if _json_logs:
        error = {
            "errorMessage": str(exc),
            "errorType": type(exc).__name__,
            "requestId": request_id,
            "stackTrace": stack,
        }
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        record = {"timestamp": stamp, "level": "ERROR", "message": error, "requestId": request_id}
        sys.stdout.write(json.dumps(record, default=str) + "\n")
    else:
        sys.stdout.write(f"[ERROR] {type(exc).__name__}: {exc}\nTraceback (most recent call last):\n{''.join(stack)}")
    return _error_reply(inv_id, request_id, type(exc).__name__, str(exc), stack)


def _error_reply(
    inv_id: int, request_id: str, error_type: str, message: str, stack: list[str] | None
) -> tuple[Any, ...]:
    body: dict[str, Any] = {
        "errorMessage": message[:MAX_ERROR_MESSAGE],
        "errorType": error_type[:1024],
        "requestId": request_id,
    }
    if stack is not None:
        body["stackTrace"] = _clip_stack(stack)
    return (protocol.ERROR, inv_id, body["errorType"], json.dumps(body).encode())
