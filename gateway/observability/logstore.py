"""Function logs on disk: one directory per function, log streams with size-based rotation and retention.

Layout: `<root>/<function>/<YYYY-MM-DD>-[<version>]<32 hex>.log`, the filesystem-safe form of Lambda's stream
name `YYYY/MM/DD/[<version>]<32 hex>` (`$LATEST` is written `LATEST`). Each stored line is
`<epoch milliseconds> <log line>`: every line of one invocation carries the time the invocation ended, which
is what `since` filters on. A (function, version) has one open stream; it is closed and a new one started
when it passes `max_bytes` or the UTC day changes. At most `retention_files` closed streams are kept per
function, oldest deleted first.

Open files stay bounded whatever the number of functions: a stream's file is closed once nothing was written to it
for `idle_close` seconds (it is opened again, in append mode, by its next write: the stream goes on), and a stream
ends, its file closed, when its function or version is deleted (`forget`). Deleted functions' files stay on disk,
as CloudWatch keeps a deleted function's logs.

Concurrency: everything runs on the event loop. `record()` (an Invoker observer) only appends to an
in-memory buffer; a timer flushes the buffers every `flush_interval` seconds (or at once past
`FLUSH_BYTES`) with plain `os.write` calls of a few KB to the page cache, and hands the flushed lines to
followers. Reading history (`read()`) runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.store.records import FunctionConfig

if TYPE_CHECKING:
    from gateway.execution.invoker import Outcome

log = logging.getLogger("gateway.logstore")

#: flush at once when this much is buffered, without waiting for the timer
FLUSH_BYTES = 64 * 1024
#: seconds without a write after which a stream's file is closed (reopened by its next write)
IDLE_CLOSE = 30.0
#: lines a follower may fall behind by before it is dropped (its stream ends)
FOLLOW_BACKLOG = 10_000
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_TS_WIDTH = 13  # epoch milliseconds until the year 2286


def stream_file_name(stream: str) -> str:
    """`2026/11/23/[$LATEST]ab12…` -> `2026-11-23-[LATEST]ab12….log` (no `/`, no `$`)."""
    return stream.replace("/", "-").replace("$", "") + ".log"


def _function_dir_name(name: str) -> str:
    """The directory name of a function's logs; ValueError for a name that is not a plain file name."""
    if not _SAFE_NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"not a function name: {name!r}")
    return name


