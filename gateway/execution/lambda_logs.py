"""Lambda's log lines for one invocation, as Lambda writes them to CloudWatch Logs.

The text format (the default): Init's output, `START`, the invocation's output, `END`, `REPORT` with Duration,
Billed Duration, Memory Size, Max Memory Used, Init Duration (on a cold start) and a Status for a timeout or a
crash. The JSON format (`LoggingConfig.LogFormat` JSON): the platform events `platform.initStart`,
`platform.start`, `platform.runtimeDone` (SystemLogLevel DEBUG) and `platform.report` as JSON lines, none of them
at SystemLogLevel WARN. Also the lines the gateway adds itself (a timeout's or a crash's, a failed Init's) and the
tail returned in `X-Amz-Log-Result` for `LogType=Tail`.

Pure functions of an `Invocation` record (gateway.execution.invoker); the wall clock is read only for the time
stamps of the lines that carry one. They run once per invocation whose log is wanted, on the event loop.
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import orjson

from gateway.errors import RUNTIME_EXIT_ERROR, RUNTIME_OUT_OF_MEMORY, SANDBOX_TIMEDOUT

if TYPE_CHECKING:
    from gateway.execution.invoker import Invocation

#: the tail of the log returned for LogType=Tail
LOG_TAIL_BYTES = 4096
#: the error types whose REPORT says `Status: error` and names them (the environment ended without replying)
_CRASHES = (RUNTIME_EXIT_ERROR, RUNTIME_OUT_OF_MEMORY)


def log_text(inv: Invocation) -> bytes:
    """The invocation's whole log: in the function's LoggingConfig format (text unless it says JSON)."""
    logging_config = inv.config.extra.get("LoggingConfig")
    if logging_config is not None and logging_config.get("LogFormat") == "JSON":
        return _json(inv, logging_config)
    return _text(inv)


def log_tail(log: bytes) -> str:
    """`X-Amz-Log-Result`: base64 of the last 4 KB of an invocation's log."""
    return base64.b64encode(log[-LOG_TAIL_BYTES:]).decode()


def failure_line(request_id: str, what: str) -> bytes:
    """The line Lambda adds to the output of an invocation that ended without a reply (timeout, crash)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
    return f"{stamp} {request_id} {what}\n".encode()


def init_error_line(error_type: str, message: str) -> bytes:
    """The line Lambda adds to Init's output when Init failed."""
    return f"[ERROR] {error_type}: {message}\n".encode()


def _billed_ms(inv: Invocation) -> int:
    return math.ceil(inv.duration_ms + (inv.init_ms or 0.0))


def _lines(output: bytes) -> bytes:
    """Output as whole lines: Lambda's platform lines are log events of their own, so a last line the function left
    unended (killed mid-write, or a print without a newline) must not run into START, END or a JSON platform event."""
    return output if not output or output.endswith(b"\n") else output + b"\n"


def _text(inv: Invocation) -> bytes:
    """Init output, START, the invocation's output, END, REPORT."""
    config, request_id, error_type = inv.config, inv.request_id, inv.error_type
    report = (
        f"REPORT RequestId: {request_id}\tDuration: {inv.duration_ms:.2f} ms\tBilled Duration: {_billed_ms(inv)} ms\t"
        f"Memory Size: {config.memory_size} MB\tMax Memory Used: {math.ceil(inv.rss_kb / 1024)} MB\t"
    )
    if inv.init_ms is not None:
        report += f"Init Duration: {inv.init_ms:.2f} ms\t"
    if error_type == SANDBOX_TIMEDOUT:
        report += "Status: timeout\t"
    elif error_type in _CRASHES:
        report += f"Status: error\tError Type: {error_type}\t"
    return (
        _lines(inv.init_log)
        + f"START RequestId: {request_id} Version: {config.version}\n".encode()
        + _lines(inv.output)
        + f"END RequestId: {request_id}\n{report}\n".encode()
    )


def _platform_line(event_type: str, record: Mapping[str, object]) -> bytes:
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    return orjson.dumps({"time": stamp, "type": event_type, "record": record}) + b"\n"


def _json(inv: Invocation, logging_config: dict[str, str]) -> bytes:
    """LogFormat JSON: Lambda's platform events as JSON lines around Init's and the invocation's output.

    SystemLogLevel WARN leaves them out; DEBUG adds platform.runtimeDone.
    """
    system_level = logging_config.get("SystemLogLevel", "INFO")
    if system_level == "WARN":
        return inv.init_log + inv.output
    config, request_id, error_type = inv.config, inv.request_id, inv.error_type
    status = "success" if error_type is None else "timeout" if error_type == SANDBOX_TIMEDOUT else "error"
    metrics: dict[str, object] = {
        "durationMs": round(inv.duration_ms, 2),
        "billedDurationMs": _billed_ms(inv),
        "memorySizeMB": config.memory_size,
        "maxMemoryUsedMB": math.ceil(inv.rss_kb / 1024),
    }
    head = b""
    if inv.init_ms is not None:
        metrics["initDurationMs"] = round(inv.init_ms, 2)
        init_record = {
            "initializationType": "on-demand",
            "phase": "init",
            "functionName": config.name,
            "functionVersion": config.version,
        }
        head = _platform_line("platform.initStart", init_record)
    start = _platform_line("platform.start", {"requestId": request_id, "version": config.version})
    parts = [head, _lines(inv.init_log), start, _lines(inv.output)]
    if system_level == "DEBUG":
        done: dict[str, object] = {"requestId": request_id, "status": status}
        parts.append(_platform_line("platform.runtimeDone", done))
    report: dict[str, object] = {"requestId": request_id, "metrics": metrics, "status": status}
    if error_type is not None:
        report["errorType"] = error_type
    parts.append(_platform_line("platform.report", report))
    return b"".join(parts)
