"""Compatible servers the tests deliver to, started as real processes (tests/conftest.py makes them fixtures).

- moto's server mode (`python -m moto.server`; the test extra installs moto with its SQS, SNS, EventBridge and S3
  extras and Flask) speaks the four in one process (S3: where function code is fetched from), and routes between
  them as AWS does (an SNS topic's SQS subscription, an EventBridge rule's SQS target), so what this gateway sends
  can be read back with boto3 as a consumer would.
- ElasticMQ (SQS only; Scala, from Maven Central: `mvn` fetches it with tests/data/elasticmq/pom.xml into Maven's
  cache, once) runs on the JVM, configured for the region and account the tests' ARNs name.
- Apache Kafka (`org.apache.kafka:kafka_2.13`, fetched likewise with tests/data/kafka/pom.xml) runs one KRaft node
  (broker and controller) on the JVM, its storage formatted at each start in a directory of its own.

- RabbitMQ (Debian's rabbitmq-server, an Erlang node with an epmd of its own) for the Amazon MQ event source.

Each runs on a free loopback port in its own session, and `stop` kills its process group.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent

#: the account moto answers for when the access key is not a 12-digit account id (ElasticMQ is configured with it)
ACCOUNT = "123456789012"
#: what the tests' own clients sign with: both servers take any credentials
KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Unavailable(Exception):
    """A server that cannot be had on this machine (its runtime or its packages missing)."""


@dataclass
class Server:
    """One server process on a loopback port, in its own session (killed by process group at `stop`)."""

    log_path: Path
    region: str = "us-east-1"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    clients: dict[str, Any] = field(default_factory=dict)
    #: environment variables the process gets on top of the tests' own
    environ: dict[str, str] = field(default_factory=dict)

    #: where an HTTP answer (any status) means the server is up
    ready_path = "/"

    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0, tries: int = 3) -> Self:
        """Start on a free port and wait until it answers; another port if that one was taken meanwhile."""
        for _ in range(tries):
            self.port = _free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    self.command(),
                    env={**os.environ, **self.environ},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            if self._wait_ready(timeout):
                return self
            self.stop()
        raise RuntimeError(f"{type(self).__name__} did not start:\n{self.log_path.read_text(errors='replace')[-3000:]}")

    def _wait_ready(self, timeout: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=1):
                    return True
            except urllib.error.HTTPError as exc:  # an answer all the same
                exc.close()
                return True
            except OSError:
                pass
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
                config=Config(
                    retries={"total_max_attempts": 1},
                    connect_timeout=5,
                    read_timeout=30,
                    s3={"addressing_style": "path"},  # 127.0.0.1 has no bucket subdomains
                ),
                **KEYS,
            )
        return self.clients[service]

    def arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{ACCOUNT}:{resource}"

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


@dataclass
class MotoServer(Server):
    """moto: SQS, SNS, EventBridge and S3 (with versioning). With `environ={"INITIAL_NO_AUTH_ACTION_COUNT": "0"}` it
    checks credentials: an access key it does not know is refused (403), as S3 refuses a caller without access."""

    ready_path = "/moto-api/"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]


ELASTICMQ_POM = ROOT / "tests" / "data" / "elasticmq" / "pom.xml"


def elasticmq_classpath(work: Path) -> str:
    """The jars of ElasticMQ's server, fetched by Maven (into its cache) if need be. Raises Unavailable without
    Java or Maven, or if Maven cannot fetch them."""
    return maven_classpath(ELASTICMQ_POM, work, "ElasticMQ")


@dataclass
class ElasticMQServer(Server):
    """ElasticMQ: SQS, with its default strict limits (256 KiB messages, AWS's limit before 2025)."""

    classpath: str = ""
    account: str = ACCOUNT

    def command(self) -> list[str]:
        config = self.log_path.with_suffix(".conf")
        config.write_text(
            'include classpath("application.conf")\n'
            f'node-address {{ protocol = http, host = "127.0.0.1", port = {self.port}, context-path = "" }}\n'
            f'rest-sqs {{ enabled = true, bind-port = {self.port}, bind-hostname = "127.0.0.1", '
            "sqs-limits = strict }\n"
            "rest-stats { enabled = false }\n"
            f'aws {{ region = "{self.region}", accountId = "{self.account}" }}\n'
        )
        return ["java", "-Xmx256m", f"-Dconfig.file={config}", "-cp", self.classpath, "org.elasticmq.server.Main"]


def _rabbit_hash(password: str) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password)), a 4-byte salt."""
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


@dataclass
class RabbitMQServer:
    """Debian's rabbitmq-server as a foreground node of its own: a unique node name (rabbit-<port>@localhost), its own
    data, log and config files in `work`, AMQP on a free loopback port, the distribution on another, and an epmd of
    its own on a third (started here in the foreground, so that the node finds it instead of daemonizing one that
    would outlive the test). Boots with `vhosts` and a user `user`/`password` with all rights on each (a definitions
    file: no rabbitmqctl round trips). `stop` kills both process groups."""

    work: Path
    vhosts: tuple[str, ...] = ("/", "other")
    user: str = "gateway"
    password: str = "s3cret-pw"
    port: int = 0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")  # not /usr/sbin's wrapper, which switches to user rabbitmq

    def url(self, vhost: str = "/", port: int | None = None) -> str:
        quoted = "/" + vhost.replace("%", "%25").replace("/", "%2F")
        return f"amqp://{self.user}:{self.password}@127.0.0.1:{port or self.port}{quoted}"

    def start(self, timeout: float = 120.0) -> Self:
        if not self.SERVER.exists() or shutil.which("epmd") is None:
            raise Unavailable("RabbitMQ needs Debian's rabbitmq-server (apt-get install rabbitmq-server)")
        self.port, dist, epmd = _free_port(), _free_port(), _free_port()
        w = self.work
        w.mkdir(parents=True, exist_ok=True)
        (w / "definitions.json").write_text(json.dumps(self._definitions()))
        (w / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nload_definitions = {w / 'definitions.json'}\n"
        )
        (w / "enabled_plugins").write_text("[].\n")
        (w / "env.conf").write_text("")
        env = dict(os.environ, HOME=str(w), ERL_EPMD_PORT=str(epmd), ERL_EPMD_ADDRESS="127.0.0.1")
        self._spawn(["epmd", "-port", str(epmd)], env, w / "epmd.log")
        env |= {
            "RABBITMQ_NODENAME": f"rabbit-{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(dist),
            "RABBITMQ_MNESIA_BASE": str(w / "mnesia"),
            "RABBITMQ_LOG_BASE": str(w / "log"),
            "RABBITMQ_CONFIG_FILE": str(w / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(w / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(w / "env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(w / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(w / "rabbit.pid"),
        }
        self._spawn([str(self.SERVER)], env, w / "server.log")
        if not self._wait_ready(timeout):
            self.stop()
            raise RuntimeError(
                f"rabbitmq-server did not start:\n{(w / 'server.log').read_text(errors='replace')[-3000:]}"
            )
        return self

    def _definitions(self) -> dict[str, Any]:
        rights = {"configure": ".*", "write": ".*", "read": ".*"}
        return {
            "users": [
                {
                    "name": self.user,
                    "password_hash": _rabbit_hash(self.password),
                    "tags": ["administrator"],
                    "hashing_algorithm": "rabbit_password_hashing_sha256",
                }
            ],
            "vhosts": [{"name": v} for v in self.vhosts],
            "permissions": [{"user": self.user, "vhost": v, **rights} for v in self.vhosts],
        }

    def _spawn(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        with open(log_path, "ab") as log:
            self.procs.append(
                subprocess.Popen(
                    command,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )

    def _wait_ready(self, timeout: float) -> bool:
        """Ready when the AMQP port answers the protocol header with a Connection.Start frame (type 1)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.sendall(b"AMQP\x00\x00\x09\x01")
                    if s.recv(1) == b"\x01":
                        return True
            except OSError:
                pass
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        """The node first (TERM, then KILL after 15 s), then its epmd; each by its process group."""
        for proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()


