"""The Runtime API's state for one runtime (runtimes/proxy/runtime_api.py), driven through its real HTTP server on a
free port with a recording stand-in for the gateway's socket: READY on the first `next`, one reply per invocation,
Lambda's answers to what comes out of turn."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.contracts.environment import ERROR, RESULT, Invoke
from runtimes.proxy.runtime_api import RuntimeApi, header_safe, init_document, trace_id
from runtimes.proxy.server import Router, listen

RID = "11111111-2222-3333-4444-555555555555"


class Link:
    """Records what the proxy would send the gateway."""

    def __init__(self) -> None:
        self.ready_sent = False
        self.readies: list[tuple[Any, ...]] = []
        self.replies: list[tuple[Any, ...]] = []

    def ready(self, init_ms: float, error_type: str | None = None, message: str = "", stack: bytes = b"") -> None:
        if not self.ready_sent:
            self.ready_sent = True
            self.readies.append((error_type, message, stack))

    def reply(self, head: tuple[Any, ...], duration_ms: float, max_rss_kb: int, pending: int) -> None:
        self.replies.append(head)


def invoke(inv_id: int = 1, rid: str = RID, context: bytes | None = None) -> Invoke:
    return Invoke(2, inv_id, b'{"k": 1}', 1_700_000_000_000, rid, "arn:aws:lambda:us-east-1:1:function:f", context)


@pytest.fixture
async def api() -> AsyncIterator[tuple[RuntimeApi, Link, int]]:
    link = Link()
    runtime_api = RuntimeApi(link, 0.0, lambda: 0, lambda: 1234)  # type: ignore[arg-type]
    router = Router()
    runtime_api.add_routes(router)
    server, port = await listen(router, "127.0.0.1", 0)
    async with server:
        yield runtime_api, link, port


def call(port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, "/2018-06-01/runtime" + path, body, headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


async def acall(*args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, call, *args)


async def test_next_is_ready_then_gets_the_invocation(api: tuple[RuntimeApi, Link, int]) -> None:
    runtime_api, link, port = api
    waiting = asyncio.ensure_future(acall(port, "GET", "/invocation/next"))
    while runtime_api.waiter is None:
        await asyncio.sleep(0.01)
    assert link.readies == [(None, "", b"")]
    runtime_api.invoke(invoke(context=b'{\n"custom": 1}'))
    status, headers, body = await waiting
    assert (status, body) == (200, b'{"k": 1}')
    assert headers["Lambda-Runtime-Aws-Request-Id"] == RID
    assert headers["Lambda-Runtime-Deadline-Ms"] == "1700000000000"
    assert headers["Lambda-Runtime-Client-Context"] == '{"custom":1}'
    assert headers["Content-Type"] == "application/json"
    status, _, body = await acall(port, "POST", f"/invocation/{RID}/response", b'"ok"')
    assert (status, json.loads(body)) == (202, {"status": "OK"})
    assert link.replies == [(RESULT, 1, b'"ok"')]


async def test_an_invocation_that_comes_first_waits_for_next(api: tuple[RuntimeApi, Link, int]) -> None:
    runtime_api, link, port = api
    link.ready_sent = True
    runtime_api.invoke(invoke())
    status, headers, _ = await acall(port, "GET", "/invocation/next")
    assert status == 200 and headers["Lambda-Runtime-Aws-Request-Id"] == RID


async def test_answers_out_of_turn(api: tuple[RuntimeApi, Link, int]) -> None:
    runtime_api, link, port = api
    status, _, body = await acall(port, "POST", f"/invocation/{RID}/response", b"{}")
    assert status == 403 and json.loads(body)["errorType"] == "InvalidStateTransition"  # nothing in flight
    link.ready_sent = True
    runtime_api.invoke(invoke())
    await acall(port, "GET", "/invocation/next")
    status, _, body = await acall(port, "POST", "/invocation/other/response", b"{}")
    assert (status, json.loads(body)) == (400, {"errorMessage": "Invalid request ID", "errorType": "InvalidRequestID"})
    status, _, _ = await acall(port, "GET", "/invocation/next")
    assert status == 403  # a `next` while an invocation is in flight
    headers = {"Lambda-Runtime-Function-Error-Type": "Custom.Error"}
    status, _, _ = await acall(port, "POST", f"/invocation/{RID}/error", b'{"errorMessage": "m"}', headers)
    assert status == 202
    assert link.replies == [(ERROR, 1, "Custom.Error", b'{"errorMessage": "m"}')]
    status, _, _ = await acall(port, "POST", f"/invocation/{RID}/error", b"{}")
    assert status == 403  # answered already
    status, _, _ = await acall(port, "POST", "/init/error", b"{}")
    assert status == 403  # Init is over


async def test_an_error_without_a_type_or_a_body(api: tuple[RuntimeApi, Link, int]) -> None:
    runtime_api, link, port = api
    link.ready_sent = True
    for inv_id, body in ((1, b'{"errorType": "FromBody"}'), (2, b"")):
        runtime_api.invoke(invoke(inv_id))
        await acall(port, "GET", "/invocation/next")
        assert (await acall(port, "POST", f"/invocation/{RID}/error", body))[0] == 202
    assert link.replies[0][2] == "FromBody"
    assert link.replies[1][2:] == ("Runtime.Unknown", b'{"errorMessage": "", "errorType": "Runtime.Unknown"}')


async def test_init_error_is_ready_with_the_error(api: tuple[RuntimeApi, Link, int]) -> None:
    runtime_api, link, port = api
    ended: list[bool] = []
    runtime_api.on_init_error = lambda: ended.append(True)
    doc = {"errorMessage": "no config", "errorType": "X", "stackTrace": ["a", 1]}
    status, _, _ = await acall(
        port, "POST", "/init/error", json.dumps(doc).encode(), {"Lambda-Runtime-Function-Error-Type": "Y"}
    )
    assert status == 202 and ended == [True]
    assert link.readies == [("Y", "no config", json.dumps(doc).encode())]  # the document, as it is


@pytest.mark.parametrize(
    ("body", "document"),
    [
        (b"not JSON", b"not JSON"),
        (b'["a"]', b' ["a"]'),  # never starts with "[" (READY's stack form): the same JSON
        (b"", b'{"errorMessage": "", "errorType": "Runtime.Unknown"}'),
    ],
)
def test_init_document_is_the_body_as_posted(body: bytes, document: bytes) -> None:
    assert init_document(body, "Runtime.Unknown") == document


async def test_a_re_init_counts_invocations_and_takes_its_init_error(api: tuple[RuntimeApi, Link, int]) -> None:
    """What the proxy's restart of a runtime (runtimes/proxy/main.py) relies on: `handed` counts invocations given
    out, an INVOKE waits (queued) for the new runtime, whose init/error is its re-Init's, not a READY."""
    runtime_api, link, port = api
    link.ready_sent = True
    runtime_api.invoke(invoke())
    await acall(port, "GET", "/invocation/next")
    await acall(port, "POST", f"/invocation/{RID}/response", b"1")
    assert runtime_api.handed == 1 and runtime_api.current is None
    runtime_api.handed, runtime_api.reinit = 0, True  # the runtime exited; the proxy starts it again
    runtime_api.invoke(invoke(2))
    assert runtime_api.queued is not None  # waits for the new runtime
    errors: list[tuple[str, str, bytes]] = []
    runtime_api.on_reinit_error = lambda *error: errors.append(error)
    doc = {"errorMessage": "no config", "errorType": "X", "stackTrace": ["a"]}
    status, _, _ = await acall(port, "POST", "/init/error", json.dumps(doc).encode())
    assert status == 202 and errors == [("X", "no config", json.dumps(doc).encode())] and link.readies == []
    status, _, _ = await acall(port, "POST", "/init/error", b"{}")
    assert status == 403  # once
    runtime_api.fail(lambda inv: ("X", inv.request_id.encode()))
    assert link.replies[-1] == (ERROR, 2, "X", RID.encode()) and runtime_api.queued is None
    runtime_api.invoke(invoke(3))  # one the gateway sent before it saw RESET: the same error, at once
    assert link.replies[-1] == (ERROR, 3, "X", RID.encode())


