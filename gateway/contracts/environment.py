"""The gateway <-> environment wire protocol: msgpack frames on one stream socket. No I/O here.

A frame is a 4-byte big-endian length followed by one msgpack array whose first element is the frame kind (the length
lets a reader refuse an oversized frame before buffering it). Invocation frames carry an id, so several invocations can
be in flight on one connection and replies may come back in any order. Event and result payloads travel as raw `bytes`
(JSON text): neither side re-encodes user JSON.

    READY    [READY, pid, init_ms, capacity, error_type | None, error_message, stack_trace]   env -> gateway, once
    INVOKE   [INVOKE, id, payload, deadline_ms, request_id, invoked_arn, client_context | None]
    RESULT   [RESULT, id, payload, duration_ms, max_rss_kb, pending, log]
    ERROR    [ERROR, id, error_type, error_body, duration_ms, max_rss_kb, pending, log]
    CHUNK    [CHUNK, id, data]                                   env -> gateway: a piece of a streamed response
    HEAD     [HEAD, id, content_type]           env -> gateway: a streamed response begins (before its first CHUNK)
    SHUTDOWN [SHUTDOWN]                                          gateway -> environment
    SPEC     [SPEC, spec]               gateway -> a zygote's spare, first and once: become this environment
                                        (`spec`: an `EnvironmentSpec`'s wire form, a map)
    RESET    [RESET]                    env -> gateway: hand me no more invocations (what is in flight is answered);
                                        the gateway then ends it with SHUTDOWN (its extensions failed: Lambda resets
                                        such an environment)

READY's `error_type` is None when Init succeeded (`error_message` and `stack_trace` then mean nothing); else
`error_message` is the message and `stack_trace` (bytes, at most `MAX_SYNC_RESPONSE`) says what the caller of an
invocation whose Init failed gets, by its first byte, as Lambda answers such an invocation:
- empty: an error the platform made (Runtime.ExitError, Runtime.InvalidEntrypoint, Extension.*): the gateway answers
  {"errorMessage": "RequestId: <id> Error: <error_message>", "errorType": <error_type>};
- "[": the JSON array of the stack (the Python fast path): {"errorMessage", "errorType", "requestId": "" (an Init
  error belongs to no invocation: Lambda's Python runtime says ""), "stackTrace": <the array, spliced unparsed>};
- anything else: the whole error document, returned as it is (what a runtime posted to /runtime/init/error: JSON or
  not, Lambda passes it on unchanged; `error_type` and `error_message` are then only for the gateway's records).
The gateway forwards `error_body` unparsed too (the JSON error document Lambda returns to the caller). `log` is
output of the invocation that did not go through the environment's output pipe (concurrent mode: what each
invocation wrote to sys.stdout/sys.stderr), at most `MAX_LOG` bytes of it, marked as cut by `truncation_marker` when
it was longer. `pending` is how many bytes the output pipe held when the reply was sent (FIONREAD; -1 when unknown):
with 0 the gateway need not read the pipe before answering (the hot path: most invocations print nothing, and a read
that finds nothing still costs a system call); a function that lies about it only moves its own output to its next
invocation's log. `capacity` is how many invocations the environment runs at once (more than 1 only for async
handlers that opted in); the gateway never sends it more.

A streamed response (a Runtime API runtime's `/response` in `Lambda-Runtime-Function-Response-Mode: streaming`) is any
number of CHUNK frames for an invocation, in order, then the RESULT or ERROR that ends it: RESULT's `payload` is its
last piece (usually empty); an ERROR discards what was streamed for a synchronous Invoke (the caller of
InvokeWithResponseStream has had the pieces already, and gets the error at the end). A CHUNK for an invocation that is
not in flight is a broken peer's, like such a reply. HEAD (once, before the first CHUNK) is the `Content-Type` of the
runtime's streaming `/response`, which a function URL answers with (`valid_content_type`, checked by the decoder). The
pieces of one response add up to at most `MAX_STREAM` bytes (Lambda's limit for a streamed response); a synchronous
Invoke keeps at most `MAX_SYNC_RESPONSE` of them (Function.ResponseSizeTooLarge beyond). A sender splits larger writes
into pieces of at most `MAX_CHUNK` bytes (the decoder takes any piece within `MAX_FRAME`); each piece counts as at least
`MIN_CHUNK_COST` bytes toward the limit, so that a response is at most MAX_STREAM / MIN_CHUNK_COST frames however small
its pieces (each costs the gateway a decode, whatever its size).

Frames from an environment (READY, RESULT, ERROR, CHUNK, RESET) are decoded under strict limits (`FROM_ENVIRONMENT`):
one flat array of at most 8 scalars, strings of at most `MAX_STR` bytes, no maps, no extension types, no nested
containers. So decoding costs time linear in the frame's size and builds at most a handful of objects, whatever a
hostile function writes on its socket: a nested structure is refused at its second array, before it is built. The
decoder checks every field's type, so a peer cannot smuggle a value the reader would trip over.

The same module runs inside the environments (the runtime imports it), so it imports only msgpack and its sibling
contracts. A frame the decoder rejects, or one larger than `MAX_FRAME`, means the peer is broken: the reader must drop
the connection and kill the peer, never read from it again.

Typed records: a decoded frame is a list whose fields have been checked; `Ready`, `Invoke`, `Result`, `Error`, `Chunk`
name them (`typed(Result, frame)`: a tuple, as cheap as the list it is made from; nothing is checked twice). The hot
paths encode with `encode_invoke`, `encode_reply` and `encode_chunk`, which build the same bytes as `encode(record)`.
The spec a new environment gets (`EnvironmentSpec`, the SPEC frame's map and the zygote's FORK request) is checked once,
when read."""

