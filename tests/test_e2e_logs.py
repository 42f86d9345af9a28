"""Function logs and the gateway's own log, through a live gateway: storage, endpoint, follow, CLI, formats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

import pytest

from tests.conftest import ROOT, GatewayFactory, RunningGateway, create_function, invoke_json

PRINTS = """
import logging
def lambda_handler(event, context):
    print("printed", event.get("n"))
    logging.getLogger().info("info from the handler")
    logging.getLogger("app").warning("warning from the handler")
    return event
"""

JSON_LOGGING = """
import logging
log = logging.getLogger("app")
def lambda_handler(event, context):
    log.debug("debug line")
    log.info("info line")
    log.warning("warning line", extra={"orderId": 42})
    log.error("error line")
    if event.get("fail"):
        raise ValueError("boom")
    return "ok"
"""


def _logs(gateway: RunningGateway, name: str, query: str = "") -> tuple[int, dict[str, str], str]:
    status, headers, body = gateway.request("GET", f"/gateway/v1/functions/{name}/logs{query}")
    return status, headers, body.decode()


def _wait_for(predicate: Any, timeout: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def _logs_containing(gateway: RunningGateway, name: str, *needles: str) -> str:
    """The stored log once every needle is in it (the store flushes about every 0.1 s); "" after 2 s."""

    def look() -> str:
        text = _logs(gateway, name)[2]
        return text if all(n in text for n in needles) else ""

    return str(_wait_for(look))


def _invoke(lam: Any, name: str, event: Any) -> str:
    resp, _ = invoke_json(lam, name, event)
    return str(resp["ResponseMetadata"]["RequestId"])


def test_invocations_are_stored_and_served(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, PRINTS)
    ids = [_invoke(lam, fname, {"n": i}) for i in range(3)]
    text = _logs_containing(gateway, fname, *(f"REPORT RequestId: {i}" for i in ids))
    status, headers, _ = _logs(gateway, fname)
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    for n, request_id in enumerate(ids):
        start = text.index(f"START RequestId: {request_id} Version: $LATEST\n")
        end = text.index(f"END RequestId: {request_id}\n")
        assert start < text.index(f"printed {n}\n", start) < end
        assert f"REPORT RequestId: {request_id}\tDuration: " in text[end:]
    assert "info from the handler" not in text  # Text format: the root logger stays at WARNING, as on Lambda
    assert "[WARNING]\t" in text and "warning from the handler" in text
    files = list((gateway.data_dir / "logs" / fname).iterdir())
    assert len(files) == 1 and files[0].name.startswith(time.strftime("%Y-%m-%d-[LATEST]", time.gmtime()))


def test_since_filters_and_unknown_function_is_404(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, PRINTS)
    first = _invoke(lam, fname, {"n": 1})
    time.sleep(0.2)
    cut = time.time()
    time.sleep(0.05)
    second = _invoke(lam, fname, {"n": 2})
    assert _logs_containing(gateway, fname, second)
    for since in (f"{cut:.3f}", time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cut)) + f".{int(cut % 1 * 1e6):06d}Z"):
        status, _, text = _logs(gateway, fname, f"?since={since}")
        assert status == 200
        assert second in text and first not in text, since
    status, headers, _ = _logs(gateway, fname, "?since=yesterday-ish")
    assert status == 400 and headers["x-amzn-ErrorType"] == "InvalidParameterValueException"
    status, headers, body = _logs(gateway, "no-such-function")
    assert status == 404 and headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
    assert "function:no-such-function" in json.loads(body)["Message"]  # ResourceNotFoundException's key (the model)


def test_follow_streams_a_new_invocation_within_a_second(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, PRINTS)
    _invoke(lam, fname, {"n": 0})  # cold start out of the way
    received: list[bytes] = []
    url = f"{gateway.url}/gateway/v1/functions/{fname}/logs?follow=true&since={time.time():.3f}"
    resp = urllib.request.urlopen(url, timeout=10)

    def pump() -> None:
        try:
            while chunk := resp.read1(65536):
                received.append(chunk)
        except (OSError, ValueError):
            pass

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        time.sleep(0.3)  # the follower is registered once history (none) is sent
        request_id = _invoke(lam, fname, {"n": 7})
        invoked = time.monotonic()
        assert _wait_for(lambda: f"REPORT RequestId: {request_id}" in b"".join(received).decode(), 1.0)
        assert time.monotonic() - invoked < 1.0
        text = b"".join(received).decode()
        assert f"START RequestId: {request_id}" in text and "printed 7" in text
        assert "printed 0" not in text
    finally:
        resp.close()
        reader.join(5)


def test_cli_prints_logs(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, PRINTS)
    request_id = _invoke(lam, fname, {"n": 3})
    assert _logs_containing(gateway, fname, request_id)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    cmd = [sys.executable, "-m", "gateway", "logs", fname, "--url", gateway.url]
    out = subprocess.run([*cmd, "--since", "10m"], cwd=ROOT, env=env, capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert f"START RequestId: {request_id}" in out.stdout.decode() and "printed 3" in out.stdout.decode()
    later = subprocess.run([*cmd, "--since", str(time.time() + 60)], cwd=ROOT, env=env, capture_output=True, timeout=30)
    assert later.returncode == 0 and later.stdout == b""
    missing = subprocess.run(
        [sys.executable, "-m", "gateway", "logs", "no-such-function", "--url", gateway.url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert missing.returncode == 1 and b"404" in missing.stderr


def test_json_log_format_writes_json_records_at_the_level(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, JSON_LOGGING, LoggingConfig={"LogFormat": "JSON", "ApplicationLogLevel": "WARN"})
    ok = _invoke(lam, fname, {})
    failed = _invoke(lam, fname, {"fail": True})
    text = _logs_containing(gateway, fname, f'"platform.report","record":{{"requestId":"{failed}"')
    records = [json.loads(line) for line in text.splitlines()]  # every line is a JSON object
    app = [r for r in records if "level" in r]
    platform = [r for r in records if "type" in r]
    levels = [(r["level"], r["message"]) for r in app if r["requestId"] == ok]
    assert levels == [("WARN", "warning line"), ("ERROR", "error line")]  # DEBUG and INFO are below WARN
    warning = next(r for r in app if r["requestId"] == ok and r["level"] == "WARN")
    assert warning["logger"] == "app" and warning["orderId"] == 42 and warning["timestamp"].endswith("Z")
    error = next(r for r in app if r["requestId"] == failed and isinstance(r["message"], dict))
    assert error["message"]["errorType"] == "ValueError" and error["message"]["errorMessage"] == "boom"
    types = [(r["type"], r["record"].get("requestId")) for r in platform]
    assert ("platform.start", ok) in types and ("platform.report", ok) in types
    assert types[0][0] == "platform.initStart"
    report = next(r for r in platform if r["type"] == "platform.report" and r["record"]["requestId"] == ok)
    assert report["record"]["status"] == "success"
    assert set(report["record"]["metrics"]) >= {"durationMs", "billedDurationMs", "memorySizeMB", "maxMemoryUsedMB"}
    assert "initDurationMs" in report["record"]["metrics"]
    failed_report = next(r for r in platform if r["type"] == "platform.report" and r["record"]["requestId"] == failed)
    assert failed_report["record"]["status"] == "error" and "initDurationMs" not in failed_report["record"]["metrics"]
    assert "START RequestId" not in text and "REPORT RequestId" not in text


def test_gateway_log_in_json_mode_has_access_entries(gateway_factory: GatewayFactory, fname: str) -> None:
    gw = gateway_factory(env={"GATEWAY_LOG_FORMAT": "json", "GATEWAY_ACCESS_LOG": "all"})
    lam = gw.client()
    create_function(lam, fname, PRINTS)
    invoke_json(lam, fname, {"n": 1})
    gw.request("GET", "/gateway/v1/functions/no-such-function/logs")
    gw.stop()
    lines = [line for line in gw.log().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # one JSON object per line, nothing else
    assert all({"timestamp", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["logger"] == "gateway" and r["message"].startswith("listening on") for r in records)
    access = [r for r in records if r["logger"] == "gateway.access"]
    invoke = next(r for r in access if r["path"] == f"/2015-03-31/functions/{fname}/invocations")
    assert invoke["method"] == "POST" and invoke["status"] == 200 and invoke["bytes"] > 0
    assert invoke["duration_ms"] >= 0
    assert any(r["status"] == 404 and r["path"].endswith("/logs") for r in access)


def test_text_mode_gateway_log_has_access_lines(gateway: RunningGateway) -> None:
    gateway.request("GET", "/healthz")
    assert _wait_for(lambda: '"GET /healthz HTTP/1.1" 200' in gateway.log())


def test_access_log_leaves_invokes_out_by_default(gateway_factory: GatewayFactory, fname: str) -> None:
    gw = gateway_factory()
    lam = gw.client()
    create_function(lam, fname, PRINTS)
    invoke_json(lam, fname, {"n": 1})
    url = lam.create_function_url_config(FunctionName=fname, AuthType="NONE")["FunctionUrl"]
    url_id = url.split("//", 1)[1].split(".", 1)[0]
    gw.request("GET", "/by-host", headers={"Host": url.split("//", 1)[1].rstrip("/")})  # 403s: no policy; no matter
    gw.request("GET", f"/lambda-url/{url_id}/by-path")
    gw.stop()
    assert '"POST /2015-03-31/functions HTTP/1.1" 201' in gw.log()  # the control plane is logged
    assert "/invocations HTTP/1.1" not in gw.log()  # invokes are counted by the metrics instead
    assert "/by-host" not in gw.log() and "/by-path" not in gw.log()  # so are function URL requests


@pytest.mark.parametrize("retention", [2])
def test_rotation_keeps_at_most_n_files(gateway_factory: GatewayFactory, fname: str, retention: int) -> None:
    gw = gateway_factory(env={"GATEWAY_LOG_MAX_BYTES": "1500", "GATEWAY_LOG_RETENTION_FILES": str(retention)})
    lam = gw.client()
    create_function(lam, fname, PRINTS)
    ids = [_invoke(lam, fname, {"n": i}) for i in range(40)]
    time.sleep(0.3)
    files = list((gw.data_dir / "logs" / fname).iterdir())
    assert len(files) <= retention + 1
    assert all(f.stat().st_size < 1500 + 1000 for f in files)
    text = _logs(gw, fname)[2]
    assert ids[-1] in text and ids[0] not in text


def test_stopping_the_gateway_ends_a_follow(gateway_factory: GatewayFactory, fname: str) -> None:
    gw = gateway_factory()
    create_function(gw.client(), fname, PRINTS)
    resp = urllib.request.urlopen(f"{gw.url}/gateway/v1/functions/{fname}/logs?follow=true", timeout=10)
    ended = threading.Event()

    def pump() -> None:
        try:
            while resp.read1(65536):
                pass
        except (OSError, ValueError):
            pass
        ended.set()

    threading.Thread(target=pump, daemon=True).start()
    time.sleep(0.2)
    started = time.monotonic()
    assert gw.stop() == 0
    assert time.monotonic() - started < 5  # not the 30 s drain timeout
    assert ended.wait(5)
    resp.close()
