"""Baseline (b): a fresh Python process per invocation, what local emulators without warm environments do.

An aiohttp + uvloop server. For every `POST /2015-03-31/functions/{FunctionName}/invocations` it reads the
body and starts a new interpreter with `asyncio.create_subprocess_exec` (no shell):
`sys.executable bench/baselines/run_once.py CODE_DIR handler.lambda_handler FUNCTION_NAME REQUEST_ID 3`.
The child imports the handler module (bench/baselines/handler.py, the benchmark's no-op handler) from
CODE_DIR, reads the event from stdin, calls `lambda_handler(event, context)` with a minimal context and
writes the JSON result to stdout (see run_once.py). The server feeds the body to the child's stdin, waits
for it to exit and answers 200 with the child's stdout as application/json (keep-alive). Nothing is kept
between invocations: every invoke pays an interpreter start, `site`, the runner's imports and the handler
module's import, and the child's exit.

The interpreter is started normally: `sys.executable` as it is (this venv's `bin/python`, a symlink to the
real binary, not a shell wrapper, so the venv's site-packages and .pth files are processed exactly as for
any script run with it), no `-S`, and no `-I`. `-I` would ignore PYTHONPATH and the other PYTHON*
variables, which emulators pass through (layers and handler code are often put on PYTHONPATH), and it
saves nothing measurable: on the reference machine `python -c pass` took ~52 ms p50 with and without it
(~18 ms with `-S`; `site` is ~25-40 ms of it, mostly the editable install's import finder), and a whole
`run_once.py` child ~67 ms. Served by this baseline: ~70 ms p50 per sequential invocation, ~26 req/s with
4 concurrent clients (`wrk -t1 -c4 -d5s`, p50 145 ms) on 2 CPUs. Bytecode caching is left on, as an
emulator would leave it.

At most `--max-children` (64) children run at once; further invocations wait for a slot. A child that exits
non-zero, times out (`--timeout`, 30 s, then SIGKILL) or writes something that is not JSON is answered with
502 and a JSON body `{"errorType": ..., "errorMessage": ..., "exitCode": ..., "stderr": <last 2 KiB>}`.
On SIGTERM or SIGINT the server stops accepting, answers 503 to invocations not yet started, SIGKILLs every
running child (their invocations get a 502), waits for the in-flight handlers to return and exits: no
process is left behind.

Run: `python bench/baselines/fresh_process.py --port P [--host H]`; `GET /healthz` answers 200 once it
listens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import uuid
from pathlib import Path

import orjson
import uvloop
from aiohttp import web

HERE = Path(__file__).resolve().parent
RUN_ONCE = HERE / "run_once.py"
INVOKE_ROUTE = "/2015-03-31/functions/{FunctionName}/invocations"
#: Lambda's synchronous payload limit (6 MB) and some room: the payload scenarios send events up to that size
MAX_BODY = 7 * 1024 * 1024
#: the runner's context.get_remaining_time_in_millis() counts down from this (Lambda's default timeout)
FUNCTION_TIMEOUT = 3
STDERR_TAIL = 2048


def _error(status: int, error_type: str, message: str, **extra: object) -> web.Response:
    body = orjson.dumps({"errorType": error_type, "errorMessage": message, **extra})
    return web.Response(status=status, body=body, content_type="application/json")


async def _feed(stdin: asyncio.StreamWriter, body: bytes) -> None:
    """Write the event to the child's stdin and close it; a child that is already gone is not an error here."""
    try:
        stdin.write(body)
        await stdin.drain()
    except (OSError, RuntimeError):  # broken pipe, or uvloop's "handler is closed": its exit status tells why
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            stdin.close()


async def _exchange(proc: asyncio.subprocess.Process, body: bytes) -> tuple[bytes, bytes]:
    """Feed `body` to the child, read all of its stdout and stderr, and wait for it to exit."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out, err, _ = await asyncio.gather(proc.stdout.read(), proc.stderr.read(), _feed(proc.stdin, body))
    await proc.wait()
    return out, err


class FreshProcessInvoker:
    """Runs each invocation in a new `python run_once.py` child; tracks the children to kill them on shutdown."""

    def __init__(self, code_dir: Path, handler: str, max_children: int, timeout: float) -> None:
        self.code_dir = str(code_dir)
        self.handler = handler
        self.timeout = timeout
        self.slots = asyncio.Semaphore(max_children)
        self.children: set[asyncio.subprocess.Process] = set()
        self.closed = asyncio.Event()

    async def invoke(self, request: web.Request) -> web.Response:
        body = await request.read()
        name = request.match_info["FunctionName"]
        async with self.slots:
            if self.closed.is_set():
                return _error(503, "ServiceUnavailable", "the server is shutting down")
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(RUN_ONCE),
                self.code_dir,
                self.handler,
                name,
                str(uuid.uuid4()),
                str(FUNCTION_TIMEOUT),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            self.children.add(proc)
            try:
                if self.closed.is_set():  # close() ran while the child was being started
                    proc.kill()
                    await proc.wait()
                    return _error(503, "ServiceUnavailable", "the server is shutting down")
                try:
                    out, err = await asyncio.wait_for(_exchange(proc, body), self.timeout)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
                    return _error(502, "Runtime.Timeout", f"the runner did not exit within {self.timeout:g} s")
            finally:
                if proc.returncode is None:  # cancelled: do not leave the child running
                    proc.kill()
                self.children.discard(proc)
        stderr_tail = err[-STDERR_TAIL:].decode("utf-8", "replace")
        if proc.returncode != 0:
            return _error(502, "Runtime.ExitError", "the runner failed", exitCode=proc.returncode, stderr=stderr_tail)
        try:
            orjson.loads(out)
        except orjson.JSONDecodeError:
            return _error(
                502, "Runtime.InvalidResponse", "the runner's output is not JSON", exitCode=0, stderr=stderr_tail
            )
        return web.Response(body=out, content_type="application/json")

    def close(self) -> None:
        """Refuse new invocations and SIGKILL every running child (their handlers then return 502)."""
        self.closed.set()
        for proc in list(self.children):
            if proc.returncode is None:
                proc.kill()


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


def create_app(invoker: FreshProcessInvoker) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post(INVOKE_ROUTE, invoker.invoke)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(host: str, port: int, max_children: int, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    invoker = FreshProcessInvoker(HERE, "handler.lambda_handler", max_children, timeout)
    runner = web.AppRunner(create_app(invoker), handle_signals=False, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True, backlog=1024).start()
        await stop.wait()
    finally:
        invoker.close()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-children", type=int, default=64, help="children running at once (default 64)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a child is killed (default 30)")
    args = parser.parse_args(argv)
    uvloop.run(serve(args.host, args.port, args.max_children, args.timeout))


if __name__ == "__main__":
    main()
