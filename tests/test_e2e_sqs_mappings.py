"""SQS event source mappings end to end: a live gateway reads a real ElasticMQ (moto for the first test too) through
GATEWAY_SQS_ENDPOINT; mappings are made with boto3 as a user would; messages are sent with boto3.

The witness is outside the gateway: the handler appends one JSON line per record (its messageId, receive count,
body ...) to a file and fsyncs it before returning (GATEWAY_SANDBOX=rlimits, so that a handler may write there).
What the handler does is in the message body: `fail_once` (reported in batchItemFailures at its first receive),
`poison` (the handler raises).
"""

from __future__ import annotations

import itertools
import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GatewayFactory, RunningGateway, create_function, free_port
from tests.servers import Server

HANDLER = """
import json, os, time

def lambda_handler(event, context):
    started = time.time()
    failures, lines, poison = [], [], False
    for r in event["Records"]:
        body = json.loads(r["body"])
        count = r["attributes"]["ApproximateReceiveCount"]
        lines.append(json.dumps({
            "id": r["messageId"], "n": body.get("n"), "count": count, "batch": len(event["Records"]),
            "source": r["eventSource"], "arn": r["eventSourceARN"], "region": r["awsRegion"],
            "receipt": bool(r["receiptHandle"]), "md5": r["md5OfBody"], "t": time.time(), "started": started,
            "secret_seen": os.environ.get("AWS_SECRET_ACCESS_KEY") == "gateway-sqs-secret",
        }))
        if body.get("fail_once") and count == "1":
            failures.append({"itemIdentifier": r["messageId"]})
        poison = poison or bool(body.get("poison"))
    fd = os.open(os.environ["WITNESS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, ("\\n".join(lines) + "\\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    if poison:
        raise ValueError("poison")
    time.sleep(float(os.environ.get("SLEEP", "0")))
    return {"batchItemFailures": failures}
"""


