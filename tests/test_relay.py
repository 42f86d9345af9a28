"""Output relays (runtimes/proxy/relay.py) on real pipes: every byte passed on in order, complete lines to the callback
(a partial one at EOF, an overlong one cut), a drain before a reply, and backpressure when the output is not read."""

from __future__ import annotations

import asyncio
import os

from runtimes.proxy import relay


async def read_exactly(fd: int, size: int) -> bytes:
    """What the environment's output pipe receives, read as the gateway does: all the time."""
    os.set_blocking(fd, False)
    out = b""
    for _ in range(1000):
        try:
            out += os.read(fd, 1 << 20)
        except BlockingIOError:
            await asyncio.sleep(0.005)
        if len(out) >= size:
            break
    return out


async def test_bytes_pass_on_and_lines_reach_the_callback() -> None:
    out_read, out_write = os.pipe()
    writer = relay.Writer(out_write)
    lines: list[str] = []
    read_end, write_end = relay.pipe_for_child()
    r = relay.Relay(read_end, writer, lines.append)
    os.write(write_end, b"one\ntw")
    r.drain()  # what a reply does: read what is there now
    data = b"o\n" + b"x" * (relay.MAX_LINE + 5) + b"\n\xff tail"
    assert await asyncio.to_thread(os.write, write_end, data) == len(data)  # more than a pipe holds: the relay reads
    os.close(write_end)
    expected = b"one\ntwo\n" + b"x" * (relay.MAX_LINE + 5) + b"\n\xff tail"
    assert await read_exactly(out_read, len(expected)) == expected
    for _ in range(100):
        await asyncio.sleep(0.01)
        if r.closed:
            break
    assert r.closed
    assert lines[:2] == ["one", "two"]
    assert lines[2] == "x" * relay.MAX_LINE and lines[3] == "xxxxx"
    assert lines[4] == "\\xff tail"  # the partial last line, at EOF
    writer.close()
    os.close(out_read)
    os.close(out_write)


async def test_a_full_output_pauses_reading_until_there_is_room(monkeypatch: object) -> None:
    out_read, out_write = os.pipe()  # nobody reads it at first: the writer thread blocks on it
    writer = relay.Writer(out_write)
    read_end, write_end = relay.pipe_for_child()
    r = relay.Relay(read_end, writer, None)
    os.set_blocking(write_end, False)
    sent = 0
    chunk = b"y" * 65536
    try:
        while sent < 64 * 1024 * 1024:
            os.write(write_end, chunk)
            sent += len(chunk)
            await asyncio.sleep(0)
    except BlockingIOError:
        pass  # the child's pipe is full: the relay stopped reading (bounded queue), the child blocks
    assert sent < 8 * 1024 * 1024  # the queue, the pipes: a few MB at most, not everything it wrote
    received = 0
    os.set_blocking(out_read, False)
    for _ in range(500):  # the environment's output is read again: everything flows
        try:
            received += len(os.read(out_read, 1 << 20))
        except BlockingIOError:
            await asyncio.sleep(0.005)
        if received >= sent:
            break
    assert received == sent
    os.close(write_end)
    await asyncio.sleep(0.05)
    writer.close()
    r.close()
    os.close(out_read)
    os.close(out_write)
