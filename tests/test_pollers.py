"""The poller runtime with an in-memory source (tests/conftest.py FakeSource) and a scripted function: batching
window and size, filters, ReportBatchItemFailures, retries with back-off, bisect, record age, OnFailure, no hot loop,
an unreachable source; and the runner's lifecycle over a real mappings store (states, a missing source module,
deletion)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.events.pollers.poller import (
    Attempt,
    Hooks,
    Poller,
    failure_record,
    item_failures,
    retries_of,
    split_at_failures,
)
from gateway.events.pollers.runner import Runner
from gateway.events.pollers.source import Record
from gateway.observability.mapping_metrics import MappingMetrics
from gateway.settings import Settings
from gateway.store.mappings import DISABLED, ENABLED, KAFKA, SQS, Mapping, Mappings
from tests.conftest import FakeSource

Handler = Callable[[list[dict[str, Any]]], Attempt]


class Function:
    """A scripted function: `handler(records)` decides each attempt; every batch it saw is in `batches`."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.handler = handler or (lambda records: Attempt(True))
        self.batches: list[list[str]] = []
        self.times: list[float] = []

    async def __call__(self, mapping: Mapping, payload: bytes) -> Attempt:
        records = json.loads(payload)["Records"]
        self.batches.append([r["id"] for r in records])
        self.times.append(time.monotonic())
        return self.handler(records)


class Harness:
    def __init__(self, function: Function) -> None:
        self.function = function
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.statuses: list[tuple[str | None, str | None]] = []
        self.metrics = MappingMetrics()
        self.send_failures = 0

    async def send(self, destination: str, record: bytes) -> None:
        if self.send_failures:
            self.send_failures -= 1
            raise RuntimeError("the queue is down")
        self.sent.append((destination, json.loads(record)))

    async def status(self, mapping: Mapping, reason: str | None, result: str | None) -> None:
        self.statuses.append((reason, result))

    def hooks(self) -> Hooks:
        return Hooks(self.function, self.send, self.status, self.metrics, lambda m: "arn:f", 0.01, 0.05)


def _mapping(kind: str = SQS, **fields: Any) -> Mapping:
    return Mapping("u-1", "f", None, kind, batch_size=fields.pop("batch_size", 10), **fields)


async def _run_until(poller: Poller, source: FakeSource, done: Callable[[], bool], timeout: float = 5.0) -> None:
    task = asyncio.create_task(poller.run())
    deadline = time.monotonic() + timeout
    try:
        while not done():
            assert time.monotonic() < deadline, "timed out"
            assert not task.done(), task.exception()
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _errors(records: list[dict[str, Any]]) -> Attempt:
    return Attempt(True, "Unhandled", b'{"errorMessage": "no"}')


async def test_a_batch_is_gathered_for_the_window_and_capped_at_batch_size() -> None:
    source, function = FakeSource(), Function()
    harness = Harness(function)
    poller = Poller(_mapping(batch_size=3, batching_window=1), lambda: source, harness.hooks())
    source.add(1)

    async def later() -> None:
        await asyncio.sleep(0.2)
        source.add(2, 3, 4)

    adding = asyncio.create_task(later())
    await _run_until(poller, source, lambda: len(source.acked) == 4)
    await adding
    assert function.batches == [["0", "1", "2"], ["3"]]  # the window held the first batch open for the next ones
    assert harness.metrics.series["u-1"][1][:2] == [2, 4]


async def test_six_megabytes_end_a_batch() -> None:
    source, function = FakeSource(), Function()
    poller = Poller(_mapping(batch_size=10), lambda: source, Harness(function).hooks())
    source.add(1, 2, 3, size=3 * 1024 * 1024)
    await _run_until(poller, source, lambda: len(source.acked) == 3)
    assert function.batches == [["0", "1"], ["2"]]


async def test_records_no_filter_matches_are_settled_without_an_invocation() -> None:
    source, function = FakeSource(), Function()
    harness = Harness(function)
    mapping = _mapping(filters=('{"body": {"kind": ["order"]}}', '{"body": {"n": [{"numeric": [">", 5]}]}}'))
    poller = Poller(mapping, lambda: source, harness.hooks())
    source.add({"kind": "order"}, {"kind": "other"}, {"n": 9}, {"n": 1})
    await _run_until(poller, source, lambda: len(source.acked) == 4)
    assert function.batches == [["0", "2"]]
    assert harness.metrics.series["u-1"][1][3] == 2  # filtered


