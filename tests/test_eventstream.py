"""The event-stream encoder, read back by botocore's own decoder and by its parser for InvokeWithResponseStream."""

from __future__ import annotations

import base64
from typing import Any

import botocore.session
import pytest
from botocore.eventstream import ChecksumMismatch, EventStream, EventStreamBuffer
from botocore.parsers import create_parser
from hypothesis import given
from hypothesis import strategies as st

from gateway.api.invoke import eventstream


def _messages(data: bytes, cuts: list[int] = []) -> list[Any]:  # noqa: B006 - read only
    buffer = EventStreamBuffer()
    out: list[Any] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        buffer.add_data(data[start:cut])
        out.extend(buffer)
        start = cut
    return out


class _Raw:
    """What botocore's EventStream reads: a body with `stream()`."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self) -> Any:
        yield from (self.data[i : i + 7] for i in range(0, len(self.data), 7))

    def close(self) -> None:
        pass


def _events(data: bytes) -> list[dict[str, Any]]:
    """The events boto3's invoke_with_response_stream yields for this body (botocore's parser for the operation's
    response, as its client calls it)."""
    op = botocore.session.get_session().get_service_model("lambda").operation_model("InvokeWithResponseStream")
    response = {
        "status_code": 200,
        "headers": {"Content-Type": eventstream.CONTENT_TYPE, "X-Amz-Executed-Version": "$LATEST"},
        "body": _Raw(data),
        "context": {"operation_name": op.name},
    }
    parsed = create_parser("rest-json").parse(response, op.output_shape)
    assert parsed["ExecutedVersion"] == "$LATEST" and parsed["ResponseStreamContentType"] == eventstream.CONTENT_TYPE
    assert isinstance(parsed["EventStream"], EventStream)
    return list(parsed["EventStream"])


@given(st.binary(max_size=5000), st.lists(st.integers(0, 5100), max_size=6))
def test_payload_chunks_decode_with_botocore_in_any_pieces(payload: bytes, cuts: list[int]) -> None:
    data = eventstream.payload_chunk(payload) * 2
    messages = _messages(data, [min(c, len(data)) for c in cuts])
    assert [m.payload for m in messages] == [payload, payload]
    assert messages[0].headers == {
        ":event-type": "PayloadChunk",
        ":content-type": "application/octet-stream",
        ":message-type": "event",
    }


def test_a_stream_parses_as_boto3_reads_it() -> None:
    log = base64.b64encode(b"START RequestId: x\n").decode()
    body = (
        eventstream.payload_chunk(b"hello ")
        + eventstream.payload_chunk(b"")
        + eventstream.payload_chunk(bytes(range(256)))
        + eventstream.invoke_complete(log_result=log)
    )
    events = _events(body)
    assert events == [
        {"PayloadChunk": {"Payload": b"hello "}},
        {"PayloadChunk": {"Payload": b""}},
        {"PayloadChunk": {"Payload": bytes(range(256))}},
        {"InvokeComplete": {"LogResult": log}},
    ]


def test_an_error_completes_the_stream_with_its_code_and_details() -> None:
    events = _events(eventstream.invoke_complete("Sandbox.Timedout", '{"errorMessage": "late"}'))
    assert events == [{"InvokeComplete": {"ErrorCode": "Sandbox.Timedout", "ErrorDetails": '{"errorMessage": "late"}'}}]


def test_a_flipped_bit_fails_botocores_checksum() -> None:
    data = bytearray(eventstream.payload_chunk(b"payload"))
    data[-6] ^= 1
    with pytest.raises(ChecksumMismatch):
        _messages(bytes(data))


def test_headers_in_their_wire_form() -> None:
    assert eventstream.encode_headers({"a": "bc"}) == b"\x01a\x07\x00\x02bc"


def test_a_payload_larger_than_botocore_reads_is_refused() -> None:
    with pytest.raises(ValueError):
        eventstream.payload_chunk(b"x" * (eventstream.MAX_PAYLOAD + 1))