from __future__ import annotations

from typing import Any, NamedTuple

import msgpack

from gateway.contracts.file_systems import FileSystemMount

_packb = msgpack.packb
_unpackb = msgpack.unpackb

READY = 1
INVOKE = 2
RESULT = 3
ERROR = 4
SHUTDOWN = 5
SPEC = 6
CHUNK = 7
RESET = 8
HEAD = 9

#: frame size limits. Payloads are at most 6 MB each way; the rest is headroom for fields and logs.
MAX_PAYLOAD = 6 * 1024 * 1024
MAX_LOG = 256 * 1024
MAX_FRAME = MAX_PAYLOAD + MAX_LOG + 64 * 1024

#: Lambda's limit on a streamed response (InvokeWithResponseStream; 20 MB until July 2025, now 200 MB): the total of
#: an invocation's CHUNK frames. Beyond its first 6 MB Lambda caps the stream's rate at 2 MB/s; the gateway does not.
MAX_STREAM = 200 * 1024 * 1024
#: what the smallest piece counts toward MAX_STREAM (see the module's docstring): at most 204800 pieces a response
MIN_CHUNK_COST = 1024
#: Lambda's limit on a synchronous Invoke's response, the figure its Function.ResponseSizeTooLarge message states
MAX_SYNC_RESPONSE = 6291556
#: the largest piece a sender puts in one CHUNK frame (each becomes one event of the caller's stream)
MAX_CHUNK = 1024 * 1024

#: the longest content type a HEAD frame may carry (one short header field)
MAX_CONTENT_TYPE = 256

#: the longest string (in UTF-8 bytes) a frame from an environment may hold: an error message of Lambda's
#: 256 KB limit in characters, 4 bytes each at worst
MAX_STR = 4 * MAX_LOG + 1024

#: frames up to this size are decoded without limits: at one byte per object they build at most that many objects,
#: and a nested one then fails the type check (the hot path's replies are small: the limits cost ~3 us a frame)
SMALL_FRAME = 512
#: a frame larger than this that arrives in pieces is copied into a buffer of its size as they come
LARGE_FRAME = 64 * 1024

