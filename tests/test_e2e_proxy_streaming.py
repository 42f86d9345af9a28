"""Streamed responses from a custom runtime through the Runtime API proxy, read by boto3's invoke_with_response_stream.

The runtime (a `bootstrap` run by the system's /usr/bin/python3) posts its response in Lambda's streaming mode
(`Lambda-Runtime-Function-Response-Mode: streaming`, `Transfer-Encoding: chunked`, with a pause between chunks) on
a raw socket: the pieces reach the client while the function still runs, a synchronous Invoke gets them joined,
an error in the trailers ends the stream with it, a streamed response may pass the 6 MB of a buffered one, and a
runtime that sends a flood of tiny chunks still streams (what arrives together goes out as one frame).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

from tests.conftest import ROLE, invoke_json, make_zip

SYSTEM_PYTHON = "/usr/bin/python3"
pytestmark = pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK), reason="needs the system's /usr/bin/python3")

RUNTIME = r"""#!/usr/bin/python3
import base64, http.client, json, os, socket, time

HOST, PORT = os.environ["AWS_LAMBDA_RUNTIME_API"].rsplit(":", 1)
BASE = "/2018-06-01/runtime"
conn = http.client.HTTPConnection(HOST, int(PORT), timeout=60)


def stream(rid, pieces, pause, trailers, chunked):
    s = socket.create_connection((HOST, int(PORT)))
    head = (
        f"POST {BASE}/invocation/{rid}/response HTTP/1.1\r\nHost: runtime\r\n"
        "Lambda-Runtime-Function-Response-Mode: streaming\r\nContent-Type: application/octet-stream\r\n"
    )
    if chunked:
        head += "Transfer-Encoding: chunked\r\n"
        head += "Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n\r\n"
        s.sendall(head.encode())
        for piece in pieces:
            s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            time.sleep(pause)
        s.sendall(b"0\r\n" + trailers + b"\r\n")
    else:
        body = b"".join(pieces)
        s.sendall(head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    answer = b""
    while b"\r\n" not in answer:
        answer += s.recv(65536)
    s.close()
    return answer.split(b"\r\n", 1)[0].decode()


while True:
    conn.request("GET", BASE + "/invocation/next")
    r = conn.getresponse()
    rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
    event = json.loads(r.read())
    pieces = [p.encode() for p in event.get("pieces", [])]
    if "size" in event:
        pieces = [b"x" * event["size"]] * event.get("count", 1)
    if "tiny" in event:  # many one-byte chunks in one write
        pieces = []
        chunks = b"1\r\nx\r\n" * event["tiny"]
    trailers = b""
    if "fail" in event:
        doc = json.dumps({"errorType": event["fail"], "errorMessage": "failed mid-stream"}).encode()
        trailers = b"Lambda-Runtime-Function-Error-Type: %s\r\nLambda-Runtime-Function-Error-Body: %s\r\n" % (
            event["fail"].encode(), base64.b64encode(doc))
    if "tiny" in event:
        s = socket.create_connection((HOST, int(PORT)))
        s.sendall((f"POST {BASE}/invocation/{rid}/response HTTP/1.1\r\nHost: runtime\r\n"
                   "Lambda-Runtime-Function-Response-Mode: streaming\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
                  + chunks + b"0\r\n\r\n")
        print("answer", s.recv(65536).split(b"\r\n", 1)[0].decode(), flush=True)
        s.close()
        continue
    print("answer", stream(rid, pieces, event.get("pause", 0), trailers, event.get("chunked", True)), flush=True)
"""


def _create(lam: Any, name: str, **kwargs: Any) -> None:
    lam.create_function(
        FunctionName=name,
        Runtime="provided.al2023",
        Role=ROLE,
        Handler="function.handler",
        Code={"ZipFile": make_zip({"bootstrap": RUNTIME}, executable={"bootstrap"})},
        **kwargs,
    )


def _stream(lam: Any, name: str, event: Any, **kwargs: Any) -> list[tuple[float, Any]]:
    resp = lam.invoke_with_response_stream(FunctionName=name, Payload=json.dumps(event).encode(), **kwargs)
    assert resp["StatusCode"] == 200
    return [(time.monotonic(), e) for e in resp["EventStream"]]


def _pieces(events: list[tuple[float, Any]]) -> list[bytes]:
    return [e["PayloadChunk"]["Payload"] for _, e in events if "PayloadChunk" in e]


def _complete(events: list[tuple[float, Any]]) -> dict[str, Any]:
    assert "InvokeComplete" in events[-1][1] and sum("InvokeComplete" in e for _, e in events) == 1, events
    return dict(events[-1][1]["InvokeComplete"])


def test_pieces_reach_the_client_as_the_runtime_sends_them(lam: Any, fname: str) -> None:
    _create(lam, fname, Timeout=10)
    events = _stream(lam, fname, {"pieces": ["first ", "second ", "third"], "pause": 0.4}, LogType="Tail")
    assert _pieces(events) == [b"first ", b"second ", b"third"]
    arrived = [at for at, e in events if "PayloadChunk" in e]
    assert arrived[1] - arrived[0] > 0.3 and arrived[2] - arrived[1] > 0.3, arrived  # not all at the end
    complete = _complete(events)
    assert "ErrorCode" not in complete and "LogResult" in complete
    resp = lam.invoke(FunctionName=fname, Payload=json.dumps({"pieces": ["a", "b", "c"]}).encode())
    assert resp["Payload"].read() == b"abc" and "FunctionError" not in resp  # Invoke: the pieces joined


def test_an_error_in_the_trailers_ends_the_stream_with_it(lam: Any, fname: str) -> None:
    _create(lam, fname, Timeout=10)
    events = _stream(lam, fname, {"pieces": ["partial"], "fail": "Custom.StreamError"})
    assert _pieces(events) == [b"partial"]
    complete = _complete(events)
    assert complete["ErrorCode"] == "Custom.StreamError"
    details = json.loads(complete["ErrorDetails"])
    assert details == {"errorType": "Custom.StreamError", "errorMessage": "failed mid-stream"}
    resp, body = invoke_json(lam, fname, {"pieces": ["partial"], "fail": "Custom.StreamError"})
    assert resp["FunctionError"] == "Unhandled" and body["errorMessage"] == "failed mid-stream"


def test_a_streamed_response_may_pass_six_megabytes_which_invoke_refuses(lam: Any, fname: str) -> None:
    _create(lam, fname, Timeout=20, MemorySize=512)
    for chunked in (True, False):
        events = _stream(lam, fname, {"size": 1024 * 1024, "count": 9, "chunked": chunked})
        assert sum(map(len, _pieces(events))) == 9 * 1024 * 1024 and "ErrorCode" not in _complete(events)
    resp, body = invoke_json(lam, fname, {"size": 1024 * 1024, "count": 7})
    assert resp["FunctionError"] == "Unhandled" and body["errorType"] == "Function.ResponseSizeTooLarge"
    resp = lam.invoke(FunctionName=fname, Payload=b'{"pieces": ["still serving"]}')
    assert resp["Payload"].read() == b"still serving"


def test_a_flood_of_tiny_chunks_streams_in_few_frames(lam: Any, fname: str) -> None:
    """300000 one-byte chunks, more than the gateway takes as separate pieces (MIN_CHUNK_COST): what arrives
    together goes out as one frame."""
    _create(lam, fname, Timeout=20)
    events = _stream(lam, fname, {"tiny": 300_000})
    pieces = _pieces(events)
    assert sum(map(len, pieces)) == 300_000 and len(pieces) < 1000
    assert "ErrorCode" not in _complete(events)


def test_past_lambdas_streaming_limit_the_invocation_fails(lam: Any, fname: str) -> None:
    """201 MB streamed: the proxy stops relaying at 200 MB and the invocation fails with Lambda's error."""
    _create(lam, fname, Timeout=60, MemorySize=512)
    start = time.monotonic()
    events = _stream(lam, fname, {"size": 1024 * 1024, "count": 201})
    complete = _complete(events)
    assert complete["ErrorCode"] == "Function.ResponseSizeTooLarge", complete
    assert "(209715200 bytes)" in complete["ErrorDetails"], complete
    assert sum(map(len, _pieces(events))) <= 200 * 1024 * 1024
    print(f"201 MB through the proxy in {time.monotonic() - start:.2f} s")
    resp = lam.invoke(FunctionName=fname, Payload=b'{"pieces": ["next"]}')  # a new environment if need be
    assert resp["Payload"].read() == b"next"


def test_a_synchronous_invoke_stops_reading_past_six_megabytes(lam: Any, fname: str) -> None:
    """Invoke's answer can only be Function.ResponseSizeTooLarge once 6 MB have come: it comes then (the environment
    killed), not after the gateway has read the 201 MB the runtime would send."""
    _create(lam, fname, Timeout=60, MemorySize=512)
    assert lam.invoke(FunctionName=fname, Payload=b'{"pieces": ["warm"]}')["Payload"].read() == b"warm"
    start = time.monotonic()
    resp, body = invoke_json(lam, fname, {"size": 1024 * 1024, "count": 201})
    took = time.monotonic() - start
    assert resp["FunctionError"] == "Unhandled" and body["errorType"] == "Function.ResponseSizeTooLarge"
    assert "exceeded maximum allowed payload size (6291556 bytes)" in body["errorMessage"], body
    read = int(body["errorMessage"].split("(", 1)[1].split(" ", 1)[0])
    assert read < 8 * 1024 * 1024 and took < 1.0, (read, took)  # stopped at 6 MB (201 MB take about 1.3 s)
    resp = lam.invoke(FunctionName=fname, Payload=b'{"pieces": ["next"]}')  # a new environment
    assert resp["Payload"].read() == b"next"