@dataclass(slots=True)
class _Stream:
    """One open log stream: an append-only file and what is buffered for it.

    The file is created by the first write (`flush`), not when the stream starts: a function's first invocation
    does no file-system work on the request path.
    """

    name: str
    path: Path
    day: int  # days since the epoch (UTC) the stream was started on
    fd: int  # -1 until the first write, and while closed for being idle
    size: int
    buffer: bytearray = field(default_factory=bytearray)
    written_at: float = 0.0  # time.monotonic() of the last write

    def close_file(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def write(self, data: bytes, function: str) -> None:
        if self.fd < 0:
            try:
                self.path.parent.mkdir(exist_ok=True)
                self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            except OSError as exc:  # a full disk loses log lines, never invocations
                log.warning("cannot write the log of %s: %s", function, exc)
                return
        self.written_at = time.monotonic()
        _write(self.fd, data, function)


class _Follower:
    """A reader waiting for new lines of one function: a queue of flushed chunks; None ends it."""

    __slots__ = ("overflowed", "queue")

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.overflowed = False

    def push(self, chunk: bytes | None) -> None:
        if self.overflowed:
            return
        if chunk is not None and self.queue.qsize() >= FOLLOW_BACKLOG:
            self.overflowed = True  # too slow: end its stream rather than buffer without bound
            chunk = None
        self.queue.put_nowait(chunk)


class LogStore:
    """Stores each invocation's log (START … REPORT) per function; reads and follows it.

    `record` is an `Invoker` observer: it must be fast and never raise. `close()` flushes and closes every
    stream and ends every follower. `forget()` ends the streams of a deleted function or version. Files idle for
    `idle_close` seconds are closed by a timer the store arms while it has open files.
    """

    def __init__(
        self,
        root: Path,
        max_bytes_per_stream: int,
        retention_files: int,
        flush_interval: float = 0.1,
        idle_close: float = IDLE_CLOSE,
    ) -> None:
        if max_bytes_per_stream < 1 or retention_files < 0:
            raise ValueError("max bytes must be positive and retention files not negative")
        self.root = root
        self.max_bytes = max_bytes_per_stream
        self.retention_files = retention_files
        self.flush_interval = flush_interval
        self.idle_close = idle_close
        self._idle_timer: asyncio.TimerHandle | None = None
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._buffered = 0
        self._timer: asyncio.TimerHandle | None = None
        self._followers: dict[str, set[_Follower]] = {}
        self._following = True
        self._closed = False
        root.mkdir(parents=True, exist_ok=True)

    # -- writing -----------------------------------------------------------------------------------

    def record(self, config: FunctionConfig, outcome: Outcome) -> None:
        """Invoker observer: buffer the invocation's log for its function, stamped with the time now."""
        if outcome.log and not self._closed:
            try:
                self.append(config.name, config.version, outcome.log)
            except Exception:  # an observer must not raise: a full disk loses logs, not invocations
                log.exception("cannot store the log of %s", config.name)

    def append(self, function: str, version: str, text: bytes, now: float | None = None) -> None:
        """Buffer `text` (one or more lines) for `function`'s current stream of `version`."""
        now = time.time() if now is None else now
        key = (function, version)
        stream = self._streams.get(key)
        day = int(now // 86400)
        if stream is None or stream.day != day:
            if stream is not None:
                self._close_stream(key, stream)
            stream = self._open_stream(function, version, now, day)
        prefix = b"%013d " % int(now * 1000)
        if text.endswith(b"\n"):
            text = text[:-1]
        stream.buffer += prefix + text.replace(b"\n", b"\n" + prefix) + b"\n"
        if stream.size + len(stream.buffer) >= self.max_bytes:
            self._close_stream(key, stream)  # writes its buffer: a stream ends at most one record past the limit
            return
        self._dirty.add(key)
        self._buffered += len(text)
        if self._buffered >= FLUSH_BYTES:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # used outside a loop (tests, tools): write through
                self.flush()
            else:
                self._timer = loop.call_later(self.flush_interval, self.flush)

    def flush(self) -> None:
        """Write every buffered line, hand it to followers, rotate streams that grew past the limit."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        dirty, self._dirty = self._dirty, set()
        self._buffered = 0
        for key in dirty:
            stream = self._streams.get(key)
            if stream is None or not stream.buffer:
                continue
            data = bytes(stream.buffer)
            stream.buffer.clear()
            stream.write(data, key[0])
            stream.size += len(data)
            for follower in self._followers.get(key[0], ()):
                follower.push(data)
            if stream.size >= self.max_bytes:
                self._close_stream(key, stream)
        self._arm_idle_timer()

    def open_files(self) -> int:
        """How many stream files are open now."""
        return sum(1 for s in self._streams.values() if s.fd >= 0)

    def close_idle(self, now: float | None = None) -> int:
        """Close the files of streams not written for `idle_close` seconds; return how many were closed."""
        self._idle_timer = None
        now = time.monotonic() if now is None else now
        closed = 0
        for stream in self._streams.values():
            if stream.fd >= 0 and not stream.buffer and now - stream.written_at >= self.idle_close:
                stream.close_file()
                closed += 1
        self._arm_idle_timer()
        return closed

    def _arm_idle_timer(self) -> None:
        if self._idle_timer is not None or self._closed or not any(s.fd >= 0 for s in self._streams.values()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # used outside a loop (tests, tools): close_idle() is called by hand
            return
        self._idle_timer = loop.call_later(self.idle_close, self.close_idle)

    def forget(self, function: str, version: str | None = None) -> None:
        """End the streams of a deleted function (`version` None) or of one deleted version: flushed, closed.

        Its stored files stay (and keep counting against retention). An update of `$LATEST` keeps its stream.
        """
        for key, stream in list(self._streams.items()):
            if key[0] == function and (version is None or key[1] == version):
                self._dirty.discard(key)
                self._close_stream(key, stream, enforce=False)

    def stop_following(self) -> None:
        """End every follower now and refuse new ones (the gateway is stopping); recording goes on."""
        self.flush()
        self._following = False
        for followers in self._followers.values():
            for follower in followers:
                follower.push(None)
        self._followers.clear()

    def close(self) -> None:
        """Flush, close every stream, end every follower; later records are dropped."""
        self.stop_following()
        self._closed = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        for key, stream in list(self._streams.items()):
            self._close_stream(key, stream, enforce=False)

    def _open_stream(self, function: str, version: str, now: float, day: int) -> _Stream:
        directory = self.root / _function_dir_name(function)
        name = time.strftime("%Y/%m/%d", time.gmtime(now)) + f"/[{version}]{uuid.uuid4().hex}"
        stream = _Stream(name, directory / stream_file_name(name), day, -1, 0)
        self._streams[(function, version)] = stream
        return stream

    def _close_stream(self, key: tuple[str, str], stream: _Stream, enforce: bool = True) -> None:
        """Flush and close one stream; then keep at most `retention_files` closed streams of its function."""
        if stream.buffer:
            stream.write(bytes(stream.buffer), key[0])
            for follower in self._followers.get(key[0], ()):
                follower.push(bytes(stream.buffer))
            stream.buffer.clear()
        stream.close_file()
        del self._streams[key]
        if enforce:
            self._enforce_retention(key[0])

    def _enforce_retention(self, function: str) -> None:
        directory = self.root / function
        open_paths = {s.path for (f, _), s in self._streams.items() if f == function}
        try:
            closed = [p for p in directory.iterdir() if p.suffix == ".log" and p not in open_paths]
        except FileNotFoundError:
            return
        closed.sort(key=_mtime)
        for path in closed[: max(len(closed) - self.retention_files, 0)]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    # -- reading -----------------------------------------------------------------------------------

    def known(self, function: str) -> bool:
        """Whether any log of `function` was ever stored (and kept)."""
        try:
            return (self.root / _function_dir_name(function)).is_dir()
        except ValueError:
            return False

    def history(
        self, function: str, since: float | None = None, limits: dict[Path, int] | None = None
    ) -> Iterator[bytes]:
        """Stored lines (without their time stamps) of `function` at or after `since` (epoch seconds), oldest first.

        Blocking file I/O: run it in a thread. `limits` caps how many bytes of each file are read (a snapshot
        taken on the loop, so that a follower does not see lines twice); files not in it are skipped.
        """
        since_ms = -1 if since is None else int(since * 1000)
        try:
            directory = self.root / _function_dir_name(function)
            paths = [p for p in directory.iterdir() if p.suffix == ".log"]
        except (ValueError, FileNotFoundError):
            return
        if limits is not None:
            paths = [p for p in paths if p in limits]
        paths.sort(key=_mtime)
        sources = [_lines(p, since_ms, None if limits is None else limits[p]) for p in paths]
        for _, line in heapq.merge(*sources, key=lambda item: item[0]):
            yield line

    def _snapshot(self, function: str) -> dict[Path, int]:
        """Sizes of `function`'s stream files now: what history() may read without overlapping followers."""
        sizes: dict[Path, int] = {}
        with contextlib.suppress(ValueError, FileNotFoundError):
            for entry in os.scandir(self.root / _function_dir_name(function)):
                if entry.name.endswith(".log"):
                    with contextlib.suppress(FileNotFoundError):
                        sizes[Path(entry.path)] = entry.stat().st_size
        return sizes

    async def read(
        self,
        function: str,
        since: float | None = None,
        follow: bool = False,
        alive: Callable[[], bool] | None = None,
        alive_interval: float = 1.0,
    ) -> AsyncGenerator[bytes, None]:
        """Chunks of log lines of `function`, oldest first; with `follow`, then new lines as they are written.

        A following reader ends when the store stops following, when it falls `FOLLOW_BACKLOG` chunks
        behind, or when `alive()` (asked every `alive_interval` seconds without new lines) says its client left.
        """
        self.flush()  # what was recorded before this call is history
        follower: _Follower | None = None
        if follow and self._following:
            follower = _Follower()
            self._followers.setdefault(function, set()).add(follower)
        try:
            limits = self._snapshot(function)
            lines = iter(self.history(function, since, limits))
            while batch := await asyncio.to_thread(_take, lines, 1000):
                yield b"".join(batch)
            if follower is None:
                return
            since_ms = -1 if since is None else int(since * 1000)
            while True:
                try:
                    chunk = await asyncio.wait_for(follower.queue.get(), alive_interval)
                except TimeoutError:
                    if alive is not None and not alive():
                        return
                    continue
                if chunk is None:
                    return
                out = _strip(chunk, since_ms)
                if out:
                    yield out
        finally:
            if follower is not None:
                followers = self._followers.get(function)
                if followers is not None:
                    followers.discard(follower)
                    if not followers:
                        del self._followers[function]


def _write(fd: int, data: bytes, function: str) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:  # a full disk loses log lines, never invocations
        log.warning("cannot write the log of %s: %s", function, exc)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _lines(path: Path, since_ms: int, limit: int | None) -> Iterator[tuple[int, bytes]]:
    """(time stamp, line without it) of one stream file, up to `limit` bytes; a deleted file yields nothing."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; a generator outlives a with-block's scope otherwise
    except FileNotFoundError:
        return
    with f:
        read = 0
        for raw in f:
            read += len(raw)
            if limit is not None and read > limit:
                return
            ts = _stamp(raw)
            if ts >= since_ms:
                yield ts, raw[_TS_WIDTH + 1 :]


def _stamp(raw: bytes) -> int:
    try:
        return int(raw[:_TS_WIDTH])
    except ValueError:
        return 0


def _strip(chunk: bytes, since_ms: int) -> bytes:
    """Flushed stored lines -> the log lines at or after `since_ms`."""
    out = [raw[_TS_WIDTH + 1 :] + b"\n" for raw in chunk.split(b"\n") if raw and _stamp(raw) >= since_ms]
    return b"".join(out)


def _take(lines: Iterator[bytes], n: int) -> list[bytes]:
    batch: list[bytes] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= n:
            break
    return batch
