"""Asynchronous invocation through a live gateway: 202s, limits, retries, pauses, deletion, InvokeAsync.

The gateway runs with GATEWAY_ASYNC_DELAY_SCALE=0.01, so Lambda's retry delays (1 and 2 minutes) take 0.6 and 1.2 s.
What ran is read back from the function's log (the gateway's log API), where the handler prints its request id.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError

from tests.conftest import GatewayFactory, RunningGateway, create_function, function_log, wait_for

SCALE = "0.01"

MARKS = """
import json
import sqlite3
import threading
def lambda_handler(event, context):
    print("ran", context.aws_request_id, json.dumps(event))
    if event.get("fail"):
        raise RuntimeError("failed on purpose")
    return {"ok": True}
"""


@pytest.fixture
def gw(gateway_factory: GatewayFactory) -> Iterator[RunningGateway]:
    yield gateway_factory(env={"GATEWAY_ASYNC_DELAY_SCALE": SCALE})


def runs_of(gw: RunningGateway, name: str, request_id: str) -> int:
    return function_log(gw, name).count(f"ran {request_id}")


def test_event_is_answered_202_and_runs_with_its_request_id(gw: RunningGateway) -> None:
    lam = gw.client()
    create_function(lam, "marks", MARKS)
    resp = lam.invoke(FunctionName="marks", InvocationType="Event", Payload=b'{"n": 1}')
    assert resp["StatusCode"] == 202
    assert resp["Payload"].read() == b""
    request_id = resp["ResponseMetadata"]["RequestId"]
    wait_for(lambda: runs_of(gw, "marks", request_id), what="the event to run")
    text = function_log(gw, "marks")
    assert f'ran {request_id} {{"n": 1}}' in text
    assert f"START RequestId: {request_id} Version: $LATEST" in text


def test_function_error_is_retried_twice_with_the_same_request_id(gw: RunningGateway) -> None:
    lam = gw.client()
    create_function(lam, "fails", MARKS)
    started = time.monotonic()
    resp = lam.invoke(FunctionName="fails", InvocationType="Event", Payload=b'{"fail": true}')
    request_id = resp["ResponseMetadata"]["RequestId"]
    wait_for(lambda: runs_of(gw, "fails", request_id) >= 3, what="three attempts")
    elapsed = time.monotonic() - started
    assert elapsed >= (60 + 120) * float(SCALE) * 0.9  # Lambda's delays, scaled
    time.sleep(1.5)  # and no fourth
    assert runs_of(gw, "fails", request_id) == 3


def test_limits_and_bad_input_are_refused_before_anything_is_queued(gw: RunningGateway) -> None:
    lam = gw.client()
    create_function(lam, "limits", MARKS)
    big = b'"' + b"x" * (1024 * 1024 - 2) + b'"'  # exactly 1 MB: accepted
    assert lam.invoke(FunctionName="limits", InvocationType="Event", Payload=big)["StatusCode"] == 202
    with pytest.raises(ClientError) as exc:
        lam.invoke(FunctionName="limits", InvocationType="Event", Payload=big[:-1] + b'x"')
    assert exc.value.response["Error"]["Code"] == "RequestEntityTooLargeException"
    assert exc.value.response["Error"]["Message"] == (
        "1048577 byte payload is too large for the Event invocation type (limit 1048576 bytes)"
    )
    with pytest.raises(ClientError) as exc:
        lam.invoke(FunctionName="limits", InvocationType="Event", Payload=b"{not json")
    assert exc.value.response["Error"]["Code"] == "InvalidRequestContentException"
    with pytest.raises(ClientError) as exc:
        lam.invoke(FunctionName="no-such-function", InvocationType="Event", Payload=b"{}")
    assert exc.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as exc:
        lam.invoke(FunctionName="limits:7", InvocationType="Event", Payload=b"{}")
    assert exc.value.response["Error"]["Code"] == "ResourceNotFoundException"
    time.sleep(0.5)
    assert function_log(gw, "limits").count("START RequestId") == 1  # only the 1 MB one


def test_invoke_async_the_deprecated_operation(gw: RunningGateway) -> None:
    lam = gw.client()
    create_function(lam, "old", MARKS)
    resp = lam.invoke_async(FunctionName="old", InvokeArgs=b'{"via": "InvokeAsync"}')
    assert resp["Status"] == 202
    request_id = resp["ResponseMetadata"]["RequestId"]
    wait_for(lambda: runs_of(gw, "old", request_id), what="the InvokeAsync event to run")
    with pytest.raises(ClientError) as exc:
        lam.invoke_async(FunctionName="old", InvokeArgs=b'"' + b"x" * (256 * 1024) + b'"')
    assert exc.value.response["Error"]["Code"] == "RequestEntityTooLargeException"
    assert "InvokeAsync" in exc.value.response["Error"]["Message"]


def test_reserved_concurrency_zero_pauses_and_resumes(gw: RunningGateway) -> None:
    lam = gw.client()
    create_function(lam, "paused", MARKS)
    lam.put_function_concurrency(FunctionName="paused", ReservedConcurrentExecutions=0)
    resp = lam.invoke(FunctionName="paused", InvocationType="Event", Payload=b"{}")
    request_id = resp["ResponseMetadata"]["RequestId"]
    time.sleep(2.0)
    assert runs_of(gw, "paused", request_id) == 0
    lam.delete_function_concurrency(FunctionName="paused")
    wait_for(lambda: runs_of(gw, "paused", request_id), what="the paused event to run once resumed")


def test_qualified_event_runs_the_version_it_names(gw: RunningGateway) -> None:
    lam = gw.client()
    create_function(lam, "versioned", MARKS, Description="one")
    lam.publish_version(FunctionName="versioned")
    lam.create_alias(FunctionName="versioned", Name="live", FunctionVersion="1")
    resp = lam.invoke(FunctionName="versioned", Qualifier="live", InvocationType="Event", Payload=b"{}")
    request_id = resp["ResponseMetadata"]["RequestId"]
    wait_for(lambda: runs_of(gw, "versioned", request_id), what="the alias's event")
    assert f"START RequestId: {request_id} Version: 1" in function_log(gw, "versioned")


def test_deleting_a_function_drops_its_queued_events(gw: RunningGateway) -> None:
    lam = gw.client()
    create_function(lam, "doomed", MARKS)
    lam.put_function_concurrency(FunctionName="doomed", ReservedConcurrentExecutions=0)
    for _ in range(5):
        lam.invoke(FunctionName="doomed", InvocationType="Event", Payload=b"{}")
    lam.delete_function(FunctionName="doomed")
    wait_for(lambda: "dropped its 5 queued asynchronous invocations" in gw.log(), what="the drop to be logged")
    create_function(lam, "doomed", MARKS)  # a new function of the same name inherits nothing
    time.sleep(1.5)
    assert "ran " not in function_log(gw, "doomed")


def test_many_events_all_run_once_each(gw: RunningGateway) -> None:
    lam = gw.client()
    create_function(lam, "many", MARKS)
    ids = {lam.invoke(FunctionName="many", InvocationType="Event", Payload=b"{}")["ResponseMetadata"]["RequestId"]}
    ids |= {
        lam.invoke(FunctionName="many", InvocationType="Event", Payload=json.dumps({"i": i}).encode())[
            "ResponseMetadata"
        ]["RequestId"]
        for i in range(60)
    }
    assert len(ids) == 61

    def all_ran() -> bool:
        text = function_log(gw, "many")
        return all(f"ran {i}" in text for i in ids)

    wait_for(all_ran, what="every event to run")
    text = function_log(gw, "many")
    assert sum(text.count(f"ran {i}") for i in ids) == 61


SLOW = """
import time
def lambda_handler(event, context):
    print("ran", context.aws_request_id)
    time.sleep(event.get("sleep", 0))
    return "done"
