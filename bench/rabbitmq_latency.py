"""RabbitMQ event source latency: publish -> handler start, at low load.

Run: `.venv/bin/python bench/rabbitmq_latency.py [--messages 100] [--gap 0.05] [--amqp-url URL] [--out PATH]`.
Starts a gateway (a temporary data directory, GATEWAY_SANDBOX=rlimits so that the handler may write its witness
file) and, unless `--amqp-url` names a broker, a RabbitMQ node of its own (Debian's rabbitmq-server, as the tests
run it: tests/servers.py). For each configuration (BatchSize 1; BatchSize 10 with MaximumBatchingWindowInSeconds 0;
BatchSize 10 with the default 500 ms window) it creates a mapping on a new queue, then publishes `--messages`
messages one at a time, each carrying its publish time, and waits until the handler has written the time it started
before publishing the next (a gap of `--gap` seconds between them: no batching, no queueing). The figure is the
handler's start minus the publish time (one clock: the same machine). Writes
`bench/results/rabbitmq-latency-<UTC stamp>.json` and prints the table. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    RESULTS,
    ROLE,
    RUNTIME,
    gateway_server,
    machine_facts,
    make_zip,
    running,
    scratch_dir,
    summarize,
)
from bench.scenarios.common import Api

ARN = "arn:aws:mq:us-east-1:123456789012:broker:bench:b-0123abcd"
HANDLER = """
import base64, json, os, time
def lambda_handler(event, context):
    started = time.time()
    ((_, records),) = event["rmqMessagesByQueue"].items()
    lines = "".join(json.dumps({"sent": json.loads(base64.b64decode(r["data"]))["sent"], "started": started}) + "\\n"
                    for r in records)
    with open(os.environ["WITNESS"], "a") as f:
        f.write(lines)
"""
#: (name, BatchSize, MaximumBatchingWindowInSeconds or None for the default)
CONFIGS = (("batch 1", 1, None), ("batch 10, window 0", 10, 0), ("batch 10, default window", 10, None))


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


async def _publish_and_wait(url: str, queue: str, witness: Path, messages: int, gap: float) -> list[float]:
    """Publish one message at a time; wait for its witness line; the latencies in ms."""
    import aio_pika

    async with await aio_pika.connect(url) as conn:
        channel = await conn.channel(publisher_confirms=True)
        deadline = time.monotonic() + 30
        while not (await channel.declare_queue(queue, passive=True)).declaration_result.consumer_count:
            if time.monotonic() > deadline:  # the mapping's poller consumes the queue once it is Enabled
                raise RuntimeError(f"no consumer on {queue} after 30 s")
            await asyncio.sleep(0.05)
        for i in range(messages):
            body = json.dumps({"sent": time.time(), "i": i}).encode()
            await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue)
            deadline = time.monotonic() + 30
            while _lines(witness) <= i:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"message {i} did not reach the handler in 30 s")
                await asyncio.sleep(0.002)
            await asyncio.sleep(gap)
    rows = [json.loads(line) for line in witness.read_text().splitlines()]
    return [(r["started"] - r["sent"]) * 1000 for r in rows]


async def _declare(url: str, queue: str) -> None:
    import aio_pika

    async with await aio_pika.connect(url) as conn:
        await (await conn.channel()).declare_queue(queue, durable=True)


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    with ExitStack() as stack:
        url = args.amqp_url
        if url is None:
            from tests.servers import RabbitMQServer

            broker = RabbitMQServer(tmp / "rabbitmq").start()
            stack.callback(broker.stop)
            url = broker.url()
        gateway = stack.enter_context(
            running(gateway_server(tmp, GATEWAY_SANDBOX="rlimits", GATEWAY_MQ_BROKERS=json.dumps({ARN: url})))
        )
        api = Api(gateway.port)
        results: dict[str, Any] = {}
        for n, (name, batch, window) in enumerate(CONFIGS):
            witness = tmp / f"witness-{n}.jsonl"
            function = f"mq-latency-{n}"
            status, body = api.call(
                "POST",
                "/2015-03-31/functions",
                {
                    "FunctionName": function,
                    "Runtime": RUNTIME,
                    "Role": ROLE,
                    "Handler": "lambda_function.lambda_handler",
                    "Code": {"ZipFile": base64.b64encode(make_zip({"lambda_function.py": HANDLER})).decode()},
                    "Environment": {"Variables": {"WITNESS": str(witness)}},
                },
            )
            if status != 201:
                raise RuntimeError(f"CreateFunction: {status} {body}")
            asyncio.run(_declare(url, f"bench-{n}"))  # before the mapping: its poller finds it at once
            mapping: dict[str, Any] = {"FunctionName": function, "EventSourceArn": ARN, "Queues": [f"bench-{n}"]}
            mapping["BatchSize"] = batch
            if window is not None:
                mapping["MaximumBatchingWindowInSeconds"] = window
            status, body = api.call("POST", "/2015-03-31/event-source-mappings/", mapping)
            if status != 202:
                raise RuntimeError(f"CreateEventSourceMapping: {status} {body}")
            latencies = asyncio.run(_publish_and_wait(url, f"bench-{n}", witness, args.messages, args.gap))
            results[name] = summarize(latencies)
            print(f"{name:28s} {results[name]}")
        api.close()
        return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="rabbitmq_latency.py", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100, help="messages per configuration")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between a message's arrival and the next")
    parser.add_argument("--amqp-url", default=None, help="a broker to use instead of starting one")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    machine = machine_facts()
    with scratch_dir("rabbitmq-latency-") as tmp:
        results = run(args, Path(tmp))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or RESULTS / f"rabbitmq-latency-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"machine": machine, "messages": args.messages, "gap": args.gap, "latency_ms": results}, indent=2)
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