async def test_report_batch_item_failures_gives_back_only_the_failed_items_of_a_queue() -> None:
    source = FakeSource()
    failed_once: set[str] = set()

    def handler(records: list[dict[str, Any]]) -> Attempt:
        failures = [{"itemIdentifier": r["id"]} for r in records if r["id"] == "1" and "1" not in failed_once]
        failed_once.update(f["itemIdentifier"] for f in failures)
        return Attempt(True, None, json.dumps({"batchItemFailures": failures}).encode())

    function = Function(handler)
    mapping = _mapping(function_response_types=("ReportBatchItemFailures",))
    poller = Poller(mapping, lambda: source, Harness(function).hooks())
    source.add("a", "b", "c")
    await _run_until(poller, source, lambda: len(source.acked) == 3)
    assert function.batches == [["0", "1", "2"], ["1"]]


def test_item_failures_of_an_ordered_group_fail_from_the_first_on() -> None:
    records = [Record(str(i), {}, {}, 0.0, 1, "t-0" if i < 3 else "t-1") for i in range(5)]
    good, bad = split_at_failures(records, {"1"})
    assert [r.item_id for r in good] == ["0", "3", "4"] and [r.item_id for r in bad] == ["1", "2"]
    assert item_failures(b'{"batchItemFailures": []}', {"1"}) == set()
    assert item_failures(b"null", {"1"}) == set() and item_failures(b"", {"1"}) == set()
    assert item_failures(b'{"batchItemFailures": [{"itemIdentifier": "9"}]}', {"1"}) is None  # not in the batch
    assert item_failures(b'{"batchItemFailures": [{"nope": 1}]}', {"1"}) is None
    assert item_failures(b"[1]", {"1"}) is None and item_failures(b"not json", {"1"}) is None


async def test_a_failing_queue_batch_goes_back_with_back_off_never_a_hot_loop() -> None:
    source, function = FakeSource(), Function(_errors)
    harness = Harness(function)
    poller = Poller(_mapping(), lambda: source, harness.hooks())
    source.add("poison")
    await _run_until(poller, source, lambda: len(function.batches) >= 4)
    gaps = [b - a for a, b in zip(function.times, function.times[1:], strict=False)]
    assert all(gap >= 0.009 for gap in gaps), gaps  # 0.01, 0.02, 0.04 … capped at 0.05
    assert source.acked == [] and source.discarded == []
    assert any(result and result.startswith("PROBLEM: Function call failed") for _, result in harness.statuses)


async def test_stream_retries_then_on_failure_then_discard_and_goes_on() -> None:
    source = FakeSource()
    function = Function(lambda records: _errors(records) if any(r["id"] == "0" for r in records) else Attempt(True))
    harness = Harness(function)
    harness.send_failures = 2  # the destination is down twice: the records wait for it
    mapping = _mapping(KAFKA, maximum_retry_attempts=2, on_failure="arn:aws:sqs:us-east-1:123456789012:dlq")
    poller = Poller(mapping, lambda: source, harness.hooks())
    source.add("poison", group="t-0")
    await _run_until(poller, source, lambda: bool(source.discarded))
    assert function.batches == [["0"]] * 3  # the first attempt and two retries
    ((destination, record),) = harness.sent
    assert destination.endswith(":dlq") and record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3 and record["payload"][0]["id"] == "0"
    assert record["KafkaBatchInfo"]["recordsInfo"]["t-0"]["firstRecordOffset"] == "0"
    source.add("fine", group="t-0")
    await _run_until(poller, source, lambda: len(source.acked) == 1)
    assert harness.metrics.series["u-1"][1][4] == 1  # discarded


async def test_bisect_finds_the_poison_record_and_lets_the_others_through() -> None:
    source = FakeSource()
    function = Function(lambda records: _errors(records) if any(r["id"] == "2" for r in records) else Attempt(True))
    harness = Harness(function)
    mapping = _mapping(KAFKA, maximum_retry_attempts=3, bisect=True)
    poller = Poller(mapping, lambda: source, harness.hooks())
    source.add(*range(4), group="t-0")
    await _run_until(poller, source, lambda: len(source.acked) + len(source.discarded) == 4)
    assert [r.item_id for r in source.discarded] == ["2"]
    assert sorted(r.item_id for r in source.acked) == ["0", "1", "3"]
    assert function.batches[:3] == [["0", "1", "2", "3"], ["0", "1"], ["2", "3"]]