"""


def test_async_work_never_takes_the_concurrency_synchronous_callers_need(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(env={"GATEWAY_ASYNC_CONCURRENCY": "2"})
    lam = gw.client()
    create_function(lam, "shared", SLOW)
    lam.put_function_concurrency(FunctionName="shared", ReservedConcurrentExecutions=3)
    for _ in range(8):
        lam.invoke(FunctionName="shared", InvocationType="Event", Payload=b'{"sleep": 1.0}')
    wait_for(lambda: function_log(gw, "shared").count("ran ") >= 2, what="the first events to run")
    assert function_log(gw, "shared").count("ran ") == 2  # two at a time, the cap
    resp = lam.invoke(FunctionName="shared", Payload=b'{"sleep": 0}')  # the third slot is the caller's
    assert resp["StatusCode"] == 200 and resp["Payload"].read() == b'"done"'
    stopping = time.monotonic()  # SIGTERM with events running and waiting: the running ones drain, the rest wait
    assert gw.stop() == 0
    assert time.monotonic() - stopping < 5.0


def test_a_full_queue_refuses_more_events(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(env={"GATEWAY_ASYNC_QUEUE_MAX": "3"})
    lam = gw.client()
    create_function(lam, "flooded", MARKS)
    lam.put_function_concurrency(FunctionName="flooded", ReservedConcurrentExecutions=0)
    for _ in range(3):
        lam.invoke(FunctionName="flooded", InvocationType="Event", Payload=b"{}")
    with pytest.raises(ClientError) as exc:
        lam.invoke(FunctionName="flooded", InvocationType="Event", Payload=b"{}")
    error = exc.value.response
    assert error["Error"]["Code"] == "TooManyRequestsException"
    assert error["Reason"] == "CallerRateLimitExceeded"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 429


def test_an_event_older_than_its_maximum_age_is_not_run(gw: RunningGateway) -> None:
    lam = gw.client()
    create_function(lam, "aged", MARKS)
    gw.stop()
    db = sqlite3.connect(gw.data_dir / "events.sqlite3")
    with db:  # as if accepted 7 hours ago, before a long outage (the default maximum age is 6 hours)
        old = time.time() - 7 * 3600
        db.execute(
            "INSERT INTO events (id, request_id, function, qualifier, payload, received, due, attempts, backoff)"
            " VALUES (1, 'old-event', 'aged', NULL, '{}', ?, ?, 0, 0)",
            (old, old),
        )
    db.close()
    gw.start()
    wait_for(lambda: "old-event of" in gw.log() and "EventAgeExceeded after 0 attempts" in gw.log(), what="give-up")
    assert "ran old-event" not in function_log(gw, "aged")


def test_deleting_a_function_while_its_event_runs_leaves_nothing_behind(gw: RunningGateway) -> None:
    lam = gw.client()
    create_function(lam, "deleted-busy", SLOW)
    for _ in range(3):
        lam.invoke(FunctionName="deleted-busy", InvocationType="Event", Payload=b'{"sleep": 1.5}')
    wait_for(lambda: "ran " in function_log(gw, "deleted-busy"), what="the first event to start")
    lam.delete_function(FunctionName="deleted-busy")
    time.sleep(3.0)  # the running attempt ends; the dispatcher must not go on looking for the function
    assert "could not dispatch" not in gw.log()
    assert "Traceback" not in gw.log()


def _throttles(gw: RunningGateway, function: str) -> float:
    _, _, body = gw.request("GET", "/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("lambda_throttles_total{") and f'function="{function}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_throttled_function_is_read_more_slowly_not_spun_through(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()  # Lambda's own back-off: 1 s, 2 s, ...
    lam = gw.client()
    create_function(lam, "throttled", SLOW)
    lam.put_function_concurrency(FunctionName="throttled", ReservedConcurrentExecutions=1)
    blocker = threading.Thread(
        target=lambda: gw.client().invoke(FunctionName="throttled", Payload=b'{"sleep": 3}'), daemon=True
    )
    blocker.start()  # the only slot, held for 3 s by a synchronous call
    wait_for(lambda: "ran " in function_log(gw, "throttled"), what="the synchronous call to start")
    for _ in range(30):
        lam.invoke(FunctionName="throttled", InvocationType="Event", Payload=b'{"sleep": 0}')
    time.sleep(2.5)
    assert _throttles(gw, "throttled") <= 4  # one attempt, then 1 s, then 2 s: not 30 events times a spin
    blocker.join()
    wait_for(lambda: function_log(gw, "throttled").count("ran ") == 31, timeout=30, what="every event to run after all")


RECEIVER = """
import json
def lambda_handler(event, context):
    print("record", json.dumps({k: v for k, v in event.items() if k != "requestPayload"})[:300],
          "has-request-payload" if "requestPayload" in event else "no-request-payload")
"""


def test_a_record_too_large_for_a_function_destination_loses_its_payloads(gw: RunningGateway) -> None:
    lam = gw.client()
    create_function(lam, "big-source", "def lambda_handler(event, context):\n    return 'x' * 1000\n")
    create_function(lam, "big-target", RECEIVER)
    target = "arn:aws:lambda:us-east-1:123456789012:function:big-target"
    lam.put_function_event_invoke_config(
        FunctionName="big-source", DestinationConfig={"OnSuccess": {"Destination": target}}
    )
    big = b'"' + b"x" * (1024 * 1024 - 2) + b'"'  # 1 MB: the record with it would be over the limit
    lam.invoke(FunctionName="big-source", InvocationType="Event", Payload=big)
    lam.invoke(FunctionName="big-source", InvocationType="Event", Payload=b'"small"')
    wait_for(lambda: function_log(gw, "big-target").count("record ") == 2, what="both records")
    text = function_log(gw, "big-target")
    assert text.count("no-request-payload") == 1 and text.count("has-request-payload") == 1
