"""An incremental HTTP/1.1 request parser, pure (no I/O): bytes in, events out. The server around it is
runtimes/proxy/server.py.

`RequestParser.feed(data)` buffers; `next_event()` returns the next complete event, or None when it needs more bytes:

    (HEAD, Request)       the request line and headers, checked; framing decided (`Request.length` / `.chunked`)
    (BODY, bytes)         a piece of the body (Content-Length, or one chunk's data); never empty
    (END, trailers)       the request is complete (`trailers`: a chunked body's trailer fields, else {})

and raises `HttpError(status, reason)` on anything malformed; the server then answers that status and closes the
connection (the parser is unusable after an error). Strict where leniency lets two parsers disagree about where a
request ends (request smuggling): Content-Length with Transfer-Encoding, a Transfer-Encoding other than `chunked`,
differing Content-Lengths, whitespace before a header's colon, folded header lines, control characters in a value,
bare LF line ends in the head, a chunk size that is not hex. Limits: the head (`max_head` bytes: 431), a chunk-size
line and the trailers (400), the body (`body_limit`, settable per request once its head is known: 413, raised as the
body arrives past it; the server decides what a declared Content-Length over the limit means before reading it).
"""

from __future__ import annotations

import re
from typing import Any

HEAD = 1
BODY = 2
END = 3

#: the largest request head (request line and headers) accepted
MAX_HEAD = 64 * 1024
#: a chunk-size line (size, extensions) and the trailer section
MAX_CHUNK_LINE = 4096
MAX_TRAILERS = 16 * 1024
#: the default body limit: Lambda's 6 MB payload and room for what a runtime wraps around it
MAX_BODY = 6 * 1024 * 1024 + 1024 * 1024

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
#: method, origin-form target, version: one space between
_REQUEST_LINE = re.compile(rb"(" + _TCHAR + rb"+) (/[\x21-\x7e]*) (HTTP/1\.[01])\r\n")
#: a header line, from its start: a token, a colon, the value (trailing whitespace stripped after), CRLF; no control
#: character in the value but tab, no whitespace before the colon, no folding
_FIELD_LINES = re.compile(rb"^(" + _TCHAR + rb"+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*)\r$", re.MULTILINE)
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}\Z")
_DIGITS = re.compile(r"[0-9]{1,19}\Z")

# parser states
_HEAD = 0
_LENGTH = 1
_CHUNK_SIZE = 2
_CHUNK_DATA = 3
_CHUNK_END = 4
_TRAILERS = 5


class HttpError(Exception):
    """A request this server will not parse: answer `status` and close the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class Request:
    """One request's head. `headers`: lower-case name -> value (a repeated field's values joined by ", ").
    `length`: the body's declared length (0 without a body; -1 when chunked)."""

    __slots__ = ("chunked", "expect_continue", "headers", "keep_alive", "length", "method", "path", "version")

    def __init__(self, method: str, path: str, version: str, headers: dict[str, str]) -> None:
        self.method = method
        self.path = path
        self.version = version
        self.headers = headers
        self.length = 0
        self.chunked = False
        connection = headers.get("connection", "").lower()
        if version == "HTTP/1.1":
            self.keep_alive = "close" not in connection
        else:
            self.keep_alive = "keep-alive" in connection
        self.expect_continue = headers.get("expect", "").lower() == "100-continue"

    def __repr__(self) -> str:
        return f"Request({self.method} {self.path} {self.version}, length={self.length}, chunked={self.chunked})"


def parse_fields(lines: list[bytes], what: str) -> dict[str, str]:
    """Header (or trailer) lines into a dict; raises HttpError(400) on a malformed one."""
    fields: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(name):  # also refuses "Name :" and folded (leading-space) lines
            raise HttpError(400, f"malformed {what} line")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            raise HttpError(400, f"control character in a {what} value")
        key = name.decode("ascii").lower()
        text = value.decode("latin-1")
        old = fields.get(key)
        fields[key] = text if old is None else f"{old}, {text}"
    return fields


def parse_head(head: bytes) -> Request:
    """The request line and header fields, each line ending in CRLF (the blank line that ends them left out).
    One regular expression for all the lines: the hot path (a runtime's `next` and `response`) parses in a few µs."""
    line = _REQUEST_LINE.match(head)
    if line is None:
        raise _request_line_error(head)
    method, target, version = line.groups()
    lines = head.count(b"\r\n")
    if head.count(b"\n") != lines or head.count(b"\r") != lines:
        raise HttpError(400, "bare CR or LF in the request head")
    # Each line must match from its start: a malformed one (whitespace before the colon, folded, a control
    # character) matches nowhere, and the count of matches falls short of the count of lines.
    pairs = _FIELD_LINES.findall(head, line.end())
    if len(pairs) != lines - 1:
        raise HttpError(400, "malformed header line")
    fields: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower().decode("ascii")
        text = value.rstrip(b" \t").decode("latin-1")
        old = fields.get(key)
        fields[key] = text if old is None else f"{old}, {text}"
    request = Request(method.decode("ascii"), target.decode("ascii"), version.decode("ascii"), fields)
    encoding = fields.get("transfer-encoding")
    length = fields.get("content-length")
    if encoding is not None:
        if length is not None:
            raise HttpError(400, "both Content-Length and Transfer-Encoding")
        if encoding.lower() != "chunked":
            raise HttpError(501, "only the chunked transfer coding is supported")
        request.chunked = True
        request.length = -1
    elif length is not None:
        values = {v.strip() for v in length.split(",")}
        if len(values) != 1:
            raise HttpError(400, "conflicting Content-Length values")
        value = values.pop()
        if not _DIGITS.match(value):
            raise HttpError(400, "malformed Content-Length")
        request.length = int(value)
    return request


