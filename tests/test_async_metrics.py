"""gateway.observability.async_metrics through `Metrics` on a fresh registry: Lambda's asynchronous invocation
metrics per function, the queue depth at scrape time, forgetting, and the fast renderer."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.observability.async_metrics import AGE_BUCKETS, DESTINATION_SERVICES, DROP_REASONS
from gateway.observability.metrics import Metrics


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_counts_per_function(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry)
    for _ in range(3):
        metrics.async_received("f")
    metrics.async_received("g")
    metrics.async_dropped("f", "retries_exhausted")
    metrics.async_dropped("f", "event_age_exceeded")
    metrics.async_dropped("f", "event_age_exceeded")
    metrics.destination_failed("f", "sqs")
    metrics.destination_failed("g", "lambda")
    metrics.dead_letter_failed("f")
    assert value(registry, "lambda_async_events_received_total", function="f") == 3
    assert value(registry, "lambda_async_events_received_total", function="g") == 1
    assert value(registry, "lambda_async_events_dropped_total", function="f", reason="retries_exhausted") == 1
    assert value(registry, "lambda_async_events_dropped_total", function="f", reason="event_age_exceeded") == 2
    assert value(registry, "lambda_destination_delivery_failures_total", function="f", service="sqs") == 1
    assert value(registry, "lambda_destination_delivery_failures_total", function="g", service="lambda") == 1
    assert value(registry, "lambda_dead_letter_errors_total", function="f") == 1
    assert value(registry, "lambda_dead_letter_errors_total", function="g") == 0


def test_every_counter_starts_at_zero_so_the_first_drop_is_an_increase(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry)
    metrics.async_received("f")
    for reason in DROP_REASONS:
        assert value(registry, "lambda_async_events_dropped_total", function="f", reason=reason) == 0
    for service in DESTINATION_SERVICES:
        assert value(registry, "lambda_destination_delivery_failures_total", function="f", service=service) == 0
    assert value(registry, "lambda_dead_letter_errors_total", function="f") == 0
    assert value(registry, "lambda_async_event_age_seconds_count", function="f") == 0
    # anything first recorded creates the whole set too (a retry after a restart: nothing received since)
    metrics.dead_letter_failed("h")
    assert value(registry, "lambda_async_events_received_total", function="h") == 0
    assert value(registry, "lambda_async_events_dropped_total", function="h", reason="function_deleted") == 0


def test_an_unknown_reason_or_service_is_counted_not_raised(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry)
    metrics.async_dropped("f", "something_new")
    metrics.destination_failed("f", "s3")
    assert value(registry, "lambda_async_events_dropped_total", function="f", reason="something_new") == 1
    assert value(registry, "lambda_destination_delivery_failures_total", function="f", service="s3") == 1


def test_event_age_is_a_histogram_from_a_millisecond_to_six_hours(registry: CollectorRegistry) -> None:
    assert AGE_BUCKETS[0] == 0.001 and AGE_BUCKETS[-1] == 21600
    assert list(AGE_BUCKETS) == sorted(AGE_BUCKETS)
    metrics = Metrics(registry)
    for seconds in (0.0004, 0.002, 61.0, 185.0, 30000.0):  # first attempt, a retry after ~1 min, ~3 min, too old
        metrics.async_event_age("f", seconds)
    labels = {"function": "f"}
    assert value(registry, "lambda_async_event_age_seconds_count", **labels) == 5
    assert value(registry, "lambda_async_event_age_seconds_sum", **labels) == pytest.approx(30246.0024)
    assert value(registry, "lambda_async_event_age_seconds_bucket", le="0.001", **labels) == 1
    assert value(registry, "lambda_async_event_age_seconds_bucket", le="0.0025", **labels) == 2
    assert value(registry, "lambda_async_event_age_seconds_bucket", le="60.0", **labels) == 2
    assert value(registry, "lambda_async_event_age_seconds_bucket", le="90.0", **labels) == 3
    assert value(registry, "lambda_async_event_age_seconds_bucket", le="300.0", **labels) == 4
    assert value(registry, "lambda_async_event_age_seconds_bucket", le="21600.0", **labels) == 4
    assert value(registry, "lambda_async_event_age_seconds_bucket", le="+Inf", **labels) == 5
    assert value(registry, "lambda_async_events_received_total", **labels) == 0  # an attempt is not a receipt


def test_queue_depth_is_read_at_each_scrape_and_absent_without_a_callable(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry)
    metrics.async_received("f")
    text = generate_latest(registry).decode()
    assert "# TYPE gateway_async_queue_depth gauge" in text  # the family, without samples
    assert "gateway_async_queue_depth{" not in text
    depths = {"f": 3, "g": 0}
    calls = []

    def read() -> dict[str, int]:
        calls.append(1)
        return dict(depths)

    metrics.watch_queue(read)
    assert value(registry, "gateway_async_queue_depth", function="f") == 3
    assert value(registry, "gateway_async_queue_depth", function="g") == 0
    depths["f"] = 1
    del depths["g"]
    assert value(registry, "gateway_async_queue_depth", function="f") == 1
    assert value(registry, "gateway_async_queue_depth", function="g") is None  # never seen here: gone with the queue's
    del depths["f"]
    assert value(registry, "gateway_async_queue_depth", function="f") == 0  # has series, none waiting: 0, not a gap
    assert calls  # computed when scraped, never maintained between scrapes


def test_forget_drops_a_deleted_functions_series_and_none_come_back(registry: CollectorRegistry) -> None:
    existing = {"f", "g"}
    metrics = Metrics(registry, alive=lambda name, version: name in existing)
    for name in ("f", "g"):
        metrics.async_received(name)
        metrics.async_event_age(name, 0.01)
        metrics.async_dropped(name, "retries_exhausted")
        metrics.destination_failed(name, "sns")
        metrics.dead_letter_failed(name)
    metrics.forget("f", "1")  # a deleted version: the async series are per function, they stay
    assert value(registry, "lambda_async_events_received_total", function="f") == 1
    existing.discard("f")
    metrics.forget("f")
    # what the dispatcher records after the delete (an attempt that was under way, its events dropped)
    metrics.async_dropped("f", "function_deleted")
    metrics.async_event_age("f", 1.0)
    metrics.async_received("nobody")  # a function that does not exist makes no series either
    text = generate_latest(registry).decode()
    assert 'function="f"' not in text and 'function="nobody"' not in text
    assert value(registry, "lambda_async_events_received_total", function="g") == 1
    assert value(registry, "lambda_dead_letter_errors_total", function="g") == 1


def test_the_fast_renderer_matches_generate_latest(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry)
    metrics.async_received("f")
    metrics.async_event_age("f", 0.2)
    metrics.async_event_age("f", 125.0)
    metrics.async_dropped("f", "event_age_exceeded")
    metrics.async_dropped("g", "an_odd\\reason")
    metrics.destination_failed("g", "events")
    metrics.dead_letter_failed("g")
    metrics.watch_queue(lambda: {"f": 2, "g": 1_500_000})
    rendered = metrics.snapshot().render()
    assert rendered == generate_latest(registry)
    families = {f.name: f.type for f in text_string_to_metric_families(rendered.decode())}
    assert families["lambda_async_events_received"] == "counter"
    assert families["lambda_async_event_age_seconds"] == "histogram"
    assert families["lambda_async_events_dropped"] == "counter"
    assert families["lambda_destination_delivery_failures"] == "counter"
    assert families["lambda_dead_letter_errors"] == "counter"
    assert families["gateway_async_queue_depth"] == "gauge"


def test_a_snapshot_is_a_copy(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry)
    metrics.async_received("f")
    metrics.async_event_age("f", 0.5)
    depths = {"f": 1}
    metrics.watch_queue(lambda: depths)
    snapshot = metrics.snapshot()
    metrics.async_received("f")
    metrics.async_event_age("f", 0.5)
    metrics.async_dropped("f", "retries_exhausted")
    depths["f"] = 7
    rendered = snapshot.render().decode()  # a worker thread renders what the loop copied, whatever happened since
    assert 'lambda_async_events_received_total{function="f"} 1.0\n' in rendered
    assert 'lambda_async_event_age_seconds_count{function="f"} 1.0\n' in rendered
    assert 'lambda_async_events_dropped_total{function="f",reason="retries_exhausted"} 0.0\n' in rendered
    assert 'gateway_async_queue_depth{function="f"} 1.0\n' in rendered
