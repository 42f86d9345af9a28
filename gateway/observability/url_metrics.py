"""Metrics of function URLs, per URL: labels `function` and `resource` (the function, or `function:alias` for an
alias's URL), and for the counter `status_class` (2xx, 3xx, 4xx, 5xx: bounded).

`Metrics` (metrics.py) owns one `UrlMetrics` as `Metrics.urls`; the URL route (gateway/api/urls/serving.py) calls
`request` once per answered request, preflights and refusals included. The families are part of the contract with
the Grafana dashboards (`tests/test_e2e_prometheus.py`):

- `lambda_url_requests_total{function,resource,status_class}` (counter): CloudWatch's UrlRequestCount (the sum),
  Url4xxCount and Url5xxCount (its 4xx and 5xx series);
- `lambda_url_request_duration_seconds{function,resource}` (histogram): UrlRequestLatency, from the request's
  arrival to its answer's head (a streamed body's end is not waited for).

Series live as long as what their URL invokes: a deleted function's go at once (`forget`, from `Metrics.forget`), a
deleted alias's at the next scrape (`snapshot` drops the series `alive` denies); and a request that ends after its
function or alias was deleted creates no series again (`alive` is asked when a series would be created). `alive`
(function, qualifier: `$LATEST` or an alias) is set by `Metrics` to whether the function exists and by gateway/app.py
to whether the function and the alias exist (`designates`). Concurrency model, as in metrics.py: updates run on the
event loop and add to plain numbers; `snapshot()`, on the loop, copies them; its `families()` and `render()` run in
any thread.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from gateway.observability.exposition import HistCopy, Histogram, buckets

#: a URL's latency: 1 ms .. the 900 s timeout limit
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")
REQUESTS = ("lambda_url_requests", "Requests through function URLs, by the class of the answer's status.")
LATENCY = ("lambda_url_request_duration_seconds", "Time from a function URL request's arrival to its answer's head.")


class UrlMetrics:
    """The series of every URL (see the module's docstring)."""

    def __init__(self, alive: Callable[[str, str], bool] | None = None) -> None:
        #: (function, resource) -> (counts per STATUS_CLASSES, latency)
        self.series: dict[tuple[str, str], tuple[list[int], Histogram]] = {}
        #: (function, qualifier) -> whether what a URL of it invokes still exists (see the module's docstring)
        self.alive = alive

    def request(self, function: str, resource: str, status: int, seconds: float) -> None:
        """One request answered with `status` after `seconds`: cheap, never raises."""
        found = self.series.get((function, resource))
        if found is None:
            if self.alive is not None and not self.alive(function, _qualifier(resource)):
                return  # it ended after its function or alias was deleted: no series comes back
            found = self.series[(function, resource)] = ([0] * len(STATUS_CLASSES), Histogram(LATENCY_BUCKETS))
        found[0][min(max(status // 100 - 2, 0), 3)] += 1  # 1xx counts as 2xx: the URL answered
        found[1].observe(seconds)

    def forget(self, function: str) -> None:
        for key in [k for k in self.series if k[0] == function]:
            del self.series[key]

    def snapshot(self) -> UrlSnapshot:
        """A copy of the numbers (on the loop), without the series of what no longer exists (dropped for good)."""
        alive = self.alive
        if alive is not None:
            for key in [k for k in self.series if not alive(k[0], _qualifier(k[1]))]:
                del self.series[key]
        return UrlSnapshot([(key, list(counts), hist.copy()) for key, (counts, hist) in self.series.items()])


def _qualifier(resource: str) -> str:
    """The qualifier of a URL's resource label: `function:alias` -> alias, `function` -> $LATEST."""
    return resource.partition(":")[2] or "$LATEST"


class UrlSnapshot:
    """Numbers copied on the loop (an `exposition.Part`)."""

    def __init__(self, rows: list[tuple[tuple[str, str], list[int], HistCopy]]) -> None:
        self.rows = sorted(rows)

    def families(self) -> list[Metric]:
        requests, latency = url_families()
        for labels, counts, (bounds, hist_counts, total) in self.rows:
            for status_class, count in zip(STATUS_CLASSES, counts, strict=True):
                if count:
                    requests.add_metric((*labels, status_class), count)
            latency.add_metric(labels, buckets(bounds, hist_counts), total)
        return [requests, latency]

    def render(self) -> bytes:
        """The text of `families()` (few series: one per URL, so prometheus_client's own formatting will do)."""
        return generate_latest(_Families(self.families()))


class _Families:
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> list[Metric]:
        return self.metrics


def url_families() -> tuple[CounterMetricFamily, HistogramMetricFamily]:
    """A fresh, empty family for each URL metric (in exposition order)."""
    return (
        CounterMetricFamily(REQUESTS[0], REQUESTS[1], labels=("function", "resource", "status_class")),
        HistogramMetricFamily(LATENCY[0], LATENCY[1], labels=("function", "resource")),
    )
