"""InvokeWithResponseStream against the real gateway, with boto3's `invoke_with_response_stream` as the client.

A Python function (the fast path, which cannot stream, as Lambda's buffered runtimes) answers with its whole response
as one PayloadChunk, then InvokeComplete. Streamed responses come here from a function that writes CHUNK frames on its
own socket (what the Runtime API proxy does for a runtime in streaming response mode; the proxy's own test is in
tests/test_e2e_proxy_streaming.py): its pieces reach the client as they are sent, a synchronous Invoke gets them
joined (within 6 MB), and a forged piece kills only the environment that sent it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import GatewayFactory, RunningGateway, create_function, invoke_json

ECHO = "def lambda_handler(event, context):\n    print('handled', event)\n    return {'echo': event}\n"
FAIL = "def lambda_handler(event, context):\n    raise KeyError('missing')\n"
SLOW = "import time\ndef lambda_handler(event, context):\n    time.sleep(5)\n"

#: a function that streams by writing CHUNK frames ([7, id, bytes], msgpack by hand) on its environment's socket,
#: as the Runtime API proxy does; invocation ids count from 1 in each environment
STREAMER = """
import os, stat, time
calls = 0

def _socket():
    for fd in map(int, os.listdir("/proc/self/fd")):
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                return fd
        except OSError:
            pass

def _chunk(fd, inv_id, data):
    body = b"\\x93\\x07\\xcf" + inv_id.to_bytes(8, "big") + b"\\xc6" + len(data).to_bytes(4, "big") + data
    frame = memoryview(len(body).to_bytes(4, "big") + body)
    while frame:
        frame = frame[os.write(fd, frame):]

def lambda_handler(event, context):
    global calls
    calls += 1
    fd = _socket()
    for i in range(event.get("pieces", 3)):
        data = b"x" * event["size"] if "size" in event else f"piece {i};".encode()
        _chunk(fd, calls + event.get("skew", 0), data)
        print("wrote", i, time.time(), flush=True)
        time.sleep(event.get("pause", 0))
    return calls if event.get("calls") else "end"
