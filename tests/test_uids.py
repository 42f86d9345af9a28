"""The uid allocator (isolation/uids.py) on its own: the host-wide sequence, and clearing a uid of every process.

Clearing needs root (it becomes the uid); so do these tests. Each uses a range of its own, far from the default.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from gateway.isolation import uids
from gateway.isolation.uids import UidRange
from tests.conftest import alive

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="clearing a uid needs root")
PR_SET_DUMPABLE = 4


@pytest.fixture
def uid_range(tmp_path: Path) -> UidRange:
    base = 2_100_000_000 + (os.getpid() % 10_000) * 100  # apart from the default and from parallel runs
    return UidRange(base, 5, str(tmp_path / "state"))


def _take_many(uid_range: UidRange, n: int) -> list[int]:
    return [uids.take(uid_range) for _ in range(n)]


def test_uids_come_in_sequence_shared_by_every_process_and_wrap(uid_range: UidRange) -> None:
    with ProcessPoolExecutor(4) as pool:  # four "gateways" on one host
        taken = [uid for batch in pool.map(_take_many, [uid_range] * 4, [10] * 4) for uid in batch]
    assert sorted(taken) == sorted(list(range(uid_range.base, uid_range.base + 5)) * 8)  # each 8 times: no doubles
    first = uids.take(UidRange(uid_range.base, uid_range.count, uid_range.state_dir))  # a "restarted gateway"
    assert first == uid_range.base  # continues the sequence (40 taken: the next is the first again)
    assert Path(uid_range.state_file).stat().st_mode & 0o777 == 0o600


def _leftover(uid: int, undumpable: bool = False) -> int:
    """A process of `uid` that outlives whoever started it, as a function's detached daemon would (own session)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            if undumpable:  # its /proc files then belong to root: the allocator must not rely on them
                ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
            time.sleep(600)
        finally:
            os._exit(0)
    # reap it when it dies (pytest is its parent): an unreaped zombie would still hold the uid
    threading.Thread(target=os.waitpid, args=(pid, 0), daemon=True).start()
    return pid


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_allocate_kills_every_process_of_the_uid_first(uid_range: UidRange, leftovers: list[int]) -> None:
    leftovers += [_leftover(uid_range.base), _leftover(uid_range.base, undumpable=True), _leftover(uid_range.base + 1)]
    time.sleep(0.2)
    assert uids.allocate(uid_range) == uid_range.base
    deadline = time.monotonic() + 2
    while any(alive(pid) for pid in leftovers[:2]) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(leftovers[0]) and not alive(leftovers[1])
    assert alive(leftovers[2])  # another uid's process is none of its business


def test_a_uid_a_zombie_holds_is_skipped(uid_range: UidRange) -> None:
    pid = os.fork()  # a zombie of uid base: dead, never reaped (until the end of this test)
    if pid == 0:
        os.setresuid(uid_range.base, uid_range.base, uid_range.base)
        os._exit(0)
    try:
        time.sleep(0.1)
        started = time.monotonic()
        assert not uids.clear(uid_range.base, timeout=0.2)
        assert time.monotonic() - started < 2
        assert uids.allocate(uid_range) == uid_range.base + 1  # never handed out while any process has it
    finally:
        os.waitpid(pid, 0)
    assert uids.clear(uid_range.base)


def test_recorded_uids_outside_the_range_are_ignored(uid_range: UidRange, tmp_path: Path) -> None:
    uids.record(str(tmp_path), 0)
    assert uids.recorded(str(tmp_path), uid_range) is None  # a forged record must not make the gateway kill root
    uids.record(str(tmp_path), uid_range.base + 4)
    assert uids.recorded(str(tmp_path), uid_range) == uid_range.base + 4
    assert uids.recorded(str(tmp_path), None) is None


def test_a_range_beyond_32_bits_is_refused() -> None:
    with pytest.raises(ValueError):
        UidRange(2**32 - 10, 20)
    with pytest.raises(ValueError):
        UidRange(1000, 20)


def test_the_gateways_scan_kills_every_process_of_a_recorded_uid(
    uid_range: UidRange, leftovers: list[int], tmp_path: Path
) -> None:
    leftovers += [_leftover(uid_range.base + 2), _leftover(uid_range.base + 2, undumpable=True)]
    leftovers.append(_leftover(uid_range.base + 3))
    time.sleep(0.2)
    uids.record(str(tmp_path), uid_range.base + 2)
    uids.activate(uid_range)
    try:
        assert uids.kill_recorded(str(tmp_path)) >= 2  # again if one was still dying at the next scan
    finally:
        uids.activate(None)
    deadline = time.monotonic() + 2
    while any(alive(pid) for pid in leftovers[:2]) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(leftovers[0]) and not alive(leftovers[1]) and alive(leftovers[2])
