"""Signature before body: with credentials configured, a caller who cannot be authenticated is refused from its
request head, before the gateway reads its body (raw sockets: boto3 would not send a bad request this way)."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import GatewayFactory, RunningGateway

CREDENTIALS = {"GATEWAY_ACCESS_KEY_ID": "test", "GATEWAY_SECRET_ACCESS_KEY": "test"}
ANNOUNCED = 70 * 1024 * 1024  # just over the largest body the API accepts (a 50 MB zip, base64-encoded)
MB = 1024 * 1024


def _head(gw: RunningGateway, authorization: str | None, length: int = ANNOUNCED) -> bytes:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    lines = [
        "POST /2015-03-31/functions HTTP/1.1",
        f"Host: 127.0.0.1:{gw.port}",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        f"X-Amz-Date: {stamp}",
    ]
    if authorization is not None:
        lines.append(authorization.replace("DATE", stamp[:8]))
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


UNKNOWN_KEY = (
    "Authorization: AWS4-HMAC-SHA256 Credential=AKIDUNKNOWN/DATE/us-east-1/lambda/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64
)


def _rss(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, bytes."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def _answer(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


@pytest.fixture
def secured(gateway_factory: GatewayFactory) -> RunningGateway:
    return gateway_factory(env=CREDENTIALS)


@pytest.mark.parametrize(
    ("authorization", "error"),
    [(UNKNOWN_KEY, b"UnrecognizedClientException"), (None, b"MissingAuthenticationTokenException")],
)
def test_a_70_mb_body_with_a_bad_key_is_refused_before_it_is_read(
    secured: RunningGateway, authorization: str | None, error: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", secured.port)) as sock:
        sock.sendall(_head(secured, authorization) + b"{" + b" " * 1000)  # the head and 1 KB of the 70 MB announced
        started = time.monotonic()
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 403"), answer[:200]
    assert error in answer
    assert b"Connection: close" in answer  # the rest of the body will not be read
    assert time.monotonic() - started < 2  # answered at once, not after a body timeout


def test_unauthenticated_clients_sending_large_bodies_do_not_grow_the_gateway(secured: RunningGateway) -> None:
    assert secured.proc is not None
    pid = secured.proc.pid
    rss_before, hwm_before = _rss(pid)
    answers: list[bytes] = []
    sent: list[int] = []

    def attacker(authorization: str | None) -> None:
        total = 0
        with socket.create_connection(("127.0.0.1", secured.port)) as sock:
            sock.settimeout(5)
            try:
                sock.sendall(_head(secured, authorization))
                chunk = b" " * MB
                while total < ANNOUNCED:
                    sock.sendall(chunk)
                    total += len(chunk)
            except OSError:
                pass  # the gateway closed the connection: what it refused, it did not read
            answers.append(_answer(sock, 2))
        sent.append(total)

    threads = [threading.Thread(target=attacker, args=(UNKNOWN_KEY if i % 2 else None,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    rss_after, hwm_after = _rss(pid)
    grown = max(hwm_after - max(hwm_before, rss_before), rss_after - rss_before)
    assert grown < 64 * MB, f"gateway memory grew by {grown / MB:.0f} MB (RSS {rss_before} -> {rss_after})"
    assert all(a.startswith(b"HTTP/1.1 403") or not a for a in answers)
    assert any(a.startswith(b"HTTP/1.1 403") for a in answers)
    assert sum(sent) < 8 * ANNOUNCED  # the gateway stopped them; it did not take 560 MB in
    assert secured.health()["status"] == "ok"


def test_boto3_with_an_unknown_key_and_a_large_payload_still_reads_the_403(secured: RunningGateway) -> None:
    """The gateway closes without reading the 5 MB: botocore, still sending, must get the answer and not a reset."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    client = boto3.client(
        "lambda", endpoint_url=secured.url, region_name="us-east-1", config=Config(retries={"total_max_attempts": 1}),
        aws_access_key_id="AKIDUNKNOWN", aws_secret_access_key="x",
    )  # fmt: skip
    for _ in range(3):
        with pytest.raises(ClientError) as exc:
            client.invoke(FunctionName="any", Payload=b'"' + b"x" * (5 * MB) + b'"')
        assert exc.value.response["Error"]["Code"] == "UnrecognizedClientException"
    client.close()
