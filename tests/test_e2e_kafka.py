"""Self-managed Kafka through a live gateway: a mapping made with boto3's CreateEventSourceMapping reads a real
broker (KRaft, tests/servers.py), the function gets Lambda's SelfManagedKafka event, records no filter matches are
skipped, offsets are committed for the mapping's consumer group (its UUID); and a SIGKILL of the gateway in the
middle of a batch loses nothing: after the restart every record is processed at least once (duplicates counted).

The witness is outside the gateway: the handler appends one line per record (partition, offset, value) to a file
and fsyncs it before returning (GATEWAY_SANDBOX=rlimits, so that a handler may write there)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import GroupCoordinatorNotAvailableError

from tests.conftest import GatewayFactory, create_function, free_port
from tests.servers import KafkaServer

pytestmark = pytest.mark.timeout(400)

WITNESS = """
import base64, json, os, time
def lambda_handler(event, context):
    time.sleep(float(os.environ.get("SLEEP", "0")))
    lines = [
        json.dumps([r["partition"], r["offset"], base64.b64decode(r["value"]).decode()])
        for records in event["records"].values() for r in records
    ]
    fd = os.open(os.environ["WITNESS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, ("\\n".join(lines) + "\\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    with open(os.environ["WITNESS"] + ".events", "a") as f:
        f.write(json.dumps(event) + "\\n")
"""


def _witnessed(path: Path) -> list[tuple[int, int, str]]:
    if not path.exists():
        return []
    return [tuple(json.loads(line)) for line in path.read_text().splitlines() if line]  # type: ignore[misc]


def _topic(server: KafkaServer, name: str, partitions: int = 1) -> None:
    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=server.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        finally:
            await admin.close()

    asyncio.run(create())


def _produce(server: KafkaServer, topic: str, values: list[str], partitions: int = 1) -> None:
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=server.bootstrap, linger_ms=5)
        await producer.start()
        try:
            sent = [await producer.send(topic, v.encode(), partition=i % partitions) for i, v in enumerate(values)]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    asyncio.run(send())


def _committed(server: KafkaServer, group: str) -> dict[int, int]:
    async def read() -> dict[int, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=server.bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        except GroupCoordinatorNotAvailableError:  # the broker's first group: its offsets topic is being made
            return {}
        finally:
            await admin.close()
        return {tp.partition: meta.offset for tp, meta in offsets.items()}

    return asyncio.run(read())


def _wait(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.1)


def _mapping(lam: Any, function: str, server: KafkaServer, topic: str, **extra: Any) -> str:
    created = lam.create_event_source_mapping(
        FunctionName=function,
        SelfManagedEventSource={"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": [server.bootstrap]}},
        Topics=[topic],
        StartingPosition="TRIM_HORIZON",
        **extra,
    )
    return str(created["UUID"])


def test_a_mapping_delivers_lambdas_event_and_commits_the_groups_offsets(
    kafka_server: KafkaServer, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    witness = tmp_path / "witness.txt"
    gw = gateway_factory(env={"GATEWAY_SANDBOX": "rlimits"})
    lam = gw.client()
    create_function(lam, "consumer", WITNESS, Environment={"Variables": {"WITNESS": str(witness)}})
    _topic(kafka_server, "orders-e2e")
    values = [json.dumps({"kind": "order", "n": 1}), json.dumps({"kind": "noise"}), json.dumps({"kind": "order"})]
    _produce(kafka_server, "orders-e2e", values)
    pattern = json.dumps({"value": {"kind": ["order"]}})
    uuid = _mapping(
        lam,
        "consumer",
        kafka_server,
        "orders-e2e",
        BatchSize=10,
        MaximumBatchingWindowInSeconds=1,
        FilterCriteria={"Filters": [{"Pattern": pattern}]},
    )
    _wait(lambda: _committed(kafka_server, uuid).get(0) == 3, 60)
    assert _committed(kafka_server, uuid) == {0: 3}  # the group is the mapping's UUID; the filtered record too
    assert _witnessed(witness) == [(0, 0, values[0]), (0, 2, values[2])]
    event = json.loads((tmp_path / "witness.txt.events").read_text().splitlines()[0])
    assert event["eventSource"] == "SelfManagedKafka" and event["bootstrapServers"] == kafka_server.bootstrap
    assert list(event["records"]) == ["orders-e2e-0"]
    record = event["records"]["orders-e2e-0"][0]
    assert {"topic", "partition", "offset", "timestamp", "timestampType", "value", "headers"} <= set(record)
    assert record["timestampType"] == "CREATE_TIME" and record["headers"] == []
    got = lam.get_event_source_mapping(UUID=uuid)
    assert got["State"] == "Enabled" and got["LastProcessingResult"] == "OK", got


def _quiet_count(witness: Path) -> int:
    """How many records were witnessed once the file stops growing (an environment outlives a SIGKILLed gateway by
    the moments its zygote takes to notice and kill it)."""
    count = len(_witnessed(witness))
    for _ in range(40):
        time.sleep(0.25)
        now = len(_witnessed(witness))
        if now == count:
            return count
        count = now
    return count


def test_sigkill_mid_batch_loses_no_record(
    kafka_server: KafkaServer, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    witness = tmp_path / "witness.txt"
    gw = gateway_factory(env={"GATEWAY_SANDBOX": "rlimits"})
    lam = gw.client()
    env = {"WITNESS": str(witness), "SLEEP": "0.05"}
    create_function(lam, "killed", WITNESS, Environment={"Variables": env})
    count = 300
    _topic(kafka_server, "kill-e2e", partitions=2)
    _produce(kafka_server, "kill-e2e", [f"m{i}" for i in range(count)], partitions=2)
    uuid = _mapping(lam, "killed", kafka_server, "kill-e2e", BatchSize=10, MaximumBatchingWindowInSeconds=0)
    _wait(lambda: len(_witnessed(witness)) >= 40, 60)
    gw.stop(signal.SIGKILL)  # a batch is most likely running: handled, or not, but not committed
    before = _quiet_count(witness)  # its environment may finish the batch just after the gateway died
    assert 0 < before < count, "the kill came too late to test anything"
    committed_at_kill = sum(_committed(kafka_server, uuid).values())
    gw.start()
    _wait(lambda: {v for _, _, v in _witnessed(witness)} >= {f"m{i}" for i in range(count)}, 120)
    seen = [v for _, _, v in _witnessed(witness)]
    lost = {f"m{i}" for i in range(count)} - set(seen)
    duplicates = len(seen) - len(set(seen))
    print(
        f"kafka: {count} records, processed before the kill {before}, committed then {committed_at_kill}, "
        f"lost {len(lost)}, duplicates {duplicates}"
    )
    assert not lost
    # at least once: what ran after the last commit before the kill runs again, nothing before it
    assert duplicates <= before - committed_at_kill
    _wait(lambda: sum(_committed(kafka_server, uuid).values()) == count, 30)
    assert _committed(kafka_server, uuid) == {0: count // 2, 1: count // 2}


def test_an_unreachable_broker_is_shown_and_the_mapping_reconnects_when_it_comes(
    kafka_server: KafkaServer, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    """No broker at the address yet: the mapping stays Enabled with the reason; once a broker listens there, the
    poller (backing off meanwhile, not in a hot loop) connects and the records reach the function."""
    witness = tmp_path / "witness.txt"
    gw = gateway_factory(env={"GATEWAY_SANDBOX": "rlimits"})
    lam = gw.client()
    create_function(lam, "later", WITNESS, Environment={"Variables": {"WITNESS": str(witness)}})
    late = KafkaServer(tmp_path / "late.log", classpath=kafka_server.classpath, fixed_port=free_port())
    uuid = lam.create_event_source_mapping(
        FunctionName="later",
        SelfManagedEventSource={"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": [f"127.0.0.1:{late.fixed_port}"]}},
        Topics=["late"],
        StartingPosition="TRIM_HORIZON",
    )["UUID"]
    _wait(lambda: lam.get_event_source_mapping(UUID=uuid)["StateTransitionReason"].startswith("PROBLEM"), 30)
    shown = lam.get_event_source_mapping(UUID=uuid)
    assert shown["State"] == "Enabled", shown
    assert f"Kafka brokers 127.0.0.1:{late.fixed_port} unreachable" in shown["StateTransitionReason"], shown
    try:
        late.start(timeout=120)
        _topic(late, "late")
        _produce(late, "late", ["hello"])
        _wait(lambda: _witnessed(witness) == [(0, 0, "hello")], 90)  # the back-off reaches 16-32 s meanwhile
        assert _witnessed(witness) == [(0, 0, "hello")]
        assert lam.get_event_source_mapping(UUID=uuid)["StateTransitionReason"] == "USER_INITIATED"
    finally:
        late.stop()


def test_two_pollers_of_one_mapping_share_the_partitions(
    kafka_server: KafkaServer, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    """ScalingConfig.MaximumConcurrency 2: two consumers in the mapping's group, joining while records flow (a
    rebalance takes partitions from a poller with a batch in flight); every record processed, order kept per
    partition, both partitions committed to their end."""
    witness = tmp_path / "witness.txt"
    gw = gateway_factory(env={"GATEWAY_SANDBOX": "rlimits"})
    lam = gw.client()
    create_function(lam, "pair", WITNESS, Environment={"Variables": {"WITNESS": str(witness), "SLEEP": "0.02"}})
    count = 200
    _topic(kafka_server, "pair-e2e", partitions=2)
    _produce(kafka_server, "pair-e2e", [f"m{i}" for i in range(count)], partitions=2)
    uuid = _mapping(lam, "pair", kafka_server, "pair-e2e", BatchSize=5, ScalingConfig={"MaximumConcurrency": 2})
    _wait(lambda: sum(_committed(kafka_server, uuid).values()) == count, 90)
    assert _committed(kafka_server, uuid) == {0: count // 2, 1: count // 2}
    seen = _witnessed(witness)
    assert {v for _, _, v in seen} == {f"m{i}" for i in range(count)}
    for partition in (0, 1):  # in order within a partition (a record seen again restarts from an earlier one)
        offsets = [o for p, o, _ in seen if p == partition]
        firsts = [o for i, o in enumerate(offsets) if i == 0 or o != offsets[i - 1] + 1]
        assert sorted(set(offsets)) == list(range(count // 2)) and len(firsts) <= 3, firsts
    print(f"kafka, 2 pollers: {count} records, duplicates {len(seen) - len({v for _, _, v in seen})}")
