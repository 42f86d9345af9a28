"""What an invocation's outcome becomes on the wire: the head of a RESULT or ERROR frame (`result_head`, `error_head`
of gateway/contracts/environment.py), which the serving loop completes with the invocation's figures (`encode_reply`).

Lambda's rules for a reply: the return value as JSON (Decimal as a number), Runtime.MarshalError when it is not
JSON, Function.ResponseSizeTooLarge over MAX_RESPONSE; an exception the handler raised becomes its error document
(errorMessage, errorType, requestId, stackTrace) and is also logged, in the function's log format.
"""

from __future__ import annotations

import decimal
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from gateway.contracts.environment import ReplyHead, error_head, result_head
from runtimes.python.output import format_stack

#: error documents are cut to fit a frame: Lambda's own limits are of this order
MAX_ERROR_MESSAGE = 256 * 1024
MAX_STACK_BYTES = 256 * 1024
#: Lambda's response limit; the error message reports this figure
MAX_RESPONSE = 6291556

#: LoggingConfig.LogFormat JSON (`AWS_LAMBDA_LOG_FORMAT=JSON`): errors are logged as JSON objects, one a line. Set
#: once by Init (runtimes/python/init.py), before any invocation.
json_logs = False


def _decimal_default(obj: Any) -> Any:
    if isinstance(obj, decimal.Decimal):
        return float(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def clip_stack(stack: Sequence[str]) -> list[str]:
    """The innermost frames of a stack trace, within MAX_STACK_BYTES."""
    kept: list[str] = []
    total = 0
    for line in reversed(stack):
        total += len(line)
        if total > MAX_STACK_BYTES:
            break
        kept.append(line)
    return kept[::-1]


def result(inv_id: int, request_id: str, value: Any) -> ReplyHead:
    """RESULT with the handler's return value as JSON, or the ERROR Lambda gives for a value it cannot send."""
    try:
        out = json.dumps(value, default=_decimal_default).encode()
    except Exception as exc:
        return error(inv_id, request_id, "Runtime.MarshalError", f"Unable to marshal response: {exc}", [])
    if len(out) > MAX_RESPONSE:
        return error(
            inv_id,
            request_id,
            "Function.ResponseSizeTooLarge",
            f"Response payload size ({len(out)} bytes) exceeded maximum allowed payload size ({MAX_RESPONSE} bytes).",
            None,
        )
    return result_head(inv_id, out)


def exception(inv_id: int, request_id: str, exc: BaseException) -> ReplyHead:
    """ERROR for an exception the handler raised; its traceback also goes to the invocation's log (stdout).

    The first traceback entry is the runtime's frame that called the handler, and is left out.
    """
    stack = format_stack(exc.__traceback__.tb_next if exc.__traceback__ else None)
    if json_logs:
        document = {
            "errorMessage": str(exc),
            "errorType": type(exc).__name__,
            "requestId": request_id,
            "stackTrace": stack,
        }
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        record = {"timestamp": stamp, "level": "ERROR", "message": document, "requestId": request_id}
        sys.stdout.write(json.dumps(record, default=str) + "\n")
    else:
        sys.stdout.write(f"[ERROR] {type(exc).__name__}: {exc}\nTraceback (most recent call last):\n{''.join(stack)}")
    return error(inv_id, request_id, type(exc).__name__, str(exc), stack)


def error(inv_id: int, request_id: str, error_type: str, message: str, stack: list[str] | None) -> ReplyHead:
    """ERROR with Lambda's error document (no stackTrace when `stack` is None), cut to fit a frame."""
    body: dict[str, Any] = {
        "errorMessage": message[:MAX_ERROR_MESSAGE],
        "errorType": error_type[:1024],
        "requestId": request_id,
    }
    if stack is not None:
        body["stackTrace"] = clip_stack(stack)
    return error_head(inv_id, body["errorType"], json.dumps(body).encode())
