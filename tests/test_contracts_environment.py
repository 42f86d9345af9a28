"""The frame codec: round trips, arbitrary chunking, and rejection of garbage and oversized frames."""

from __future__ import annotations

import time

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.contracts import environment as protocol

ids = st.integers(min_value=0, max_value=2**63 - 1)
text = st.text(max_size=50)
blobs = st.binary(max_size=2000)

invoke_frames = st.tuples(ids, blobs, st.integers(0, 2**62), text, text, st.none() | blobs)
result_frames = st.builds(
    lambda i, p, d, r, n, lg: [protocol.RESULT, i, p, d, r, n, lg],
    ids,
    blobs,
    st.floats(0, 1e6),
    st.integers(0, 2**40),
    st.integers(-1, 2**20),
    blobs,
)
error_frames = st.builds(
    lambda i, t, b, d, r, n, lg: [protocol.ERROR, i, t, b, d, r, n, lg],
    ids,
    text,
    blobs,
    st.floats(0, 1e6),
    st.integers(0, 2**40),
    st.integers(-1, 2**20),
    blobs,
)


@given(invoke_frames)
def test_invoke_round_trip(fields: tuple[int, bytes, int, str, str, bytes | None]) -> None:
    data = protocol.encode_invoke(*fields)
    assert protocol.FrameDecoder(protocol.FROM_GATEWAY).feed(data) == [[protocol.INVOKE, *fields]]
    with pytest.raises(protocol.ProtocolError):  # an environment never sends INVOKE
        protocol.FrameDecoder().feed(data)


@given(st.lists(result_frames | error_frames, min_size=1, max_size=8), st.data())
def test_stream_of_frames_survives_any_chunking(frames: list[list[object]], data: st.DataObject) -> None:
    assert _fed_in_pieces(frames, data, 10) == frames


@given(st.binary(min_size=1, max_size=200))
def test_garbage_is_rejected_or_incomplete(junk: bytes) -> None:
    """Random bytes never decode into a frame that passes validation by accident of shape."""
    decoder = protocol.FrameDecoder()
    try:
        frames = decoder.feed(junk)
    except protocol.ProtocolError:
        return
    for frame in frames:  # whatever got through is a well-formed frame
        assert isinstance(frame, list) and len(frame) == len(protocol._SCHEMA[frame[0]]) + 1


@pytest.mark.parametrize(
    "frame",
    [
        [99, 1, 2],  # unknown kind
        [protocol.RESULT, 1],  # wrong arity
        {"kind": protocol.RESULT},  # not an array
        "hello",
        [],
        [[1], 2, 3, 4],  # unhashable kind
        [protocol.RESULT, [1], b"{}", 1.0, 1, 0, b""],  # id of the wrong type
        [protocol.RESULT, 1, b"{}", "slow", 1, 0, b""],  # duration of the wrong type
        [protocol.RESULT, 1, "text", 1.0, 1, 0, b""],  # payload must be bytes
        [protocol.ERROR, 1, 7, b"{}", 1.0, 1, 0, b""],  # error type must be a string
        [protocol.READY, 1, 1.0, 1, {"errorType": "E"}, "", b""],  # the init error travels as scalars
        [protocol.READY, 1, 1.0, 1, None, "", [b"stack"]],  # and its stack as JSON bytes
        [protocol.RESULT, True, b"{}", 1.0, 1, 0, b""],  # bools are not ids
    ],
)
def test_malformed_frames_are_protocol_errors(frame: object) -> None:
    with pytest.raises(protocol.ProtocolError):
        body = msgpack.packb(frame)
        protocol.FrameDecoder().feed(len(body).to_bytes(4, "big") + body)


def test_oversized_frame_is_rejected_before_it_is_buffered() -> None:
    decoder = protocol.FrameDecoder(max_frame=1024)
    with pytest.raises(protocol.ProtocolError):
        decoder.feed((1025).to_bytes(4, "big") + b"x" * 10)  # refused on the prefix alone


def test_msgpack_that_is_not_a_frame_is_rejected() -> None:
    body = b"\xc1\xc1"
    with pytest.raises(protocol.ProtocolError):
        protocol.FrameDecoder().feed(len(body).to_bytes(4, "big") + body)


def test_byte_garbage_is_protocol_error() -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.FrameDecoder().feed(b"\xc1\xc1\xc1\xc1")


