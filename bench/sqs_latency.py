"""SQS event source latency at low load: the time from a message's SendMessage to its handler's start.

Run: `.venv/bin/python bench/sqs_latency.py [--n 100] [--gap 0.2] [--sqs-endpoint URL] [--out PATH]`. Loopback
only, about `n * (gap + latency)` seconds plus start-up. Without `--sqs-endpoint` an ElasticMQ is started (Java and
Maven needed, as for the tests: tests/servers.py fetches it from Maven Central once). Results go to
`bench/results/sqs-<UTC timestamp>.json` (or `--out`) and a copy at `bench/results/sqs-latest.json`.

How: one gateway (bench/harness.py) with GATEWAY_SQS_ENDPOINT set; a queue; a function whose handler prints
`SQS-START <token> <time.time()>` for each record; an event source mapping (CreateEventSourceMapping with boto3:
BatchSize 10, no batching window, as Lambda's default). After one warm-up message (the environment started), `n`
messages are sent one at a time, `gap` s apart (each is done long before the next), and the client notes
`time.time()` just before each SendMessage. The handlers' lines are read back from the gateway's logs API
(`GET /gateway/v1/functions/{F}/logs`, what `gateway logs` reads). Same machine, same clock. What the figure holds:
the poller's long poll (ReceiveMessage with a 1 s wait, answered by the server as the message arrives), building
the event, the synchronous invoke of a warm environment.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository's root on the path, for `bench` and `tests`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3
from botocore.config import Config

from bench.harness import (
    RESULTS,
    ROLE,
    RUNTIME,
    function_log,
    gateway_server,
    machine_facts,
    make_zip,
    running,
    scratch_dir,
    summarize,
)

HANDLER = """import json, time

def lambda_handler(event, context):
    started = time.time()
    for record in event["Records"]:
        print(f"SQS-START {json.loads(record['body'])['token']} {started!r}")
"""
_START = re.compile(rb"SQS-START (-?\d+) ([0-9.]+)")
KEYS = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench-secret"}
LOG_TIMEOUT = 30.0


def _client(service: str, url: str) -> Any:
    config = Config(retries={"total_max_attempts": 1}, read_timeout=60, connect_timeout=5)
    return boto3.client(service, endpoint_url=url, region_name="us-east-1", config=config, **KEYS)


def _logged_starts(port: int, function: str, since: float, tokens: int) -> dict[int, float]:
    found: dict[int, float] = {}
    deadline = time.monotonic() + LOG_TIMEOUT
    while len(found) < tokens and time.monotonic() < deadline:
        body = function_log(port, function, since)
        for match in _START.finditer(body):
            found[int(match.group(1))] = float(match.group(2))
        if len(found) < tokens:
            time.sleep(0.5)
    return found


def _wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def measure(gateway_url: str, port: int, sqs_url: str, n: int, gap: float) -> dict[str, Any]:
    lam, sqs = _client("lambda", gateway_url), _client("sqs", sqs_url)
    function = f"sqs-latency-{int(time.time())}"
    lam.create_function(
        FunctionName=function,
        Runtime=RUNTIME,
        Role=ROLE,
        Handler="lambda_function.lambda_handler",
        Code={"ZipFile": make_zip({"lambda_function.py": HANDLER})},
    )
    queue_url = sqs.create_queue(QueueName=function)["QueueUrl"]
    arn = f"arn:aws:sqs:us-east-1:123456789012:{function}"
    uuid = lam.create_event_source_mapping(FunctionName=function, EventSourceArn=arn, BatchSize=10)["UUID"]
    _wait_for(lambda: lam.get_event_source_mapping(UUID=uuid)["State"] == "Enabled", 30, "the mapping Enabled")
    since = time.time()
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"token": -1}))  # the warm-up
    _wait_for(lambda: -1 in _logged_starts(port, function, since, 1), 60, "the warm-up message")
    sent: dict[int, float] = {}
    for token in range(n):
        time.sleep(gap)
        body = json.dumps({"token": token})
        sent[token] = time.time()
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    starts = _logged_starts(port, function, since, n + 1)
    latencies = [(starts[t] - s) * 1000 for t, s in sent.items() if t in starts]
    lam.delete_event_source_mapping(UUID=uuid)
    return {
        "n": n,
        "gap_s": gap,
        "seen": len(latencies),
        "send_to_handler_start_ms": summarize(latencies, (50, 95, 99)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--gap", type=float, default=0.2)
    parser.add_argument("--sqs-endpoint", help="an SQS-compatible endpoint (default: start ElasticMQ)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    with scratch_dir("sqs-") as tmp_name:
        tmp = Path(tmp_name)
        elasticmq = None
        if args.sqs_endpoint:
            sqs_url = args.sqs_endpoint
        else:
            from tests.servers import ElasticMQServer, elasticmq_classpath

            elasticmq = ElasticMQServer(tmp / "elasticmq.log", classpath=elasticmq_classpath(tmp)).start()
            sqs_url = elasticmq.url
        try:
            env = {"GATEWAY_SQS_ENDPOINT": sqs_url, **{k.upper(): v for k, v in KEYS.items()}}
            with running(gateway_server(tmp, **env)) as gateway:
                result = measure(gateway.url, gateway.port, sqs_url, args.n, args.gap)
        finally:
            if elasticmq is not None:
                elasticmq.stop()
    result = {"server": "ElasticMQ" if elasticmq else sqs_url, "machine": machine_facts(), **result}
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.out or RESULTS / f"sqs-{stamp}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    if args.out is None:
        (RESULTS / "sqs-latest.json").write_text(out.read_text())
    ms = result["send_to_handler_start_ms"]
    print(
        f"SQS send -> handler start: p50 {ms.get('p50')} ms, p95 {ms.get('p95')} ms, p99 {ms.get('p99')} ms "
        f"({result['seen']}/{result['n']} seen, one at a time {args.gap} s apart) -> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
