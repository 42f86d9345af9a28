"""One mapping's poller: read batches from its `Source`, filter, invoke, settle; retries, bisect, OnFailure.

The loop: open the source (on `SourceUnavailable`: the reason is shown, back-off 1 s doubling to 60 s, then again);
gather a batch (`collect`: up to BatchSize records and 6 MB, for at most the batching window); records no filter
matches are settled as succeeded without an invocation; the others are invoked as one event (`Source.event`).

What follows an invocation:
- success (and no `batchItemFailures` with ReportBatchItemFailures): every record succeeded;
- ReportBatchItemFailures with failures: the records before the first failed one of each group succeeded, the rest
  failed (a malformed answer, or an identifier not in the batch, fails the whole batch, as on Lambda);
- an error (function error, timeout): the whole batch failed.

Failed records of a stream (Kafka, `Mapping.stream`) are retried here, after a back-off, until MaximumRetryAttempts
(-1: no limit; 10 when there is an OnFailure destination, as on Lambda) or MaximumRecordAgeInSeconds end them;
BisectBatchOnFunctionError splits a failed batch in two halves, each retried on its own; then they go to the
OnFailure destination (delivery retried until it succeeds: durable before acknowledged) and are `discard`ed.
Failed records of a queue (SQS, RabbitMQ) go back to the broker (`settle(..., failed)`) and the poller waits
(back-off) before its next batch, so a poison message never makes a hot loop. A throttled invocation (no room)
does not count as an attempt; it is retried after the back-off too.

Concurrency model: one asyncio task per poller (a mapping has MaximumConcurrency of them, 1 by default) runs
`Poller.run`, on the event loop; its `Source` is used only by that task. Status changes (StateTransitionReason,
LastProcessingResult) go through `Hooks.status`, which writes the store off the loop. Cancelling the task (the
mapping disabled, updated or deleted; the gateway stopping) leaves unsettled records to the broker (they come
back), never acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from gateway.events.filters import Filters
from gateway.events.pollers.source import Record, Source, SourceUnavailable
from gateway.events.records import timestamp
from gateway.store.mappings import OK, Mapping

log = logging.getLogger("gateway.pollers")

#: a batch's payload limit (Lambda's synchronous invocation payload)
MAX_BATCH_BYTES = 6 * 1024 * 1024
#: how long one fetch waits for a first record when there is no window (then the loop checks it is still wanted)
IDLE_WAIT = 1.0
#: an OnFailure record larger than this goes without its `payload` (SQS's and SNS's 256 KB message limit)
MAX_FAILURE_RECORD = 256 * 1024
#: the retries of a stream with MaximumRetryAttempts -1 (no limit) and an OnFailure destination, as on Lambda
RETRIES_WITH_DESTINATION = 10
#: the shortest pause between two fetches that returned nothing at once (a source must not make a hot loop)
MIN_IDLE_PAUSE = 0.05


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one invocation of a batch came to. `reached` False: it never ran (throttled, runtime unavailable)."""

    reached: bool
    function_error: str | None = None
    payload: bytes = b""
    executed_version: str = "$LATEST"
    request_id: str = ""
    reason: str = ""  # why it did not reach the function


