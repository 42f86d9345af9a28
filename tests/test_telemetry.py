"""The Telemetry API's pure parts and its delivery (runtimes/proxy/telemetry.py), with a real listener on a local port:
what a subscription accepts, Lambda's buffering bounds, which events go where, batches, what a slow or silent
listener costs, the records' schemas."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from runtimes.proxy import telemetry
from runtimes.proxy.telemetry import Telemetry


def request(port: int = 4243, **changes: Any) -> bytes:
    body: dict[str, Any] = {
        "schemaVersion": "2022-12-13",
        "destination": {"protocol": "HTTP", "URI": f"http://sandbox.localdomain:{port}/path"},
        "types": ["platform", "function"],
    }
    body.update(changes)
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    "changes",
    [
        {"schemaVersion": "2020-01-01"},
        {"destination": {"protocol": "TCP", "URI": "http://sandbox.localdomain:4243"}},
        {"destination": {"protocol": "HTTP", "URI": "http://example.com:4243/"}},
        {"destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain/"}},
        {"destination": {"protocol": "HTTP", "URI": "https://sandbox.localdomain:4243/"}},
        {"types": []},
        {"types": ["platform", "secrets"]},
        {"buffering": {"maxItems": 999}},
        {"buffering": {"maxItems": 10001}},
        {"buffering": {"maxBytes": 262143}},
        {"buffering": {"maxBytes": 1048577}},
        {"buffering": {"timeoutMs": 24}},
        {"buffering": {"timeoutMs": 30001}},
        {"buffering": {"timeoutMs": "100"}},
        {"buffering": []},
    ],
)
async def test_a_subscription_outside_lambdas_rules_is_a_400(changes: dict[str, Any]) -> None:
    tele = Telemetry()
    status, body = tele.subscribe("ext", request(**changes))
    assert status == 400 and json.loads(body)["errorType"] == "ValidationError"
    assert tele.subscriptions == {}
    assert tele.subscribe("ext", b"[1, 2]")[0] == 400
    assert tele.subscribe("ext", b"\xff")[0] == 400


async def test_defaults_kinds_and_early_events() -> None:
    tele = Telemetry()
    tele.emit("platform.initStart", {"phase": "init"})
    tele.emit("extension", "an extension line")
    status, body = tele.subscribe("ext", request())
    assert (status, body) == (200, b"OK")
    sub = tele.subscriptions["ext"]
    assert (sub.max_items, sub.max_bytes, sub.timeout) == (1000, 262144, 1.0)
    assert tele.wants("platform") and tele.wants("function") and not tele.wants("extension")
    # Init's platform events are replayed to it (not the extension line: it did not ask for those)
    types = [json.loads(e)["type"] for e in sub.buffer]
    assert types == ["platform.initStart", "platform.telemetrySubscription"]
    tele.end_init()
    tele.emit("extension", "not wanted")
    tele.emit("function", "wanted")
    assert json.loads(sub.buffer[-1]) == {
        "time": json.loads(sub.buffer[-1])["time"],
        "type": "function",
        "record": "wanted",
    }
    tele.close()
    assert not tele.wants("platform")


async def test_a_slow_listener_keeps_a_bounded_backlog_and_hears_what_was_dropped() -> None:
    tele = Telemetry()
    tele.end_init()
    tele.subscribe("ext", request())
    sub = tele.subscriptions["ext"]
    if sub.task is not None:
        sub.task.cancel()  # no delivery: the listener never reads
    for n in range(10 * sub.max_items):
        tele.emit("function", f"line {n}")
    assert len(sub.buffer) == telemetry.BACKLOG * sub.max_items
    emitted = 10 * sub.max_items + 1  # and platform.telemetrySubscription
    assert sub.dropped == emitted - len(sub.buffer)
    batch = sub.batch()
    assert len(batch) == sub.max_items  # one batch is at most maxItems
    sent: list[bytes] = []

    async def post(body: bytes) -> None:
        sent.append(body)

    sub._post = post  # type: ignore[method-assign]
    await sub.send(batch, tele.clock)
    events = json.loads(sent[0])
    assert events[0]["type"] == "platform.logsDropped"
    assert events[0]["record"]["droppedRecords"] == emitted - telemetry.BACKLOG * sub.max_items
    assert sub.dropped == 0


async def test_a_batch_fits_max_bytes_but_always_holds_one_event() -> None:
    tele = Telemetry()
    tele.end_init()
    tele.subscribe("ext", request())
    sub = tele.subscriptions["ext"]
    if sub.task is not None:
        sub.task.cancel()
    tele.emit("function", "x" * (telemetry.MAX_RECORD * 2))  # cut to MAX_RECORD
    tele.emit("function", "y" * 200_000)
    first = sub.batch()
    assert len(first) == 1 and len(first[0]) < telemetry.MAX_RECORD + 200
    assert len(sub.batch()) == 1


async def test_delivery_to_a_listener_and_a_silent_one(monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[Any] = []
    silent_hit = asyncio.Event()

    async def listener(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(
            next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")).split(b":")[1]
        )
        received.append((head.split(b" ")[1], json.loads(await reader.readexactly(length))))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # reads nothing, answers nothing
        silent_hit.set()

    good = await asyncio.start_server(listener, "127.0.0.1", 0)
    bad = await asyncio.start_server(silent, "127.0.0.1", 0)
    monkeypatch.setattr(telemetry, "DELIVERY_TIMEOUT", 0.2)
    tele = Telemetry()
    tele.end_init()
    buffering = {"timeoutMs": 25}
    assert tele.subscribe("good", request(good.sockets[0].getsockname()[1], buffering=buffering))[0] == 200
    assert tele.subscribe("bad", request(bad.sockets[0].getsockname()[1], buffering=buffering))[0] == 200
    tele.emit("platform.start", telemetry.start("rid", "$LATEST", ""))
    tele.emit("function", "hello")
    for _ in range(100):
        if received and silent_hit.is_set():
            break
        await asyncio.sleep(0.01)
    path, events = received[0]
    assert path == b"/path"
    types = [e["type"] for e in events if e["type"] != "platform.telemetrySubscription"]
    assert types == ["platform.start", "function"]
    await asyncio.sleep(0.3)  # the silent listener's delivery has timed out: the subscription goes on
    assert tele.subscriptions["bad"].task is not None and not tele.subscriptions["bad"].task.done()
    tele.close()
    for writer in held:
        writer.close()
    good.close()
    bad.close()
    await asyncio.sleep(0.05)


def test_records_have_lambdas_fields() -> None:
    assert set(telemetry.init_start("on-demand", "f", "$LATEST", "python3.12")) == {
        "initializationType",
        "phase",
        "runtimeVersion",
        "runtimeVersionArn",
        "functionName",
        "functionVersion",
    }
    done = telemetry.runtime_done("rid", "error", 12.3456, 0, "Custom.Oops")
    assert done == {
        "requestId": "rid",
        "status": "error",
        "metrics": {"durationMs": 12.346, "producedBytes": 0},
        "spans": [],
        "errorType": "Custom.Oops",
    }
    report = telemetry.report("rid", "success", 0.2, 128, 30, 150.0, None)
    assert report["metrics"] == {
        "durationMs": 0.2,
        "billedDurationMs": 1,
        "memorySizeMB": 128,
        "maxMemoryUsedMB": 30,
        "initDurationMs": 150.0,
    }
    assert telemetry.timestamp(0.5) == "1970-01-01T00:00:00.500Z"
    assert telemetry.log_record('{"level": "INFO"}', True) == {"level": "INFO"}
    assert telemetry.log_record('{"level": "INFO"}', False) == '{"level": "INFO"}'


async def test_the_logs_api_subscribes_likewise_and_gets_its_own_event_types() -> None:
    tele = Telemetry()
    tele.emit("platform.initStart", {"phase": "init"})
    logs = json.dumps(
        {"destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain:4243"}, "types": ["platform"]}
    ).encode()
    assert tele.subscribe("old", logs, logs_api=True) == (200, b"OK")  # no schemaVersion: the Logs API's first
    assert tele.subscribe("new", request(types=["platform"])) == (200, b"OK")
    assert tele.subscribe("bad", json.dumps({"schemaVersion": "2022-12-13"}).encode(), logs_api=True)[0] == 400
    tele.end_init()
    tele.emit("platform.end", {"requestId": "rid"})
    tele.emit("platform.report", {"requestId": "rid"})
    for sub in tele.subscriptions.values():
        if sub.task is not None:
            sub.task.cancel()
    old = [json.loads(e)["type"] for e in tele.subscriptions["old"].buffer]
    new = [json.loads(e)["type"] for e in tele.subscriptions["new"].buffer]
    assert old == ["platform.logsSubscription", "platform.end", "platform.report"]
    assert new == ["platform.initStart", "platform.telemetrySubscription", "platform.report"]