"""


def _stream(lam: Any, name: str, event: Any = None, **kwargs: Any) -> tuple[dict[str, Any], list[tuple[float, Any]]]:
    """Invoke with a response stream: the response without its stream, and each event with when it arrived."""
    resp = lam.invoke_with_response_stream(FunctionName=name, Payload=json.dumps(event or {}).encode(), **kwargs)
    events = [(time.monotonic(), event) for event in resp.pop("EventStream")]
    return resp, events


def _pieces(events: list[tuple[float, Any]]) -> list[bytes]:
    return [e["PayloadChunk"]["Payload"] for _, e in events if "PayloadChunk" in e]


def _complete(events: list[tuple[float, Any]]) -> dict[str, Any]:
    assert "InvokeComplete" in events[-1][1], events  # the last event, once
    assert sum("InvokeComplete" in e for _, e in events) == 1
    return dict(events[-1][1]["InvokeComplete"])


def test_a_python_function_answers_one_piece_then_complete(lam: Any, fname: str) -> None:
    create_function(lam, fname, ECHO)
    resp, events = _stream(lam, fname, {"a": 1})
    assert resp["StatusCode"] == 200 and resp["ExecutedVersion"] == "$LATEST"
    assert resp["ResponseStreamContentType"] == "application/vnd.amazon.eventstream"
    assert resp["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    assert _pieces(events) == [b'{"echo": {"a": 1}}'] and len(events) == 2
    assert _complete(events) == {}


def test_tail_puts_the_log_in_invoke_complete(lam: Any, fname: str) -> None:
    create_function(lam, fname, ECHO)
    lam.publish_version(FunctionName=fname)
    _, events = _stream(lam, fname, {"b": 2}, LogType="Tail", Qualifier="1")
    log = base64.b64decode(_complete(events)["LogResult"]).decode()
    assert "handled {'b': 2}" in log and "START RequestId: " in log and "REPORT RequestId: " in log


def test_a_function_error_completes_with_its_type_and_document(lam: Any, fname: str) -> None:
    create_function(lam, fname, FAIL)
    _, events = _stream(lam, fname)
    assert _pieces(events) == []
    complete = _complete(events)
    assert complete["ErrorCode"] == "KeyError"
    details = json.loads(complete["ErrorDetails"])
    assert (details["errorType"], details["errorMessage"]) == ("KeyError", "'missing'")


def test_a_timeout_completes_with_sandbox_timedout(lam: Any, fname: str) -> None:
    create_function(lam, fname, SLOW, Timeout=1)
    _, events = _stream(lam, fname)
    complete = _complete(events)
    assert complete["ErrorCode"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in json.loads(complete["ErrorDetails"])["errorMessage"]


def test_an_unknown_function_is_404_and_a_bad_invocation_type_400(lam: Any, fname: str) -> None:
    with pytest.raises(ClientError) as err:
        _stream(lam, "no-such-function")
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    create_function(lam, fname, ECHO)
    with pytest.raises(ClientError) as err:
        _stream(lam, fname, InvocationType="Event")  # Invoke's, not this operation's
    assert err.value.response["Error"]["Code"] == "ValidationException"


def test_dry_run_answers_204_without_running(lam: Any, fname: str) -> None:
    create_function(lam, fname, FAIL)
    resp = lam.invoke_with_response_stream(FunctionName=fname, InvocationType="DryRun", Payload=b"{}")
    assert resp["StatusCode"] == 204 and resp["ExecutedVersion"] == "$LATEST"


def test_a_throttled_stream_is_429(lam: Any, fname: str) -> None:
    create_function(lam, fname, ECHO)
    lam.put_function_concurrency(FunctionName=fname, ReservedConcurrentExecutions=0)
    with pytest.raises(ClientError) as err:
        _stream(lam, fname)
    assert err.value.response["Error"]["Code"] == "TooManyRequestsException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429


def test_pieces_reach_the_client_while_the_function_still_runs(lam: Any, fname: str) -> None:
    create_function(lam, fname, STREAMER, Timeout=10)
    invoke_json(lam, fname, {"pieces": 0})  # the environment is warm: its next invocation is number 2
    _, events = _stream(lam, fname, {"pieces": 3, "pause": 0.4, "skew": 0})
    assert _pieces(events) == [b"piece 0;", b"piece 1;", b"piece 2;", b'"end"']  # RESULT's payload: the last piece
    arrived = [at for at, e in events if "PayloadChunk" in e]
    assert arrived[1] - arrived[0] > 0.3 and arrived[2] - arrived[1] > 0.3, arrived  # as sent, not at the end
    assert _complete(events) == {}


def test_a_synchronous_invoke_of_a_streaming_function_gets_the_pieces_joined(lam: Any, fname: str) -> None:
    create_function(lam, fname, STREAMER, Timeout=10)
    resp = lam.invoke(FunctionName=fname, Payload=b'{"pieces": 2}')
    assert resp["Payload"].read() == b'piece 0;piece 1;"end"' and "FunctionError" not in resp
    resp, body = invoke_json(lam, fname, {"pieces": 7, "size": 1024 * 1024})
    assert resp["FunctionError"] == "Unhandled" and body["errorType"] == "Function.ResponseSizeTooLarge"
    resp = lam.invoke(FunctionName=fname, Payload=b'{"pieces": 1}')  # a new environment (that one was killed)
    assert resp["Payload"].read() == b'piece 0;"end"'


def test_more_than_six_megabytes_streams_whole(lam: Any, fname: str) -> None:
    create_function(lam, fname, STREAMER, Timeout=10, MemorySize=512)
    _, events = _stream(lam, fname, {"pieces": 8, "size": 1024 * 1024})
    assert sum(map(len, _pieces(events))) == 8 * 1024 * 1024 + len(b'"end"')
    assert _complete(events) == {}


def test_a_forged_piece_for_another_invocation_kills_only_its_environment(lam: Any, fname: str) -> None:
    create_function(lam, fname, STREAMER, Timeout=10)
    _, events = _stream(lam, fname, {"pieces": 1, "skew": 5})
    assert _complete(events)["ErrorCode"] == "Runtime.ExitError"
    _, events = _stream(lam, fname, {"pieces": 1})  # a new environment: its first invocation
    assert _pieces(events) == [b"piece 0;", b'"end"']


def test_a_slow_reader_holds_the_function_back_not_the_gateways_memory(lam: Any, fname: str) -> None:
    """48 MB streamed to a client that reads nothing for 1.5 s: the function's last writes wait for the reader (the
    gateway stops reading its socket while 1 MB waits), instead of the gateway taking the response in."""
    create_function(lam, fname, STREAMER, Timeout=30, MemorySize=1024)
    size = 4 * 1024 * 1024
    event = json.dumps({"pieces": 12, "size": size}).encode()
    resp = lam.invoke_with_response_stream(FunctionName=fname, Payload=event, LogType="Tail")
    time.sleep(1.5)
    reading = time.time()
    events = [(time.monotonic(), e) for e in resp["EventStream"]]
    assert sum(map(len, _pieces(events))) == 12 * size + len(b'"end"')
    log = base64.b64decode(_complete(events)["LogResult"]).decode()
    stamps = [float(line.split()[2]) for line in log.splitlines() if line.startswith("wrote ")]
    assert len(stamps) == 12 and stamps[-1] > reading, (reading, stamps)


def test_a_client_that_leaves_mid_stream_does_not_stop_the_function(
    gateway: RunningGateway, lam: Any, fname: str
) -> None:
    """As on Lambda: the function runs to its end (and its environment serves the next invocation), the rest of its
    response is dropped, and the gateway is unharmed."""
    create_function(lam, fname, STREAMER, Timeout=10)
    body = json.dumps({"pieces": 4, "pause": 0.3}).encode()
    head = (
        f"POST /2021-11-15/functions/{fname}/response-streaming-invocations HTTP/1.1\r\nHost: gateway\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(head + body)
        received = b""
        while b"piece 0;" not in received:
            received += sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 200 ")
    time.sleep(1.5)  # the function ends meanwhile
    resp, calls = invoke_json(lam, fname, {"pieces": 0, "calls": True})
    assert calls == 2 and "FunctionError" not in resp  # the same environment, not killed under the function
    assert gateway.health()["status"] == "ok"


STREAM_CALLER = """
import boto3