_NUM = (int, float)
_NONE = type(None)
#: the type of each field after the kind, per kind
_SCHEMA: dict[int, tuple[type | tuple[type, ...], ...]] = {
    READY: (int, _NUM, int, (str, _NONE), str, bytes),
    INVOKE: (int, bytes, int, str, str, (bytes, _NONE)),
    RESULT: (int, bytes, _NUM, int, int, bytes),
    ERROR: (int, str, bytes, _NUM, int, int, bytes),
    SHUTDOWN: (),
    SPEC: (dict,),
    CHUNK: (int, bytes),
    RESET: (),
    HEAD: (int, str),
}


class Ready(NamedTuple):
    """READY: Init is over (`error_type` None) or failed (then the environment exits; see the module's docstring)."""

    kind: int
    pid: int
    init_ms: float
    capacity: int
    error_type: str | None
    error_message: str
    stack_trace: bytes  # empty, a JSON array of the stack, or the whole error document (see the module's docstring)


class Invoke(NamedTuple):
    """INVOKE: run one invocation; `deadline_ms` is wall-clock milliseconds since the epoch."""

    kind: int
    inv_id: int
    payload: bytes
    deadline_ms: int
    request_id: str
    invoked_arn: str
    client_context: bytes | None


class Result(NamedTuple):
    """RESULT: the handler's return value as JSON (`payload`); `pending` and `log` as in the module's docstring."""

    kind: int
    inv_id: int
    payload: bytes
    duration_ms: float
    max_rss_kb: int
    pending: int
    log: bytes


class Error(NamedTuple):
    """ERROR: the invocation failed; `error_body` is the JSON error document Lambda returns to the caller."""

    kind: int
    inv_id: int
    error_type: str
    error_body: bytes
    duration_ms: float
    max_rss_kb: int
    pending: int
    log: bytes


class Chunk(NamedTuple):
    """CHUNK: the next piece of invocation `inv_id`'s streamed response (see the module's docstring)."""

    kind: int
    inv_id: int
    data: bytes


#: a reply to an INVOKE
Reply = Result | Error

#: the record of a frame the decoder returned, as `typed(Result, frame)`: the frame's own fields in a tuple of its
#: kind's record, without `_make`'s second check of the length (the decoder checked arity and types; a quarter of
#: `_make`'s cost, on the hot path of both sides)
typed = tuple.__new__

#: positions of the fields a reader touches before it makes a record of a reply (the gateway fills in `log`)
INV_ID = 1
PENDING = -2
LOG = -1

#: what a runtime knows of a reply before the invocation's figures: (RESULT, inv_id, payload) or
#: (ERROR, inv_id, error_type, error_body); `encode_reply` completes it
ReplyHead = tuple[int, int, bytes] | tuple[int, int, str, bytes]


def result_head(inv_id: int, payload: bytes) -> ReplyHead:
    return (RESULT, inv_id, payload)


def error_head(inv_id: int, error_type: str, error_body: bytes) -> ReplyHead:
    return (ERROR, inv_id, error_type, error_body)


class Mount(NamedTuple):
    """A directory a jail shows at `target`: one host directory bound read-only, or several merged (an overlay,
    the last one on top)."""

    target: str
    sources: list[str]


class SpecError(ValueError):
    """A spec that is not an `EnvironmentSpec`'s wire form."""


