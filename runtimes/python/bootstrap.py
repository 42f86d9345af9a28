"""An environment's life after the zygote forked it: sandbox set-up, Init, then the invoke loop.

Runs in the forked child only; `run()` never returns. Contract with the gateway (see gateway.protocol):
send READY once (with the init error, if Init failed, after which the gateway discards this
environment), then answer every INVOKE with exactly one RESULT or ERROR frame carrying the same id.
Invocations run one at a time. Output written to fds 1 and 2 (print, logging, subprocesses) goes to an
anonymous file that is read back and emptied after each invocation and shipped in the reply.
"""

from __future__ import annotations

import ctypes
import decimal
import importlib
import io
import json
import logging
import os
import resource
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

from gateway import protocol
from runtimes.python.context import LambdaContext

PR_SET_PDEATHSIG = 1
CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
#: error documents are cut to fit a frame: Lambda's own limits are of this order
MAX_ERROR_MESSAGE = 256 * 1024
MAX_STACK_BYTES = 256 * 1024
#: Lambda's response limit; the error message reports this figure
MAX_RESPONSE = 6291556
ENV_LIMITS = {resource.RLIMIT_NOFILE: 1024, resource.RLIMIT_NPROC: 1024}

_libc = ctypes.CDLL(None, use_errno=True)
_connection: socket.socket | None = None


class InitError(Exception):
    """Init failed; `body` is the Lambda error document (errorType, errorMessage, stackTrace)."""

    def __init__(self, error_type: str, message: str, stack: list[str] | None = None) -> None:
        super().__init__(message)
        self.body = {"errorMessage": message, "errorType": error_type, "stackTrace": stack or []}


