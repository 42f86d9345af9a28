"""The frame codec: round trips, arbitrary chunking, and rejection of garbage and oversized frames."""

from __future__ import annotations

import time

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.contracts import environment as wire

ids = st.integers(min_value=0, max_value=2**63 - 1)
text = st.text(max_size=50)
blobs = st.binary(max_size=2000)

invoke_frames = st.tuples(ids, blobs, st.integers(0, 2**62), text, text, st.none() | blobs)
result_frames = st.builds(
    lambda i, p, d, r, n, lg: [wire.RESULT, i, p, d, r, n, lg],
    ids,
    blobs,
    st.floats(0, 1e6),
    st.integers(0, 2**40),
    st.integers(-1, 2**20),
    blobs,
)
error_frames = st.builds(
    lambda i, t, b, d, r, n, lg: [wire.ERROR, i, t, b, d, r, n, lg],
    ids,
    text,
    blobs,
    st.floats(0, 1e6),
    st.integers(0, 2**40),
    st.integers(-1, 2**20),
    blobs,
)
chunk_frames = st.builds(lambda i, d: [wire.CHUNK, i, d], ids, blobs)


@given(invoke_frames)
def test_invoke_round_trip(fields: tuple[int, bytes, int, str, str, bytes | None]) -> None:
    data = wire.encode_invoke(*fields)
    assert wire.FrameDecoder(wire.FROM_GATEWAY).feed(data) == [[wire.INVOKE, *fields]]
    with pytest.raises(wire.ProtocolError):  # an environment never sends INVOKE
        wire.FrameDecoder().feed(data)


@given(st.lists(result_frames | error_frames | chunk_frames, min_size=1, max_size=8), st.data())
def test_stream_of_frames_survives_any_chunking(frames: list[list[object]], data: st.DataObject) -> None:
    assert _fed_in_pieces(frames, data, 10) == frames


@given(st.binary(min_size=1, max_size=200))
def test_garbage_is_rejected_or_incomplete(junk: bytes) -> None:
    """Random bytes never decode into a frame that passes validation by accident of shape."""
    decoder = wire.FrameDecoder()
    try:
        frames = decoder.feed(junk)
    except wire.ProtocolError:
        return
    for frame in frames:  # whatever got through is a well-formed frame
        assert isinstance(frame, list) and len(frame) == len(wire._SCHEMA[frame[0]]) + 1


@pytest.mark.parametrize(
    "frame",
    [
        [99, 1, 2],  # unknown kind
        [wire.RESULT, 1],  # wrong arity
        {"kind": wire.RESULT},  # not an array
        "hello",
        [],
        [[1], 2, 3, 4],  # unhashable kind
        [wire.RESULT, [1], b"{}", 1.0, 1, 0, b""],  # id of the wrong type
        [wire.RESULT, 1, b"{}", "slow", 1, 0, b""],  # duration of the wrong type
        [wire.RESULT, 1, "text", 1.0, 1, 0, b""],  # payload must be bytes
        [wire.ERROR, 1, 7, b"{}", 1.0, 1, 0, b""],  # error type must be a string
        [wire.READY, 1, 1.0, 1, {"errorType": "E"}, "", b""],  # the init error travels as scalars
        [wire.READY, 1, 1.0, 1, None, "", [b"stack"]],  # and its stack as JSON bytes
        [wire.RESULT, True, b"{}", 1.0, 1, 0, b""],  # bools are not ids
    ],
)
def test_malformed_frames_are_protocol_errors(frame: object) -> None:
    with pytest.raises(wire.ProtocolError):
        body = msgpack.packb(frame)
        wire.FrameDecoder().feed(len(body).to_bytes(4, "big") + body)


def test_oversized_frame_is_rejected_before_it_is_buffered() -> None:
    decoder = wire.FrameDecoder(max_frame=1024)
    with pytest.raises(wire.ProtocolError):
        decoder.feed((1025).to_bytes(4, "big") + b"x" * 10)  # refused on the prefix alone


def test_msgpack_that_is_not_a_frame_is_rejected() -> None:
    body = b"\xc1\xc1"
    with pytest.raises(wire.ProtocolError):
        wire.FrameDecoder().feed(len(body).to_bytes(4, "big") + body)


def test_byte_garbage_is_protocol_error() -> None:
    with pytest.raises(wire.ProtocolError):
        wire.FrameDecoder().feed(b"\xc1\xc1\xc1\xc1")


@given(result_frames, st.integers(1, 7), st.data())
def test_a_wrong_typed_field_is_rejected(frame: list[object], index: int, data: st.DataObject) -> None:
    index = min(index, len(frame) - 1)
    wrong = data.draw(st.sampled_from([None, "s", [1], {"a": 1}, 1.5, b"b"]))
    expected = wire._SCHEMA[wire.RESULT][index - 1]
    if isinstance(wrong, expected):
        return
    frame = list(frame)
    frame[index] = wrong
    with pytest.raises(wire.ProtocolError):
        wire.FrameDecoder().feed(wire.encode(frame))


