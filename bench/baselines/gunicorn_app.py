"""Baseline (c): a pre-forked gunicorn server calling the same handler, what a Python team might pick instead.

`app` is a minimal WSGI application (no framework). `POST /2015-03-31/functions/{FunctionName}/invocations`
reads exactly CONTENT_LENGTH bytes of the body, parses them with orjson (as the in-process baseline does),
calls `handler.lambda_handler(event, None)` (bench/baselines/handler.py, the benchmark's no-op handler,
imported once in the master before the workers fork) and answers 200 with `orjson.dumps(result)`,
Content-Type application/json and a Content-Length; `GET /healthz` answers 200; other paths 404, other
methods 405. A body that is not JSON raises, and gunicorn answers 500.

Running it as a script starts gunicorn programmatically (a `gunicorn.app.base.BaseApplication`, so this
process is gunicorn's master): bound to HOST:PORT, `--workers` defaulting to 2 x cores + 1 (gunicorn's
documented recommendation; cores = CPUs this process may run on), access log off, errors (level
warning) to stderr, no control socket (gunicorn >= 25 would otherwise create one at a fixed per-user
path that concurrent instances would share), graceful timeout 5 s. SIGTERM or SIGINT make the master stop
every worker and exit; workers are its own children in its process group, nothing is left behind. The
stop signals are blocked across each fork() so that a worker still booting cannot miss them (see `run`).

Worker class. `sync` closes the connection after every response (gunicorn forces it, as it expects a
buffering proxy in front), so every request is a new TCP connection; `gthread` keeps connections alive
and serves them from `--threads` threads per worker. Measured on the reference machine (2 CPUs, so 5
workers; `wrk -t1 -c32 -d5s`, POST `{}`, runs with no other load on the machine), both vary by about 2x
from run to run and are close, with gthread slightly ahead: `sync` median 3,540 req/s (mean 3,220; 19
runs, range 1,840-4,330; p50 latency ~10 ms), `gthread --threads 2` median 3,680 req/s (mean 3,480; 16
runs, range 1,790-4,810; p50 ~8.7 ms). The default is therefore `gthread` with 2 threads: the higher
throughput, the lower latency, and keep-alive like the gateway and the other baselines, i.e. the
strongest alternative a team would pick. `--worker-class sync` selects the other.

Run: `python bench/baselines/gunicorn_app.py --port P [--host H] [--workers N] [--worker-class
{gthread,sync}] [--threads T]`.
"""

from __future__ import annotations

import argparse
import os
import signal
from collections.abc import Iterable
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

import orjson

try:
    from .handler import lambda_handler
except ImportError:  # run as a script: bench/baselines/ is sys.path[0]
    from handler import lambda_handler  # type: ignore[no-redef,import-not-found]

INVOKE_PREFIX = "/2015-03-31/functions/"
INVOKE_SUFFIX = "/invocations"
JSON = "application/json"


def _respond(start_response: StartResponse, status: str, body: bytes) -> list[bytes]:
    start_response(status, [("Content-Type", JSON), ("Content-Length", str(len(body)))])
    return [body]


def _is_invoke_path(path: str) -> bool:
    if not (path.startswith(INVOKE_PREFIX) and path.endswith(INVOKE_SUFFIX)):
        return False
    name = path[len(INVOKE_PREFIX) : -len(INVOKE_SUFFIX)]
    return bool(name) and "/" not in name


def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    path: str = environ.get("PATH_INFO", "")
    method: str = environ["REQUEST_METHOD"]
    if _is_invoke_path(path):
        if method != "POST":
            return _respond(start_response, "405 Method Not Allowed", b'{"message":"method not allowed"}')
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        event = orjson.loads(body) if body else {}
        return _respond(start_response, "200 OK", orjson.dumps(lambda_handler(event, None)))
    if path == "/healthz":
        if method not in ("GET", "HEAD"):
            return _respond(start_response, "405 Method Not Allowed", b'{"message":"method not allowed"}')
        return _respond(start_response, "200 OK", b'{"status":"ok"}')
    return _respond(start_response, "404 Not Found", b'{"message":"not found"}')


def default_workers() -> int:
    """Gunicorn's recommendation, (2 x num_cores) + 1, counting the CPUs this process may run on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 2 * cores + 1


def options(host: str, port: int, workers: int, worker_class: str, threads: int) -> dict[str, Any]:
    """The gunicorn settings this baseline runs with (names as in gunicorn's `Config`)."""
    return {
        "bind": [f"{host}:{port}"],
        "workers": workers,
        "worker_class": worker_class,
        "threads": threads,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "control_socket_disable": True,
        "graceful_timeout": 5,
    }


#: the signals that stop a gunicorn worker
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT}


def _post_fork(server: Any, worker: Any) -> None:
    """In a new worker, still blocking STOP_SIGNALS: take a stop signal sent before it is ready as 'stop now'.

    The master blocks them across fork() (see `run`). A signal the master sent in the meantime is pending
    and arrives here, on unblocking, so the worker stops (`alive = False`) right after it finishes booting;
    gunicorn's own handlers take over from `init_signals()` on.
    """

    def stop_early(signum: int, frame: object) -> None:
        worker.alive = False

    for sig in STOP_SIGNALS:
        signal.signal(sig, stop_early)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def run(settings: dict[str, Any]) -> None:
    """Run gunicorn's master in this process with `settings` until SIGTERM/SIGINT; gunicorn exits the process.

    One addition to plain gunicorn: a worker forked while the master is being stopped (gunicorn spawns its
    workers one by one, 0-0.1 s apart) would otherwise receive SIGTERM between fork() and installing its
    handlers, run the master's inherited handler, lose the signal and keep running until the master
    SIGKILLs it at the end of the graceful timeout. So the master blocks the stop signals across fork() and
    the worker unblocks them in `post_fork` (`_post_fork`), which makes SIGTERM stop every worker promptly.
    """
    from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]
    from gunicorn.arbiter import Arbiter  # type: ignore[import-untyped]

    class Master(Arbiter):  # type: ignore[misc]
        def spawn_worker(self) -> Any:
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                return super().spawn_worker()
            finally:  # in the master; a worker never returns from spawn_worker()
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    class Baseline(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in {**settings, "post_fork": _post_fork}.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return app

        def run(self) -> None:
            Master(self).run()

    Baseline().run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=default_workers(), help="default: 2 x cores + 1")
    parser.add_argument("--worker-class", choices=("gthread", "sync"), default="gthread")
    parser.add_argument("--threads", type=int, default=2, help="threads per gthread worker (default 2)")
    args = parser.parse_args(argv)
    run(options(args.host, args.port, args.workers, args.worker_class, args.threads))


if __name__ == "__main__":
    main()
