"""RabbitMQ event source mappings through a live gateway and a real broker (Debian's rabbitmq-server).

CreateEventSourceMapping with boto3 (an Amazon MQ broker ARN that GATEWAY_MQ_BROKERS maps to the test broker),
messages published with aio-pika, and a witness outside the gateway: the handler appends one line per record and
fsyncs before returning (GATEWAY_SANDBOX=rlimits, so that a handler may write there). A failed batch comes back
redelivered; a SIGKILL of the gateway in the middle of the stream loses nothing (duplicates counted); an ARN the
operator did not list leaves the mapping Enabled with the reason.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
from pathlib import Path
from typing import Any

import aio_pika

from tests.conftest import GatewayFactory, RunningGateway, create_function
from tests.servers import RabbitMQServer

ARN = "arn:aws:mq:us-east-1:123456789012:broker:e2e:b-0123abcd-4567"
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:mq-e2e"
WITNESS = """
import base64, json, os, time
def lambda_handler(event, context):
    started = time.time()
    ((key, records),) = event["rmqMessagesByQueue"].items()
    bodies = [base64.b64decode(r["data"]).decode() for r in records]
    for body, r in zip(bodies, records):
        if body == "fail-once" and not r["redelivered"]:
            raise RuntimeError("the first delivery of fail-once fails")
    lines = [json.dumps({"body": b, "redelivered": r["redelivered"], "key": key, "source": event["eventSource"],
                         "arn": event["eventSourceArn"], "started": started,
                         "leak": "GATEWAY_MQ_BROKERS" in os.environ}) for b, r in zip(bodies, records)]
    fd = os.open(os.environ["WITNESS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, ("\\n".join(lines) + "\\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    if "poison" in bodies:
        raise RuntimeError("poison always fails")
    time.sleep(float(os.environ.get("PAUSE", "0")))  # witnessed, not yet acknowledged: where a kill makes duplicates
"""


def _witnessed(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _publish(url: str, queue: str, bodies: list[str], declare: bool = False, **arguments: Any) -> None:
    async def run() -> None:
        async with await aio_pika.connect(url) as conn:
            channel = await conn.channel(publisher_confirms=True)
            if declare:
                await channel.declare_queue(queue, durable=True, arguments=arguments or None)
            for body in bodies:
                message = aio_pika.Message(body.encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                await channel.default_exchange.publish(message, routing_key=queue)

    asyncio.run(run())


def _ready_in(url: str, queue: str) -> int:
    async def run() -> int:
        async with await aio_pika.connect(url) as conn:
            declared = await (await conn.channel()).declare_queue(queue, passive=True)
            return int(declared.declaration_result.message_count or 0)

    return asyncio.run(run())


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _gateway(factory: GatewayFactory, broker: RabbitMQServer) -> RunningGateway:
    return factory(env={"GATEWAY_SANDBOX": "rlimits", "GATEWAY_MQ_BROKERS": json.dumps({ARN: broker.url()})})


def _mapping(lam: Any, function: str, queue: str, **extra: Any) -> str:
    created = lam.create_event_source_mapping(
        FunctionName=function,
        EventSourceArn=extra.pop("arn", ARN),
        Queues=[queue],
        SourceAccessConfigurations=[{"Type": "BASIC_AUTH", "URI": SECRET}],
        **extra,
    )
    uuid = str(created["UUID"])
    _wait(lambda: lam.get_event_source_mapping(UUID=uuid)["State"] == "Enabled", 15, "Enabled")
    return uuid


def test_messages_reach_the_function_and_a_failed_batch_comes_back(
    gateway_factory: GatewayFactory, rabbitmq_server: RabbitMQServer, tmp_path: Path
) -> None:
    witness, queue, url = tmp_path / "witness.jsonl", "e2e-flow", rabbitmq_server.url()
    _publish(url, queue, [], declare=True)
    gw = _gateway(gateway_factory, rabbitmq_server)
    lam = gw.client()
    create_function(lam, "rmq", WITNESS, Environment={"Variables": {"WITNESS": str(witness)}})
    uuid = _mapping(lam, "rmq", queue, BatchSize=10)
    bodies = [f"m{i}" for i in range(20)] + ["fail-once"]
    _publish(url, queue, bodies)
    _wait(lambda: {w["body"] for w in _witnessed(witness)} >= set(bodies), 60, "every message")
    seen = _witnessed(witness)
    assert {(w["key"], w["source"], w["arn"], w["leak"]) for w in seen} == {(f"{queue}::/", "aws:rmq", ARN, False)}
    assert [w["redelivered"] for w in seen if w["body"] == "fail-once"] == [True]  # failed once, then redelivered
    assert rabbitmq_server.password not in witness.read_text()
    _wait(lambda: _ready_in(url, queue) == 0, 10, "an empty queue")
    got = lam.get_event_source_mapping(UUID=uuid)
    assert got["State"] == "Enabled" and got["Queues"] == [queue]
    assert got["SourceAccessConfigurations"] == [{"Type": "BASIC_AUTH", "URI": SECRET}]
    _wait(lambda: lam.get_event_source_mapping(UUID=uuid)["LastProcessingResult"] == "OK", 10, "OK")


def test_a_broker_the_operator_did_not_list_is_a_reason(
    gateway_factory: GatewayFactory, rabbitmq_server: RabbitMQServer
) -> None:
    gw = _gateway(gateway_factory, rabbitmq_server)
    lam = gw.client()
    create_function(lam, "unlisted", "def lambda_handler(event, context):\n    return None\n")
    uuid = _mapping(lam, "unlisted", "q", arn=ARN.replace(":e2e:", ":elsewhere:"))
    _wait(lambda: "GATEWAY_MQ_BROKERS" in lam.get_event_source_mapping(UUID=uuid)["StateTransitionReason"], 15, "why")
    got = lam.get_event_source_mapping(UUID=uuid)
    assert got["State"] == "Enabled" and got["StateTransitionReason"].startswith("PROBLEM")


MESSAGES = 300


def test_sigkill_mid_batch_loses_no_message(
    gateway_factory: GatewayFactory, rabbitmq_server: RabbitMQServer, tmp_path: Path
) -> None:
    witness, queue, url = tmp_path / "witness.jsonl", "e2e-kill", rabbitmq_server.url()
    _publish(url, queue, [], declare=True)
    gw = _gateway(gateway_factory, rabbitmq_server)
    lam = gw.client()
    variables = {"WITNESS": str(witness), "PAUSE": "0.1"}
    create_function(lam, "rmq-kill", WITNESS, Environment={"Variables": variables})
    _mapping(lam, "rmq-kill", queue, BatchSize=10, MaximumBatchingWindowInSeconds=0)
    bodies = [f"k{i}" for i in range(MESSAGES)]
    _publish(url, queue, bodies)
    _wait(lambda: len(_witnessed(witness)) >= 50, 60, "some batches")
    gw.stop(signal.SIGKILL)  # a batch is in flight: invoked, maybe witnessed, not acknowledged
    before = len(_witnessed(witness))
    assert before < MESSAGES, "the kill came too late to test anything"
    gw.start()
    _wait(lambda: {w["body"] for w in _witnessed(witness)} >= set(bodies), 120, "every message after the restart")
    seen = [w["body"] for w in _witnessed(witness)]
    duplicates = len(seen) - len(set(seen))
    print(f"published {MESSAGES}, witnessed before the kill {before}, lost 0, duplicates {duplicates}")
    assert set(seen) == set(bodies)
    assert duplicates <= 10  # at most the one batch in flight (prefetch = BatchSize) runs twice
    _wait(lambda: _ready_in(url, queue) == 0, 10, "an empty queue")


def test_a_poison_message_ends_in_the_brokers_dead_letter_queue(
    gateway_factory: GatewayFactory, rabbitmq_server: RabbitMQServer, tmp_path: Path
) -> None:
    """A handler that always fails: each failed batch is nacked (requeued) and the poller backs off before the next
    (never a hot loop); a quorum queue's x-delivery-limit then dead-letters the message, as on Amazon MQ."""
    witness, queue, url = tmp_path / "witness.jsonl", "e2e-poison", rabbitmq_server.url()
    _publish(url, f"{queue}-dlq", [], declare=True)
    dead_letter = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": f"{queue}-dlq"}
    _publish(url, queue, [], declare=True, **{"x-queue-type": "quorum", "x-delivery-limit": 2, **dead_letter})
    gw = _gateway(gateway_factory, rabbitmq_server)
    lam = gw.client()
    create_function(lam, "rmq-poison", WITNESS, Environment={"Variables": {"WITNESS": str(witness)}})
    uuid = _mapping(lam, "rmq-poison", queue, BatchSize=1)
    _publish(url, queue, ["poison"])
    _wait(lambda: _ready_in(url, f"{queue}-dlq") == 1, 60, "the dead-letter queue")
    attempts = _witnessed(witness)
    assert 2 <= len(attempts) <= 4, attempts  # the limit's deliveries, not a loop
    assert [a["redelivered"] for a in attempts][:2] == [False, True]
    gaps = [b["started"] - a["started"] for a, b in itertools.pairwise(attempts)]
    print(f"poison: {len(attempts)} deliveries, {[round(g, 2) for g in gaps]} s apart, then dead-lettered")
    assert min(gaps) >= 0.9, gaps  # the poller's back-off (1 s, 2 s, ...) between failed batches
    time.sleep(2)
    assert len(_witnessed(witness)) == len(attempts) and _ready_in(url, queue) == 0
    got = lam.get_event_source_mapping(UUID=uuid)
    assert got["State"] == "Enabled" and "Function call failed" in got["LastProcessingResult"]
