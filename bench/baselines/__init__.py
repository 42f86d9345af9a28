"""The baselines the benchmark measures next to the gateway, in the same run and with the same load generator.

Every baseline is a script in this directory that serves the gateway's invoke interface with the no-op
handler of handler.py (`return event`): `POST /2015-03-31/functions/{FunctionName}/invocations` with a
JSON event answers 200 with the handler's JSON result (application/json), and `GET /healthz` answers 200
once it listens. It is started as `Baseline.argv(port)` (a full command beginning with sys.executable) and
stopped with SIGTERM, after which neither it nor any process it started is left.

- `inprocess` (a): aiohttp + uvloop calling the handler in its own process, the ceiling for one Python
  process (inprocess.py).
- `fresh_process` (b): aiohttp + uvloop starting a new Python interpreter per invocation, what local
  emulators without warm environments do (fresh_process.py, run_once.py).
- `gunicorn` (c): gunicorn pre-forking 2 x cores + 1 workers around a plain WSGI app calling the handler,
  what a Python team might pick instead (gunicorn_app.py). Needs the `gunicorn` package; its default worker
  class is gthread with 2 threads, the faster of sync and gthread here; `dataclasses.replace(
  BASELINES["gunicorn"], args=("--worker-class", "sync"))` runs the other.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
INVOKE_PATH = "/2015-03-31/functions/{function_name}/invocations"
HEALTH_PATH = "/healthz"


@dataclass(frozen=True)
class Baseline:
    name: str
    #: how reports name it, e.g. "(a) aiohttp+uvloop in-process"
    label: str
    script: Path
    #: extra command-line arguments after --host/--port
    args: tuple[str, ...] = ()
    #: modules it needs beyond the gateway's own dependencies (installed by the `bench` extra)
    requires: tuple[str, ...] = ()

    def argv(self, port: int, host: str = "127.0.0.1") -> list[str]:
        """The full command that serves this baseline on host:port."""
        return [sys.executable, str(self.script), "--host", host, "--port", str(port), *self.args]

    def missing(self) -> list[str]:
        """The modules in `requires` that this interpreter cannot import (empty: it can run)."""
        return [module for module in self.requires if importlib.util.find_spec(module) is None]


BASELINES: dict[str, Baseline] = {
    baseline.name: baseline
    for baseline in (
        Baseline("inprocess", "(a) aiohttp+uvloop in-process", HERE / "inprocess.py"),
        Baseline("fresh_process", "(b) fresh Python process per invoke", HERE / "fresh_process.py"),
        Baseline(
            "gunicorn",
            "(c) gunicorn gthread, 2 x cores + 1 workers",
            HERE / "gunicorn_app.py",
            requires=("gunicorn",),
        ),
    )
}

__all__ = ["BASELINES", "HEALTH_PATH", "INVOKE_PATH", "Baseline"]
