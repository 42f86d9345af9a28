"""Init: make the process the function's (its environment, /tmp, working directory, sys.path, log format) and import
its handler, the way Lambda's Python runtime does, mapping failures to Lambda's error types.

Runs in the environment after its sandbox is sealed (runtimes/python/sandbox.py): from here on, user code runs. An
Init failure is reported in READY (runtimes/python/bootstrap.py), after which the gateway discards the environment.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, NamedTuple, NoReturn

from gateway.contracts.environment import EnvironmentSpec
from runtimes.python import replies
from runtimes.python.output import LOG_LEVELS, LambdaLogHandler, format_stack, log_line, route_output


class InitError(Exception):
    """Init failed; `body` is the Lambda error document (errorType, errorMessage, stackTrace)."""

    def __init__(self, error_type: str, message: str, stack: list[str] | None = None) -> None:
        super().__init__(message)
        self.body = {"errorMessage": message, "errorType": error_type, "stackTrace": stack or []}


class Initialized(NamedTuple):
    """What Init left: the handler (None: Init failed, `error` says how), the log handler the serving loop tells the
    request id, and whether invocations run concurrently (an async handler with max_concurrency > 1)."""

    handler: Callable[[Any, Any], Any] | None
    error: dict[str, Any] | None
    log_handler: LambdaLogHandler
    concurrent: bool


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
        raise InitError(type(exc).__name__, str(exc), format_stack(tb.tb_next if tb else None)) from None
    func = getattr(module, fname, None)
    if func is None:
        raise InitError("Runtime.HandlerNotFound", f"Handler '{fname}' missing on module '{modname}'")
    if not callable(func):
        raise InitError("Runtime.HandlerNotFound", f"Handler '{fname}' on module '{modname}' is not callable")
    return func  # type: ignore[no-any-return]


def exit_as_python_would(exc: SystemExit) -> NoReturn:
    """End the process as an uncaught SystemExit ends Python: its code as the exit status (None: 0; any other object:
    printed to stderr, 1), what was printed flushed first. The gateway then reports Runtime.ExitError, as Lambda does
    when a function's module calls sys.exit() during Init ("Runtime exited with error: exit status N")."""
    code = exc.code
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code & 0xFF
    else:
        sys.stderr.write(f"{code}\n")
        status = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def initialize(spec: EnvironmentSpec, tmp_dir: str) -> Initialized:
    """Init proper: the process environment is `spec.env` (TMPDIR: `tmp_dir`), the working directory and first
    sys.path entries the code's, logging in the function's format; then the handler is imported."""
    environ = spec.env
    os.environ.clear()
    os.environ.update(environ)
    os.environ["TMPDIR"] = tmp_dir
    tempfile.tempdir = tmp_dir
    time.tzset()
    os.chdir(spec.code_dir)
    sys.path[:0] = [spec.code_dir, *spec.extra_paths]
    replies.json_logs = environ.get("AWS_LAMBDA_LOG_FORMAT") == "JSON"
    log_handler = LambdaLogHandler(replies.json_logs)
    root = logging.getLogger()
    root.handlers[:] = [log_handler]
    if replies.json_logs:
        root.setLevel(LOG_LEVELS.get(environ.get("AWS_LAMBDA_LOG_LEVEL", "INFO").upper(), logging.INFO))
    else:
        root.setLevel(logging.WARNING)
    if spec.max_concurrency > 1:
        route_output()  # before user code can keep a reference to the plain streams

    error = None
    handler: Callable[[Any, Any], Any] | None = None
    try:
        handler = load_handler(spec.handler)
    except InitError as exc:
        error = exc.body
    except SystemExit as exc:  # the module ended the process, as it would Lambda's: Runtime.ExitError, "exit status N"
        exit_as_python_would(exc)
    except BaseException as exc:  # KeyboardInterrupt and friends in module code
        error = {"errorMessage": str(exc), "errorType": type(exc).__name__, "stackTrace": []}
    if error is not None:
        error["errorMessage"] = error["errorMessage"][: replies.MAX_ERROR_MESSAGE]
        error["stackTrace"] = replies.clip_stack(error["stackTrace"])
    concurrent = spec.max_concurrency > 1 and handler is not None and inspect.iscoroutinefunction(handler)
    if spec.max_concurrency > 1 and handler is not None and not concurrent:
        sys.stdout.write(
            log_line(
                "WARNING",
                time.time(),
                "",
                f"PerExecutionEnvironmentMaxConcurrency is {spec.max_concurrency}, but handler '{spec.handler}' "
                "is not an async def function: this environment runs one invocation at a time.",
            )
        )
    return Initialized(handler, error, log_handler, concurrent)
