"""The `application/vnd.amazon.eventstream` encoding: the messages of InvokeWithResponseStream's answer. No I/O here.

One message is a prelude (total length and headers' length, big-endian uint32 each, then the CRC32 of those 8
bytes), the headers, the payload, and the CRC32 of everything before it. A header is a 1-byte name length, the
name, a type byte (7: a string) and a 2-byte length before the UTF-8 value. The headers an AWS SDK reads are
`:message-type` (`event`), `:event-type` (the member of the stream's union) and `:content-type`.

InvokeWithResponseStream's stream (botocore's `InvokeWithResponseStreamResponseEvent`) has two events:
`PayloadChunk`, whose payload is a piece of the function's response as it is (the member `Payload` is the event's
payload: `application/octet-stream`), and `InvokeComplete`, the last one, a JSON object with `ErrorCode`,
`ErrorDetails` and `LogResult` (base64 of the log's last 4 KB), each only when there is one.
"""

from __future__ import annotations

import struct
from zlib import crc32

import orjson

STRING = 7
#: the prelude's fixed part and the message's CRC
_PRELUDE = struct.Struct(">II")
_CRC = struct.Struct(">I")
#: botocore refuses a message whose payload is larger (its `_MAX_PAYLOAD_LENGTH`); every piece here is far smaller
MAX_PAYLOAD = 24 * 1024 * 1024
CONTENT_TYPE = "application/vnd.amazon.eventstream"


def encode_headers(headers: dict[str, str]) -> bytes:
    """String headers in the wire form (names of at most 255 bytes, values of at most 65535)."""
    out = bytearray()
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        out += bytes((len(raw_name),)) + raw_name + bytes((STRING,)) + len(raw_value).to_bytes(2, "big") + raw_value
    return bytes(out)


def message(headers: bytes, payload: bytes | memoryview) -> bytes:
    """One message: `headers` already encoded (`encode_headers`), then `payload`."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"an event's payload is at most {MAX_PAYLOAD} bytes, not {len(payload)}")
    prelude = _PRELUDE.pack(12 + len(headers) + len(payload) + 4, len(headers))
    head = prelude + _CRC.pack(crc32(prelude)) + headers
    return head + payload + _CRC.pack(crc32(payload, crc32(head)))


#: the headers of each event of InvokeWithResponseStream, encoded once
_CHUNK_HEADERS = encode_headers(
    {":event-type": "PayloadChunk", ":content-type": "application/octet-stream", ":message-type": "event"}
)
_COMPLETE_HEADERS = encode_headers(
    {":event-type": "InvokeComplete", ":content-type": "application/json", ":message-type": "event"}
)


def payload_chunk(data: bytes | memoryview) -> bytes:
    """A `PayloadChunk` event carrying `data`."""
    return message(_CHUNK_HEADERS, data)


def invoke_complete(
    error_code: str | None = None, error_details: str | None = None, log_result: str | None = None
) -> bytes:
    """The `InvokeComplete` event that ends the stream; absent fields are left out of its JSON."""
    fields = {"ErrorCode": error_code, "ErrorDetails": error_details, "LogResult": log_result}
    return message(_COMPLETE_HEADERS, orjson.dumps({k: v for k, v in fields.items() if v is not None}))