def lambda_handler(event, context):
    resp = boto3.client("lambda").invoke_with_response_stream(FunctionName=event["target"], Payload=b'{"n": 1}')
    events = list(resp["EventStream"])
    return {"pieces": [e["PayloadChunk"]["Payload"].decode() for e in events if "PayloadChunk" in e],
            "complete": "InvokeComplete" in events[-1]}
"""


def test_a_function_streams_another_with_its_own_credentials(lam: Any, fname: str) -> None:
    """Signed with the session credentials the gateway gave it, as Invoke is (lambda:InvokeFunction on any function)."""
    create_function(lam, f"{fname}-target", ECHO)
    create_function(lam, fname, STREAM_CALLER, Timeout=15)
    resp, body = invoke_json(lam, fname, {"target": f"{fname}-target"})
    assert "FunctionError" not in resp, body
    assert body == {"pieces": ['{"echo": {"n": 1}}'], "complete": True}


def test_the_answer_begins_when_the_function_starts(lam: Any, fname: str) -> None:
    """Status line and headers go out as the payload reaches the environment, not when the function ends."""
    create_function(lam, fname, "import time\ndef lambda_handler(event, context):\n    time.sleep(1)\n    return 1\n")
    invoke_json(lam, fname)  # warm
    start = time.monotonic()
    resp = lam.invoke_with_response_stream(FunctionName=fname, Payload=b"{}")
    headers_after = time.monotonic() - start
    events = list(resp["EventStream"])
    ended_after = time.monotonic() - start
    assert headers_after < 0.5 < 0.9 < ended_after, (headers_after, ended_after)
    assert events[0] == {"PayloadChunk": {"Payload": b"1"}}


def test_a_synchronous_invoke_stops_reading_past_six_megabytes(lam: Any, fname: str) -> None:
    """Once the pieces pass 6 MB the answer can only be Function.ResponseSizeTooLarge: the environment is killed there,
    as for an overflow, instead of the gateway reading on (up to 200 MB) to throw it away."""
    create_function(lam, fname, STREAMER, Timeout=60, MemorySize=512)
    event = json.dumps({"pieces": 40, "size": 1024 * 1024}).encode()
    start = time.monotonic()
    resp = lam.invoke(FunctionName=fname, Payload=event, LogType="Tail")
    body = json.loads(resp["Payload"].read())
    assert body["errorType"] == "Function.ResponseSizeTooLarge" and resp["FunctionError"] == "Unhandled"
    log = base64.b64decode(resp["LogResult"]).decode()
    written = [int(line.split()[1]) for line in log.splitlines() if line.startswith("wrote ")]
    assert max(written, default=-1) < 20, written  # it was stopped soon after 6 of its 40 MB
    assert time.monotonic() - start < 10
    resp = lam.invoke(FunctionName=fname, Payload=b'{"pieces": 1}')  # the next invocation gets a new environment
    assert resp["Payload"].read() == b'piece 0;"end"'


def _stuck_reader(gw: RunningGateway, name: str, event: Any) -> socket.socket:
    """A client that sends an InvokeWithResponseStream request, reads the status line and headers, then reads
    nothing more while keeping its connection open (its receive window falls to zero)."""
    body = json.dumps(event).encode()
    head = (
        f"POST /2021-11-15/functions/{name}/response-streaming-invocations HTTP/1.1\r\nHost: gateway\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.socket()
    # Before connecting: a small window, and small segments, which keep the gateway's send buffer (sized from the
    # segment size, about 1.3 MB on loopback's 64 KB) small too.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", gw.port))
    sock.sendall(head + body)
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(1)  # no further than the headers
    assert received.startswith(b"HTTP/1.1 200 "), received
    return sock


def _throttled(lam: Any, name: str) -> bool:
    try:
        lam.invoke(FunctionName=name, Payload=b'{"pieces": 0}')
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "TooManyRequestsException"
        return True
    return False


def test_a_reader_that_stops_reading_holds_no_slot_once_the_function_ended(gateway_factory: GatewayFactory) -> None:
    """The concurrency slot is the invocation's: a function that has ended frees it while its answer still waits
    for a client that reads nothing (1 MB: more than the connection takes, less than the gateway holds before it
    stops reading the function's socket, which would keep it from seeing the function's end)."""
    gw = gateway_factory(env={"GATEWAY_BODY_TIMEOUT": "60"})
    lam = gw.client()
    create_function(lam, "f", STREAMER, Timeout=10)
    lam.put_function_concurrency(FunctionName="f", ReservedConcurrentExecutions=1)
    sock = _stuck_reader(gw, "f", {"pieces": 2, "size": 512 * 1024})
    try:
        deadline = time.monotonic() + 10
        while _throttled(lam, "f"):  # until the function ends, not until its answer is written
            assert time.monotonic() < deadline, "the stuck reader holds the slot"
            time.sleep(0.2)
    finally:
        sock.close()


def test_a_reader_that_stops_reading_is_cut_after_the_body_timeout(gateway_factory: GatewayFactory) -> None:
    """48 MB for a client that reads nothing: the function waits on the gateway (its slot held) until no write has
    progressed for GATEWAY_BODY_TIMEOUT seconds; then the gateway aborts the connection, drops the rest, and the
    function ends, freeing its slot."""
    gw = gateway_factory(env={"GATEWAY_BODY_TIMEOUT": "2"})
    lam = gw.client()
    create_function(lam, "f", STREAMER, Timeout=60, MemorySize=512)
    lam.put_function_concurrency(FunctionName="f", ReservedConcurrentExecutions=1)
    size = 4 * 1024 * 1024
    sock = _stuck_reader(gw, "f", {"pieces": 12, "size": size})
    try:
        time.sleep(0.5)
        assert _throttled(lam, "f")  # the function waits for the reader
        time.sleep(4)  # past the deadline: the gateway has given up on the reader
        assert not _throttled(lam, "f")
        received = 0
        with contextlib.suppress(ConnectionResetError):
            while data := sock.recv(65536):
                received += len(data)
        assert received < size, received  # the connection ended, not the response
    finally:
        sock.close()
    assert gw.health()["status"] == "ok"