async def test_records_older_than_the_maximum_age_are_not_sent() -> None:
    source, function = FakeSource(), Function()
    harness = Harness(function)
    mapping = _mapping(KAFKA, maximum_record_age=60, on_failure="arn:aws:sqs:us-east-1:123456789012:dlq")
    poller = Poller(mapping, lambda: source, harness.hooks())
    source.add("old", group="t-0", timestamp=time.time() - 3600)
    source.add("new", group="t-0")
    await _run_until(poller, source, lambda: len(source.acked) + len(source.discarded) == 2)
    assert function.batches == [["1"]] and [r.item_id for r in source.discarded] == ["0"]
    assert harness.sent[0][1]["requestContext"]["condition"] == "RecordAgeExceeded"
    assert harness.metrics.series["u-1"][2][0] > 3000  # iterator age: the oldest record of the batch


async def test_an_unreachable_source_is_retried_with_back_off_and_shows_why() -> None:
    source, function = FakeSource(), Function()
    harness = Harness(function)
    source.unavailable = "Connection refused: 127.0.0.1:1"
    poller = Poller(_mapping(), lambda: source, harness.hooks())
    await _run_until(poller, source, lambda: source.calls.get("open", 0) >= 3)
    assert ("PROBLEM: Connection refused: 127.0.0.1:1",) * 2 in harness.statuses
    assert harness.metrics.series["u-1"][1][5] >= 3  # polling errors
    source.unavailable = None
    source.add("x")
    await _run_until(poller, source, lambda: len(source.acked) == 1)
    assert ("USER_INITIATED", None) in harness.statuses


async def test_an_idle_source_is_not_polled_in_a_hot_loop() -> None:
    class Instant(FakeSource):
        async def fetch(self, max_records: int, max_wait: float) -> list[Record]:
            self._count("fetch")
            return []  # a source that does not wait: the poller must

    source = Instant()
    poller = Poller(_mapping(), lambda: source, Harness(Function()).hooks())
    task = asyncio.create_task(poller.run())
    await asyncio.sleep(0.5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert source.calls["fetch"] <= 12


# -- the runner over a real store --------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Any:
    mappings = Mappings(tmp_path / "mappings.sqlite3")
    yield mappings
    mappings.close()


def _runner(store: Mappings, factories: dict[str, Any], function: Function) -> Runner:
    runner = Runner(
        Settings(),
        store,
        None,
        None,
        None,
        None,
        MappingMetrics(),
        factories,
        (0.01, 0.05),  # type: ignore[arg-type]
    )
    runner._hooks = dataclasses.replace(runner._hooks, invoke=function)
    return runner


async def _state(store: Mappings, uuid: str, state: str) -> Mapping:
    for _ in range(500):
        found = store.get(uuid)
        if found is not None and found.state == state:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"{uuid} never reached {state}: {store.get(uuid)}")


async def test_runner_follows_creation_disabling_and_deletion(store: Mappings) -> None:
    source, function = FakeSource(), Function()
    runner = _runner(store, {SQS: lambda m, s: source}, function)
    store.on_change.connect(runner.follow)
    runner.start()
    mapping = await asyncio.to_thread(store.put, _mapping())
    await _state(store, mapping.uuid, ENABLED)
    source.add("x")
    for _ in range(300):
        if source.acked:
            break
        await asyncio.sleep(0.01)
    assert [r.item_id for r in source.acked] == ["0"] and runner.running() == ["u-1"]
    # an Update that changes nothing the poller uses does not restart it; one that does, does
    await asyncio.to_thread(store.update, "u-1", lambda m: dataclasses.replace(m, state="Updating"))
    await _state(store, "u-1", ENABLED)
    assert source.opened == 1
    await asyncio.to_thread(store.update, "u-1", lambda m: dataclasses.replace(m, state="Updating", batch_size=2))
    await _state(store, "u-1", ENABLED)
    for _ in range(300):
        if source.opened == 2:
            break
        await asyncio.sleep(0.01)
    assert source.opened == 2
    await asyncio.to_thread(store.update, "u-1", lambda m: dataclasses.replace(m, enabled=False, state="Disabling"))
    await _state(store, "u-1", DISABLED)
    assert runner.running() == []
    await asyncio.to_thread(store.update, "u-1", lambda m: dataclasses.replace(m, enabled=True, state="Enabling"))
    await _state(store, "u-1", ENABLED)
    await asyncio.to_thread(store.delete, "u-1")
    await asyncio.sleep(0.05)
    assert runner.running() == []
    await runner.close()
    assert source.closed >= 2


