"""The per-client connection cap: one address cannot lock the others out; its own idle connections make room."""

from __future__ import annotations

import socket
import threading
import time

from tests.conftest import GatewayFactory, RunningGateway, create_function
from tests.test_http_limits import SLACK, assert_lambda_error, closed_by_peer, get, read_response

PER_CLIENT = 4


def _connect_from(gw: RunningGateway, source: str) -> socket.socket:
    """A connection to the gateway from `source` (any 127.x address: loopback accepts the whole /8)."""
    sock = socket.socket()
    sock.settimeout(5)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", gw.port))
    return sock


def _served(sock: socket.socket) -> int:
    sock.sendall(get())
    return read_response(sock)[0]


def test_one_address_at_its_cap_does_not_lock_out_another(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(env={"GATEWAY_MAX_CONNECTIONS": "16", "GATEWAY_MAX_CONNECTIONS_PER_CLIENT": str(PER_CLIENT)})
    held = [_connect_from(gw, "127.0.0.1") for _ in range(PER_CLIENT)]  # idle: never a request
    try:
        time.sleep(0.2)
        with _connect_from(gw, "127.0.0.2") as other:
            assert _served(other) == 200
            assert _served(other) == 200  # kept alive
        # the same address once more: its oldest idle connection is closed to make room, the new one is served
        with _connect_from(gw, "127.0.0.1") as extra:
            assert _served(extra) == 200
        assert closed_by_peer(held[0], SLACK)
        for sock in held[1:]:
            assert _served(sock) == 200
    finally:
        for sock in held:
            sock.close()


def test_an_address_whose_connections_are_all_busy_gets_503(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(env={"GATEWAY_MAX_CONNECTIONS": "16", "GATEWAY_MAX_CONNECTIONS_PER_CLIENT": str(PER_CLIENT)})
    lam = gw.client()
    create_function(lam, "sleepy", "import time\ndef lambda_handler(e, c):\n    time.sleep(3)\n    return 1\n")
    lam.close()
    gw.clients.clear()
    time.sleep(0.3)
    busy = [_connect_from(gw, "127.0.0.3") for _ in range(PER_CLIENT)]
    body = b"{}"
    request = (
        f"POST /2015-03-31/functions/sleepy/invocations HTTP/1.1\r\nHost: gw\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    answers: list[int] = []
    try:
        for sock in busy:
            sock.sendall(request)
        time.sleep(0.5)  # every one of them has a request in progress
        with _connect_from(gw, "127.0.0.3") as extra:
            extra.sendall(get())
            doc = assert_lambda_error(read_response(extra), 503, "ServiceUnavailableException")
            assert f"limit of {PER_CLIENT} connections" in doc["message"]
        with _connect_from(gw, "127.0.0.4") as other:  # another address is served meanwhile
            assert _served(other) == 200
        threads = [threading.Thread(target=lambda s=s: answers.append(read_response(s)[0])) for s in busy]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
    finally:
        for sock in busy:
            sock.close()
    assert answers == [200] * PER_CLIENT  # the busy ones were never disturbed
    assert "GATEWAY_MAX_CONNECTIONS_PER_CLIENT" in gw.log()
