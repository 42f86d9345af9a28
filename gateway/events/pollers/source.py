"""The contract between the poller runtime and the sources (Kafka, RabbitMQ, SQS): design16.md, verbatim.

A copy in branch `sqs` until branch `esm` (which owns this file) lands; then theirs is taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(slots=True)
class Record:
    """One message of a source, as the function's event shows it."""

    item_id: str  # ReportBatchItemFailures itemIdentifier: SQS messageId, Kafka offset (str), MQ: messageId or tag
    event: dict[str, Any]  # the record in Lambda's event shape (e.g. an SQS record dict; a Kafka record dict)
    filter_view: dict[str, Any]  # what FilterCriteria patterns see: `event` with body/data/value decoded from JSON
    timestamp: float  # epoch seconds it entered the source (MaximumRecordAgeInSeconds, IteratorAge / lag)
    size: int  # bytes it adds to the payload (a batch is limited to 6 MB)
    group: str = ""  # ordering group: Kafka "<topic>-<partition>"; "" for sources without order


class SourceUnavailable(Exception):
    """The broker cannot be reached or refused us; str(exc) is the reason shown in StateTransitionReason /
    LastProcessingResult. The runner retries with back-off (1 s doubling to 60 s), never a hot loop."""


class Source(Protocol):
    kind: str  # "kafka" | "rabbitmq" | "sqs": metrics label

    async def open(self) -> None:
        """Connect / subscribe; raises SourceUnavailable."""

    async def fetch(self, max_records: int, max_wait: float) -> list[Record]:
        """Up to max_records, waiting at most max_wait seconds for the first (MaximumBatchingWindowInSeconds is the
        runner's job: it calls fetch until BatchSize/6 MB/window); raises SourceUnavailable."""

    def event(self, records: list[Record]) -> bytes:
        """Lambda's event JSON for this batch."""

    async def settle(self, succeeded: list[Record], failed: list[Record]) -> None:
        """After an attempt: `succeeded` may be committed/acked/deleted; `failed` must come back (Kafka: seek back
        to the first failed offset of each partition and stop committing past it; RabbitMQ: nack(requeue=True);
        SQS: leave them: visible again after the visibility timeout, or ChangeMessageVisibility 0 for a retry
        now)."""

    async def discard(self, records: list[Record]) -> None:
        """Retries exhausted and OnFailure delivered: commit/ack/delete."""

    async def close(self) -> None: ...