class EnvironmentSpec(NamedTuple):
    """What a new environment becomes: the function's configuration as its runtime needs it. Built by the gateway
    (gateway/execution/spec.py), sent once per environment (in the SPEC frame to a spare, or in the zygote's FORK
    request), read by the runtime (runtimes/python/bootstrap.py) before any of the function's code runs.

    `env` is its whole process environment; `code_dir` its LAMBDA_TASK_ROOT and working directory; `extra_paths`
    go on sys.path after it (the layers); `max_concurrency` > 1 lets an async handler run that many invocations at
    once. For the sandbox (runtimes/python/sandbox.py): `mounts` (a jail's code and layers), `memory_size` (MB),
    `ephemeral_storage` (MB of /tmp, and the largest file), `network` (whether a jail is connected to the gateway's
    bridge). `bootstrap`, when not empty, makes it a Runtime API environment: the proxy (runtimes/proxy) serves the
    Runtime API and runs this command line as the runtime (a custom runtime's `bootstrap`, Node.js, ...); empty, it
    is the Python fast path (the environment process imports the handler itself). `extensions` (a Runtime API
    environment's only) are the external extensions the proxy starts before the runtime: executables as the
    environment sees them (/opt/extensions/<name> in a jail), in the order Lambda starts them (by name).
    """

    env: dict[str, str]
    code_dir: str
    handler: str
    extra_paths: list[str]
    max_concurrency: int
    mounts: list[Mount]
    memory_size: int
    ephemeral_storage: int
    network: bool
    bootstrap: list[str] = []
    extensions: list[str] = []
    extension_emulators: dict[str, str] = {}  # an extension -> what runs it (QEMU: gateway/architectures.py)
    file_systems: list[FileSystemMount] = []  # a jail's FileSystemConfigs (gateway/contracts/file_systems.py)

    def to_wire(self) -> dict[str, Any]:
        """The msgpack map the SPEC frame and the FORK request carry (`mounts` as [target, [sources]] arrays)."""
        return self._asdict()

    @classmethod
    def from_wire(cls, wire: Any) -> EnvironmentSpec:
        """Read and check a spec's wire form; raises SpecError. Missing optional keys take their defaults (`network`
        True, `max_concurrency` 1, the lists and maps empty)."""
        if type(wire) is not dict:
            raise SpecError(f"a spec is a map, not {type(wire).__name__}")
        try:
            spec = cls(
                env=wire["env"],
                code_dir=wire["code_dir"],
                handler=wire["handler"],
                extra_paths=wire.get("extra_paths", []),
                max_concurrency=wire.get("max_concurrency", 1),
                mounts=[Mount(*m) for m in wire.get("mounts", ())],
                memory_size=wire["memory_size"],
                ephemeral_storage=wire["ephemeral_storage"],
                network=wire.get("network", True),
                bootstrap=wire.get("bootstrap", []),
                extensions=wire.get("extensions", []),
                extension_emulators=wire.get("extension_emulators", {}),
                file_systems=[FileSystemMount.from_wire(f) for f in wire.get("file_systems", ())],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(f"malformed spec: {exc!r}") from None
        _check_spec(spec)
        return spec


def _check_spec(spec: EnvironmentSpec) -> None:
    emulators = spec.extension_emulators
    ok = (
        type(spec.env) is dict
        and all(type(k) is str and type(v) is str for k, v in spec.env.items())
        and type(spec.code_dir) is str
        and type(spec.handler) is str
        and type(spec.max_concurrency) is int
        and all(type(m.target) is str and type(m.sources) is list for m in spec.mounts)
        and all(type(s) is str for m in spec.mounts for s in m.sources)
        and type(spec.memory_size) is int
        and type(spec.ephemeral_storage) is int
        and type(spec.network) is bool
        and type(spec.extra_paths) is type(spec.bootstrap) is type(spec.extensions) is list
        and type(emulators) is dict
        and all(type(a) is str for a in (*spec.extra_paths, *spec.bootstrap, *spec.extensions, *emulators))
        and all(type(a) is str for a in emulators.values())
    )
    if not ok:
        raise SpecError(f"a field of the spec has the wrong type: {str(spec)[:200]}")


class Peer:
    """What a decoder accepts from one side: its frame kinds, and msgpack limits (`flat`: no nested arrays)."""

    __slots__ = ("flat", "kinds", "limits")

    def __init__(self, kinds: frozenset[int], limits: dict[str, int], flat: bool) -> None:
        self.kinds = kinds
        self.limits = limits
        self.flat = flat


#: frames the gateway reads from an environment (hostile code may write anything on that socket)
FROM_ENVIRONMENT = Peer(
    frozenset({READY, RESULT, ERROR, CHUNK, RESET, HEAD}),
    {"max_array_len": 8, "max_map_len": 0, "max_str_len": MAX_STR, "max_bin_len": MAX_FRAME, "max_ext_len": 0},
    flat=True,
)
#: frames an environment reads from the gateway (trusted: SPEC holds the function's configuration as a map)
FROM_GATEWAY = Peer(frozenset({INVOKE, SHUTDOWN, SPEC}), {}, flat=False)


def truncation_marker(dropped: int, limit: int = MAX_LOG) -> bytes:
    """The line that stands where an invocation's log lost its first `dropped` bytes (it keeps its last `limit`)."""
    return f"[gateway] {dropped} bytes of earlier output dropped: an invocation's log keeps its last {limit}\n".encode()


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame."""


def encode(frame: list[Any] | tuple[Any, ...]) -> bytes:
    """One frame: a 4-byte big-endian length, then the msgpack array."""
    body: bytes = _packb(frame, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


def encode_ready(
    pid: int, init_ms: float, capacity: int, error_type: str | None, error_message: str, stack_trace: bytes
) -> bytes:
    """READY (see `Ready`)."""
    return encode((READY, pid, init_ms, capacity, error_type, error_message, stack_trace))


def encode_spec(spec: EnvironmentSpec) -> bytes:
    """SPEC: the first frame a zygote's spare reads, which makes it this environment."""
    return encode((SPEC, spec.to_wire()))


def encode_reply(head: ReplyHead, duration_ms: float, max_rss_kb: int, pending: int, log: bytes) -> bytes:
    """RESULT or ERROR (see `Result`, `Error`): `head` (`result_head`, `error_head`), then the invocation's figures."""
    body: bytes = _packb((*head, duration_ms, max_rss_kb, pending, log), use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


def encode_chunk(inv_id: int, data: bytes) -> bytes:
    """CHUNK (see `Chunk`): `data` is at most MAX_CHUNK bytes."""
    body: bytes = _packb((CHUNK, inv_id, data), use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


def valid_content_type(value: str) -> bool:
    """Whether HEAD may carry `value`: 1..MAX_CONTENT_TYPE visible ASCII characters or spaces (a header's value)."""
    return 0 < len(value) <= MAX_CONTENT_TYPE and value.isascii() and value.isprintable()


def encode_invoke(
    inv_id: int,
    payload: bytes,
    deadline_ms: int,
    request_id: str,
    invoked_arn: str,
    client_context: bytes | None,
) -> bytes:
    """INVOKE (see `Invoke`)."""
    body: bytes = _packb(
        (INVOKE, inv_id, payload, deadline_ms, request_id, invoked_arn, client_context), use_bin_type=True
    )
    return len(body).to_bytes(4, "big") + body


class FrameDecoder:
    """Incremental decoder: feed bytes, get the complete, validated frames they finish.

    Raises ProtocolError as soon as a length prefix announces more than `max_frame` bytes, on bytes that
    are not msgpack, and on a frame of unknown kind, wrong arity or wrong field types. After an error the
    decoder is unusable. A partial frame is kept as a list of chunks and joined once, when complete, or, when
    larger than LARGE_FRAME, copied into a buffer of its size as it arrives (so its completion costs the decode
    alone); either way a large frame costs linear time however it is split.
    """

    __slots__ = ("_arrays", "_chunks", "_have", "_kinds", "_large", "_limits", "_max", "_need")

    def __init__(self, peer: Peer = FROM_ENVIRONMENT, max_frame: int = MAX_FRAME) -> None:
        self._max = max_frame
        self._kinds = peer.kinds
        self._limits: dict[str, Any] = dict(peer.limits)
        if peer.flat:
            self._limits["list_hook"] = self._one_array
        self._arrays = 0
        self._large: bytearray | None = None  # a large frame under way, its length prefix included
        self._chunks: list[bytes] = []
        self._have = 0  # bytes in _chunks
        self._need = 0  # bytes _chunks must reach before parsing can progress

    def feed(self, data: bytes) -> list[list[Any]]:
        frames: list[list[Any]] = []
        if self._large is not None:
            data = self._fill(data, frames)
            if not data:
                return frames
        if self._chunks:
            self._chunks.append(data)
            self._have += len(data)
            if self._have < self._need:
                return frames
            data = b"".join(self._chunks)
            self._chunks = []
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
            frames.append(self._decode(view[pos + 4 : pos + 4 + size]))
            pos += 4 + size
        if pos < end:
            rest = end - pos
            if rest >= 4 and size > LARGE_FRAME:  # copied in place as it arrives: no big join at its end
                self._large = bytearray(4 + size)
                self._large[:rest] = view[pos:]
                self._have = rest
            else:
                self._chunks = [data[pos:]]
                self._have = rest
                self._need = 4 + size if rest >= 4 else 4
        return frames

    def _fill(self, data: bytes, frames: list[list[Any]]) -> bytes:
        """Copy `data` into the large frame under way; decode it once complete. Returns the bytes after it."""
        buf = self._large
        assert buf is not None
        have = self._have
        take = min(len(buf) - have, len(data))
        buf[have : have + take] = memoryview(data)[:take]
        self._have = have + take
        if self._have < len(buf):
            return b""
        self._large = None
        self._have = 0
        frames.append(self._decode(memoryview(buf)[4:]))
        return data[take:]

    def _decode(self, body: memoryview) -> list[Any]:
        try:
            if len(body) <= SMALL_FRAME:  # cannot hold more than a few hundred objects: skip the limits' cost
                frame = _unpackb(body, raw=False, use_list=True)
            else:
                self._arrays = 0
                frame = _unpackb(body, raw=False, use_list=True, **self._limits)
        except Exception as exc:  # FormatError, ExtraData, StackError, ValueError, limits, nesting ...
            raise ProtocolError(f"undecodable frame: {str(exc)[:200]}") from None
        _check(frame, self._kinds)
        return frame  # type: ignore[no-any-return]

    def _one_array(self, array: list[Any]) -> list[Any]:
        """msgpack's list_hook, called as each array is complete (innermost first): the frame itself must be the
        only one, so a second call means nesting, refused after building at most one small inner array."""
        self._arrays += 1
        if self._arrays > 1:
            raise ProtocolError("nested containers in a frame")
        return array


def _check(frame: Any, kinds: frozenset[int]) -> None:
    if type(frame) is not list or not frame or type(frame[0]) is not int:
        raise ProtocolError(f"malformed frame: {str(frame)[:200]}")
    schema = _SCHEMA.get(frame[0]) if frame[0] in kinds else None
    if schema is None or len(frame) != len(schema) + 1:
        raise ProtocolError(f"unknown kind or wrong arity: {str(frame)[:200]}")
    for value, kind in zip(frame[1:], schema, strict=True):
        if not isinstance(value, kind) or type(value) is bool:
            raise ProtocolError(f"field of wrong type in frame: {str(frame)[:200]}")
    if frame[0] == READY and len(frame[6]) > MAX_SYNC_RESPONSE:  # an Init error's document is a response
        raise ProtocolError(f"READY with an oversized error: {str(frame)[:200]}")
    if frame[0] == HEAD and not valid_content_type(frame[2]):  # it becomes a header of the caller's response
        raise ProtocolError(f"HEAD with an invalid content type: {str(frame)[:200]}")
