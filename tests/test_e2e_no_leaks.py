"""A bounded stress mix of every way an invocation can end leaves no concurrency slot or environment behind."""

from __future__ import annotations

import json
import random
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.conftest import GatewayFactory, RunningGateway, create_function

SOURCES = {
    "ok": "import time\ndef lambda_handler(e, c):\n    time.sleep(e.get('sleep', 0))\n    return e\n",
    "raise": "def lambda_handler(e, c):\n    raise ValueError('boom')\n",
    "timeout": "import time\ndef lambda_handler(e, c):\n    time.sleep(30)\n",
    "crash": "import os\ndef lambda_handler(e, c):\n    os._exit(3)\n",
    "narrow": "import time\ndef lambda_handler(e, c):\n    time.sleep(0.3)\n    return {'ok': True}\n",
    "slow": "import time\ndef lambda_handler(e, c):\n    time.sleep(1.5)\n    return {}\n",
}
#: how many of each kind one round fires, all at once and shuffled
MIX = {"ok": 24, "raise": 6, "timeout": 4, "crash": 4, "narrow": 8, "bad_json": 6, "abandon": 3}
ROUNDS = 2


def _path(name: str) -> str:
    return f"/2015-03-31/functions/{name}/invocations"


def _call(gw: RunningGateway, kind: str) -> tuple[str, int, dict[str, str], Any]:
    """One invocation of `kind`: (kind, status, headers, decoded body or None)."""
    if kind == "abandon":  # the client goes away while the function runs
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
            sock.sendall(
                f"POST {_path('slow')} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Content-Length: 2\r\n\r\n{}".encode()
            )
            time.sleep(0.2)
        return kind, 0, {}, None
    if kind == "bad_json":
        status, headers, body = gw.request("POST", _path("ok"), b'{"unterminated": ')
    else:
        event = {"sleep": random.uniform(0, 0.2)} if kind == "ok" else {}
        status, headers, body = gw.request("POST", _path(kind), json.dumps(event).encode())
    return kind, status, headers, json.loads(body) if body else None


def _check(kind: str, status: int, headers: dict[str, str], body: Any) -> str:
    """Assert the answer fits its kind; return a label for counting."""
    if kind == "abandon":
        return kind
    if kind == "bad_json":
        assert (status, headers["x-amzn-ErrorType"]) == (400, "InvalidRequestContentException"), body
        return kind
    if kind == "narrow" and status == 429:
        assert headers["x-amzn-ErrorType"] == "TooManyRequestsException"
        assert body["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
        return "throttled"
    assert status == 200, (kind, status, body)
    error = {"raise": "ValueError", "timeout": "Sandbox.Timedout", "crash": "Runtime.ExitError"}.get(kind)
    if error is None:
        assert "X-Amz-Function-Error" not in headers, body
    else:
        assert headers["X-Amz-Function-Error"] == "Unhandled"
        assert body["errorType"] == error, body
    return kind


def _eventually(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_stress_mix_leaves_nothing_in_flight(gateway_factory: GatewayFactory) -> None:
    started = time.monotonic()
    gw = gateway_factory()
    lam = gw.client()
    for name, source in SOURCES.items():
        create_function(lam, name, source, Timeout=1 if name == "timeout" else 10)
    lam.put_function_concurrency(FunctionName="narrow", ReservedConcurrentExecutions=1)

    seen: Counter[str] = Counter()
    with ThreadPoolExecutor(64) as ex:
        for _ in range(ROUNDS):
            jobs = [kind for kind, n in MIX.items() for _ in range(n)]
            random.shuffle(jobs)
            for result in ex.map(lambda kind: _call(gw, kind), jobs):
                seen[_check(*result)] += 1
    expected = {k: n * ROUNDS for k, n in MIX.items() if k != "narrow"}
    assert {k: seen[k] for k in expected} == expected
    assert seen["throttled"] >= 1, "8 parallel calls of a function with reserved concurrency 1 were never throttled"
    assert seen["narrow"] >= 1
    assert seen["narrow"] + seen["throttled"] == MIX["narrow"] * ROUNDS

    # abandoned calls finish (or are cancelled) inside the gateway on their own time
    assert _eventually(lambda: gw.health()["inflight"] == 0), gw.health()
    health = gw.health()
    assert health["status"] == "ok"
    assert health["inflight"] == 0
    # no environment beyond what the mix could have running at once; private /tmp dirs only for live ones
    assert health["environments"] <= sum(MIX.values())
    envs = gw.data_dir / "envs"
    # (and one more: the zygote's spare, which prepares its directory ahead of the next cold start)
    assert _eventually(lambda: len(list(envs.iterdir())) - gw.health()["environments"] in (0, 1)), (
        sorted(p.name for p in envs.iterdir()),
        gw.health()["environments"],
    )

    # a further burst of plain invocations all succeed, and the narrow function serves again
    with ThreadPoolExecutor(16) as ex:
        burst = list(ex.map(lambda _: _call(gw, "ok"), range(32)))
    assert [status for _, status, _, _ in burst] == [200] * 32
    assert _call(gw, "narrow")[1] == 200
    assert gw.health()["inflight"] == 0
    assert "Traceback" not in gw.log()
    assert time.monotonic() - started < 20
