"""Compatible servers the tests deliver to, started as real processes (tests/conftest.py makes them fixtures).

moto's server mode (`python -m moto.server`, from the `moto[server]` test dependency) speaks SQS, SNS and
EventBridge in one process, and routes between them as AWS does (an SNS topic's SQS subscription, an EventBridge
rule's SQS target), so what this gateway sends can be read back with boto3 as a consumer would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

#: the account moto answers for when the access key is not a 12-digit account id
MOTO_ACCOUNT = "123456789012"
#: what moto's own clients sign with: it takes any credentials
MOTO_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MotoServer:
    """One moto server on a loopback port, in its own session (killed by process group at `stop`)."""

    log_path: Path
    region: str = "us-east-1"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    clients: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0, tries: int = 3) -> MotoServer:
        """Start on a free port and wait until it answers; another port if that one was taken meanwhile."""
        for _ in range(tries):
            self.port = _free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            if self._wait_ready(timeout):
                return self
            self.stop()
        raise RuntimeError(f"moto server did not start:\n{self.log_path.read_text(errors='replace')[-3000:]}")

    def _wait_ready(self, timeout: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url + "/moto-api/", timeout=1) as resp:
                if resp.status == 200:
                    return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        for client in self.clients.values():
            client.close()
        self.clients.clear()
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def client(self, service: str) -> Any:
        """A boto3 client of `service` on this server (one per service, closed at `stop`)."""
        if service not in self.clients:
            self.clients[service] = boto3.client(
                service,
                endpoint_url=self.url,
                region_name=self.region,
                config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=30),
                **MOTO_KEYS,
            )
        return self.clients[service]

    def arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{MOTO_ACCOUNT}:{resource}"

    def queue(self, name: str) -> tuple[str, str]:
        """A new SQS queue: (its URL, its ARN)."""
        url = self.client("sqs").create_queue(QueueName=name)["QueueUrl"]
        return url, self.arn("sqs", name)

    def receive(self, queue_url: str, wait: float = 5.0) -> list[dict[str, Any]]:
        """The messages on a queue (with all their attributes), waiting up to `wait` seconds for the first."""
        deadline = time.monotonic() + wait
        while True:
            answer = self.client("sqs").receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=1
            )
            messages: list[dict[str, Any]] = answer.get("Messages", [])
            if messages or time.monotonic() > deadline:
                return messages
