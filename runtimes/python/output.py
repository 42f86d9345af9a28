"""Where an environment's output goes, and how log records look: Lambda's Text and JSON formats.

fds 1 and 2 are the write end of a pipe whose read end the gateway holds (`OutputCapture`): the gateway reads what
an invocation writes as it is written, keeps at most the last `wire.MAX_LOG` bytes of it, and still has it when
this process dies mid-invocation. Nothing goes to disk, and a write blocks (never fails) while the pipe is full.
In concurrent mode (async handlers running several invocations at once) sys.stdout/sys.stderr are routed
per invocation (`RoutedStream` + `current_output`), since one file cannot tell the invocations apart.
"""

from __future__ import annotations

import array
import contextvars
import fcntl
import io
import json
import logging
import os
import sys
import termios
import time
import traceback
from typing import Any

from gateway.contracts import environment as wire

#: AWS_LAMBDA_LOG_LEVEL -> Python level (JSON format only; Text keeps Python's default WARNING, as Lambda does)
LOG_LEVELS = {"TRACE": 5, "DEBUG": 10, "INFO": 20, "WARN": 30, "ERROR": 40, "FATAL": 50}
#: Python level name -> the name Lambda writes in JSON records
_JSON_LEVEL_NAMES = {"WARNING": "WARN", "CRITICAL": "FATAL"}
#: LogRecord attributes that are not `extra=` fields (those are added to a JSON record)
_RESERVED_RECORD_FIELDS = frozenset(
    {*logging.makeLogRecord({}).__dict__, "message", "asctime", "aws_request_id", "taskName"}
)

#: request id of the invocation the current task serves (concurrent mode); None: `LambdaLogHandler.request_id`
current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def format_stack(tb: Any) -> list[str]:
    return traceback.format_list(traceback.extract_tb(tb))


def log_line(level: str, created: float, request_id: str, msg: str) -> str:
    """One log line as Lambda's Python runtime writes it (Text format)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"[{level}]\t{stamp}.{int(created % 1 * 1000):03d}Z\t{request_id}\t{msg}\n"


def json_record(record: logging.LogRecord, request_id: str) -> str:
    """One log record as Lambda's Python runtime writes it with LogFormat JSON: a JSON object on one line."""
    out: dict[str, Any] = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
        "level": _JSON_LEVEL_NAMES.get(record.levelname, record.levelname),
        "message": record.getMessage(),
        "logger": record.name,
    }
    if record.exc_info and record.exc_info[0] is not None:
        exc_type, exc, tb = record.exc_info
        out["errorType"] = exc_type.__name__
        out["errorMessage"] = str(exc)
        out["stackTrace"] = format_stack(tb)
        out["location"] = f"{record.pathname}:{record.funcName}:{record.lineno}"
    if request_id:
        out["requestId"] = request_id
    for key, value in record.__dict__.items():
        if key not in _RESERVED_RECORD_FIELDS and key not in out:
            out[key] = value
    return json.dumps(out, default=str, ensure_ascii=False) + "\n"


class LambdaLogHandler(logging.Handler):
    """Formats records like Lambda's Python runtime (Text, or JSON when `json_format`) and writes them to stdout.

    The request id is the current task's (`current_request_id`, concurrent mode) or else `request_id`, which
    the sequential loop sets per invocation (so log calls from the handler's own threads carry it too).
    """

    def __init__(self, json_format: bool = False) -> None:
        super().__init__()
        self.request_id = ""
        self.json_format = json_format

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.json_format:
                request_id = current_request_id.get()
                sys.stdout.write(json_record(record, self.request_id if request_id is None else request_id))
                return
            msg = record.getMessage()
            if record.exc_info:
                msg += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            request_id = current_request_id.get()
            if request_id is None:
                request_id = self.request_id
            sys.stdout.write(log_line(record.levelname, record.created, request_id, msg))
        except Exception:
            self.handleError(record)


class OutputCapture:
    """fds 1 and 2 become `fd`, the write end of the environment's output pipe (the gateway holds the read end);
    sys.stdout and sys.stderr write through to them."""

    def __init__(self, fd: int) -> None:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        raw1 = io.FileIO(1, "wb", closefd=False)
        raw2 = io.FileIO(2, "wb", closefd=False)
        sys.stdout = io.TextIOWrapper(raw1, encoding="utf-8", errors="backslashreplace", write_through=True)
        sys.stderr = io.TextIOWrapper(raw2, encoding="utf-8", errors="backslashreplace", write_through=True)
        self._count = array.array("i", [0])  # FIONREAD's answer, filled in place: pending() allocates nothing

    def pending(self) -> int:
        """Bytes in the output pipe not yet read by the gateway (a reply's `pending`); -1 if fd 1 cannot say."""
        try:
            fcntl.ioctl(1, termios.FIONREAD, self._count, True)
        except OSError:
            return -1
        return self._count[0]


class InvocationOutput:
    """What one invocation wrote through sys.stdout/sys.stderr (concurrent mode): its last MAX_LOG bytes, after
    `wire.truncation_marker` when it wrote more.

    Once the reply is built the buffer is closed: later writes from the invocation's context (a task it
    left running) go to the output pipe instead of being lost.
    """

    __slots__ = ("chunks", "dropped", "open", "size")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.dropped = 0
        self.open = True

    def write(self, text: str) -> None:
        data = text.encode("utf-8", "backslashreplace")
        self.chunks.append(data)
        self.size += len(data)
        if self.size > 2 * wire.MAX_LOG:
            joined = b"".join(self.chunks)
            self.dropped += len(joined) - wire.MAX_LOG
            self.chunks = [joined[-wire.MAX_LOG :]]
            self.size = wire.MAX_LOG

    def close(self) -> bytes:
        self.open = False
        data = b"".join(self.chunks)
        if len(data) > wire.MAX_LOG:
            self.dropped += len(data) - wire.MAX_LOG
            data = data[-wire.MAX_LOG :]
        return wire.truncation_marker(self.dropped) + data if self.dropped else data


#: the current invocation's output buffer (concurrent mode); None outside an invocation
current_output: contextvars.ContextVar[InvocationOutput | None] = contextvars.ContextVar("output", default=None)


class RoutedStream(io.TextIOBase):
    """sys.stdout / sys.stderr in concurrent mode: text goes to the current invocation's buffer, else to `fd_stream`.

    Byte-level access (`buffer`, `fileno()`) is the underlying descriptor's: it goes down the output pipe.
    """

    def __init__(self, fd_stream: io.TextIOWrapper) -> None:
        super().__init__()
        self._fd_stream = fd_stream

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        out = current_output.get()
        if out is None or not out.open:
            return self._fd_stream.write(text)
        out.write(text)
        return len(text)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        self._fd_stream.flush()

    def fileno(self) -> int:
        return self._fd_stream.fileno()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._fd_stream.encoding

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return self._fd_stream.errors

    @property
    def buffer(self) -> Any:
        return self._fd_stream.buffer


def route_output() -> None:
    """Send sys.stdout and sys.stderr through `RoutedStream`s (concurrent mode; set before Init runs user code)."""
    sys.stdout = RoutedStream(sys.stdout)  # type: ignore[arg-type]
    sys.stderr = RoutedStream(sys.stderr)  # type: ignore[arg-type]
