"""Event invoke configs take effect: the dispatcher retries and routes Event invocations as the config of the function,
version or alias invoked says (GATEWAY_ASYNC_DELAY_SCALE=0.01: Lambda's 1 and 2 minute retry delays take 0.6 and
1.2 s). What ran is read back from the functions' logs (the gateway's log API)."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.conftest import GatewayFactory, RunningGateway, create_function, function_log, wait_for

ARN = "arn:aws:lambda:us-east-1:123456789012:function:"

WORKER = """
def lambda_handler(event, context):
    print("ran", context.aws_request_id, context.function_version)
    if event.get("fail"):
        raise RuntimeError("failed on purpose")
    return {"done": event}
"""
RECORDER = """
import json
def lambda_handler(event, context):
    print("record", json.dumps(event))
"""


def records(gw: RunningGateway, name: str) -> list[dict[str, Any]]:
    """The destination records the recorder printed, in order."""
    prefix = "record {"
    lines = [line for line in function_log(gw, name).splitlines() if prefix in line]
    return [json.loads(line[line.index(prefix) + len(prefix) - 1 :]) for line in lines]


def event(lam: Any, name: str, payload: dict[str, Any], qualifier: str | None = None) -> str:
    extra = {"Qualifier": qualifier} if qualifier else {}
    resp = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps(payload).encode(), **extra)
    assert resp["StatusCode"] == 202
    return str(resp["ResponseMetadata"]["RequestId"])


def test_retries_and_destinations_follow_the_config_of_what_was_invoked(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(env={"GATEWAY_ASYNC_DELAY_SCALE": "0.01"})
    lam = gw.client()
    create_function(lam, "worker", WORKER)
    create_function(lam, "recorder", RECORDER)
    version = lam.publish_version(FunctionName="worker")["Version"]
    lam.create_alias(FunctionName="worker", Name="live", FunctionVersion=version)
    lam.put_function_event_invoke_config(
        FunctionName="worker",
        Qualifier="live",
        MaximumRetryAttempts=0,
        DestinationConfig={
            "OnSuccess": {"Destination": f"{ARN}recorder"},
            "OnFailure": {"Destination": f"{ARN}recorder"},
        },
    )

    failed = event(lam, "worker", {"fail": True}, "live")  # the alias's config: no retry, a failure record
    record = wait_for(lambda: [r for r in records(gw, "recorder") if r["requestContext"]["requestId"] == failed],
                      what="the failure record")[0]  # fmt: skip
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["functionArn"] == f"{ARN}worker:live"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert function_log(gw, "worker").count(f"ran {failed}") == 1

    succeeded = event(lam, "worker", {"n": 1}, "live")
    record = wait_for(lambda: [r for r in records(gw, "recorder") if r["requestContext"]["requestId"] == succeeded],
                      what="the success record")[0]  # fmt: skip
    assert record["requestContext"]["condition"] == "Success" and record["responsePayload"] == {"done": {"n": 1}}

    default = event(lam, "worker", {"fail": True})  # $LATEST has no config: Lambda's two retries, no destination
    wait_for(lambda: function_log(gw, "worker").count(f"ran {default}") >= 3, what="three attempts")

    lam.update_function_event_invoke_config(FunctionName="worker", Qualifier="live", DestinationConfig={})
    quiet = event(lam, "worker", {"n": 2}, "live")  # the update took the destinations away at once
    wait_for(lambda: f"ran {quiet}" in function_log(gw, "worker"), what="the event to run")
    time.sleep(1.0)
    assert all(r["requestContext"]["requestId"] != quiet for r in records(gw, "recorder"))
    assert all(r["requestContext"]["requestId"] != default for r in records(gw, "recorder"))
