"""The Telemetry API (2022-07-01) of the Runtime API proxy: extensions subscribe, the proxy delivers batches. The Logs
API (2020-08-15) it replaced is served too, by the same code (`subscribe(logs_api=True)`).

An extension that registered (runtimes/proxy/extensions.py) sends `PUT /2022-07-01/telemetry` with
`{"schemaVersion", "destination": {"protocol": "HTTP", "URI"}, "types": [...], "buffering": {...}}`; from then on
the events of the `types` it asked for (`platform`, `function`, `extension`) are POSTed to its URI as JSON arrays of
`{"time", "type", "record"}`, in the schemas Lambda documents (`platform.start`, `platform.runtimeDone`, ...: the
record builders at the end of this module). Extensions listen on `http://sandbox.localdomain:<port>`, a name the
jail resolves to 127.0.0.1 (runtimes/python/jail.py); the proxy itself only ever connects to 127.0.0.1.

Bounds (an extension is someone else's code): buffering as on Lambda (maxItems 1,000-10,000, maxBytes
256 KiB-1 MiB, timeoutMs 25-30,000; the minimum is the default for items and bytes); one delivery in flight per
subscription, each bounded by DELIVERY_TIMEOUT; a subscription whose listener is slow keeps at most BACKLOG
batches and drops what comes after, counted, and says so in a `platform.logsDropped` record once it is delivered
to again; a record longer than MAX_RECORD is cut. A listener that never answers costs one connection and a timer.

Concurrency model: everything runs on the proxy's event loop; `emit` only appends and wakes the subscription's own
delivery task, so it is cheap on the invocation path. `close()` cancels the tasks; `flush()` (at shutdown) lets
them send what is buffered within a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

#: the schema versions Lambda accepts (the records sent are 2022-07-01's, which the later ones extend)
SCHEMA_VERSIONS = frozenset({"2022-07-01", "2022-12-13", "2025-01-29"})
TYPES = frozenset({"platform", "function", "extension"})
#: the Logs API (2020-08-15), which the Telemetry API replaced and Lambda still serves: the same subscription, with
#: these schema versions (or none), and these differences in what it is sent
LOGS_SCHEMA_VERSIONS = frozenset({"2020-08-15", "2021-03-18"})
TELEMETRY_ONLY = frozenset(
    {"platform.initStart", "platform.initRuntimeDone", "platform.initReport", "platform.telemetrySubscription"}
)
LOGS_ONLY = frozenset({"platform.end", "platform.logsSubscription"})
#: buffering setting -> (default, minimum, maximum), as Lambda documents them
BUFFERING = {"maxItems": (1000, 1000, 10000), "maxBytes": (262144, 262144, 1048576), "timeoutMs": (1000, 25, 30000)}
#: how long one POST to a listener may take (connect, send, answer)
DELIVERY_TIMEOUT = 5.0
#: batches a subscription keeps while its listener is slow; beyond, events are dropped (and counted)
BACKLOG = 4
#: the longest log record kept in one event (a longer line is cut)
MAX_RECORD = 256 * 1024
#: the largest answer read from a listener (its body is ignored)
MAX_ANSWER = 64 * 1024
#: host names a destination may use: all mean this environment's loopback
LOCAL_HOSTS = frozenset({"sandbox.localdomain", "localhost", "127.0.0.1"})
#: what is kept of Init's events for subscriptions made during Init
EARLY_ITEMS = 1000
EARLY_BYTES = 256 * 1024
#: subscriptions one environment accepts (one per extension; Lambda allows 10 extensions)
MAX_SUBSCRIPTIONS = 10

Answer = tuple[int, bytes]


def timestamp(when: float) -> str:
    """Lambda's event time: ISO 8601, UTC, milliseconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{int(when % 1 * 1000):03d}Z"


def _error(status: int, error_type: str, message: str) -> Answer:
    return status, json.dumps({"errorMessage": message, "errorType": error_type}).encode()


