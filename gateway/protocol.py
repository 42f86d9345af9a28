"""The gateway <-> environment wire protocol: msgpack frames on one stream socket. No I/O here.

A frame is one msgpack array whose first element is the frame kind. Invocation frames carry an id, so
several invocations can be in flight on one connection and replies may come back in any order. Event
and result payloads travel as raw `bytes` (JSON text): neither side re-encodes user JSON.

    READY    [READY, pid, init_ms, init_error | None]          environment -> gateway, once
    INVOKE   [INVOKE, id, payload, deadline_ms, request_id, invoked_arn, client_context | None]
    RESULT   [RESULT, id, payload, duration_ms, max_rss_kb, log]
    ERROR    [ERROR, id, error_type, error_body, duration_ms, max_rss_kb, log]
    SHUTDOWN [SHUTDOWN]                                          gateway -> environment

`init_error` is a map {errorType, errorMessage, stackTrace}; `error_body` is the JSON error document
Lambda returns to the caller. `log` is the invocation's captured output (bytes).

The same module runs inside the environments (the runtime imports it), so it imports only msgpack.
A frame the decoder rejects, or one larger than `MAX_FRAME`, means the peer is broken: the reader must
drop the connection and kill the peer, never read from it again.
"""

from __future__ import annotations

from typing import Any

import msgpack

READY = 1
INVOKE = 2
RESULT = 3
ERROR = 4
SHUTDOWN = 5

#: frame size limits. Payloads are at most 6 MB each way; the rest is headroom for fields and logs.
MAX_PAYLOAD = 6 * 1024 * 1024
MAX_LOG = 256 * 1024
MAX_FRAME = MAX_PAYLOAD + MAX_LOG + 64 * 1024

_ARITY = {READY: 4, INVOKE: 7, RESULT: 6, ERROR: 7, SHUTDOWN: 1}


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame."""


def encode(frame: list[Any] | tuple[Any, ...]) -> bytes:
    return msgpack.packb(frame, use_bin_type=True)  # type: ignore[no-any-return]


def encode_invoke(
    inv_id: int,
    payload: bytes,
    deadline_ms: int,
    request_id: str,
    invoked_arn: str,
    client_context: bytes | None,
) -> bytes:
    return msgpack.packb(  # type: ignore[no-any-return]
        (INVOKE, inv_id, payload, deadline_ms, request_id, invoked_arn, client_context), use_bin_type=True
    )


class FrameDecoder:
    """Incremental decoder: feed bytes, iterate complete, validated frames.

    Raises ProtocolError on garbage, on a frame over `max_frame` bytes, or on a frame of unknown kind or
    wrong arity. After an error the decoder is unusable.
    """

    __slots__ = ("_unpacker",)

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._unpacker = msgpack.Unpacker(
            raw=False,
            use_list=True,
            max_buffer_size=max_frame,
            max_bin_len=max_frame,
            max_str_len=max_frame,
            max_array_len=64,
            max_map_len=64,
        )

    def feed(self, data: bytes) -> list[list[Any]]:
        try:
            self._unpacker.feed(data)
            frames = list(self._unpacker)
        except Exception as exc:  # BufferFull, ExtraData, FormatError, StackError, ValueError ...
            raise ProtocolError(f"undecodable frame: {exc!r}") from None
        for frame in frames:
            if type(frame) is not list or not frame or _ARITY.get(frame[0]) != len(frame):
                raise ProtocolError(f"malformed frame: {str(frame)[:200]}")
        return frames
