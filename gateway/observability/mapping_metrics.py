"""Metrics of event source mappings, per mapping (labels `function`, `source`: kafka, rabbitmq, sqs, and `uuid`).

`Metrics` (metrics.py) owns one `MappingMetrics` as `Metrics.mappings`, hands it to the poller runtime (it is the
runner's `Counts`) and adds its snapshot to each scrape; the families are part of the contract with the Grafana
dashboards (`tests/test_e2e_prometheus.py`):

| metric | type | Lambda's |
| --- | --- | --- |
| `lambda_esm_batches_total` | counter | (invocations of the mapping's batches: PolledEventCount's batches) |
| `lambda_esm_records_total` | counter | PolledEventCount (records sent to the function) |
| `lambda_esm_records_failed_total` | counter | records of failed batches/items given back or discarded |
| `lambda_esm_records_filtered_total` | counter | FilteredOutEventCount |
| `lambda_esm_records_discarded_total` | counter | DroppedEventCount (to OnFailure, or skipped) |
| `lambda_esm_polling_errors_total` | counter | (broker unreachable or refusing: the reason is on the mapping) |
| `lambda_esm_iterator_age_seconds` | gauge | IteratorAge / OffsetLag in time: the oldest record of the last batch |

Every series of a mapping is exported, at zero, from the first thing recorded for it. A deleted mapping's series go
(`forget`).

Concurrency model, as in metrics.py: updates run on the event loop and add to plain numbers; `snapshot()`, on the
loop, copies them; its `families()` and `render()` run in any thread.
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.observability.exposition import _go_float, escape, number
from gateway.store.mappings import Mapping

_LABELS = ("function", "source", "uuid")
#: the counters, in exposition order: (name without _total, help)
COUNTERS = (
    ("lambda_esm_batches", "Batches an event source mapping invoked its function with (retries included)."),
    ("lambda_esm_records", "Records an event source mapping sent to its function."),
    ("lambda_esm_records_failed", "Records of an event source mapping whose invocation failed."),
    ("lambda_esm_records_filtered", "Records an event source mapping's FilterCriteria left out (settled unseen)."),
    ("lambda_esm_records_discarded", "Records an event source mapping gave up on (OnFailure destination, or skipped)."),
    ("lambda_esm_polling_errors", "Times an event source mapping could not reach or read its broker."),
)  # fmt: skip
AGE = ("lambda_esm_iterator_age_seconds", "Age of the oldest record of an event source mapping's last batch.")


class MappingMetrics:
    """The series of every mapping; the poller runtime's `Counts`."""

    def __init__(self) -> None:
        #: uuid -> (labels, [batches, records, failed, filtered, discarded, polling errors], iterator age)
        self.series: dict[str, tuple[tuple[str, str, str], list[int], list[float]]] = {}

    def _record(self, mapping: Mapping) -> tuple[list[int], list[float]]:
        found = self.series.get(mapping.uuid)
        if found is None:
            found = self.series[mapping.uuid] = ((mapping.function, mapping.kind, mapping.uuid), [0] * 6, [0.0])
        return found[1], found[2]

    def batch(self, mapping: Mapping, records: int, failed: int) -> None:
        counts, _ = self._record(mapping)
        counts[0] += 1
        counts[1] += records
        counts[2] += failed

    def filtered(self, mapping: Mapping, records: int) -> None:
        self._record(mapping)[0][3] += records

    def discarded(self, mapping: Mapping, records: int) -> None:
        self._record(mapping)[0][4] += records

    def polling_error(self, mapping: Mapping) -> None:
        self._record(mapping)[0][5] += 1

    def lag(self, mapping: Mapping, seconds: float) -> None:
        self._record(mapping)[1][0] = seconds

    def forget(self, uuid: str) -> None:
        self.series.pop(uuid, None)

    def snapshot(self) -> MappingSnapshot:
        return MappingSnapshot([(labels, list(c), a[0]) for labels, c, a in self.series.values()])


class MappingSnapshot:
    """Numbers copied on the loop (an `exposition.Part`)."""

    def __init__(self, rows: list[tuple[tuple[str, str, str], list[int], float]]) -> None:
        self.rows = sorted(rows)

    def families(self) -> list[Metric]:
        counters = [CounterMetricFamily(name, doc, labels=_LABELS) for name, doc in COUNTERS]
        age_gauge = GaugeMetricFamily(AGE[0], AGE[1], labels=_LABELS)
        for labels, counts, age in self.rows:
            for fam, value in zip(counters, counts, strict=True):
                fam.add_metric(labels, value)
            age_gauge.add_metric(labels, age)
        return [*counters, age_gauge]

    def render(self) -> bytes:
        out = []
        for index, metric in enumerate(mapping_families()):
            name = metric.name + "_total" if metric.type == "counter" else metric.name
            lines = [f"# HELP {name} {metric.documentation}\n# TYPE {name} {metric.type}\n"]
            for (function, source, uuid), counts, age in self.rows:
                shown = number(counts[index]) if index < len(counts) else _go_float(age)
                labels = f'function="{escape(function)}",source="{escape(source)}",uuid="{escape(uuid)}"'
                lines.append(f"{name}{{{labels}}} {shown}\n")
            out.append("".join(lines))
        return "".join(out).encode()


def mapping_families() -> list[Metric]:
    """A fresh, empty family for each mapping metric (in exposition order)."""
    fams: list[Metric] = [CounterMetricFamily(name, doc, labels=_LABELS) for name, doc in COUNTERS]
    fams.append(GaugeMetricFamily(AGE[0], AGE[1], labels=_LABELS))
    return fams
