"""Kafka as an event source: records/s through a no-op function, and the time from produce to the handler's start.

Run: `.venv/bin/python bench/kafka_source.py [--records-1 1000] [--records-100 20000] [--latency-n 100]
[--bootstrap HOST:PORT] [--out PATH]`. Starts a gateway (a temporary data directory, the default sandbox) and,
without `--bootstrap`, a Kafka broker in KRaft mode (tests/servers.py: from Maven Central, on the machine's Java),
then

1. throughput, once per BatchSize (1 and 100): a one-partition topic is filled first, then a mapping
   (CreateEventSourceMapping, TRIM_HORIZON) drains it through a no-op function; records/s = records / (the time
   from the first handler start to the group's committed offset reaching the end, polled every 0.1 s);
2. latency at low load: a mapping with BatchSize 1 and no batching window on a topic of its own; `--latency-n`
   records produced one at a time, `LATENCY_GAP` s apart; the handler prints `time.time()` at its start with the
   record's token; the times come back through the gateway's logs API (as in bench/scenarios/async_events.py):
   p50/p95/p99 from the producer's acknowledgement (and from the send) to the handler's start. Same machine, same
   clock.

Writes `bench/results/kafka-<UTC stamp>.json` and prints it. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import GroupCoordinatorNotAvailableError

from bench.harness import RESULTS, function_log, gateway_server, machine_facts, running, scratch_dir, summarize
from bench.scenarios.common import Api

HANDLER = """import base64, time

def lambda_handler(event, context):
    started = time.time()
    for records in event["records"].values():
        for r in records:
            value = base64.b64decode(r["value"])
            if value.startswith(b"lat-"):
                print(f"KAFKA-START {r['topic']} {value.decode()} {started!r}")
            elif r["offset"] == 0:
                print(f"KAFKA-START {r['topic']} offset-0 {started!r}")