def test_large_frame_fed_in_small_chunks() -> None:
    payload = bytes(range(256)) * 16384  # 4 MB
    stream = wire.encode([wire.RESULT, 7, payload, 1.0, 1, 0, b""]) * 2
    decoder = wire.FrameDecoder()
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
    body = msgpack.packb([wire.RESULT, 1, tree, 1.0, 1, 0, b""])
    assert 1_000_000 < len(body) < wire.MAX_FRAME  # plain msgpack.unpackb takes ~0.5 s on this
    data = _frame(body)
    start = time.perf_counter()
    with pytest.raises(wire.ProtocolError):
        wire.FrameDecoder().feed(data)
    assert time.perf_counter() - start < 0.02


@pytest.mark.parametrize(
    "field",
    [
        {"a" * 10: 1},  # maps: never in a frame from an environment
        "x" * (wire.MAX_STR + 1),  # strings beyond the limit
        msgpack.ExtType(1, b"x" * 600),
        [b"x"] * 600,
    ],
)
def test_limits_on_frames_from_an_environment(field: object) -> None:
    body = msgpack.packb([wire.ERROR, 1, field, b"{}", 1.0, 1, 0, b"y" * 600], use_bin_type=True)
    with pytest.raises(wire.ProtocolError):
        wire.FrameDecoder().feed(_frame(body))


def test_an_init_errors_document_is_at_most_a_response() -> None:
    """READY's `stack_trace` (a stack, or a runtime's whole init/error document) is at most Lambda's response."""
    for stack in (b"", b'["a"]', b'{"errorType": "X"}', b"not JSON", b"x" * wire.MAX_SYNC_RESPONSE):
        (frame,) = wire.FrameDecoder().feed(wire.encode_ready(7, 1.5, 1, "X", "m", stack))
        assert wire.typed(wire.Ready, frame).stack_trace == stack
    with pytest.raises(wire.ProtocolError, match="oversized error"):
        wire.FrameDecoder().feed(wire.encode_ready(7, 1.5, 1, "X", "m", b"x" * (wire.MAX_SYNC_RESPONSE + 1)))


def test_a_six_megabyte_reply_decodes_in_milliseconds() -> None:
    data = wire.encode([wire.RESULT, 1, b"x" * wire.MAX_PAYLOAD, 1.0, 1, 0, b"y" * wire.MAX_LOG])
    decoder = wire.FrameDecoder()
    decoder.feed(data)  # first touch of the memory
    start = time.perf_counter()
    (frame,) = decoder.feed(data)
    assert len(frame[2]) == wire.MAX_PAYLOAD
    assert time.perf_counter() - start < 0.05


def test_the_gateway_side_still_takes_a_spec_map() -> None:
    data = wire.encode([wire.SPEC, {"env": {"A": "b"}, "mounts": [["/var/task", ["/x"]]]}])
    assert wire.FrameDecoder(wire.FROM_GATEWAY).feed(data)[0][1]["env"] == {"A": "b"}


@given(st.lists(st.integers(0, 300_000), min_size=1, max_size=4), st.data())
def test_large_frames_survive_any_chunking(sizes: list[int], data: st.DataObject) -> None:
    """Frames over LARGE_FRAME are copied into place as they arrive; cuts anywhere, even inside a length prefix."""
    frames = [[wire.RESULT, i, bytes([i % 256]) * size, 1.0, 1, 0, b"log"] for i, size in enumerate(sizes)]
    assert _fed_in_pieces(frames, data, 20) == frames


def _fed_in_pieces(frames: list[list[object]], data: st.DataObject, max_cuts: int) -> list[list[object]]:
    """What a decoder makes of `frames` encoded and fed in pieces cut at drawn offsets."""
    stream = b"".join(wire.encode(f) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=max_cuts)))
    decoder = wire.FrameDecoder()
    out: list[list[object]] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        out.extend(decoder.feed(stream[start:cut]))
        start = cut
    return out


def test_typed_encoders_write_the_bytes_of_plain_arrays() -> None:
    """The records and the hot paths' encoders changed no byte on the wire."""
    assert wire.encode_ready(7, 1.5, 1, None, "", b"") == wire.encode([wire.READY, 7, 1.5, 1, None, "", b""])
    head = wire.result_head(3, b"1")
    assert wire.encode_reply(head, 2.0, 10, 0, b"x") == wire.encode([wire.RESULT, 3, b"1", 2.0, 10, 0, b"x"])
    head = wire.error_head(3, "E", b"{}")
    assert wire.encode_reply(head, 2.0, 10, -1, b"") == wire.encode([wire.ERROR, 3, "E", b"{}", 2.0, 10, -1, b""])
    spec = wire.EnvironmentSpec(
        env={"A": "b"},
        code_dir="/var/task",
        handler="m.f",
        extra_paths=[],
        max_concurrency=1,
        mounts=[wire.Mount("/var/task", ["/x"])],
        memory_size=128,
        ephemeral_storage=512,
        network=True,
    )
    plain = {
        "env": {"A": "b"},
        "code_dir": "/var/task",
        "handler": "m.f",
        "extra_paths": [],
        "max_concurrency": 1,
        "mounts": [["/var/task", ["/x"]]],
        "memory_size": 128,
        "ephemeral_storage": 512,
        "network": True,
        "bootstrap": [],
        "extensions": [],
        "extension_emulators": {},
        "file_systems": [],
    }
    assert wire.encode_spec(spec) == wire.encode([wire.SPEC, plain])


