"""The SQLite event queue: durable puts, order, due times, in-flight exclusion, reload after a restart, drops."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.events.queue import QueuedEvent
from gateway.events.sqlite_queue import SqliteQueue


def _event(function: str = "f", n: int = 0, due: float = 0.0) -> QueuedEvent:
    return QueuedEvent(f"req-{function}-{n}", function, None, b'{"n": %d}' % n, 1000.0 + n, due or 1000.0 + n)


async def test_put_take_finish_and_reload(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    q = SqliteQueue(path)
    ready: list[str] = []
    q.on_ready = ready.append
    for n in range(5):
        await q.put(_event(n=n))
    assert ready == ["f"] * 5
    assert q.depths() == {"f": 5}
    taken = q.take("f", 2, now=2000.0)
    assert [e.request_id for e in taken] == ["req-f-0", "req-f-1"]  # oldest first
    assert [e.request_id for e in q.take("f", 10, now=1002.5)] == ["req-f-2"]  # only what is due
    q.finish(taken[0])
    taken[1].due, taken[1].attempts = 5000.0, 1
    q.reschedule(taken[1])
    assert q.next_due("f") == 1003.0  # req-f-3
    await q.close()

    again = SqliteQueue(path)  # what was in flight (req-f-2) is waiting again after a restart
    assert again.depths() == {"f": 4}
    events = again.take("f", 10, now=4000.0)
    assert [e.request_id for e in events] == ["req-f-2", "req-f-3", "req-f-4"]
    assert events[0].payload == b'{"n": 2}'
    (late,) = again.take("f", 10, now=6000.0)
    assert (late.request_id, late.attempts) == ("req-f-1", 1)
    await again.close()


async def test_payloads_beyond_the_budget_stay_on_disk(tmp_path: Path) -> None:
    q = SqliteQueue(tmp_path / "events.sqlite3", memory_budget=10)
    for n in range(3):
        await q.put(_event(n=n))
    held = [e.payload is not None for e in q.oldest("f", 10)]
    assert held == [True, False, False]
    assert [e.payload for e in q.take("f", 3, now=9999.0)] == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
    await q.close()


async def test_drop_forgets_waiting_and_in_flight_events(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    q = SqliteQueue(path)
    for n in range(3):
        await q.put(_event(n=n))
    await q.put(_event("other"))
    (running,) = q.take("f", 1, now=9999.0)
    assert q.drop("f") == 2
    q.reschedule(running)  # its function is gone: not put back
    assert q.depths() == {"other": 1}
    await q.close()
    assert SqliteQueue(path).depths() == {"other": 1}


async def test_claim_takes_waiting_events_out_of_turn(tmp_path: Path) -> None:
    q = SqliteQueue(tmp_path / "events.sqlite3")
    for n in range(4):
        await q.put(_event(n=n, due=time.time() + 3600))
    first, second = q.oldest("f", 2)
    assert [e.request_id for e in q.claim([second])] == ["req-f-1"] and second.payload == b'{"n": 1}'
    assert q.claim([second]) == []  # not waiting any more
    assert [e.request_id for e in q.oldest("f", 10)] == ["req-f-0", "req-f-2", "req-f-3"]
    assert q.take("f", 10, now=time.time() + 7200)[0] is first
    await q.close()


async def test_sizes_are_counted_for_the_byte_limit(tmp_path: Path) -> None:
    q = SqliteQueue(tmp_path / "events.sqlite3")
    for n in range(3):
        await q.put(_event(n=n))
    assert q.size() == 3 * len(b'{"n": 0}') and q.depth("f") == 3
    (event,) = q.take("f", 1, now=9999.0)
    q.finish(event)
    assert q.size() == 2 * len(b'{"n": 0}') and q.depth("f") == 2
    assert q.drop("f") == 2 and q.size() == 0
    await q.close()


async def test_a_writer_that_stops_fails_every_later_put(tmp_path: Path) -> None:
    q = SqliteQueue(tmp_path / "events.sqlite3")
    await q.put(_event())
    q._writer._fail(RuntimeError("disk gone"))  # what the thread does when it cannot go on
    assert q.broken is not None
    with pytest.raises(RuntimeError, match="disk gone"):
        await q.put(_event(n=2))
    await q.close()


async def test_a_failed_commit_fails_the_put(tmp_path: Path) -> None:
    q = SqliteQueue(tmp_path / "events.sqlite3")
    event = _event()
    await q.put(event)
    duplicate = _event(n=1)
    q._next_id = event.id  # the same primary key: the insert fails, the put must not pretend otherwise
    with pytest.raises(Exception, match="UNIQUE"):
        await q.put(duplicate)
    assert q.depths() == {"f": 1}
    await q.close()
