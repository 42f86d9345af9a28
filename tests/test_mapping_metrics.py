"""gateway.observability.mapping_metrics through `Metrics` on a fresh registry: the series of each event source
mapping, at zero from the first thing recorded, forgotten with the mapping, and the fast renderer."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.observability.metrics import Metrics
from gateway.store.mappings import KAFKA, SQS, Mapping

A = Mapping("a-uuid", "f", None, KAFKA)
B = Mapping("b-uuid", 'odd"name', "live", SQS)


def test_counts_per_mapping_start_at_zero_and_go_with_it() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.mappings.polling_error(A)
    labels = {"uuid": "a-uuid", "function": "f", "source": "kafka"}
    assert registry.get_sample_value("lambda_esm_polling_errors_total", labels) == 1
    for name in ("batches", "records", "records_failed", "records_filtered", "records_discarded"):
        assert registry.get_sample_value(f"lambda_esm_{name}_total", labels) == 0
    metrics.mappings.batch(A, 10, 2)
    metrics.mappings.filtered(A, 3)
    metrics.mappings.discarded(A, 1)
    metrics.mappings.lag(A, 12.5)
    assert registry.get_sample_value("lambda_esm_records_total", labels) == 10
    assert registry.get_sample_value("lambda_esm_records_failed_total", labels) == 2
    assert registry.get_sample_value("lambda_esm_iterator_age_seconds", labels) == 12.5
    metrics.mappings.forget("a-uuid")
    assert registry.get_sample_value("lambda_esm_records_total", labels) is None


def test_the_fast_renderer_matches_generate_latest() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.mappings.batch(A, 2_000_000, 0)
    metrics.mappings.lag(A, 0.1)
    metrics.mappings.lag(B, 3600.0)
    rendered = metrics.snapshot().render()
    assert rendered == generate_latest(registry)
    families = {f.name: f.type for f in text_string_to_metric_families(rendered.decode())}
    assert families["lambda_esm_records"] == "counter" and families["lambda_esm_iterator_age_seconds"] == "gauge"