def _decimal_default(obj: Any) -> Any:
    if isinstance(obj, decimal.Decimal):
        return float(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _format_stack(tb: Any) -> list[str]:
    return traceback.format_list(traceback.extract_tb(tb))


def _clip_stack(stack: list[str]) -> list[str]:
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


class _LambdaLogHandler(logging.Handler):
    """Formats records like Lambda's Python runtime (Text format) and writes them to stdout."""

    def __init__(self) -> None:
        super().__init__()
        self.request_id = ""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            msg = record.getMessage()
            if record.exc_info:
                msg += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            line = f"[{record.levelname}]\t{stamp}.{int(record.msecs):03d}Z\t{self.request_id}\t{msg}\n"
            sys.stdout.write(line)
        except Exception:
            self.handleError(record)


class _OutputCapture:
    """fds 1 and 2 point at one file, `<env_dir>/output`; `take()` returns what was written since, then empties it.

    The file is named, not anonymous, so that the gateway can read what a timed-out or crashed invocation
    printed after this process is gone.
    """

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        raw1 = io.FileIO(1, "wb", closefd=False)
        raw2 = io.FileIO(2, "wb", closefd=False)
        sys.stdout = io.TextIOWrapper(raw1, encoding="utf-8", errors="backslashreplace", write_through=True)  # type: ignore[arg-type]
        sys.stderr = io.TextIOWrapper(raw2, encoding="utf-8", errors="backslashreplace", write_through=True)  # type: ignore[arg-type]

    def take(self) -> bytes:
        size = os.lseek(1, 0, os.SEEK_END)
        if size == 0:
            return b""
        start = max(size - protocol.MAX_LOG, 0)
        data = os.pread(1, size - start, start)
        os.ftruncate(1, 0)
        os.lseek(1, 0, os.SEEK_SET)
        return data


def _apply_limits(spec: dict[str, Any]) -> None:
    os.setsid()
    if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != spec["zygote_pid"]:
        os._exit(1)
    for limit, value in ENV_LIMITS.items():
        try:
            resource.setrlimit(limit, (value, value))
        except (ValueError, OSError):
            pass


def under_tmp(path: str) -> bool:
    """Would binding a private /tmp hide `path`?"""
    real = os.path.realpath(path) if path else ""
    return real == "/tmp" or real.startswith("/tmp/")


def private_tmp(source: str) -> bool:
    """Make `source` this process's /tmp in a private mount namespace; False where that is not allowed."""
    if _libc.unshare(CLONE_NEWNS) != 0:
        return False
    if _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return False
    return _libc.mount(source.encode(), b"/tmp", None, MS_BIND | MS_REC, None) == 0  # type: ignore[no-any-return]


def run(fd: int, spec: dict[str, Any]) -> None:
    """The environment's main. Never returns; exits when the gateway closes the socket or says SHUTDOWN."""
    init_start = time.perf_counter()
    os.set_inheritable(fd, False)  # a handler's subprocess must not hold the gateway's connection open
    global _connection
    # Held in a global so that an exiting handler (sys.exit) does not close it before the exit status is set.
    sock = _connection = socket.socket(fileno=fd)
    _apply_limits(spec)
    env_dir = spec["env_dir"]
    tmp_dir = os.path.join(env_dir, "tmp")
    os.makedirs(tmp_dir, mode=0o700, exist_ok=True)
    code_dir = spec["code_dir"]
    capture = _OutputCapture(os.path.join(env_dir, "output"))  # opened before /tmp may be replaced
    if spec.get("private_tmp") and not under_tmp(code_dir) and private_tmp(tmp_dir):
        tmp_dir = "/tmp"
    environ: dict[str, str] = spec["env"]
    os.environ.clear()
    os.environ.update(environ)
    os.environ["TMPDIR"] = tmp_dir
    tempfile.tempdir = tmp_dir
    time.tzset()
    os.chdir(code_dir)
    sys.path[:0] = [code_dir, *spec.get("extra_paths", ())]
    log_handler = _LambdaLogHandler()
    root = logging.getLogger()
    root.handlers[:] = [log_handler]
    root.setLevel(logging.WARNING)

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
    ready = (protocol.READY, os.getpid(), init_ms, init_error, capture.take())
    sock.sendall(protocol.encode(ready))
    if handler is None:
        os._exit(0)
    _serve(sock, handler, capture, log_handler, environ)


def _serve(
    sock: socket.socket,
    handler: Callable[[Any, Any], Any],
    capture: _OutputCapture,
    log_handler: _LambdaLogHandler,
    environ: dict[str, str],
) -> None:
    decoder = protocol.FrameDecoder()
    recv = sock.recv
    send = sock.sendall
    getrusage = resource.getrusage
    perf = time.perf_counter
    while True:
        data = recv(1 << 20)
        if not data:
            os._exit(0)
        try:
            frames = decoder.feed(data)
        except protocol.ProtocolError:
            os._exit(3)
        for frame in frames:
            kind = frame[0]
            if kind == protocol.SHUTDOWN:
                os._exit(0)
            if kind != protocol.INVOKE:
                os._exit(3)
            _, inv_id, payload, deadline_ms, request_id, arn, client_context = frame
            log_handler.request_id = request_id
            start = perf()
            reply: tuple[Any, ...]
            try:
                event = json.loads(payload)
                ctx = LambdaContext(
                    request_id,
                    arn,
                    deadline_ms,
                    json.loads(client_context) if client_context else None,
                    environ,
                )
                result = handler(event, ctx)
                try:
                    out = json.dumps(result, default=_decimal_default).encode()
                except Exception as exc:
                    out = b""
                    reply = _error_reply(
                        inv_id,
                        request_id,
                        "Runtime.MarshalError",
                        f"Unable to marshal response: {exc}",
                        [],
                    )
                else:
                    if len(out) > MAX_RESPONSE:
                        reply = _error_reply(
                            inv_id,
                            request_id,
                            "Function.ResponseSizeTooLarge",
                            f"Response payload size ({len(out)} bytes) exceeded maximum allowed payload "
                            f"size ({MAX_RESPONSE} bytes).",
                            None,
                        )
                    else:
                        reply = (protocol.RESULT, inv_id, out)
            except Exception as exc:
                stack = _format_stack(exc.__traceback__.tb_next if exc.__traceback__ else None)
                sys.stdout.write(
                    f"[ERROR] {type(exc).__name__}: {exc}\nTraceback (most recent call last):\n{''.join(stack)}"
                )
                reply = _error_reply(inv_id, request_id, type(exc).__name__, str(exc), stack)
            duration_ms = (perf() - start) * 1000.0
            max_rss_kb = getrusage(resource.RUSAGE_SELF).ru_maxrss
            send(protocol.encode((*reply, duration_ms, max_rss_kb, capture.take())))


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
