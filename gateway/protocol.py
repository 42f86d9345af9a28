"""The gateway <-> environment wire protocol: msgpack frames on one stream socket. No I/O here.

A frame is a 4-byte big-endian length followed by one msgpack array whose first element is the frame
kind (the length lets a reader refuse an oversized frame before buffering it). Invocation frames carry an id, so
several invocations can be in flight on one connection and replies may come back in any order. Event
and result payloads travel as raw `bytes` (JSON text): neither side re-encodes user JSON.

    READY    [READY, pid, init_ms, init_error | None, init_log, capacity]    environment -> gateway, once
    INVOKE   [INVOKE, id, payload, deadline_ms, request_id, invoked_arn, client_context | None]
    RESULT   [RESULT, id, payload, duration_ms, max_rss_kb, log]
    ERROR    [ERROR, id, error_type, error_body, duration_ms, max_rss_kb, log]
    SHUTDOWN [SHUTDOWN]                                          gateway -> environment
    SPEC     [SPEC, spec]               gateway -> a zygote's spare, first and once: become this environment

`init_error` is a map {errorType, errorMessage, stackTrace}; `error_body` is the JSON error document
Lambda returns to the caller. `log` / `init_log` are the captured output of the invocation / of Init.
`capacity` is how many invocations the environment runs at once (more than 1 only for async handlers that
opted in); the gateway never sends it more.
The decoder checks every field's type, so a peer cannot smuggle a value the reader would trip over.

The same module runs inside the environments (the runtime imports it), so it imports only msgpack.
A frame the decoder rejects, or one larger than `MAX_FRAME`, means the peer is broken: the reader must
drop the connection and kill the peer, never read from it again.
"""

from __future__ import annotations

from typing import Any

import msgpack

_packb = msgpack.packb
_unpackb = msgpack.unpackb

READY = 1
INVOKE = 2
RESULT = 3
ERROR = 4
SHUTDOWN = 5
SPEC = 6

#: frame size limits. Payloads are at most 6 MB each way; the rest is headroom for fields and logs.
MAX_PAYLOAD = 6 * 1024 * 1024
MAX_LOG = 256 * 1024
MAX_FRAME = MAX_PAYLOAD + MAX_LOG + 64 * 1024

_NUM = (int, float)
#: the type of each field after the kind, per kind
_SCHEMA: dict[int, tuple[type | tuple[type, ...], ...]] = {
    READY: (int, _NUM, (dict, type(None)), bytes, int),
    INVOKE: (int, bytes, int, str, str, (bytes, type(None))),
    RESULT: (int, bytes, _NUM, int, bytes),
    ERROR: (int, str, bytes, _NUM, int, bytes),
    SHUTDOWN: (),
    SPEC: (dict,),
}


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame."""


def encode(frame: list[Any] | tuple[Any, ...]) -> bytes:
    """One frame: a 4-byte big-endian length, then the msgpack array."""
    body: bytes = _packb(frame, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


def encode_invoke(
    inv_id: int,
    payload: bytes,
    deadline_ms: int,
    request_id: str,
    invoked_arn: str,
    client_context: bytes | None,
) -> bytes:
    body: bytes = _packb(
        (INVOKE, inv_id, payload, deadline_ms, request_id, invoked_arn, client_context), use_bin_type=True
    )
    return len(body).to_bytes(4, "big") + body


class FrameDecoder:
    """Incremental decoder: feed bytes, get the complete, validated frames they finish.

    Raises ProtocolError as soon as a length prefix announces more than `max_frame` bytes, on bytes that
    are not msgpack, and on a frame of unknown kind, wrong arity or wrong field types. After an error the
    decoder is unusable. A partial frame is kept as a list of chunks and joined once, when complete, so a
    large frame costs linear time however it is split.
    """

    __slots__ = ("_chunks", "_have", "_max", "_need")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._max = max_frame
        self._chunks: list[bytes] = []
        self._have = 0  # bytes in _chunks
        self._need = 0  # bytes _chunks must reach before parsing can progress

    def feed(self, data: bytes) -> list[list[Any]]:
        if self._chunks:
            self._chunks.append(data)
            self._have += len(data)
            if self._have < self._need:
                return []
            data = b"".join(self._chunks)
            self._chunks = []
        frames: list[list[Any]] = []
        view = memoryview(data)
        pos = 0
        end = len(data)
        size = 0
        while end - pos >= 4:
            size = int.from_bytes(view[pos : pos + 4], "big")
            if size > self._max:
                raise ProtocolError(f"frame of {size} bytes exceeds the limit of {self._max}")
            if end - pos - 4 < size:
                break
            try:
                frame = _unpackb(view[pos + 4 : pos + 4 + size], raw=False, use_list=True)
            except Exception as exc:  # FormatError, ExtraData, StackError, ValueError ...
                raise ProtocolError(f"undecodable frame: {exc!r}") from None
            _check(frame)
            frames.append(frame)
            pos += 4 + size
        if pos < end:
            rest = data[pos:]
            self._chunks = [rest]
            self._have = len(rest)
            self._need = 4 + size if self._have >= 4 else 4
        return frames


def _check(frame: Any) -> None:
    if type(frame) is not list or not frame or type(frame[0]) is not int:
        raise ProtocolError(f"malformed frame: {str(frame)[:200]}")
    schema = _SCHEMA.get(frame[0])
    if schema is None or len(frame) != len(schema) + 1:
        raise ProtocolError(f"unknown kind or wrong arity: {str(frame)[:200]}")
    for value, kind in zip(frame[1:], schema, strict=True):
        if not isinstance(value, kind) or type(value) is bool:
            raise ProtocolError(f"field of wrong type in frame: {str(frame)[:200]}")