class Counts(Protocol):
    """What the poller tells the metrics (gateway.observability.mapping_metrics)."""

    def batch(self, mapping: Mapping, records: int, failed: int) -> None: ...
    def filtered(self, mapping: Mapping, records: int) -> None: ...
    def lag(self, mapping: Mapping, seconds: float) -> None: ...
    def polling_error(self, mapping: Mapping) -> None: ...
    def discarded(self, mapping: Mapping, records: int) -> None: ...
    def forget(self, uuid: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Hooks:
    """What a poller needs from the gateway, given by the runner."""

    #: invoke the mapping's function synchronously with this payload
    invoke: Callable[[Mapping, bytes], Awaitable[Attempt]]
    #: send an OnFailure record (JSON bytes) to a destination ARN; raises on failure
    send: Callable[[str, bytes], Awaitable[None]]
    #: show (reason, last processing result) on the mapping; None leaves one unchanged
    status: Callable[[Mapping, str | None, str | None], Awaitable[None]]
    counts: Counts
    #: the function's ARN as the mapping names it (for the OnFailure record)
    function_arn: Callable[[Mapping], str]
    #: the first back-off step and its ceiling, in seconds (tests make them small)
    backoff_base: float = 1.0
    backoff_max: float = 60.0


class Backoff:
    """base, 2·base, 4·base … capped; `reset` after a success."""

    def __init__(self, base: float, ceiling: float) -> None:
        self.base, self.ceiling, self.failures = base, ceiling, 0

    def next(self) -> float:
        self.failures += 1
        return float(min(self.base * 2 ** min(self.failures - 1, 30), self.ceiling))

    def reset(self) -> None:
        self.failures = 0


class Poller:
    """One enabled mapping's loop (see the module docstring)."""

    def __init__(self, mapping: Mapping, make_source: Callable[[], Source], hooks: Hooks) -> None:
        self.mapping = mapping
        self._make_source = make_source
        self._hooks = hooks
        self._filters = Filters.compile(mapping.filters)
        self._backoff = Backoff(hooks.backoff_base, hooks.backoff_max)
        #: records fetched past a batch's 6 MB: they open the next batch
        self._carry: list[Record] = []
        self._result = mapping.last_processing_result
        #: invocations of the current stream batch (the OnFailure record's approximateInvokeCount)
        self.attempts = 0

    async def run(self) -> None:
        """Until cancelled: open, poll; an unreachable source is retried with back-off, the reason shown."""
        while True:
            source: Source | None = None
            try:
                source = self._make_source()
                await source.open()
                await self._hooks.status(self.mapping, "USER_INITIATED", None)
                # the back-off is reset by a batch that succeeds, not by a connection: a broker that accepts
                # connections and then fails every fetch (an ACL, a corrupt record) is not reconnected every second
                while True:
                    await self.poll_once(source)
            except SourceUnavailable as exc:
                self._hooks.counts.polling_error(self.mapping)
                reason = f"PROBLEM: {exc}"
                log.warning("event source mapping %s: %s", self.mapping.uuid, exc)
                self._result = reason
                await self._hooks.status(self.mapping, reason, reason)
                self._carry = []  # the broker gives them again (they were not acknowledged)
                await asyncio.sleep(self._backoff.next())
            finally:
                if source is not None:
                    with contextlib.suppress(Exception):
                        await source.close()

    async def poll_once(self, source: Source) -> None:
        """One batch: gather, filter, invoke, settle (or wait when there was nothing)."""
        started = time.monotonic()
        batch = await self.collect(source)
        if not batch:
            if time.monotonic() - started < MIN_IDLE_PAUSE:
                await asyncio.sleep(MIN_IDLE_PAUSE)
            return
        now = time.time()
        self._hooks.counts.lag(self.mapping, max(0.0, now - min(r.timestamp for r in batch)))
        passed: list[Record] = []
        dropped: list[Record] = []
        for record in batch:  # each pattern once per record
            (passed if self._filters.match(record.filter_view) else dropped).append(record)
        if dropped:
            self._hooks.counts.filtered(self.mapping, len(dropped))
        if not passed:
            await source.settle(dropped, [])
            return
        if self.mapping.stream:
            self.attempts = 0
            ok, discarded = await self._until_done(source, passed, 0)
            if discarded:
                await self._fail_over(discarded)
            await source.settle(dropped + ok, [])
            if discarded:
                await source.discard(discarded)
                self._hooks.counts.discarded(self.mapping, len(discarded))
            await self._processed(len(passed), len(discarded), None)
            return
        good, bad, problem = await self._once(source, passed)
        await source.settle(dropped + good, bad)
        await self._processed(len(passed), len(bad), problem)
        if bad:
            await asyncio.sleep(self._backoff.next())
        else:
            self._backoff.reset()

    async def collect(self, source: Source) -> list[Record]:
        """Up to BatchSize records and 6 MB, gathered for at most the batching window from the first record; []
        when nothing came within IDLE_WAIT (the caller loops)."""
        count, window = self.mapping.batch_size, self.mapping.window
        records: list[Record] = []
        size = 0
        pending, self._carry = self._carry, []
        deadline = time.monotonic() + window
        while True:
            while pending and len(records) < count:
                if records and size + pending[0].size > MAX_BATCH_BYTES:
                    self._carry = pending
                    return records
                record = pending.pop(0)
                records.append(record)
                size += record.size
            if pending or len(records) >= count:
                self._carry = pending
                return records
            if not records:
                pending = await source.fetch(count, IDLE_WAIT)
                if not pending:
                    return []
                deadline = time.monotonic() + window  # the window runs from the first record
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return records
            pending = await source.fetch(count - len(records), remaining)
            if not pending:
                return records

    async def _processed(self, records: int, failed: int, problem: str | None) -> None:
        self._hooks.counts.batch(self.mapping, records, failed)
        await self._show(problem)

    async def _show(self, problem: str | None) -> None:
        """LastProcessingResult: OK or the problem (written only when it changes)."""
        result = problem if problem else OK
        if result != self._result:
            self._result = result
            await self._hooks.status(self.mapping, None, result)

    # -- one attempt ------------------------------------------------------------------------------------------

    async def _invoke(self, source: Source, records: list[Record]) -> Attempt:
        """Invoke until it reaches the function (a throttle is retried after a back-off, not counted)."""
        payload = source.event(records)
        while True:
            attempt = await self._hooks.invoke(self.mapping, payload)
            if attempt.reached:
                return attempt
            log.info("event source mapping %s: invocation did not run: %s", self.mapping.uuid, attempt.reason)
            await self._show(f"PROBLEM: the function could not be invoked: {attempt.reason}")
            await asyncio.sleep(self._backoff.next())

    async def _once(self, source: Source, records: list[Record]) -> tuple[list[Record], list[Record], str | None]:
        """(succeeded, failed, problem) of one attempt."""
        attempt = await self._invoke(source, records)
        if attempt.function_error is not None:
            return [], records, f"PROBLEM: Function call failed ({attempt.function_error})"
        if not self.mapping.reports_item_failures:
            return records, [], None
        failed_ids = item_failures(attempt.payload, {r.item_id for r in records})
        if failed_ids is None:
            return [], records, "PROBLEM: the function's batchItemFailures could not be read"
        good, bad = split_at_failures(records, failed_ids)
        return good, bad, ("PROBLEM: some records failed" if bad else None)

    async def _until_done(self, source: Source, records: list[Record], tried: int) -> tuple[list[Record], list[Record]]:
        """A stream's batch until each record succeeded or was given up: (succeeded, discarded)."""
        ok: list[Record] = []
        discarded: list[Record] = []
        m = self.mapping
        while records:
            if m.maximum_record_age >= 0:  # too old to be sent, before the first attempt too
                now = time.time()
                discarded += [r for r in records if now - r.timestamp > m.maximum_record_age]
                records = [r for r in records if now - r.timestamp <= m.maximum_record_age]
                if not records:
                    break
            good, bad, problem = await self._once(source, records)
            self.attempts += 1
            ok += good
            if not bad:
                self._backoff.reset()
                break
            tried += 1
            await self._show(problem)
            if 0 <= retries_of(m) < tried:
                discarded += bad
                break
            await asyncio.sleep(self._backoff.next())
            if m.bisect and len(bad) > 1:
                middle = len(bad) // 2
                for half in (bad[:middle], bad[middle:]):
                    half_ok, half_gone = await self._until_done(source, half, tried)
                    ok += half_ok
                    discarded += half_gone
                break
            records = bad
        return ok, discarded

    async def _fail_over(self, discarded: list[Record]) -> None:
        """The OnFailure record for `discarded`, delivered before they are let go (retried until it is)."""
        destination = self.mapping.on_failure
        if not destination:
            log.warning("event source mapping %s: %d records discarded", self.mapping.uuid, len(discarded))
            return
        age, now = self.mapping.maximum_record_age, time.time()
        aged = age >= 0 and all(now - r.timestamp > age for r in discarded)
        condition = "RecordAgeExceeded" if aged else "RetryAttemptsExhausted"
        arn = self._hooks.function_arn(self.mapping)
        record = failure_record(self.mapping, arn, discarded, self.attempts, condition)
        backoff = Backoff(self._hooks.backoff_base, self._hooks.backoff_max)
        while True:
            try:
                await self._hooks.send(destination, record)
                return
            except Exception as exc:
                log.warning("event source mapping %s: OnFailure %s: %s", self.mapping.uuid, destination, exc)
                await asyncio.sleep(backoff.next())


def retries_of(mapping: Mapping) -> int:
    """MaximumRetryAttempts in effect: -1 (no limit) becomes 10 when there is an OnFailure destination."""
    if mapping.maximum_retry_attempts < 0 and mapping.on_failure:
        return RETRIES_WITH_DESTINATION
    return mapping.maximum_retry_attempts


def item_failures(payload: bytes, ids: set[str]) -> set[str] | None:
    """The identifiers a ReportBatchItemFailures answer names; empty for success (null, {}, an empty list); None
    when the answer is malformed or names an identifier that is not in the batch (Lambda fails the batch)."""
    try:
        answer: Any = orjson.loads(payload) if payload else None
    except orjson.JSONDecodeError:
        return None
    if answer is None or (isinstance(answer, dict) and not answer.get("batchItemFailures")):
        return set() if answer is None or isinstance(answer, dict) else None
    if not isinstance(answer, dict) or not isinstance(answer["batchItemFailures"], list):
        return None
    failed: set[str] = set()
    for item in answer["batchItemFailures"]:
        ident = item.get("itemIdentifier") if isinstance(item, dict) else None
        if ident is None or str(ident) not in ids:
            return None
        failed.add(str(ident))
    return failed


def split_at_failures(records: list[Record], failed_ids: set[str]) -> tuple[list[Record], list[Record]]:
    """(succeeded, failed): in each ordering group, the records from the first failed one on failed; records of
    the unordered group "" fail one by one."""
    first_failed: dict[str, int] = {}
    for index, record in enumerate(records):
        if record.item_id in failed_ids and record.group not in first_failed:
            first_failed[record.group] = index
    good: list[Record] = []
    bad: list[Record] = []
    for index, record in enumerate(records):
        if record.group == "":
            failing = record.item_id in failed_ids
        else:
            failing = index >= first_failed.get(record.group, len(records))
        (bad if failing else good).append(record)
    return good, bad


def failure_record(
    mapping: Mapping, function_arn: str, discarded: list[Record], attempts: int, condition: str
) -> bytes:
    """Lambda's OnFailure record of a stream mapping's discarded records (`KafkaBatchInfo`: per topic-partition the
    first and last offset and time). `payload`, the records as the function's event showed them, is added while the
    record stays within MAX_FAILURE_RECORD (SQS's and SNS's message limit); Lambda puts it only in S3 records."""
    groups: dict[str, list[Record]] = {}
    for record in discarded:
        groups.setdefault(record.group, []).append(record)
    info: dict[str, Any] = {
        "batchSize": len(discarded),
        "bootstrapServers": ",".join(mapping.self_managed.get("KAFKA_BOOTSTRAP_SERVERS", ())),
        "payloadSize": sum(r.size for r in discarded),
        "recordsInfo": {
            group: {
                "firstRecordOffset": records[0].item_id,
                "lastRecordOffset": records[-1].item_id,
                "firstRecordTimestamp": timestamp(records[0].timestamp),
                "lastRecordTimestamp": timestamp(records[-1].timestamp),
            }
            for group, records in groups.items()
        },
    }
    document: dict[str, Any] = {
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": attempts,
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": timestamp(time.time()),
        "KafkaBatchInfo": info,
    }
    with_payload = orjson.dumps({**document, "payload": [r.event for r in discarded]})
    return with_payload if len(with_payload) <= MAX_FAILURE_RECORD else orjson.dumps(document)