KAFKA_POM = ROOT / "tests" / "data" / "kafka" / "pom.xml"


def maven_classpath(pom: Path, work: Path, what: str) -> str:
    """The jars `pom` depends on, fetched by Maven (into its cache) if need be. Raises Unavailable without Java or
    Maven, or if Maven cannot fetch them."""
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            raise Unavailable(f"{what} needs {tool}, not found on PATH")
    out = work / f"{pom.parent.name}.classpath"
    done = subprocess.run(
        ["mvn", "-q", "-B", "-f", str(pom), "dependency:build-classpath", f"-Dmdep.outputFile={out}"],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=600,
        check=False,
    )
    if done.returncode != 0 or not out.exists():
        raise Unavailable(f"mvn could not fetch {what}:\n{done.stdout.decode(errors='replace')[-2000:]}")
    return out.read_text().strip()


@dataclass
class KafkaServer(Server):
    """Apache Kafka, one node in KRaft mode (broker and controller, no ZooKeeper), its log in a directory of its
    own, formatted at each start. `port` is the broker's listener (`bootstrap`), an HTTP-less one: ready means it
    accepts connections."""

    classpath: str = ""
    controller_port: int = 0
    #: the broker's port when it must be this one (a client was pointed at it before the broker started)
    fixed_port: int = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        self.port = self.fixed_port or self.port
        self.controller_port = _free_port()
        logs = self.log_path.with_suffix(".data")
        shutil.rmtree(logs, ignore_errors=True)
        config = self.log_path.with_suffix(".properties")
        config.write_text(
            "process.roles=broker,controller\nnode.id=1\n"
            f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}\n"
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}\n"
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}\n"
            "controller.listener.names=CONTROLLER\ninter.broker.listener.name=PLAINTEXT\n"
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n"
            f"log.dirs={logs}\nnum.partitions=1\nauto.create.topics.enable=true\n"
            # one node: the internal topics cannot be replicated; a group starts without waiting for more members
            "offsets.topic.replication.factor=1\noffsets.topic.num.partitions=1\n"
            "transaction.state.log.replication.factor=1\ntransaction.state.log.min.isr=1\n"
            "share.coordinator.state.topic.replication.factor=1\ngroup.initial.rebalance.delay.ms=0\n"
        )
        java = ["java", "-Xmx256m", "-Xms64m", "-XX:+UseSerialGC", "-cp", self.classpath]
        cluster = "-"
        while cluster.startswith("-"):  # an id that starts with "-" reads as an option to kafka-storage (1 in 64)
            cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        with open(self.log_path, "ab") as log:
            subprocess.run(
                [*java, "kafka.tools.StorageTool", "format", "-t", cluster, "-c", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=120,
                check=True,
            )
        return [*java, "kafka.Kafka", str(config)]

    def _wait_ready(self, timeout: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
            time.sleep(0.1)
        return False