async def test_a_missing_source_module_leaves_the_mapping_enabled_with_the_reason(store: Mappings) -> None:
    runner = _runner(store, {}, Function())
    store.on_change.connect(runner.follow)
    runner.start()
    await asyncio.to_thread(store.put, _mapping("nope"))
    found = await _state(store, "u-1", ENABLED)
    for _ in range(300):
        found = store.get("u-1")  # type: ignore[assignment]
        if found.state_transition_reason.startswith("PROBLEM"):
            break
        await asyncio.sleep(0.01)
    assert "cannot read nope sources" in found.state_transition_reason
    await runner.close()


async def test_maximum_concurrency_runs_that_many_pollers_each_with_its_own_source(store: Mappings) -> None:
    sources: list[FakeSource] = []
    shared = FakeSource()

    def make(mapping: Mapping, settings: Settings) -> FakeSource:
        sources.append(shared)  # one broker, a consumer per poller
        return shared

    inflight, peak = 0, 0

    async def slow(mapping: Mapping, payload: bytes) -> Attempt:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        await asyncio.sleep(0.1)
        inflight -= 1
        return Attempt(True)

    runner = _runner(store, {SQS: make}, Function())
    runner._hooks = dataclasses.replace(runner._hooks, invoke=slow)
    store.on_change.connect(runner.follow)
    runner.start()
    await asyncio.to_thread(store.put, _mapping(batch_size=1, maximum_concurrency=3))
    await _state(store, "u-1", ENABLED)
    shared.add(*range(9))
    for _ in range(500):
        if len(shared.acked) == 9:
            break
        await asyncio.sleep(0.01)
    await runner.close()
    assert len(sources) == 3 and len(shared.acked) == 9 and peak == 3


def test_no_retry_limit_with_a_destination_is_ten_and_a_large_record_goes_without_its_payload() -> None:
    dlq = "arn:aws:sqs:us-east-1:123456789012:dlq"
    assert retries_of(_mapping(KAFKA)) == -1
    assert retries_of(_mapping(KAFKA, on_failure=dlq)) == 10
    assert retries_of(_mapping(KAFKA, on_failure=dlq, maximum_retry_attempts=3)) == 3
    big = [Record(str(i), {"value": "x" * 100_000}, {}, 0.0, 100_000, "t-0") for i in range(3)]
    record = json.loads(failure_record(_mapping(KAFKA), "arn:f", big, 11, "RetryAttemptsExhausted"))
    assert "payload" not in record and record["KafkaBatchInfo"]["recordsInfo"]["t-0"]["lastRecordOffset"] == "2"
    assert record["KafkaBatchInfo"]["payloadSize"] == 300_000


class _AnyFunction:
    """A registry in which every function exists (at $LATEST)."""

    def resolve(self, name: str, qualifier: str | None, route: bool = False) -> Any:
        return types.SimpleNamespace(version="$LATEST")


async def test_a_batch_too_large_to_invoke_is_a_failed_attempt_not_a_retry_for_ever(store: Mappings) -> None:
    runner = Runner(
        Settings(),
        store,
        _AnyFunction(),
        None,
        None,
        None,
        MappingMetrics(),
        {},
        (0.01, 0.05),  # type: ignore[arg-type]
    )
    attempt = await runner._invoke(_mapping(), b"x" * (6 * 1024 * 1024 + 1))
    assert attempt.reached and attempt.function_error == "Unhandled"  # retries, OnFailure, a broker's DLQ apply
    assert json.loads(attempt.payload)["errorType"] == "RequestEntityTooLargeException"


async def test_a_poller_that_fails_unexpectedly_is_started_again(store: Mappings) -> None:
    runner = _runner(store, {}, Function())
    runs: list[int] = []

    class Flaky:
        mapping = _mapping()

        async def run(self) -> None:
            runs.append(1)
            if len(runs) == 1:
                raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "a header key a client could not decode")

    await asyncio.wait_for(runner._guarded(Flaky()), 5)  # type: ignore[arg-type]
    assert len(runs) == 2
