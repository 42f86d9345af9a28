"""A Runtime API client for Python functions: the runtime of a `python3.X` function that needs the Runtime API (it has
external extensions, or sets AWS_LAMBDA_EXEC_WRAPPER), run by the proxy (runtimes/proxy) as awslambdaric would be.

    python3.X -I -S -B <this file> <the runtime's packages> [layer sys.path entries...]

The same handler model as the fast path, from the same code: Init (runtimes/python/init.py: the environment, the
working directory, sys.path, logging, the handler's import, Lambda's Init error types), then for each invocation
`GET invocation/next`, the handler called with the event and a context (runtimes/python/context.py), and its result
or error as Lambda shapes them (runtimes/python/replies.py) posted to `/response` or `/error`. An Init error is posted
to `/init/error` and the process exits. Standard library only, one connection (keep-alive), one invocation at a time.

In a jail this file is /var/rapid/runtimes/python/api_client.py, its packages /var/runtime (gateway/execution/spec.py:
python_bootstrap), so neither its command line nor sys.path names a host path. The gateway's modules it reuses
(runtimes.python, gateway.contracts) are found from this file's own path (the tree above it), imported, and
taken off sys.path again before the function's code is imported, so that the function sees its own code, its layers
and the interpreter's packages, as on Lambda, not the gateway's tree.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import sys
import types
from typing import Any


def _import_runtime() -> Any:
    """Import the fast path's modules this client reuses (see the module's docstring)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]  # the script's directory is not the code's
    sys.path.insert(0, root)
    stub = None
    try:
        import msgpack  # noqa: F401  (the contracts module imports it; this client never encodes a frame)
    except ImportError:
        stub = sys.modules["msgpack"] = types.ModuleType("msgpack")
        stub.packb = stub.unpackb = None  # type: ignore[attr-defined]
    try:
        from runtimes.python import context, init, replies

        return context, init, replies
    finally:
        sys.path.remove(root)
        if stub is not None:  # the function may bring its own msgpack
            del sys.modules["msgpack"]


class Client:
    """The Runtime API at AWS_LAMBDA_RUNTIME_API (host:port), over one HTTP/1.1 connection."""

    PREFIX = "/2018-06-01/runtime"

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.connection = http.client.HTTPConnection(host, int(port))

    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
        self.connection.request(method, self.PREFIX + path, body=body, headers=headers or {})
        response = self.connection.getresponse()
        response.read_body = response.read()  # type: ignore[attr-defined]
        return response

    def next(self) -> tuple[bytes, dict[str, str]]:
        response = self._request("GET", "/invocation/next")
        if response.status != 200:
            raise RuntimeError(f"invocation/next answered {response.status}: {response.read_body[:200]!r}")
        return response.read_body, {k.lower(): v for k, v in response.getheaders()}

    def respond(self, request_id: str, payload: bytes) -> None:
        self._request("POST", f"/invocation/{request_id}/response", payload, {"Content-Type": "application/json"})

    def error(self, request_id: str, error_type: str, body: bytes) -> None:
        headers = {"Content-Type": "application/json", "Lambda-Runtime-Function-Error-Type": error_type}
        self._request("POST", f"/invocation/{request_id}/error", body, headers)

    def init_error(self, error_type: str, body: bytes) -> None:
        headers = {"Content-Type": "application/json", "Lambda-Runtime-Function-Error-Type": error_type}
        self._request("POST", "/init/error", body, headers)


def _unbuffered() -> None:
    """sys.stdout and sys.stderr write through to fds 1 and 2 (a pipe): a line printed is in the log at once."""
    for name, fd in (("stdout", 1), ("stderr", 2)):
        raw = io.FileIO(fd, "wb", closefd=False)
        setattr(sys, name, io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace", write_through=True))


def _spec_from_environment(extra_paths: list[str]) -> Any:
    """The spec Init needs, from what the proxy gave this process (its environment is the function's)."""
    from gateway.contracts.environment import EnvironmentSpec

    environ = dict(os.environ)
    return EnvironmentSpec(
        env=environ,
        code_dir=environ.get("LAMBDA_TASK_ROOT", os.getcwd()),
        handler=environ.get("_HANDLER", ""),
        extra_paths=extra_paths,
        max_concurrency=1,
        mounts=[],
        memory_size=int(environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")),
        ephemeral_storage=512,
        network=True,
    )


def main(argv: list[str]) -> None:
    packages, extra_paths = argv[1], argv[2:]
    # boto3 ... (and msgpack, for the contracts module): after the standard library, not before it, since in a jail
    # they are /var/runtime, where the runtime's own modules are too (its concurrent.py must not shadow the stdlib's)
    sys.path.append(packages)
    context, init, replies = _import_runtime()
    from gateway.contracts.environment import ERROR

    client = Client(os.environ["AWS_LAMBDA_RUNTIME_API"])
    _unbuffered()
    spec = _spec_from_environment(extra_paths)
    initialized = init.initialize(spec, os.environ.get("TMPDIR", "/tmp"))
    if initialized.handler is None:
        error = initialized.error
        client.init_error(error["errorType"], json.dumps(error).encode())
        sys.exit(1)
    handler = initialized.handler
    log_handler = initialized.log_handler
    environ = dict(os.environ)
    while True:
        payload, headers = client.next()
        request_id = headers.get("lambda-runtime-aws-request-id", "")
        log_handler.request_id = request_id
        trace = headers.get("lambda-runtime-trace-id")
        if trace:
            os.environ["_X_AMZN_TRACE_ID"] = trace
        try:
            event = json.loads(payload)
            client_context = headers.get("lambda-runtime-client-context")
            ctx = context.for_invocation(
                request_id,
                headers.get("lambda-runtime-invoked-function-arn", ""),
                int(headers.get("lambda-runtime-deadline-ms", "0")),
                client_context.encode() if client_context else None,
                environ,
            )
            head = replies.result(0, request_id, handler(event, ctx))
        except Exception as exc:
            head = replies.exception(0, request_id, exc)
        if head[0] == ERROR:
            client.error(request_id, head[2], head[3])
        else:
            client.respond(request_id, head[2])


if __name__ == "__main__":
    main(sys.argv)
