"""The suite's `runtimes` scenario: the same no-op function (it returns its event) on each kind of runtime, side by
side in one run: cold start (the first invoke of fresh functions, with Init Duration) and warm invokes/s (a closed
loop on warm environments).

Kinds (`RUNTIME_KINDS`, in order):
- python: the Python fast path (on the gateway's own Python, as the suite's other scenarios: the environment process
  is the runtime, msgpack to the gateway);
- python_awslambdaric: Python through the Runtime API (provided.al2023, AWS's awslambdaric 4.2.2 run by the system
  Python, through runtimes/proxy);
- go: a Go `bootstrap` built with aws-lambda-go (provided.al2023, through the proxy);
- nodejs: Node.js through the proxy (runtimes/node on the host's Node.js, `nodejs<major>.x`: bench/nodejs_function.py).

A kind whose function cannot be built here (no Go, no system Python, no registry) is skipped with the reason. Each
kind gets `COLD_N` fresh functions (one after another, a 50 ms pause between) and a warm closed loop of
`WARM_CONNECTIONS` connections (so as many environments) for the suite's `--duration`, after a warm-up long enough
for their cold starts.
"""

from __future__ import annotations

import base64
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import runtime_builds
from bench.harness import INIT_RE, ROLE, RUNTIME, RawClient, header_value, summarize
from bench.nodejs_function import nodejs_function
from bench.runtime_builds import Unavailable
from bench.scenarios.common import NOOP, Api, Run, closed, invoke_bytes

#: fresh functions per kind (a custom runtime's cold start costs a process start and more)
COLD_N = 10
#: concurrent connections of the warm loop, and so environments per kind
WARM_CONNECTIONS = 8
#: a function: (runtime id, handler, zip bytes); built once per run
Function = tuple[str, str, bytes]


def _python(tmp: Path) -> Function:
    return RUNTIME, "lambda_function.lambda_handler", runtime_builds.function_zip({"lambda_function.py": NOOP})


def _awslambdaric(tmp: Path) -> Function:
    tree = runtime_builds.awslambdaric_tree(tmp / "ric")
    files = {
        **runtime_builds.tree_files(tree),
        "bootstrap": runtime_builds.RIC_BOOTSTRAP,
        "app.py": runtime_builds.RIC_ECHO,
    }
    return "provided.al2023", "app.handler", runtime_builds.function_zip(files)


def _go(tmp: Path) -> Function:
    binary = runtime_builds.go_bootstrap(tmp / "go")
    return "provided.al2023", "bootstrap", runtime_builds.function_zip({"bootstrap": binary.read_bytes()})


def _nodejs(tmp: Path) -> Function:
    try:
        return nodejs_function(tmp)  # bench/nodejs_function.py: the host's Node.js major
    except LookupError as exc:
        raise Unavailable(str(exc)) from None


RUNTIME_KINDS: dict[str, Callable[[Path], Function]] = {
    "python": _python,
    "python_awslambdaric": _awslambdaric,
    "go": _go,
    "nodejs": _nodejs,
}


def _create(api: Api, name: str, function: Function) -> None:
    runtime, handler, code = function
    body = {
        "FunctionName": name,
        "Runtime": runtime,
        "Role": ROLE,
        "Handler": handler,
        "Code": {"ZipFile": base64.b64encode(code).decode()},
        "MemorySize": 256,
        "Timeout": 30,
    }
    status, answer = api.call("POST", "/2015-03-31/functions", body)
    if status != 201:
        raise RuntimeError(f"CreateFunction {name}: {status} {answer}")


def _cold(run: Run, api: Api, kind: str, function: Function, stamp: int) -> dict[str, Any]:
    port = run.server("gateway").port
    names = [f"rt-{kind.replace('_', '-')}-{stamp}-{i}" for i in range(COLD_N)]
    for name in names:
        _create(api, name, function)
    client = RawClient(port, timeout=60)
    samples, inits, errors = [], [], 0
    try:
        for name in names:
            time.sleep(0.05)
            t0 = time.perf_counter()
            status, head, body = client.request(invoke_bytes(port, name, b'{"k": 1}', tail=True))
            ms = (time.perf_counter() - t0) * 1000
            log = header_value(head, "X-Amz-Log-Result")
            match = INIT_RE.search(base64.b64decode(log).decode(errors="replace")) if log else None
            if status != 200 or json.loads(body) != {"k": 1} or match is None:
                errors += 1
                continue
            samples.append(ms)
            inits.append(float(match.group(1)))
    finally:
        client.close()
    return {"n": len(samples), "errors": errors, "client_ms": summarize(samples), "init_duration_ms": summarize(inits)}


def _warm(run: Run, api: Api, kind: str, function: Function, stamp: int) -> dict[str, Any]:
    p = run.params
    port = run.server("gateway").port
    name = f"rt-{kind.replace('_', '-')}-{stamp}-warm"
    _create(api, name, function)
    result = closed(port, [invoke_bytes(port, name, b'{"k": 1}')], WARM_CONNECTIONS, p.duration, max(p.warmup, 3.0))
    return {"connections": WARM_CONNECTIONS, **result}


def scenario_runtimes(run: Run) -> dict[str, Any]:
    api = Api(run.server("gateway").port)
    stamp = int(time.time())
    out: dict[str, Any] = {"cold_n": COLD_N, "kinds": {}}
    with tempfile.TemporaryDirectory(prefix="bench-runtimes-") as tmp:
        for kind, build in RUNTIME_KINDS.items():
            try:
                function = build(Path(tmp))
            except Unavailable as exc:
                out["kinds"][kind] = {"skipped": str(exc)[:500]}
                print(f"  {kind}: skipped ({str(exc)[:100]})")
                continue
            cold = _cold(run, api, kind, function, stamp)
            warm = _warm(run, api, kind, function, stamp)
            out["kinds"][kind] = {"cold_start": cold, "warm": warm}
            print(
                f"  {kind}: cold start p50 {cold['client_ms'].get('p50')} ms (Init Duration p50 "
                f"{cold['init_duration_ms'].get('p50')} ms); warm {warm.get('throughput_rps')} invokes/s"
            )
    api.close()
    return out
