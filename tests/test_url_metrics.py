"""gateway/observability/url_metrics.py: per-URL requests by status class and latency."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from gateway.observability.metrics import Metrics
from gateway.observability.url_metrics import UrlMetrics


def test_requests_by_status_class_and_latency() -> None:
    urls = UrlMetrics()
    for status in (200, 204, 302, 403, 429, 502, 101):
        urls.request("f", "f:live", status, 0.02)
    urls.request("g", "g", 200, 3.0)
    text = urls.snapshot().render().decode()
    assert 'lambda_url_requests_total{function="f",resource="f:live",status_class="2xx"} 3.0' in text  # 101 too
    assert 'lambda_url_requests_total{function="f",resource="f:live",status_class="4xx"} 2.0' in text
    assert 'lambda_url_requests_total{function="f",resource="f:live",status_class="5xx"} 1.0' in text
    assert 'lambda_url_request_duration_seconds_count{function="f",resource="f:live"} 7.0' in text
    assert 'lambda_url_request_duration_seconds_bucket{function="g",le="2.5",resource="g"} 0.0' in text
    urls.forget("f")
    assert 'function="f"' not in urls.snapshot().render().decode()


def test_the_metrics_scrape_includes_them_and_a_deleted_function_drops_them() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.urls.request("f", "f", 200, 0.01)
    assert 'lambda_url_requests_total{function="f",resource="f",status_class="2xx"} 1.0' in (
        generate_latest(registry).decode()
    )
    assert metrics.snapshot().render() == generate_latest(registry)
    metrics.forget("f")
    assert 'function="f"' not in generate_latest(registry).decode()


def test_a_deleted_alias_or_function_has_no_series_and_gets_none_back() -> None:
    existing = {("f", "$LATEST"), ("f", "live"), ("g", "$LATEST")}
    metrics = Metrics(CollectorRegistry(), alive=lambda function, version: (function, version) in existing)
    urls = metrics.urls
    urls.alive = lambda function, qualifier: (function, qualifier) in existing  # what gateway/app.py wires
    for resource in ("f", "f:live"):
        urls.request("f", resource, 200, 0.01)
    urls.request("g", "g", 200, 0.01)
    existing.discard(("f", "live"))  # DeleteAlias: its URL went with it; its series go at the next scrape
    text = metrics.snapshot().render().decode()
    assert 'resource="f:live"' not in text and 'resource="f"' in text
    urls.request("f", "f:live", 200, 0.01)  # a request that ends after its alias was deleted records nothing
    assert 'resource="f:live"' not in metrics.snapshot().render().decode()
    existing -= {("g", "$LATEST")}
    metrics.forget("g")  # DeleteFunction
    urls.request("g", "g", 502, 0.01)  # ended after the delete: no series comes back
    assert 'function="g"' not in metrics.snapshot().render().decode()


def test_without_the_wiring_a_deleted_function_still_gets_no_series_back() -> None:
    metrics = Metrics(CollectorRegistry(), alive=lambda function, version: False)
    metrics.urls.request("gone", "gone", 200, 0.01)
    assert 'function="gone"' not in metrics.snapshot().render().decode()