@given(result_frames, st.integers(1, 7), st.data())
def test_a_wrong_typed_field_is_rejected(frame: list[object], index: int, data: st.DataObject) -> None:
    index = min(index, len(frame) - 1)
    wrong = data.draw(st.sampled_from([None, "s", [1], {"a": 1}, 1.5, b"b"]))
    expected = protocol._SCHEMA[protocol.RESULT][index - 1]
    if isinstance(wrong, expected):
        return
    frame = list(frame)
    frame[index] = wrong
    with pytest.raises(protocol.ProtocolError):
        protocol.FrameDecoder().feed(protocol.encode(frame))


def test_large_frame_fed_in_small_chunks() -> None:
    payload = bytes(range(256)) * 16384  # 4 MB
    stream = protocol.encode([protocol.RESULT, 7, payload, 1.0, 1, 0, b""]) * 2
    decoder = protocol.FrameDecoder()
    frames = []
    for i in range(0, len(stream), 65536):
        frames.extend(decoder.feed(stream[i : i + 65536]))
    assert [f[2] == payload for f in frames] == [True, True]


def _frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def test_a_nested_bomb_is_refused_in_well_under_a_millisecond_per_megabyte() -> None:
    """A frame under MAX_FRAME whose field is a huge nested structure: refused before it is built."""
    tree: object = [1] * 8
    for _ in range(6):
        tree = [tree] * 8
    body = msgpack.packb([protocol.RESULT, 1, tree, 1.0, 1, 0, b""])
    assert 1_000_000 < len(body) < protocol.MAX_FRAME  # plain msgpack.unpackb takes ~0.5 s on this
    data = _frame(body)
    start = time.perf_counter()
    with pytest.raises(protocol.ProtocolError):
        protocol.FrameDecoder().feed(data)
    assert time.perf_counter() - start < 0.02


@pytest.mark.parametrize(
    "field",
    [
        {"a" * 10: 1},  # maps: never in a frame from an environment
        "x" * (protocol.MAX_STR + 1),  # strings beyond the limit
        msgpack.ExtType(1, b"x" * 600),
        [b"x"] * 600,
    ],
)
def test_limits_on_frames_from_an_environment(field: object) -> None:
    body = msgpack.packb([protocol.ERROR, 1, field, b"{}", 1.0, 1, 0, b"y" * 600], use_bin_type=True)
    with pytest.raises(protocol.ProtocolError):
        protocol.FrameDecoder().feed(_frame(body))


def test_a_six_megabyte_reply_decodes_in_milliseconds() -> None:
    data = protocol.encode([protocol.RESULT, 1, b"x" * protocol.MAX_PAYLOAD, 1.0, 1, 0, b"y" * protocol.MAX_LOG])
    decoder = protocol.FrameDecoder()
    decoder.feed(data)  # first touch of the memory
    start = time.perf_counter()
    (frame,) = decoder.feed(data)
    assert len(frame[2]) == protocol.MAX_PAYLOAD
    assert time.perf_counter() - start < 0.05


def test_the_gateway_side_still_takes_a_spec_map() -> None:
    data = protocol.encode([protocol.SPEC, {"env": {"A": "b"}, "mounts": [["/var/task", ["/x"]]]}])
    assert protocol.FrameDecoder(protocol.FROM_GATEWAY).feed(data)[0][1]["env"] == {"A": "b"}


@given(st.lists(st.integers(0, 300_000), min_size=1, max_size=4), st.data())
def test_large_frames_survive_any_chunking(sizes: list[int], data: st.DataObject) -> None:
    """Frames over LARGE_FRAME are copied into place as they arrive; cuts anywhere, even inside a length prefix."""
    frames = [[protocol.RESULT, i, bytes([i % 256]) * size, 1.0, 1, 0, b"log"] for i, size in enumerate(sizes)]
    assert _fed_in_pieces(frames, data, 20) == frames


def _fed_in_pieces(frames: list[list[object]], data: st.DataObject, max_cuts: int) -> list[list[object]]:
    """What a decoder makes of `frames` encoded and fed in pieces cut at drawn offsets."""
    stream = b"".join(protocol.encode(f) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=max_cuts)))
    decoder = protocol.FrameDecoder()
    out: list[list[object]] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        out.extend(decoder.feed(stream[start:cut]))
        start = cut
    return out