def _gateway(gateway_factory: GatewayFactory, server: Server) -> RunningGateway:
    return gateway_factory(
        env={
            "GATEWAY_SANDBOX": "rlimits",
            "GATEWAY_SQS_ENDPOINT": server.url,
            "AWS_ACCESS_KEY_ID": "gateway-sqs",
            "AWS_SECRET_ACCESS_KEY": "gateway-sqs-secret",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )


def _witnessed(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _function(lam: Any, name: str, witness: Path, sleep: float = 0.0) -> None:
    variables = {"WITNESS": str(witness), "SLEEP": str(sleep)}
    create_function(lam, name, HANDLER, Timeout=30, Environment={"Variables": variables})


def _mapping(lam: Any, function: str, arn: str, **params: Any) -> str:
    uuid = str(lam.create_event_source_mapping(FunctionName=function, EventSourceArn=arn, **params)["UUID"])
    _wait(lambda: lam.get_event_source_mapping(UUID=uuid)["State"] == "Enabled", 15, "Enabled")
    return uuid


def _queue(server: Server, name: str, **attributes: str) -> tuple[str, str]:
    url = server.client("sqs").create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return url, server.arn("sqs", name)


def _send(server: Server, url: str, bodies: list[dict[str, Any]]) -> list[str]:
    ids: list[str] = []
    for start in range(0, len(bodies), 10):
        entries = [{"Id": str(i), "MessageBody": json.dumps(b)} for i, b in enumerate(bodies[start : start + 10])]
        answer = server.client("sqs").send_message_batch(QueueUrl=url, Entries=entries)
        assert not answer.get("Failed"), answer
        ids += [e["MessageId"] for e in sorted(answer["Successful"], key=lambda e: int(e["Id"]))]
    return ids


def _counts(server: Server, url: str) -> tuple[int, int]:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    got = server.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return int(got[names[0]]), int(got[names[1]])


@pytest.mark.parametrize("server_name", ["elasticmq_server", "moto_server"])
def test_messages_run_the_function_and_leave_the_queue(
    request: pytest.FixtureRequest, gateway_factory: GatewayFactory, tmp_path: Path, server_name: str
) -> None:
    server: Server = request.getfixturevalue(server_name)
    gw = _gateway(gateway_factory, server)
    lam = gw.client()
    witness = tmp_path / "witness.jsonl"
    _function(lam, "reader", witness)
    url, arn = _queue(server, f"orders-{int(time.time() * 1000)}")
    pattern = json.dumps({"body": {"kind": ["order"]}})
    uuid = _mapping(lam, "reader", arn, BatchSize=10, FilterCriteria={"Filters": [{"Pattern": pattern}]})
    ids = _send(server, url, [{"n": i, "kind": "order" if i % 4 else "noise"} for i in range(20)])
    wanted = {ids[i] for i in range(20) if i % 4}
    _wait(lambda: {w["id"] for w in _witnessed(witness)} >= wanted, 30, "every order run")
    _wait(lambda: _counts(server, url) == (0, 0), 15, "the queue emptied (noise deleted unread)")
    seen = _witnessed(witness)
    assert sorted(w["id"] for w in seen) == sorted(wanted)  # each once; filtered-out messages never invoked
    for w in seen:
        assert (w["source"], w["arn"], w["region"], w["receipt"], w["count"]) == (
            "aws:sqs",
            arn,
            "us-east-1",
            True,
            "1",
        )
        assert not w["secret_seen"], "the gateway's own AWS credentials reached a function"
    got = lam.get_event_source_mapping(UUID=uuid)
    assert got["EventSourceArn"] == arn and got["LastProcessingResult"] == "OK"


def test_report_batch_item_failures_gives_back_only_the_failed(
    elasticmq_server: Server, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gw = _gateway(gateway_factory, elasticmq_server)
    lam = gw.client()
    witness = tmp_path / "witness.jsonl"
    _function(lam, "partial", witness)
    url, arn = _queue(elasticmq_server, f"partial-{int(time.time() * 1000)}", VisibilityTimeout="2")
    _mapping(lam, "partial", arn, BatchSize=10, FunctionResponseTypes=["ReportBatchItemFailures"])
    ids = _send(elasticmq_server, url, [{"n": i, "fail_once": i % 3 == 0} for i in range(9)])
    failing = {ids[i] for i in range(9) if i % 3 == 0}
    _wait(lambda: {w["id"] for w in _witnessed(witness) if w["count"] == "2"} >= failing, 30, "failed ones back")
    _wait(lambda: _counts(elasticmq_server, url) == (0, 0), 15, "the queue emptied")
    runs = Counter((w["id"], w["count"]) for w in _witnessed(witness))
    for message_id in ids:
        expected = {(message_id, "1"): 1} | ({(message_id, "2"): 1} if message_id in failing else {})
        assert {k: v for k, v in runs.items() if k[0] == message_id} == expected


def test_a_poison_message_goes_to_the_queues_dead_letter_queue_without_a_hot_loop(
    elasticmq_server: Server, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gw = _gateway(gateway_factory, elasticmq_server)
    lam = gw.client()
    witness = tmp_path / "witness.jsonl"
    _function(lam, "poisoned", witness)
    stamp = int(time.time() * 1000)
    dlq_url, dlq_arn = _queue(elasticmq_server, f"dlq-{stamp}")
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"})
    url, arn = _queue(elasticmq_server, f"poison-{stamp}", VisibilityTimeout="1", RedrivePolicy=redrive)
    _mapping(lam, "poisoned", arn, BatchSize=1)
    (poison,) = _send(elasticmq_server, url, [{"n": 0, "poison": True}])
    _wait(lambda: _counts(elasticmq_server, dlq_url)[0] == 1, 40, "the poison message in the dead-letter queue")
    time.sleep(2)
    runs = [w for w in _witnessed(witness) if w["id"] == poison]
    assert [w["count"] for w in runs] == ["1", "2", "3"]
    assert all(b["t"] - a["t"] >= 0.9 for a, b in itertools.pairwise(runs))  # the visibility timeout


def test_a_missing_queue_is_shown_then_found(
    elasticmq_server: Server, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gw = _gateway(gateway_factory, elasticmq_server)
    lam = gw.client()
    witness = tmp_path / "witness.jsonl"
    _function(lam, "patient", witness)
    name = f"later-{int(time.time() * 1000)}"
    arn = elasticmq_server.arn("sqs", name)
    uuid = _mapping(lam, "patient", arn)

    def reason() -> str:
        return str(lam.get_event_source_mapping(UUID=uuid)["StateTransitionReason"])

    _wait(lambda: "QueueDoesNotExist" in reason() or "NonExistentQueue" in reason(), 15, "the reason shown")
    got = lam.get_event_source_mapping(UUID=uuid)
    assert got["State"] == "Enabled" and got["StateTransitionReason"].startswith("PROBLEM: SQS queue " + arn)
    url, _ = _queue(elasticmq_server, name)
    (sent,) = _send(elasticmq_server, url, [{"n": 1}])
    _wait(lambda: any(w["id"] == sent for w in _witnessed(witness)), 30, "the message run once the queue exists")
    _wait(lambda: reason() == "USER_INITIATED", 10, "the reason cleared")


MESSAGES = 200
BATCH = 10


def test_sigkill_mid_batch_loses_no_message(
    elasticmq_server: Server, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gw = _gateway(gateway_factory, elasticmq_server)
    lam = gw.client()
    witness = tmp_path / "witness.jsonl"
    _function(lam, "steady", witness, sleep=0.2)
    url, arn = _queue(elasticmq_server, f"kill-{int(time.time() * 1000)}", VisibilityTimeout="3")
    _mapping(lam, "steady", arn, BatchSize=BATCH)
    ids = _send(elasticmq_server, url, [{"n": i} for i in range(MESSAGES)])
    _wait(lambda: len(_witnessed(witness)) >= 5 * BATCH, 60, "some batches run")
    gw.stop(signal.SIGKILL)  # mid-batch: the handler sleeps after writing, before its batch is deleted
    before = {w["id"] for w in _witnessed(witness)}
    assert len(before) < MESSAGES, "the kill came too late to test anything"
    gw.start()
    _wait(lambda: {w["id"] for w in _witnessed(witness)} >= set(ids), 90, "every message run after the restart")
    _wait(lambda: _counts(elasticmq_server, url) == (0, 0), 15, "the queue emptied")
    seen = [w["id"] for w in _witnessed(witness)]
    duplicates = len(seen) - len(set(seen))
    print(f"sent {MESSAGES}, run before the kill {len(before)}, lost 0, duplicates {duplicates}")
    assert set(seen) == set(ids)
    assert duplicates <= BATCH  # only the batch in flight at the kill runs twice


def test_a_dead_endpoint_leaves_the_mapping_enabled_saying_why_and_the_gateway_stops_promptly(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    dead = Server(tmp_path / "none.log")
    dead.port = free_port()
    gw = _gateway(gateway_factory, dead)
    lam = gw.client()
    _function(lam, "lonely", tmp_path / "witness.jsonl")
    uuid = _mapping(lam, "lonely", dead.arn("sqs", "q"))
    _wait(
        lambda: "EndpointConnectionError" in lam.get_event_source_mapping(UUID=uuid)["StateTransitionReason"],
        15,
        "the reason shown",
    )
    got = lam.get_event_source_mapping(UUID=uuid)
    assert got["State"] == "Enabled" and got["LastProcessingResult"].startswith("PROBLEM")
    started = time.monotonic()
    gw.stop()
    assert time.monotonic() - started < 5


def test_the_gateway_stops_promptly_while_polling(
    elasticmq_server: Server, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gw = _gateway(gateway_factory, elasticmq_server)
    lam = gw.client()
    _function(lam, "idle", tmp_path / "witness.jsonl")
    _, arn = _queue(elasticmq_server, f"idle-{int(time.time() * 1000)}")
    _mapping(lam, "idle", arn)
    time.sleep(1.5)  # long polls under way
    started = time.monotonic()
    assert gw.stop() == 0
    assert time.monotonic() - started < 5


def test_maximum_concurrency_reads_the_queue_with_parallel_pollers(
    elasticmq_server: Server, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gw = _gateway(gateway_factory, elasticmq_server)
    lam = gw.client()
    witness = tmp_path / "witness.jsonl"
    _function(lam, "wide", witness, sleep=1.0)
    url, arn = _queue(elasticmq_server, f"wide-{int(time.time() * 1000)}")
    _mapping(lam, "wide", arn, BatchSize=5, ScalingConfig={"MaximumConcurrency": 2})
    ids = _send(elasticmq_server, url, [{"n": i} for i in range(20)])
    _wait(lambda: {w["id"] for w in _witnessed(witness)} >= set(ids), 60, "every message run")
    _wait(lambda: _counts(elasticmq_server, url) == (0, 0), 15, "the queue emptied")
    seen = _witnessed(witness)
    assert sorted(w["id"] for w in seen) == sorted(ids)  # each once
    starts = sorted({w["started"] for w in seen})  # one per batch
    assert any(b - a < 0.9 for a, b in itertools.pairwise(starts)), starts  # two batches ran at once


def test_a_fifo_queue_keeps_order_in_a_group_past_a_failure(
    elasticmq_server: Server, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    """ReportBatchItemFailures on a FIFO queue: from the first failed message of a group on, the group's messages go
    back to the queue (Lambda's rule), and come again in order."""
    gw = _gateway(gateway_factory, elasticmq_server)
    lam = gw.client()
    witness = tmp_path / "witness.jsonl"
    _function(lam, "ordered", witness)
    name = f"ordered-{int(time.time() * 1000)}.fifo"
    url, arn = _queue(elasticmq_server, name, FifoQueue="true", VisibilityTimeout="2")
    _mapping(lam, "ordered", arn, BatchSize=10, FunctionResponseTypes=["ReportBatchItemFailures"])
    entries = [
        {
            "Id": str(i),
            "MessageBody": json.dumps({"n": i, "fail_once": i == 2}),
            "MessageGroupId": "g",
            "MessageDeduplicationId": f"{name}-{i}",
        }
        for i in range(5)
    ]
    assert not elasticmq_server.client("sqs").send_message_batch(QueueUrl=url, Entries=entries).get("Failed")
    _wait(lambda: len(_witnessed(witness)) >= 8, 30, "the group's tail run again")
    _wait(lambda: _counts(elasticmq_server, url) == (0, 0), 15, "the queue emptied")
    runs = [(w["n"], w["count"]) for w in _witnessed(witness)]
    assert runs == [(0, "1"), (1, "1"), (2, "1"), (3, "1"), (4, "1"), (2, "2"), (3, "2"), (4, "2")]
