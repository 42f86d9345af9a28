"""The scenarios of the benchmark suite (`make bench`, bench/suite.py): each takes the suite's `Run` and returns
the JSON-able dict that goes under `scenarios.<name>` in the results file (bench/report.py and bench/plots.py
read it).

- common.py  the run (parameters, servers started on first use), Lambda API calls, invoke requests, load runs
- warm.py    throughput, latency vs load, payload sizes, throttling
- cold.py    cold start (fresh functions; first invokes right after CreateFunction and UpdateFunctionCode; a fresh
             interpreter; scale from zero) and a burst of first invokes
- scale.py   many functions deployed (Zipf popularity) vs one, and the memory of idle environments
- runtimes.py  each kind of runtime side by side (Python fast path, awslambdaric, Go, Node.js): cold start, warm /s
- async_events.py  Event invokes: 202s/s vs synchronous invokes/s, the queue's drain, 202 -> handler start
- function_urls.py  one no-op function through its function URL (Host and path forms) vs the Invoke API
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.scenarios.async_events import scenario_async
from bench.scenarios.cold import scenario_burst, scenario_cold_start
from bench.scenarios.common import Run
from bench.scenarios.function_urls import scenario_urls
from bench.scenarios.runtimes import scenario_runtimes
from bench.scenarios.scale import scenario_functions, scenario_memory
from bench.scenarios.warm import scenario_latency_vs_load, scenario_payloads, scenario_throttling, scenario_throughput

#: the scenarios `--only` takes, in the order a full run measures them
SCENARIOS = (
    "throughput",
    "latency_vs_load",
    "cold_start",
    "burst",
    "throttling",
    "functions",
    "payloads",
    "memory",
    "runtimes",
    "async",
    "urls",
)
RUNNERS: dict[str, Callable[[Run], dict[str, Any]]] = {
    "throughput": scenario_throughput,
    "latency_vs_load": scenario_latency_vs_load,
    "cold_start": scenario_cold_start,
    "burst": scenario_burst,
    "throttling": scenario_throttling,
    "functions": scenario_functions,
    "payloads": scenario_payloads,
    "memory": scenario_memory,
    "runtimes": scenario_runtimes,
    "async": scenario_async,
    "urls": scenario_urls,
}
