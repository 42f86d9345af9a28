"""Function URLs against callers and functions that misbehave, through the real gateway: a public caller's slow body
holds no concurrency slot, and bodies being read are bounded in memory (gateway/api/urls/serving.py)."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time
from typing import Any

import pytest

from tests.conftest import RunningGateway, create_function, wait_for
from tests.test_e2e_function_urls import HANDLER, http, url_for
from tests.test_e2e_node import create_node_function

SIX_MB = 6 * 1024 * 1024


def _open_body(gateway: RunningGateway, site: str, length: int, sent: bytes = b"") -> socket.socket:
    """A connection that sent a POST's head declaring `length` bytes and `sent` of them, and then nothing."""
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    path = site.removeprefix(gateway.url) + "/echo"
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode() + sent)
    return sock


def test_a_slow_body_holds_no_concurrency_slot(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, HANDLER, Timeout=5)
    site = url_for(gateway, lam, fname)
    lam.put_function_concurrency(FunctionName=fname, ReservedConcurrentExecutions=1)
    with _open_body(gateway, site, 1000, b"x" * 10):  # 990 bytes still to come, slowly
        time.sleep(0.3)
        resp = http.request("POST", f"{site}/echo", body=b"hello", headers={"Content-Type": "text/plain"})
        assert resp.status == 200, resp.data
        assert json.loads(resp.data)["event"]["body"] == "hello"


def test_bodies_being_read_are_bounded_by_the_budget(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, HANDLER, Timeout=5)
    site = url_for(gateway, lam, fname)
    held = [_open_body(gateway, site, SIX_MB) for _ in range(10)]  # 60 MB of the 64 MB budget reserved
    try:
        time.sleep(0.5)
        with _open_body(gateway, site, SIX_MB) as sock:  # no room: refused at once, not read
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 429"), answer
        assert b'{"Message":"Rate Exceeded."}' in answer and b"TooManyRequestsException" in answer
        assert http.request("POST", f"{site}/echo", body=b"small").status == 200  # a small body still fits
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.5)  # the clients left: their reservations are given back
    with _open_body(gateway, site, SIX_MB) as sock:
        sock.sendall(b"y" * SIX_MB)
        answer = sock.recv(4096)  # read whole: only its event (base64, with the request) is over 6 MB
        assert answer.startswith(b"HTTP/1.1 413") and b"RequestTooLargeException" in answer, answer


def _poller_line(line: str) -> bool:
    """A log line of an event source poller or its broker client (other tests' mappings on the shared gateway)."""
    return line.split(" ERROR ", 1)[1].startswith(("aiokafka", "aiormq", "aio_pika", "gateway.pollers"))


def test_a_client_that_leaves_mid_body_is_no_server_error(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, HANDLER, Timeout=5)
    site = url_for(gateway, lam, fname)
    logged = gateway.log_path.stat().st_size
    with _open_body(gateway, site, 1000, b"x" * 10):
        time.sleep(0.3)  # the gateway is reading the body when the client leaves
    time.sleep(0.5)
    text = http.request("GET", f"{gateway.url}/metrics").data.decode()
    assert f'lambda_url_requests_total{{function="{fname}",resource="{fname}",status_class="5xx"}}' not in text
    with gateway.log_path.open("rb") as log:
        log.seek(logged)
        tail = log.read().decode(errors="replace")
    # the shared gateway's event source pollers may log their brokers' errors meanwhile: those are not this request's
    errors = [line for line in tail.splitlines() if " ERROR " in line and not _poller_line(line)]
    assert "Traceback" not in tail and not errors and '" 500 ' not in tail, tail
    assert http.request("POST", f"{site}/echo", body=b"x").status == 200


BAD_PRELUDES = """
const PRELUDE = "application/vnd.awslambda.http-integration-response";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const badjson = awslambda.streamifyResponse(async (event, responseStream) => {
  responseStream.setContentType(PRELUDE);
  responseStream.write("{not json" + "\\u0000".repeat(8) + "body");
  await sleep(3000);
  responseStream.end();
});
export const nodelimiter = awslambda.streamifyResponse(async (event, responseStream) => {
  responseStream.setContentType(PRELUDE);
  responseStream.write("{".repeat(70000));  // past the prelude's limit, no delimiter
  await sleep(3000);
  responseStream.end();
});
"""


@pytest.mark.parametrize("handler", ["index.badjson", "index.nodelimiter"])
def test_a_malformed_prelude_is_502_at_once(gateway: RunningGateway, lam: Any, fname: str, handler: str) -> None:
    create_node_function(lam, fname, {"index.mjs": BAD_PRELUDES}, handler=handler, Timeout=10)
    site = url_for(gateway, lam, fname, invoke_mode="RESPONSE_STREAM")
    http.request("GET", f"{site}/")  # a cold start, whose Init is not what is measured
    lam.put_function_concurrency(FunctionName=fname, ReservedConcurrentExecutions=1)
    started = time.monotonic()
    resp = http.request("GET", f"{site}/")
    assert (resp.status, resp.data) == (502, b"Internal Server Error")
    assert time.monotonic() - started < 2.0  # not when the function ends, 3 s later
    # the function runs on and holds its slot until its end, which releases it
    wait_for(lambda: http.request("GET", f"{site}/").status == 502, timeout=20, what="the slot back")


def _url_series(gateway: RunningGateway, fname: str) -> list[str]:
    text = http.request("GET", f"{gateway.url}/metrics").data.decode()
    return [line for line in text.splitlines() if line.startswith("lambda_url_") and f'function="{fname}"' in line]


def test_url_series_go_with_their_alias_and_function(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, HANDLER, Timeout=10)
    version = lam.publish_version(FunctionName=fname)["Version"]
    lam.create_alias(FunctionName=fname, Name="live", FunctionVersion=version)
    live = url_for(gateway, lam, fname, "live")
    site = url_for(gateway, lam, fname)
    assert http.request("GET", f"{live}/string").status == 200
    assert any(f'resource="{fname}:live"' in line for line in _url_series(gateway, fname))
    lam.delete_alias(FunctionName=fname, Name="live")
    wait_for(lambda: not any("live" in line for line in _url_series(gateway, fname)), timeout=10, what="alias gone")
    # a request that ends after its function was deleted brings no series back
    pending = concurrent.futures.ThreadPoolExecutor(1).submit(http.request, "GET", f"{site}/sleep?s=2")
    time.sleep(1.0)
    lam.delete_function(FunctionName=fname)
    assert pending.result(timeout=20).status in (200, 502)
    time.sleep(0.3)
    assert _url_series(gateway, fname) == []
