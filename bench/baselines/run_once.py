"""One invocation in a fresh interpreter: the child that bench/baselines/fresh_process.py starts per invoke.

Usage: `python run_once.py CODE_DIR MODULE.FUNCTION FUNCTION_NAME REQUEST_ID TIMEOUT_SECONDS`, event JSON
on stdin. It puts CODE_DIR first on sys.path, imports MODULE, reads the whole of stdin and parses it with
the standard library's json (an empty stdin is the event `{}`), calls `FUNCTION(event, context)` with a
minimal Lambda-like context, writes `json.dumps(result)` to stdout and exits 0. While the handler module
is imported and called, `sys.stdout` points at stderr, so whatever the handler prints cannot corrupt the
result. A failure (import error, bad event JSON, the handler raising, an unserialisable result) prints
the traceback to stderr and exits 1. Only the standard library is used, like an emulator's bootstrap.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from typing import Any


class Context:
    """The attributes a handler commonly reads from Lambda's context object."""

    __slots__ = (
        "_deadline",
        "aws_request_id",
        "client_context",
        "function_name",
        "function_version",
        "identity",
        "invoked_function_arn",
        "log_group_name",
        "log_stream_name",
        "memory_limit_in_mb",
    )

    def __init__(self, function_name: str, request_id: str, timeout: float) -> None:
        self._deadline = time.monotonic() + timeout
        self.aws_request_id = request_id
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        self.memory_limit_in_mb = "128"
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = request_id
        self.identity = None
        self.client_context = None

    def get_remaining_time_in_millis(self) -> int:
        return max(int((self._deadline - time.monotonic()) * 1000), 0)


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    code_dir, handler, function_name, request_id, timeout = argv
    module_name, _, function = handler.rpartition(".")
    out = sys.stdout
    sys.stdout = sys.stderr
    try:
        sys.path.insert(0, code_dir)
        func: Any = getattr(importlib.import_module(module_name), function)
        raw = sys.stdin.buffer.read()
        event = json.loads(raw) if raw.strip() else {}
        payload = json.dumps(func(event, Context(function_name, request_id, float(timeout))), separators=(",", ":"))
    finally:
        sys.stdout = out
    out.write(payload)
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