class Subscription:
    """One extension's subscription: what it wants, its buffer, and the task that delivers to its listener."""

    def __init__(
        self, name: str, host: str, port: int, path: str, types: frozenset[str], buffering: dict[str, int]
    ) -> None:
        self.skip = LOGS_ONLY  # event types it is not sent (a Logs API subscription: TELEMETRY_ONLY)
        self.name = name
        self.host = host
        self.port = port
        self.path = path
        self.types = types
        self.max_items = buffering["maxItems"]
        self.max_bytes = buffering["maxBytes"]
        self.timeout = buffering["timeoutMs"] / 1000.0
        self.buffer: deque[bytes] = deque()
        self.size = 0
        self.dropped = 0
        self.dropped_bytes = 0
        self.delivered = 0  # batches delivered (tests and the attacker's view read it)
        self.wake = asyncio.Event()
        self.full = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def add(self, event: bytes) -> None:
        if len(self.buffer) >= BACKLOG * self.max_items or self.size + len(event) > BACKLOG * self.max_bytes:
            self.dropped += 1
            self.dropped_bytes += len(event)
            return
        self.buffer.append(event)
        self.size += len(event)
        self.wake.set()
        if len(self.buffer) >= self.max_items or self.size >= self.max_bytes:
            self.full.set()

    def batch(self) -> list[bytes]:
        """Take the oldest events that fit one batch (at least one, whatever its size)."""
        taken: list[bytes] = []
        size = 0
        while self.buffer and len(taken) < self.max_items:
            event = self.buffer[0]
            if taken and size + len(event) > self.max_bytes:
                break
            taken.append(self.buffer.popleft())
            size += len(event)
        self.size -= size
        if not self.buffer:
            self.wake.clear()
        if len(self.buffer) < self.max_items and self.size < self.max_bytes:
            self.full.clear()
        return taken

    async def run(self, clock: Callable[[], float]) -> None:
        """Deliver: once events wait, after timeoutMs or as soon as a batch is full; one POST at a time."""
        while True:
            await self.wake.wait()
            if not self.full.is_set():
                filled = asyncio.ensure_future(self.full.wait())
                await asyncio.wait([filled], timeout=self.timeout)
                filled.cancel()
            while self.buffer:
                await self.send(self.batch(), clock)

    async def send(self, events: list[bytes], clock: Callable[[], float]) -> None:
        if self.dropped:  # say what was lost, in the next batch, as Lambda does
            record = {
                "reason": "Some logs were dropped",
                "droppedRecords": self.dropped,
                "droppedBytes": self.dropped_bytes,
            }
            events.insert(0, encode_event(clock(), "platform.logsDropped", record))
            self.dropped = self.dropped_bytes = 0
        body = b"[" + b",".join(events) + b"]"
        done, pending = await asyncio.wait([asyncio.ensure_future(self._post(body))], timeout=DELIVERY_TIMEOUT)
        for task in pending:
            task.cancel()
        for task in done:
            if task.exception() is None:
                self.delivered += 1

    async def _post(self, body: bytes) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            head = (
                f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
            status = await reader.readline()
            if not status.startswith(b"HTTP/1."):
                raise ConnectionError("not an HTTP answer")
            await reader.read(MAX_ANSWER)  # the rest of the answer, up to a bound; the connection then closes
        finally:
            writer.close()


def encode_event(when: float, event_type: str, record: Any) -> bytes:
    return json.dumps({"time": timestamp(when), "type": event_type, "record": record}, default=str).encode()


def _kind(event_type: str) -> str:
    return "platform" if event_type.startswith("platform.") else event_type


class Telemetry:
    """The subscriptions of one environment and the events it emits to them."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.subscriptions: dict[str, Subscription] = {}
        self._wanted: dict[str, int] = {"platform": 0, "function": 0, "extension": 0}
        #: the events of Init so far (kind, encoded), for subscriptions made during Init (extensions subscribe after
        #: platform.initStart, and their own output may come first); None once Init is over (`end_init`)
        self.early: list[tuple[str, str, bytes]] | None = []  # (kind, type, encoded)
        self._early_bytes = 0

    def wants(self, kind: str) -> bool:
        """Whether any subscription takes events of `kind` ("platform", "function", "extension")."""
        return self._wanted[kind] > 0

    def subscribe(self, extension: str, body: bytes, logs_api: bool = False) -> Answer:
        """PUT /2022-07-01/telemetry (or the Logs API's PUT /2020-08-15/logs) from the registered extension named
        `extension`: (status, body)."""
        try:
            request = json.loads(body)
            if not isinstance(request, dict):
                raise ValueError("the body is not a JSON object")
            version = request.get("schemaVersion")
            if logs_api and version is not None and version not in LOGS_SCHEMA_VERSIONS:
                raise ValueError(f"schemaVersion must be one of {sorted(LOGS_SCHEMA_VERSIONS)}")
            if not logs_api and version not in SCHEMA_VERSIONS:
                raise ValueError(f"schemaVersion must be one of {sorted(SCHEMA_VERSIONS)}")
            subscription = self._parse(extension, request)
        except ValueError as exc:
            return _error(400, "ValidationError", str(exc)[:1024])
        if extension not in self.subscriptions and len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            return _error(400, "ValidationError", "too many subscriptions")
        self._drop(extension)
        self.subscriptions[extension] = subscription
        for kind in subscription.types:
            self._wanted[kind] += 1
        if logs_api:
            subscription.skip = TELEMETRY_ONLY
        for kind, event_type, event in self.early or ():
            if kind in subscription.types and event_type not in subscription.skip:
                subscription.add(event)
        subscription.task = asyncio.ensure_future(subscription.run(self.clock))
        record = {"name": extension, "state": "Subscribed", "types": sorted(subscription.types)}
        self.emit("platform.logsSubscription" if logs_api else "platform.telemetrySubscription", record)
        return 200, b"OK"

    def _parse(self, extension: str, request: dict[str, Any]) -> Subscription:
        destination = request.get("destination")
        if not isinstance(destination, dict) or destination.get("protocol") != "HTTP":
            raise ValueError('destination.protocol must be "HTTP" (TCP is not supported here)')
        uri = destination.get("URI")
        parts = urlsplit(uri) if isinstance(uri, str) else None
        if parts is None or parts.scheme != "http" or parts.hostname not in LOCAL_HOSTS:
            raise ValueError("destination.URI must be http://sandbox.localdomain:<port>/...")
        try:
            port = parts.port
        except ValueError:
            port = None
        if not port:
            raise ValueError("destination.URI must name a port")
        types = request.get("types")
        if not isinstance(types, list) or not types or not all(isinstance(t, str) and t in TYPES for t in types):
            raise ValueError(f"types must be a non-empty subset of {sorted(TYPES)}")
        buffering = request.get("buffering")
        buffering = {} if buffering is None else buffering
        if not isinstance(buffering, dict):
            raise ValueError("buffering must be an object")
        values = {}
        for key, (default, low, high) in BUFFERING.items():
            value = buffering.get(key, default)
            if type(value) is not int or not low <= value <= high:
                raise ValueError(f"buffering.{key} must be an integer from {low} to {high}")
            values[key] = value
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return Subscription(extension, parts.hostname or "", port, path, frozenset(types), values)

    def emit(self, event_type: str, record: Any) -> None:
        """Queue one event (`event_type`: "platform.start", "function", "extension", ...) for the subscriptions
        that want its kind. Encoded once, whatever the number of subscribers."""
        kind = _kind(event_type)
        early = self.early
        if not self._wanted[kind] and early is None:
            return
        if isinstance(record, str) and len(record) > MAX_RECORD:
            record = record[:MAX_RECORD]
        event = encode_event(self.clock(), event_type, record)
        if early is not None and len(early) < EARLY_ITEMS and self._early_bytes + len(event) <= EARLY_BYTES:
            early.append((kind, event_type, event))
            self._early_bytes += len(event)
        for subscription in self.subscriptions.values():
            if kind in subscription.types and event_type not in subscription.skip:
                subscription.add(event)

    def end_init(self) -> None:
        """Init is over: later subscriptions get events from their subscription on."""
        self.early = None

    def _drop(self, extension: str) -> None:
        old = self.subscriptions.pop(extension, None)
        if old is not None:
            for kind in old.types:
                self._wanted[kind] -= 1
            if old.task is not None:
                old.task.cancel()

    async def flush(self, timeout: float) -> None:
        """Deliver what is buffered now (shutdown), within `timeout` seconds overall."""
        subscriptions = [s for s in self.subscriptions.values() if s.buffer]
        for subscription in subscriptions:
            subscription.full.set()  # skip the buffering wait
        if subscriptions:
            deadline = time.monotonic() + timeout
            while any(s.buffer for s in subscriptions) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)

    def close(self) -> None:
        for extension in list(self.subscriptions):
            self._drop(extension)


# -- records, in Lambda's schemas (https://docs.aws.amazon.com/lambda/latest/dg/telemetry-schema-reference.html) --


def init_start(init_type: str, function_name: str, version: str, runtime: str) -> dict[str, Any]:
    return {
        "initializationType": init_type,
        "phase": "init",
        "runtimeVersion": runtime,
        "runtimeVersionArn": f"arn:aws:lambda:::runtime:{runtime}",
        "functionName": function_name,
        "functionVersion": version,
    }


def init_runtime_done(init_type: str, status: str, error_type: str | None) -> dict[str, Any]:
    record: dict[str, Any] = {"initializationType": init_type, "phase": "init", "status": status}
    if error_type:
        record["errorType"] = error_type
    return record


def init_report(init_type: str, status: str, duration_ms: float, error_type: str | None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "initializationType": init_type,
        "phase": "init",
        "status": status,
        "metrics": {"durationMs": round(duration_ms, 3)},
    }
    if error_type:
        record["errorType"] = error_type
    return record


def start(request_id: str, version: str, trace_id: str) -> dict[str, Any]:
    record: dict[str, Any] = {"requestId": request_id, "version": version}
    if trace_id:
        record["tracing"] = {"type": "X-Amzn-Trace-Id", "value": trace_id}
    return record


def runtime_done(
    request_id: str, status: str, duration_ms: float, produced_bytes: int, error_type: str | None
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "requestId": request_id,
        "status": status,
        "metrics": {"durationMs": round(duration_ms, 3), "producedBytes": produced_bytes},
        "spans": [],
    }
    if error_type:
        record["errorType"] = error_type
    return record


def report(
    request_id: str,
    status: str,
    duration_ms: float,
    memory_mb: int,
    max_memory_mb: int,
    init_ms: float | None,
    error_type: str | None,
) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "durationMs": round(duration_ms, 3),
        "billedDurationMs": max(int(-(-duration_ms // 1)), 1),
        "memorySizeMB": memory_mb,
        "maxMemoryUsedMB": max_memory_mb,
    }
    if init_ms is not None:
        metrics["initDurationMs"] = round(init_ms, 3)
    record: dict[str, Any] = {"requestId": request_id, "status": status, "metrics": metrics}
    if error_type:
        record["errorType"] = error_type
    return record


def log_record(line: str, json_format: bool) -> Any:
    """A function or extension log line as the record Lambda sends: the text, or with LogFormat JSON the object."""
    if json_format and line.startswith("{"):
        with contextlib.suppress(ValueError):
            parsed = json.loads(line)
            if isinstance(parsed, dict):
                return parsed
    return line