"""
LATENCY_GAP = 0.2
DRAIN_TIMEOUT = 600.0
LOG_TIMEOUT = 30.0
_START = re.compile(rb"KAFKA-START (\S+) (\S+) ([0-9.]+)")


@contextmanager
def broker(bootstrap: str | None, tmp: Path) -> Iterator[str]:
    """The broker to use: the one given, or one started here (tests/servers.py) and stopped at the end."""
    if bootstrap:
        yield bootstrap
        return
    from tests.servers import KAFKA_POM, KafkaServer, maven_classpath

    server = KafkaServer(tmp / "kafka.log", classpath=maven_classpath(KAFKA_POM, tmp, "Apache Kafka")).start(120)
    try:
        yield server.bootstrap
    finally:
        server.stop()


async def _topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()


async def _fill(bootstrap: str, topic: str, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10)
    await producer.start()
    try:
        sent = [await producer.send(topic, b'{"n": %d}' % i) for i in range(count)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _committed(bootstrap: str, group: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    except GroupCoordinatorNotAvailableError:
        return 0
    finally:
        await admin.close()
    return sum(meta.offset for meta in offsets.values())


def _mapping(api: Api, bootstrap: str, topic: str, batch_size: int, window: int | None = None) -> str:
    body: dict[str, Any] = {
        "FunctionName": "kafka-noop",
        "SelfManagedEventSource": {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": [bootstrap]}},
        "Topics": [topic],
        "StartingPosition": "TRIM_HORIZON",
        "BatchSize": batch_size,
    }
    if window is not None:
        body["MaximumBatchingWindowInSeconds"] = window
    status, answer = api.call("POST", "/2015-03-31/event-source-mappings/", body)
    if status != 202:
        raise RuntimeError(f"CreateEventSourceMapping: {status} {answer}")
    return str(answer["UUID"])


def _starts(port: int, since: float, want: int, topic: str) -> dict[str, float]:
    """value -> handler start for the records of `topic` that the handler printed, once `want` are there."""
    found: dict[str, float] = {}
    deadline = time.monotonic() + LOG_TIMEOUT
    while len(found) < want and time.monotonic() < deadline:
        body = function_log(port, "kafka-noop", since)
        for match in _START.finditer(body):
            if match.group(1).decode() == topic:
                found[match.group(2).decode()] = float(match.group(3))
        if len(found) < want:
            time.sleep(0.5)
    return found


def throughput(api: Api, port: int, bootstrap: str, batch_size: int, records: int) -> dict[str, Any]:
    topic = f"bench-batch-{batch_size}-{int(time.time())}"
    asyncio.run(_topic(bootstrap, topic))
    asyncio.run(_fill(bootstrap, topic, records))
    since = time.time()
    uuid = _mapping(api, bootstrap, topic, batch_size)
    deadline = time.monotonic() + DRAIN_TIMEOUT
    done_at = None
    while time.monotonic() < deadline:
        if asyncio.run(_committed(bootstrap, uuid)) >= records:
            done_at = time.time()
            break
        time.sleep(0.1)
    first = _starts(port, since, 1, topic).get("offset-0")
    api.call("DELETE", f"/2015-03-31/event-source-mappings/{uuid}")
    result: dict[str, Any] = {"batch_size": batch_size, "records": records, "drained": done_at is not None}
    if done_at is not None and first is not None:
        result["seconds"] = round(done_at - first, 3)
        result["records_per_s"] = round(records / (done_at - first), 1)
    return result


async def _produce_spaced(bootstrap: str, topic: str, n: int) -> dict[str, tuple[float, float]]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    sent: dict[str, tuple[float, float]] = {}
    try:
        for i in range(n):
            await asyncio.sleep(LATENCY_GAP)
            value = f"lat-{i}"
            t_send = time.time()
            await producer.send_and_wait(topic, value.encode())
            sent[value] = (t_send, time.time())
    finally:
        await producer.stop()
    return sent


def latency(api: Api, port: int, bootstrap: str, n: int) -> dict[str, Any]:
    topic = f"bench-latency-{int(time.time())}"
    asyncio.run(_topic(bootstrap, topic))
    asyncio.run(_fill(bootstrap, topic, 1))  # offset 0: its start says the mapping's consumer is in the group
    since = time.time()
    uuid = _mapping(api, bootstrap, topic, 1, window=0)
    if not _starts(port, since, 1, topic):
        raise RuntimeError("the latency mapping's first record did not reach the function")
    sent = asyncio.run(_produce_spaced(bootstrap, topic, n))
    starts = _starts(port, since, n + 1, topic)
    api.call("DELETE", f"/2015-03-31/event-source-mappings/{uuid}")
    from_ack = [(starts[v] - t_ack) * 1000 for v, (_, t_ack) in sent.items() if v in starts]
    from_send = [(starts[v] - t_send) * 1000 for v, (t_send, _) in sent.items() if v in starts]
    ps = (50, 95, 99)
    return {
        "n": n,
        "gap_s": LATENCY_GAP,
        "seen": len(from_ack),
        "ack_to_handler_start_ms": summarize(from_ack, ps) if from_ack else None,
        "send_to_handler_start_ms": summarize(from_send, ps) if from_send else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kafka_source.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records-1", type=int, default=1000, help="records drained at BatchSize 1")
    parser.add_argument("--records-100", type=int, default=20000, help="records drained at BatchSize 100")
    parser.add_argument("--latency-n", type=int, default=100, help="records of the low-load latency run")
    parser.add_argument("--bootstrap", help="an existing broker (host:port) instead of one started here")
    parser.add_argument("--out", type=Path, help="the JSON file to write (default: bench/results/kafka-<stamp>)")
    args = parser.parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report: dict[str, Any] = {"machine": machine_facts(), "started": stamp}
    with scratch_dir("kafka-") as tmp_name:
        tmp = Path(tmp_name)
        with broker(args.bootstrap, tmp) as bootstrap, running(gateway_server(tmp)) as gateway:
            api = Api(gateway.port)
            try:
                api.create("kafka-noop", HANDLER)
                report["throughput"] = [
                    throughput(api, gateway.port, bootstrap, 1, args.records_1),
                    throughput(api, gateway.port, bootstrap, 100, args.records_100),
                ]
                report["latency"] = latency(api, gateway.port, bootstrap, args.latency_n)
            finally:
                api.close()
    out = args.out or RESULTS / f"kafka-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=2))
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
