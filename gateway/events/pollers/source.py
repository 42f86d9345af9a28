"""The contract between the poller runtime (runner.py) and a broker (kafka.py, rabbitmq.py, sqs.py).

A `Source` is owned by one runner task of one mapping: its methods are never called concurrently with each other
(the runner awaits each before the next), all on the event loop thread. Construction is the module's
`source_for(mapping, settings) -> Source`; it does no I/O (`open` does).

Durable before acknowledged: a record is committed/acked/deleted only in `settle` (as succeeded) or `discard`
(retries exhausted and its OnFailure destination got it); a record passed as `failed` to `settle` must come back
from a later `fetch`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(slots=True)
class Record:
    """One message of a source, as the function's event shows it."""

    #: ReportBatchItemFailures itemIdentifier: SQS messageId, Kafka offset (str), MQ: messageId or delivery tag
    item_id: str
    event: dict[str, Any]  # the record in Lambda's event shape (e.g. an SQS record dict; a Kafka record dict)
    #: what FilterCriteria patterns see: `event` with body/data/value decoded from JSON where it is JSON
    filter_view: dict[str, Any]
    timestamp: float  # epoch seconds it entered the source (MaximumRecordAgeInSeconds, IteratorAge / lag)
    size: int  # bytes it adds to the payload (a batch is limited to 6 MB)
    group: str = ""  # ordering group: Kafka "<topic>-<partition>"; "" for sources without order


class SourceUnavailable(Exception):
    """The broker cannot be reached or refused us; str(exc) is the reason shown in StateTransitionReason /
    LastProcessingResult. The runner retries with back-off (1 s doubling to 60 s), never a hot loop."""


class Source(Protocol):
    """One mapping's connection to its broker (see the module docstring for the concurrency model)."""

    kind: str  # "kafka" | "rabbitmq" | "sqs": metrics label

    async def open(self) -> None:
        """Connect / subscribe; raises SourceUnavailable."""

    async def fetch(self, max_records: int, max_wait: float) -> list[Record]:
        """Up to max_records, waiting at most max_wait seconds for the first (MaximumBatchingWindowInSeconds is
        the runner's job: it calls fetch until BatchSize/6 MB/window); raises SourceUnavailable."""
        ...

    def event(self, records: list[Record]) -> bytes:
        """Lambda's event JSON for this batch."""
        ...

    async def settle(self, succeeded: list[Record], failed: list[Record]) -> None:
        """After an attempt: `succeeded` may be committed/acked/deleted; `failed` must come back (Kafka: seek back
        to the first failed offset of each partition and stop committing past it; RabbitMQ: nack(requeue=True);
        SQS: leave them: visible again after the visibility timeout, or ChangeMessageVisibility 0 for a retry
        now)."""

    async def discard(self, records: list[Record]) -> None:
        """Retries exhausted and OnFailure delivered: commit/ack/delete."""

    async def close(self) -> None:
        """Disconnect; the runner calls it once, also after a failed `open`."""
