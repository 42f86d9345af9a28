"""What one load run measured (`LoadResult`) and its JSON form, the `to_dict()` that results files and the CLI
print; the definitions of each figure are in bench/loadgen.py's docstring."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.load.histogram import Histogram


@dataclass
class LoadResult:
    """What one run measured; see the module docstring for the definitions. `histogram` is the raw latencies."""

    mode: str
    host: str
    port: int
    connections: int
    target_rate_rps: float | None
    duration_s: float
    warmup_s: float
    requests: int
    statuses: dict[int, int]
    socket_errors: int
    timeouts: int
    late_sends: int
    max_lateness_ms: float
    reconnects: int
    unfinished: int
    client_cpu_s: float
    timeout_s: float
    histogram: Histogram = field(repr=False)

    @property
    def throughput_rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def non_2xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (latencies in ms, statuses keyed by the code as a string)."""
        return {
            "mode": self.mode,
            "target": {"host": self.host, "port": self.port},
            "connections": self.connections,
            "target_rate_rps": self.target_rate_rps,
            "duration_s": round(self.duration_s, 4),
            "warmup_s": self.warmup_s,
            "requests": self.requests,
            "throughput_rps": round(self.throughput_rps, 1),
            "latency_ms": self.histogram.summary(),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": {"socket": self.socket_errors, "timeout": self.timeouts, "non_2xx": self.non_2xx},
            "late_sends": self.late_sends,
            "max_lateness_ms": round(self.max_lateness_ms, 3),
            "reconnects": self.reconnects,
            "unfinished": self.unfinished,
            "timeout_s": self.timeout_s,
            "client_cpu_s": round(self.client_cpu_s, 3),
            "client_cpu_us_per_request": round(self.client_cpu_s * 1e6 / self.requests, 2) if self.requests else None,
        }
