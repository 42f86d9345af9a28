"""A function posing as the platform's set-up failure (gateway/execution/setup_failures.py): it brakes only its own
cold starts, only with the line *and* exit status 4, and cannot use the brake's log line to flood the gateway's log
with text of its own (control characters, length)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from gateway.contracts.zygote import SANDBOX_FAILED_LINE
from tests.conftest import GatewayFactory, create_function, invoke_json

#: Init prints the sandbox's line with terminal escapes and a long tail, then exits with the status in its variable
POSER = f"""
import os, sys
sys.stderr.write({SANDBOX_FAILED_LINE.decode()!r} + "\\x1b[2J\\x1b]0;owned\\x07\\rFORGED " + "A" * 5000 + "\\n")
sys.stderr.flush()
os._exit(int(os.environ["EXIT"]))
def lambda_handler(event, context):
    return 1
"""


def _outcomes(lam: Any, name: str, count: int) -> list[str]:
    out = []
    for _ in range(count):
        try:
            resp, _ = invoke_json(lam, name)
            out.append(resp.get("FunctionError", "ok"))
        except ClientError as exc:
            out.append(exc.response["Error"]["Code"])
    return out


def test_a_function_posing_as_a_set_up_failure_brakes_only_itself_and_floods_no_log(
    gateway_factory: GatewayFactory,
) -> None:
    gw = gateway_factory()
    lam = gw.client()
    create_function(lam, "exits4", POSER, Environment={"Variables": {"EXIT": "4"}})
    create_function(lam, "exits1", POSER, Environment={"Variables": {"EXIT": "1"}})
    create_function(lam, "fine", "def lambda_handler(event, context):\n    return 'fine'\n")
    # the line and exit status 4: its own cold starts pause (it only hurts itself)
    braked = _outcomes(lam, "exits4", 30)
    assert braked[0] == "Unhandled" and braked.count("ServiceException") >= 10, braked
    # the line with another status is a function's own failure: never braked
    assert _outcomes(lam, "exits1", 10) == ["Unhandled"] * 10
    assert invoke_json(lam, "fine")[1] == "fine"
    log = gw.log()
    said = [line for line in log.splitlines() if "environments of exits4 cannot be set up" in line]
    assert len(said) == 1, log[-3000:]  # once a minute, however many cold starts it refused
    assert "FORGED " in said[0] and "A" * 200 not in said[0]  # cut to REASON_MAX characters
    assert "cannot start an environment for exits4" not in log  # the invoker does not repeat it per invocation
    assert "environments of exits1" not in log
    assert "\x1b" not in log and "\x07" not in log and "\r" not in log  # none of its control characters