async def test_a_restarted_runtime_gets_the_waiting_invocation(api: tuple[RuntimeApi, Link, int]) -> None:
    runtime_api, link, port = api
    link.ready_sent = True
    runtime_api.reinit = True
    runtime_api.invoke(invoke())
    status, headers, _ = await acall(port, "GET", "/invocation/next")
    assert status == 200 and headers["Lambda-Runtime-Aws-Request-Id"] == RID
    assert not runtime_api.reinit and runtime_api.handed == 1
    status, _, _ = await acall(port, "POST", "/init/error", b"{}")
    assert status == 403  # its Init is over


async def test_a_streamed_error_in_the_trailers(api: tuple[RuntimeApi, Link, int]) -> None:
    runtime_api, link, port = api
    link.ready_sent = True
    runtime_api.invoke(invoke())
    await acall(port, "GET", "/invocation/next")
    doc = base64.b64encode(b'{"errorType": "S", "errorMessage": "midway"}')
    raw = (
        f"POST /2018-06-01/runtime/invocation/{RID}/response HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
        "Lambda-Runtime-Function-Response-Mode: streaming\r\nConnection: close\r\n\r\n2\r\nab\r\n0\r\n"
        f"Lambda-Runtime-Function-Error-Type: S\r\nLambda-Runtime-Function-Error-Body: {doc.decode()}\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    assert (await reader.read()).startswith(b"HTTP/1.1 202")
    writer.close()
    assert link.replies == [(ERROR, 1, "S", b'{"errorType": "S", "errorMessage": "midway"}')]


def test_trace_ids_and_header_values() -> None:
    root, parent, sampled = trace_id().split(";")
    assert root.startswith("Root=1-") and len(root) == len("Root=1-") + 8 + 1 + 24
    assert parent.startswith("Parent=") and sampled == "Sampled=0"
    assert header_safe(b'{"a": "b"}') == '{"a": "b"}'
    assert header_safe(b'{\r\n"a":\t"b"}') == '{"a":"b"}'
    assert "\n" not in header_safe(b"not json\r\nX-Injected: 1")
    assert header_safe('{"name": "Zoë ☃"}'.encode()) == '{"name":"Zo\\u00eb \\u2603"}'
    assert json.loads(header_safe('{"name": "Zoë ☃"}'.encode())) == {"name": "Zoë ☃"}