def _request_line_error(head: bytes) -> HttpError:
    """Why a request line did not parse: an HTTP version other than 1.x (505), else malformed (400)."""
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) == 3 and parts[2].startswith(b"HTTP/") and len(parts[2]) == 8 and not parts[2].startswith(b"HTTP/1."):
        return HttpError(505, "HTTP version not supported")
    return HttpError(400, "malformed request line")


class RequestParser:
    """Requests on one connection, one after the other (see the module's docstring). Not thread-safe."""

    __slots__ = ("_buf", "_left", "_pos", "_received", "_state", "body_limit", "max_head")

    def __init__(self, max_head: int = MAX_HEAD, body_limit: int = MAX_BODY) -> None:
        self.max_head = max_head
        self.body_limit = body_limit
        self._buf = bytearray()
        self._pos = 0  # bytes of _buf already consumed
        self._state = _HEAD
        self._left = 0  # body bytes (or this chunk's) still to come
        self._received = 0  # body bytes of the current request so far

    def feed(self, data: bytes) -> None:
        buf = self._buf
        if self._pos and self._pos == len(buf):
            buf.clear()
            self._pos = 0
        elif self._pos > 65536 and self._pos > len(buf) // 2:
            del buf[: self._pos]
            self._pos = 0
        buf += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet parsed."""
        return len(self._buf) - self._pos

    @property
    def idle(self) -> bool:
        """Between requests, with nothing of the next one received."""
        return self._state == _HEAD and self.buffered == 0

    def next_event(self) -> tuple[int, Any] | None:
        state = self._state
        if state == _HEAD:
            return self._head()
        if state == _LENGTH:
            return self._length()
        return self._chunked()

    def _head(self) -> tuple[int, Any] | None:
        buf, pos = self._buf, self._pos
        while buf.startswith(b"\r\n", pos):  # RFC 9112 2.2: empty lines before a request line are ignored
            pos += 2
        self._pos = pos
        end = buf.find(b"\r\n\r\n", pos, pos + self.max_head + 4)
        if end < 0:
            if len(buf) - pos > self.max_head:
                raise HttpError(431, "request head too large")
            return None
        request = parse_head(bytes(buf[pos : end + 2]))
        self._pos = end + 4
        self._received = 0
        if request.chunked:
            self._state = _CHUNK_SIZE
        elif request.length:
            self._state, self._left = _LENGTH, request.length
        else:
            self._state = _LENGTH  # no body: END comes next
        return HEAD, request

    def _length(self) -> tuple[int, Any] | None:
        left = self._left
        if not left:
            self._state = _HEAD
            return END, {}
        buf, pos = self._buf, self._pos
        have = min(len(buf) - pos, left)
        if not have:
            return None
        self._count(have)
        piece = bytes(buf[pos : pos + have])
        self._pos = pos + have
        self._left = left - have
        return BODY, piece

    def _count(self, n: int) -> None:
        self._received += n
        if self._received > self.body_limit:
            raise HttpError(413, "request body too large")

    def _chunked(self) -> tuple[int, Any] | None:
        buf = self._buf
        while True:
            state, pos = self._state, self._pos
            if state == _CHUNK_SIZE:
                end = buf.find(b"\r\n", pos, pos + MAX_CHUNK_LINE)
                if end < 0:
                    if len(buf) - pos > MAX_CHUNK_LINE:
                        raise HttpError(400, "chunk-size line too long")
                    return None
                size = bytes(buf[pos:end]).split(b";", 1)[0].strip(b" \t")
                if not _HEX.match(size):
                    raise HttpError(400, "malformed chunk size")
                self._pos = end + 2
                self._left = int(size, 16)
                self._state = _CHUNK_DATA if self._left else _TRAILERS
            elif state == _CHUNK_DATA:
                have = min(len(buf) - pos, self._left)
                if not have:
                    return None
                self._count(have)
                piece = bytes(buf[pos : pos + have])
                self._pos = pos + have
                self._left -= have
                if not self._left:
                    self._state = _CHUNK_END
                return BODY, piece
            elif state == _CHUNK_END:
                if len(buf) - pos < 2:
                    return None
                if buf[pos : pos + 2] != b"\r\n":
                    raise HttpError(400, "chunk data not followed by CRLF")
                self._pos = pos + 2
                self._state = _CHUNK_SIZE
            else:
                return self._trailers()

    def _trailers(self) -> tuple[int, Any] | None:
        buf, pos = self._buf, self._pos
        if buf.startswith(b"\r\n", pos):
            self._pos = pos + 2
            self._state = _HEAD
            return END, {}
        end = buf.find(b"\r\n\r\n", pos, pos + MAX_TRAILERS + 4)
        if end < 0:
            if len(buf) - pos > MAX_TRAILERS:
                raise HttpError(400, "trailer section too large")
            return None
        lines = bytes(buf[pos:end]).split(b"\r\n")
        if any(b"\n" in line or b"\r" in line for line in lines):
            raise HttpError(400, "bare CR or LF in the trailers")
        trailers = parse_fields(lines, "trailer")
        self._pos = end + 4
        self._state = _HEAD
        return END, trailers