def test_decoded_frames_make_their_records() -> None:
    data = wire.encode([wire.ERROR, 3, "E", b"{}", 2.0, 10, -1, b"log"])
    error = wire.typed(wire.Error, wire.FrameDecoder().feed(data)[0])
    assert isinstance(error, wire.Error)
    assert (error.inv_id, error.error_type, error.error_body, error.pending, error.log) == (3, "E", b"{}", -1, b"log")


@given(ids, blobs)
def test_chunk_round_trip(inv_id: int, data: bytes) -> None:
    encoded = wire.encode_chunk(inv_id, data)
    assert encoded == wire.encode([wire.CHUNK, inv_id, data])
    (frame,) = wire.FrameDecoder().feed(encoded)
    chunk = wire.typed(wire.Chunk, frame)
    assert isinstance(chunk, wire.Chunk) and (chunk.inv_id, chunk.data) == (inv_id, data)
    with pytest.raises(wire.ProtocolError):  # the gateway never sends CHUNK
        wire.FrameDecoder(wire.FROM_GATEWAY).feed(encoded)


@pytest.mark.parametrize(
    "frame",
    [
        [wire.CHUNK, 1, "text"],  # a piece is bytes, never a string
        [wire.CHUNK, 1],
        [wire.CHUNK, 1, b"x", b"y"],
        [wire.CHUNK, True, b"x"],
        [wire.CHUNK, 1, [b"x"]],
        [wire.CHUNK, 1.0, b"x"],
    ],
)
def test_malformed_chunks_are_protocol_errors(frame: list[object]) -> None:
    with pytest.raises(wire.ProtocolError):
        wire.FrameDecoder().feed(wire.encode(frame))


def test_a_chunk_as_large_as_a_frame_allows_decodes_and_a_larger_one_is_refused_on_its_prefix() -> None:
    (frame,) = wire.FrameDecoder().feed(wire.encode_chunk(1, b"x" * wire.MAX_PAYLOAD))
    assert len(frame[2]) == wire.MAX_PAYLOAD
    with pytest.raises(wire.ProtocolError):
        wire.FrameDecoder().feed(wire.encode_chunk(1, b"x" * wire.MAX_FRAME)[:1024])


def test_reset_is_a_frame_an_environment_may_send() -> None:
    decoder = wire.FrameDecoder(wire.FROM_ENVIRONMENT)
    assert decoder.feed(wire.encode((wire.RESET,))) == [[wire.RESET]]
    with pytest.raises(wire.ProtocolError):
        wire.FrameDecoder(wire.FROM_ENVIRONMENT).feed(wire.encode((wire.RESET, 1)))


@given(ids, st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=256))
def test_head_round_trip(inv_id: int, content_type: str) -> None:
    (frame,) = wire.FrameDecoder().feed(wire.encode((wire.HEAD, inv_id, content_type)))
    assert frame == [wire.HEAD, inv_id, content_type]
    with pytest.raises(wire.ProtocolError):  # the gateway never sends HEAD
        wire.FrameDecoder(wire.FROM_GATEWAY).feed(wire.encode((wire.HEAD, inv_id, content_type)))


@pytest.mark.parametrize(
    "frame",
    [
        [wire.HEAD, 1, ""],  # no content type at all
        [wire.HEAD, 1, "x" * (wire.MAX_CONTENT_TYPE + 1)],  # longer than a header field needs
        [wire.HEAD, 1, "text/html\r\nSet-Cookie: a=b"],  # a header line smuggled into the caller's response
        [wire.HEAD, 1, "text/html\nx"],
        [wire.HEAD, 1, "text/\x00html"],
        [wire.HEAD, 1, "text/html\t"],
        [wire.HEAD, 1, "téxt/html"],  # not ASCII
        [wire.HEAD, 1, b"text/html"],  # a string, never bytes
        [wire.HEAD, 1],
        [wire.HEAD, 1, "a", "b"],
        [wire.HEAD, True, "text/html"],
    ],
)
def test_malformed_heads_are_protocol_errors(frame: list[object]) -> None:
    with pytest.raises(wire.ProtocolError):
        wire.FrameDecoder().feed(wire.encode(frame))


def test_valid_content_type_is_what_the_decoder_accepts() -> None:
    assert wire.valid_content_type("application/vnd.awslambda.http-integration-response")
    assert wire.valid_content_type("text/html; charset=utf-8")
    assert not wire.valid_content_type("text/html\r\n")
