"""Streamed responses in the proxy (runtimes/proxy/streaming.py), through its real HTTP server on a free port with a
recording stand-in for the gateway's socket: pieces out as CHUNK frames as they arrive (what arrives together as one),
then the reply the trailers say; nothing for another request id, nothing after the invocation is answered."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.contracts.environment import ERROR, MAX_CHUNK, RESULT, Invoke
from runtimes.proxy import streaming
from runtimes.proxy.runtime_api import RuntimeApi
from runtimes.proxy.server import Router, listen

RID = "11111111-2222-3333-4444-555555555555"
HEAD = (
    f"POST /2018-06-01/runtime/invocation/{RID}/response HTTP/1.1\r\nHost: x\r\n"
    "Lambda-Runtime-Function-Response-Mode: streaming\r\nTransfer-Encoding: chunked\r\n\r\n"
).encode()


class Link:
    """Records what the proxy would send the gateway, in order."""

    def __init__(self) -> None:
        self.ready_sent = True
        self.sent: list[tuple[Any, ...]] = []
        self.heads: list[tuple[int, str]] = []  # HEAD frames: (inv_id, content type)

    def head(self, inv_id: int, content_type: str) -> None:
        self.heads.append((inv_id, content_type))

    def chunk(self, inv_id: int, data: bytes) -> None:
        self.sent.append(("CHUNK", inv_id, data))

    def reply(self, head: tuple[Any, ...], duration_ms: float, max_rss_kb: int, pending: int) -> None:
        self.sent.append(head)


@pytest.fixture
async def api() -> AsyncIterator[tuple[RuntimeApi, Link, int]]:
    link = Link()
    runtime_api = RuntimeApi(link, 0.0, lambda: 0, lambda: 1234)  # type: ignore[arg-type]
    streaming.install(runtime_api, link)  # type: ignore[arg-type]
    router = Router()
    runtime_api.add_routes(router)
    server, port = await listen(router, "127.0.0.1", 0)
    async with server:
        runtime_api.current = Invoke(2, 7, b"{}", 0, RID, "arn:aws:lambda:us-east-1:1:function:f", None)
        yield runtime_api, link, port


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def _until(predicate: Any) -> None:
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    await writer.wait_closed()


async def _answer(reader: asyncio.StreamReader) -> bytes:
    return (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n", 1)[0]


async def test_pieces_go_out_as_they_arrive_then_an_empty_result(api: tuple[RuntimeApi, Link, int]) -> None:
    _, link, port = api
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HEAD + _chunk(b"first"))
    await _until(lambda: link.sent)
    assert link.sent == [("CHUNK", 7, b"first")]  # before the body ends
    writer.write(_chunk(b"second"))
    await _until(lambda: len(link.sent) == 2)
    writer.write(b"0\r\n\r\n")
    assert await _answer(reader) == b"HTTP/1.1 202 Accepted"
    assert link.sent == [("CHUNK", 7, b"first"), ("CHUNK", 7, b"second"), (RESULT, 7, b"")]
    await _close(writer)


async def test_what_arrives_together_is_one_frame_split_at_max_chunk(api: tuple[RuntimeApi, Link, int]) -> None:
    _, link, port = api
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HEAD + _chunk(b"x") * 5000 + _chunk(b"y" * (MAX_CHUNK + 10)) + b"0\r\n\r\n")
    assert await _answer(reader) == b"HTTP/1.1 202 Accepted"
    pieces = [data for kind, _, data in link.sent[:-1]]
    assert b"".join(pieces) == b"x" * 5000 + b"y" * (MAX_CHUNK + 10)
    assert len(pieces) < 20 and max(map(len, pieces)) <= MAX_CHUNK  # not 5001 frames
    assert link.sent[-1] == (RESULT, 7, b"")
    await _close(writer)


async def test_an_error_in_the_trailers_follows_the_pieces(api: tuple[RuntimeApi, Link, int]) -> None:
    _, link, port = api
    doc = json.dumps({"errorType": "Oops", "errorMessage": "midway"}).encode()
    trailers = b"Lambda-Runtime-Function-Error-Type: Oops\r\nLambda-Runtime-Function-Error-Body: %s\r\n" % (
        base64.b64encode(doc)
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HEAD + _chunk(b"partial") + b"0\r\n" + trailers + b"\r\n")
    assert await _answer(reader) == b"HTTP/1.1 202 Accepted"
    assert link.sent == [("CHUNK", 7, b"partial"), (ERROR, 7, "Oops", doc)]
    await _close(writer)


async def test_a_stream_for_another_request_id_sends_nothing(api: tuple[RuntimeApi, Link, int]) -> None:
    _, link, port = api
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HEAD.replace(RID.encode(), b"not-" + RID.encode()) + _chunk(b"forged") + b"0\r\n\r\n")
    assert await _answer(reader) == b"HTTP/1.1 400 Bad Request"
    assert link.sent == []
    await _close(writer)


async def test_nothing_goes_out_once_the_invocation_is_answered(api: tuple[RuntimeApi, Link, int]) -> None:
    runtime_api, link, _ = api
    invoke = runtime_api.current
    assert invoke is not None
    sink = streaming.StreamedResponse(runtime_api, link, invoke)  # type: ignore[arg-type]
    sink.data(b"late")
    runtime_api.current = None  # answered meanwhile (an /error on another connection)
    await asyncio.sleep(0.01)  # the scheduled flush runs
    assert link.sent == []


async def test_a_streamed_body_may_pass_six_megabytes_up_to_the_streaming_limit(
    api: tuple[RuntimeApi, Link, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime_api, link, port = api
    invoke = runtime_api.current
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    big = b"z" * (1024 * 1024)
    writer.write(HEAD + _chunk(big) * 7 + b"0\r\n\r\n")  # 7 MB: over a buffered response's limit
    assert await _answer(reader) == b"HTTP/1.1 202 Accepted"
    assert sum(len(s[2]) for s in link.sent[:-1]) == 7 * len(big) and link.sent[-1] == (RESULT, 7, b"")
    await _close(writer)
    link.sent.clear()
    runtime_api.current = invoke  # the next invocation (same id: the test's stand-in)
    monkeypatch.setattr(streaming.StreamedResponse, "max_body", 1000)  # as MAX_STREAM would, without 200 MB
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HEAD + _chunk(b"a" * 600) + _chunk(b"b" * 600))
    assert await _answer(reader) == b"HTTP/1.1 413 Request Entity Too Large"
    kind, inv_id, error_type, body = link.sent[-1]
    assert (kind, inv_id, error_type) == (ERROR, 7, "Function.ResponseSizeTooLarge")
    assert "(209715200 bytes)" in json.loads(body)["errorMessage"]  # a streamed response's limit, not 6 MB
    await _close(writer)


@pytest.mark.parametrize(
    ("header", "sent"),
    [
        ("Content-Type: text/plain; charset=utf-8\r\n", "text/plain; charset=utf-8"),
        ("", "application/octet-stream"),  # none declared
        ("Content-Type: " + "x" * 300 + "\r\n", "application/octet-stream"),  # none a HEAD frame may carry
        ("Content-Type: text/\tplain\r\n", "application/octet-stream"),  # a tab: no control character passes
    ],
)
async def test_the_content_type_goes_first_as_a_head_frame(
    api: tuple[RuntimeApi, Link, int], header: str, sent: str
) -> None:
    _, link, port = api
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HEAD.replace(b"Host: x\r\n", b"Host: x\r\n" + header.encode("latin-1")) + _chunk(b"a"))
    await _until(lambda: link.sent)
    assert link.heads == [(7, sent)]  # before the first piece
    writer.write(b"0\r\n\r\n")
    assert await _answer(reader) == b"HTTP/1.1 202 Accepted"
    await _close(writer)
