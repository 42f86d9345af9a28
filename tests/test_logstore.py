"""LogStore: append, flush, rotation, retention, `since`, following."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from gateway.observability.logstore import LogStore, stream_file_name


def _log(request_id: str, text: str = "hello") -> bytes:
    return f"START RequestId: {request_id} Version: $LATEST\n{text}\nEND RequestId: {request_id}\n".encode()


async def _read(store: LogStore, function: str, since: float | None = None) -> bytes:
    return b"".join([chunk async for chunk in store.read(function, since)])


def test_stream_file_name_is_filesystem_safe() -> None:
    name = stream_file_name("2026/11/23/[$LATEST]0123456789abcdef0123456789abcdef")
    assert name == "2026-11-23-[LATEST]0123456789abcdef0123456789abcdef.log"
    assert "/" not in stream_file_name("2026/11/23/[7]ab")


def test_unsafe_function_names_are_refused(tmp_path: Path) -> None:
    store = LogStore(tmp_path, 1000, 2)
    for bad in ("..", ".", "a/b", ""):
        with pytest.raises(ValueError):
            store.append(bad, "$LATEST", b"x\n")
        assert not store.known(bad)


async def test_append_buffers_then_flushes_on_timer(tmp_path: Path) -> None:
    store = LogStore(tmp_path, 1 << 20, 2, flush_interval=0.05)
    store.append("fn", "$LATEST", _log("r1"))
    assert not (tmp_path / "fn").exists()  # buffered: the stream's file comes with its first write
    await asyncio.sleep(0.15)
    (path,) = (tmp_path / "fn").iterdir()
    stored = path.read_bytes().splitlines()
    assert len(stored) == 3
    stamp, _, line = stored[0].partition(b" ")
    assert abs(int(stamp) / 1000 - time.time()) < 5
    assert line == b"START RequestId: r1 Version: $LATEST"
    assert await _read(store, "fn") == _log("r1")
    store.close()


async def test_versions_get_their_own_streams_and_read_merges_by_time(tmp_path: Path) -> None:
    store = LogStore(tmp_path, 1 << 20, 2)
    store.append("fn", "$LATEST", b"a\n", now=1000.0)
    store.append("fn", "1", b"b\n", now=1001.0)
    store.append("fn", "$LATEST", b"c\n", now=1002.0)
    store.flush()
    names = sorted(p.name for p in (tmp_path / "fn").iterdir())
    assert [n.split("]")[0].split("[")[1] for n in names] == ["1", "LATEST"]
    assert names[0].startswith("1970-01-01-")
    assert await _read(store, "fn") == b"a\nb\nc\n"
    store.close()


async def test_since_filters_by_record_time(tmp_path: Path) -> None:
    store = LogStore(tmp_path, 1 << 20, 2)
    store.append("fn", "$LATEST", _log("old"), now=1000.0)
    store.append("fn", "$LATEST", _log("new"), now=2000.0)
    assert await _read(store, "fn", since=1500.0) == _log("new")
    assert await _read(store, "fn", since=2000.0) == _log("new")
    assert await _read(store, "fn", since=2000.001) == b""
    assert await _read(store, "fn") == _log("old") + _log("new")
    store.close()


async def test_rotation_keeps_at_most_retention_closed_streams(tmp_path: Path) -> None:
    store = LogStore(tmp_path, 200, 2)
    for i in range(20):
        store.append("fn", "$LATEST", _log(f"r{i:02d}"), now=1000.0 + i)
        store.flush()
    files = list((tmp_path / "fn").iterdir())
    assert 1 <= len(files) <= 3  # two rotated ones and at most one open
    text = await _read(store, "fn")
    assert b"r19" in text and b"r00" not in text  # the newest kept, the oldest deleted
    store.close()
    store2 = LogStore(tmp_path, 200, 2)  # closed streams from an earlier run count towards retention
    store2.append("fn", "$LATEST", b"x" * 300 + b"\n")
    store2.flush()
    assert len(list((tmp_path / "fn").iterdir())) <= 2
    store2.close()


async def test_a_new_day_starts_a_new_stream(tmp_path: Path) -> None:
    store = LogStore(tmp_path, 1 << 20, 5)
    store.append("fn", "$LATEST", b"day one\n", now=86400.0 * 3 + 10)
    store.append("fn", "$LATEST", b"day two\n", now=86400.0 * 4 + 10)
    store.flush()
    assert len(list((tmp_path / "fn").iterdir())) == 2
    assert await _read(store, "fn") == b"day one\nday two\n"
    store.close()


async def test_follow_gets_history_then_new_lines_once(tmp_path: Path) -> None:
    store = LogStore(tmp_path, 1 << 20, 2, flush_interval=0.02)
    store.append("fn", "$LATEST", b"before\n")
    got: list[bytes] = []

    async def follow() -> None:
        async for chunk in store.read("fn", follow=True):
            got.append(chunk)

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.1)
    assert got == [b"before\n"]
    store.append("fn", "$LATEST", b"after\n")
    store.append("other", "$LATEST", b"not mine\n")
    await asyncio.sleep(0.1)
    assert b"".join(got) == b"before\nafter\n"
    store.stop_following()
    await asyncio.wait_for(task, 1)
    store.close()


async def test_follow_ends_when_the_client_is_gone(tmp_path: Path) -> None:
    store = LogStore(tmp_path, 1 << 20, 2)
    connected = True
    reader = store.read("fn", follow=True, alive=lambda: connected, alive_interval=0.02)
    task = asyncio.create_task(reader.__anext__())
    await asyncio.sleep(0.05)
    assert not task.done()
    connected = False
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(task, 1)
    store.close()


async def test_idle_files_are_closed_and_the_stream_goes_on_in_the_same_file(tmp_path: Path) -> None:
    store = LogStore(tmp_path, 1 << 20, 2, flush_interval=0.01, idle_close=0.2)
    store.append("fn", "$LATEST", _log("r1"))
    store.append("fn", "1", _log("r2"))
    store.flush()
    assert store.open_files() == 2
    await asyncio.sleep(0.5)  # the store's own timer closes them
    assert store.open_files() == 0
    store.append("fn", "$LATEST", _log("r3"))
    store.flush()
    assert store.open_files() == 1
    assert len(list((tmp_path / "fn").iterdir())) == 2  # reopened in append mode, not a new stream
    out = await _read(store, "fn")
    assert out.count(b"START") == 3
    store.close()


async def test_forget_ends_the_streams_of_a_deleted_function_or_version(tmp_path: Path) -> None:
    store = LogStore(tmp_path, 1 << 20, 2)
    for version in ("$LATEST", "1", "2"):
        store.append("fn", version, _log(version))
    store.append("other", "$LATEST", _log("o"))
    store.flush()
    assert store.open_files() == 4
    store.forget("fn", "1")
    assert store.open_files() == 3
    store.forget("fn")
    assert store.open_files() == 1
    assert (await _read(store, "fn")).count(b"START") == 3  # the files stay, as CloudWatch keeps them
    store.close()
    assert store.open_files() == 0
