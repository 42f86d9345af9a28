"""Fixtures that run the real gateway as a subprocess and talk to it with boto3 or raw HTTP.

`gateway` is one gateway shared by a test session; `gateway_factory` starts private gateways (own port,
own data dir) for tests that restart, signal or break one. Every process started here is stopped at
teardown: SIGTERM, then SIGKILL of its process group.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import boto3
import pytest
from botocore.config import Config

from gateway.contracts import environment as environment_contract
from gateway.contracts import zygote as zygote_contract
from gateway.contracts.environment import RESULT, EnvironmentSpec, Mount
from gateway.events.pollers.source import Record, SourceUnavailable
from gateway.execution.zygote import Forked
from gateway.settings import Settings
from gateway.store.code import CodeStore
from gateway.store.records import FunctionConfig, new_revision_id, now_last_modified
from gateway.store.registry import Registry
from runtimes.proxy.http import Request
from tests.servers import (
    KAFKA_POM,
    ElasticMQServer,
    KafkaServer,
    MotoServer,
    RabbitMQServer,
    Unavailable,
    elasticmq_classpath,
    maven_classpath,
)

ROOT = Path(__file__).resolve().parent.parent
HANDLER = "lambda_function.lambda_handler"
ROLE = "arn:aws:iam::123456789012:role/lambda-role"
#: the runtime of the gateway's own Python: tests where the version does not matter use it, so that the suite needs no
#: other interpreter (tests/test_e2e_python_versions.py covers the others)
RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_zip(files: dict[str, str | bytes], executable: frozenset[str] | set[str] = frozenset()) -> bytes:
    """A zip archive holding `files` (name -> content); those named in `executable` have mode 0755 (a `bootstrap`).
    The same files give the same bytes (a fixed time stamp): two calls a second apart would otherwise make different
    packages, with different CodeSha256."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            if name in executable:
                info.external_attr = 0o100755 << 16
            zf.writestr(info, content, zipfile.ZIP_DEFLATED)
    return buf.getvalue()


@dataclass
class RunningGateway:
    data_dir: Path
    env: dict[str, str]
    args: tuple[str, ...] = ()
    #: start from the data dir's parent with a relative --data-dir, as `make run` does
    relative: bool = False
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)
    clients: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> RunningGateway:
        self.port = self.port or free_port()
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    "serve",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    self.data_dir.name if self.relative else str(self.data_dir),
                    *self.args,
                ],
                cwd=self.data_dir.parent if self.relative else ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url + "/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"gateway not healthy after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def health(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as resp:
                return dict(json.load(resp))
        except urllib.error.HTTPError as exc:
            with exc:
                return dict(json.load(exc))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Signal the gateway and wait; SIGKILL its process group if it does not exit in time."""
        self.close_clients()
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return proc.returncode

    def restart(self) -> RunningGateway:
        self.stop()
        return self.start()

    def client(self, **config: Any) -> Any:
        """A boto3 Lambda client for this gateway, with retries off so errors surface as they are."""
        cfg = Config(retries={"total_max_attempts": 1}, read_timeout=60, connect_timeout=5, **config)
        client = boto3.client(
            "lambda",
            endpoint_url=self.url,
            region_name="us-east-1",
            config=cfg,
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        self.clients.append(client)
        return client

    def close_clients(self) -> None:
        for client in self.clients:
            client.close()
        self.clients.clear()

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """Raw HTTP: (status, headers, body)."""
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, dict(exc.headers), exc.read()


def _gateway_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({"GATEWAY_LOG_LEVEL": "INFO", "GATEWAY_REAP_INTERVAL": "0.5"})
    env.update(extra)
    return env


GatewayFactory = Callable[..., RunningGateway]


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[GatewayFactory]:
    """Start private gateways: `gateway_factory(idle_timeout=..., env={...})`; all stopped at teardown."""
    started: list[RunningGateway] = []

    def start(
        env: dict[str, str] | None = None, args: tuple[str, ...] = (), name: str = "", relative: bool = False
    ) -> RunningGateway:
        data_dir = tmp_path / f"gw{len(started)}{name}"
        gw = RunningGateway(data_dir, _gateway_env(**(env or {})), args, relative)
        started.append(gw)
        return gw.start()

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """One gateway shared by the session's tests (functions get unique names per test)."""
    gw = RunningGateway(tmp_path_factory.mktemp("shared") / "data", _gateway_env())
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto server (SQS, SNS, EventBridge: tests/servers.py) for the session's tests; resources get unique
    names per test."""
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    yield server
    server.stop()


def unavailable(reason: str) -> NoReturn:
    """What a test or fixture does when something it needs is missing: skip, or fail with CI=true (.ci/run installs
    everything the tests need, so there a missing piece is a failure)."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def elasticmq_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ElasticMQServer]:
    """ElasticMQ (SQS: tests/servers.py), fetched by Maven once; skips without Java or Maven (fails with CI=true)."""
    work = tmp_path_factory.mktemp("elasticmq")
    try:
        classpath = elasticmq_classpath(work)
    except Unavailable as exc:
        unavailable(str(exc))
    server = ElasticMQServer(work / "elasticmq.log", classpath=classpath).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rabbitmq_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQServer]:
    """One RabbitMQ node (tests/servers.py) for the session, vhosts "/" and "other"; queues get unique names per test.
    Skips without Debian's rabbitmq-server (fails with CI=true)."""
    server = RabbitMQServer(tmp_path_factory.mktemp("rabbitmq"))
    try:
        server.start()
    except Unavailable as exc:
        unavailable(str(exc))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kafka_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaServer]:
    """Apache Kafka in KRaft mode (tests/servers.py), fetched by Maven once; skips without Java or Maven (fails
    with CI=true). `kafka_server.bootstrap` is its "host:port"."""
    work = tmp_path_factory.mktemp("kafka")
    try:
        classpath = maven_classpath(KAFKA_POM, work, "Apache Kafka")
    except Unavailable as exc:
        unavailable(str(exc))
    server = KafkaServer(work / "kafka.log", classpath=classpath).start(timeout=120)
    yield server
    server.stop()


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """An HTTP endpoint that takes connections and never answers (a stuck AWS endpoint, a hung server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def lam(gateway: RunningGateway) -> Iterator[Any]:
    yield gateway.client()
    gateway.close_clients()


_counter = iter(range(1_000_000))


@pytest.fixture
def fname(request: pytest.FixtureRequest) -> str:
    """A function name unique to this test."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40]
    return f"{base}-{next(_counter)}"


def function_log(gw: RunningGateway, name: str) -> str:
    """A function's stored log (START ... REPORT lines and what it printed), through the gateway's logs API."""
    status, _, body = gw.request("GET", f"/gateway/v1/functions/{name}/logs")
    assert status == 200
    return body.decode()


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "", every: float = 0.05) -> Any:
    """`check()`'s first truthy value, polled every `every` s; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what or check}")


def create_function(
    client: Any,
    name: str,
    source: str,
    handler: str = HANDLER,
    files: dict[str, str | bytes] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Create a function whose `lambda_function.py` is `source` (plus `files`)."""
    zip_files: dict[str, str | bytes] = {"lambda_function.py": source, **(files or {})}
    params: dict[str, Any] = {
        "FunctionName": name,
        "Runtime": RUNTIME,
        "Role": ROLE,
        "Handler": handler,
        "Code": {"ZipFile": make_zip(zip_files)},
    }
    params.update(kwargs)
    return dict(client.create_function(**params))


def invoke_json(client: Any, name: str, event: Any = None, **kwargs: Any) -> tuple[dict[str, Any], Any]:
    """Invoke and decode: (the response dict without the stream, the decoded payload)."""
    payload = json.dumps(event if event is not None else {}).encode()
    resp = client.invoke(FunctionName=name, Payload=payload, **kwargs)
    body = resp.pop("Payload").read()
    return resp, json.loads(body) if body else None


# -- processes, from /proc (zombies count as gone: this machine's PID 1 may never reap orphans) -------------------


def _parents() -> dict[int, int]:
    """pid -> parent pid of every live (non-zombie) process."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(entry)] = int(fields[1])
    return parents


def direct_children(pid: int) -> set[int]:
    return {child for child, parent in _parents().items() if parent == pid}


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`."""
    parents = _parents()
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def gone(pids: set[int], timeout: float = 5.0) -> bool:
    """Whether every one of `pids` has ended within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return not any(alive(pid) for pid in pids)


def env_dir_of(envs_root: Path, pid: int) -> Path | None:
    """The directory (under `envs_root`) of the environment `pid`: its name appears in the process's cgroups or in its
    mounts (its private /tmp or its jail's root); None when neither shows it (no cgroups and no mount namespace)."""
    try:
        seen = Path(f"/proc/{pid}/cgroup").read_text() + Path(f"/proc/{pid}/mountinfo").read_text()
    except OSError:
        return None
    for entry in envs_root.iterdir():
        if entry.name in seen:
            return entry
    return None


#: a handler that leaves a detached daemon behind (its own session, re-parented away) and returns its uid
DAEMON = """
import os, time
def lambda_handler(event, context):
    child = os.fork()
    if child == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(600)
        os._exit(0)
    os.waitpid(child, 0)
    time.sleep(0.2)
    return os.getuid()
"""


# -- a registry of its own and fakes of what follows its changes (unit tests of gateway.changes) --------------------

FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:"


#: a configuration whose code is nowhere: for unit tests that never start an environment (invoker, log lines)
UNSTORED_CONFIG = FunctionConfig(
    name="f",
    arn=FUNCTION_ARN + "f",
    runtime=RUNTIME,
    handler="a.b",
    role="r",
    code_sha256="0" * 64,
    code_size=1,
    code_dir=Path("/x"),
    last_modified="",
    revision_id="r1",
    memory_size=256,
)


def function_config(codestore: CodeStore, name: str, **kwargs: Any) -> FunctionConfig:
    """A `$LATEST` configuration of a function `name` whose (stored) package holds one file."""
    code = codestore.put(make_zip({"lambda_function.py": f"# {name}\n"}))
    return FunctionConfig(
        name=name, arn=FUNCTION_ARN + name, runtime=RUNTIME, handler=HANDLER, role=ROLE,
        code_sha256=code.sha256_hex, code_size=code.size, code_dir=code.path,
        last_modified=now_last_modified(), revision_id=new_revision_id(), **kwargs,
    )  # fmt: skip


def open_registry(data_dir: Path) -> Registry:
    """A registry (and code store) in `data_dir`, as the gateway opens them; close it at the end."""
    settings = Settings(data_dir=data_dir, runtimes={RUNTIME: sys.executable})
    return Registry(data_dir / "registry.sqlite3", CodeStore(data_dir / "code"), settings)


@dataclass
class FakeFollowers:
    """Pools, metrics, log store, code collector and admission as `gateway.changes.ChangePolicy` drives them: each
    call is recorded in `calls`, in order, as (who, what, arguments...)."""

    calls: list[tuple[object, ...]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pools = _FakePools(self.calls)
        self.metrics = _FakeForgets(self.calls, "metrics")
        self.logs = _FakeForgets(self.calls, "logs")
        self.collector = _FakeCollector(self.calls)
        self.reservations = _FakeReservations(self.calls)


@dataclass
class _FakePools:
    calls: list[tuple[object, ...]]

    def retire_function(self, name: str, version: str | None = None, replaced: bool = False) -> None:
        self.calls.append(("pools", "retire", name, version, replaced))

    def reconcile(self, retry_failed: bool = False) -> None:
        self.calls.append(("pools", "reconcile", retry_failed))


@dataclass
class _FakeForgets:
    calls: list[tuple[object, ...]]
    who: str

    def forget(self, function: str, version: str | None = None) -> None:
        self.calls.append((self.who, "forget", function, version))


@dataclass
class _FakeCollector:
    calls: list[tuple[object, ...]]

    def request(self) -> None:
        self.calls.append(("collector", "request"))


@dataclass
class _FakeReservations:
    calls: list[tuple[object, ...]]

    def set_reserved(self, name: str, value: int | None) -> None:
        self.calls.append(("reservations", "set", name, value))


# -- fakes for unit tests of the execution package (no process, no socket) ---------------------------------------


class FakeEnvironment:
    """Stands in for `gateway.execution.environment.Environment` where a pool uses it: its state, `wait_ready`,
    `kill` and `shutdown`. `FakeZygote` makes them; `hold` keeps Init running until it is set."""

    def __init__(self, key: Any, capacity: int, init_error: dict[str, Any] | None, hold: Any = None) -> None:
        self.key = key
        self.capacity = capacity
        self.load = 0
        self.dead = False
        self.ready = False
        self.started = self.last_used = time.monotonic()
        self.initialization_type = "on-demand"
        self.init_error = init_error
        self.init_ms = 1.0
        self.init_log = b""
        self.env_dir = "/nonexistent/env"
        self.freezer = None
        self.killed: str | None = None  # why it was killed or shut, once it was
        self._hold = hold

    @property
    def provisioned(self) -> bool:
        return self.initialization_type == "provisioned-concurrency"

    async def wait_ready(self, timeout: float = 10.0) -> None:
        if self._hold is not None:
            await self._hold.wait()
        self.ready = True

    def kill(self, reason: str = "killed") -> None:
        self.dead = True
        self.killed = self.killed or reason

    def shutdown(self) -> None:
        self.kill("shut down")


class FakeZygoteClient:
    """Stands in for `gateway.execution.zygote.Zygote`: `fork` hands back a `FakeEnvironment` (the `fake_pool`
    fixture makes the pool's `connect` pass it through) with this zygote's `capacity` and `init_error`."""

    def __init__(self, capacity: int = 1) -> None:
        self.ready = True
        self.jailed = False
        self.interpreter = sys.executable
        self.programs: dict[str, str] = {}
        self.capacity = capacity
        self.init_error: dict[str, Any] | None = None
        self.hold: Any = None  # an asyncio.Event: Init of the environments forked now waits for it
        self.forked: list[FakeEnvironment] = []

    async def wait_ready(self, timeout: float) -> None:
        return None

    async def fork(self, spec: Any) -> FakeEnvironment:
        env = FakeEnvironment(len(self.forked), self.capacity, self.init_error, self.hold)
        self.forked.append(env)
        return env


def fake_config(tmp_path: Path, name: str = "f", version: str = "1", max_concurrency: int = 1) -> Any:
    """A function's configuration for pools over a `FakeZygoteClient` (code under `tmp_path`, never read)."""
    from gateway.store.records import FunctionConfig

    return FunctionConfig(
        name=name,
        arn=f"arn:aws:lambda:us-east-1:123456789012:function:{name}",
        runtime=RUNTIME,
        handler="lambda_function.lambda_handler",
        role=ROLE,
        code_sha256="0" * 64,
        code_size=1,
        code_dir=tmp_path / "code",
        last_modified="2026-11-23T14:38:00.000+0000",
        revision_id="r1",
        version=version,
        max_concurrency=max_concurrency,
    )


@pytest.fixture
def fake_pool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Any]:
    """A factory of pools over a `FakeZygoteClient`: `fake_pool(max_concurrency=1)` -> (pool, zygote)."""
    from gateway.execution import pool as pool_module
    from gateway.execution.modes import pool_class
    from gateway.settings import Settings

    async def connect(key: Any, forked: FakeEnvironment) -> FakeEnvironment:
        return forked

    monkeypatch.setattr(pool_module, "connect", connect)
    settings = Settings(data_dir=tmp_path)

    def make(
        max_concurrency: int = 1, make_room: Callable[[Any], None] = lambda pool: None
    ) -> tuple[Any, FakeZygoteClient]:
        config = fake_config(tmp_path, "f", "1", max_concurrency)
        zygote = FakeZygoteClient(capacity=max_concurrency)
        return pool_class(config)(config, settings, zygote, make_room), zygote  # type: ignore[arg-type]

    return make


# -- fakes of the processes on the other side of a contract (gateway/contracts/) -----------------------------------

#: a pid no process can have (above any pid_max): signals sent to it by code under test reach nobody
NO_PID = 10_000_000


def sample_spec(**fields: Any) -> EnvironmentSpec:
    """A small, valid EnvironmentSpec; `fields` override its values."""
    values: dict[str, Any] = {
        "env": {"PATH": "/usr/bin:/bin", "AWS_LAMBDA_FUNCTION_NAME": "f"},
        "code_dir": "/var/task",
        "handler": "lambda_function.lambda_handler",
        "extra_paths": ["/opt/python"],
        "max_concurrency": 1,
        "mounts": [Mount("/var/task", ["/code"])],
        "memory_size": 128,
        "ephemeral_storage": 512,
        "network": True,
    }
    return EnvironmentSpec(**{**values, **fields})


class FakeZygote:
    """The zygote's end of a control socket (SOCK_SEQPACKET), speaking gateway/contracts/zygote.py: the test reads the
    gateway's requests and writes reports. `gateway_end` is for `Zygote.attach`. Blocking; fds it receives are kept
    until `close()`."""

    def __init__(self) -> None:
        self.gateway_end, self.sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.settimeout(5)
        self.fds: list[int] = []

    def send(self, message: zygote_contract.Report, fds: list[int] | None = None) -> None:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        self.sock.sendmsg([message.encode()], ancillary)

    def send_raw(self, packet: bytes) -> None:
        self.sock.send(packet)

    async def receive(self) -> tuple[zygote_contract.Message, list[int]]:
        """The next request from the gateway (waiting for it off the loop), and the descriptors it came with."""
        return await asyncio.get_running_loop().run_in_executor(None, self._receive)

    def _receive(self) -> tuple[zygote_contract.Message, list[int]]:
        fds = array.array("i")
        packet, ancdata, _, _ = self.sock.recvmsg(1 << 16, socket.CMSG_SPACE(4 * fds.itemsize))
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
        self.fds.extend(fds)
        return zygote_contract.decode(packet, len(fds), zygote_contract.FROM_GATEWAY), list(fds)

    def spare(self, pid: int, env_dir: str) -> tuple[socket.socket, int]:
        """Announce a spare: the gateway gets one end of a fresh socket and the read end of a fresh pipe; returns the
        spare's ends (its socket, the pipe's write end), the test's to close."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        read_end, write_end = os.pipe()
        try:
            self.send(zygote_contract.Spare(pid, env_dir), [ours.fileno(), read_end])
        finally:
            ours.close()
            os.close(read_end)
        return theirs, write_end

    def close(self) -> None:
        self.sock.close()
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)


class FakeRuntime:
    """An environment's side of its socket and output pipe, speaking gateway/contracts/environment.py: the test reads
    the gateway's frames and writes replies. `forked` is what the gateway's zygote client would hand a pool."""

    def __init__(self, env_dir: Path, pid: int = NO_PID) -> None:
        gateway_end, self.sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        read_end, self.output = os.pipe()
        os.set_blocking(read_end, False)
        self.exit_status: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self.forked = Forked(pid, gateway_end, self.exit_status, str(env_dir), read_end)
        self._decoder = environment_contract.FrameDecoder(environment_contract.FROM_GATEWAY)
        self._frames: list[list[Any]] = []

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def ready(self, capacity: int = 1, error_type: str | None = None, message: str = "") -> None:
        await self.send(environment_contract.encode_ready(os.getpid(), 1.5, capacity, error_type, message, b"[]"))

    async def next_frame(self) -> list[Any]:
        """The next frame from the gateway; [] at EOF."""
        while not self._frames:
            data = await asyncio.get_running_loop().sock_recv(self.sock, 1 << 16)
            if not data:
                return []
            self._frames.extend(self._decoder.feed(data))
        return self._frames.pop(0)

    async def result(self, inv_id: int, payload: bytes, log: bytes = b"", pending: int = 0) -> None:
        await self.send(environment_contract.encode_reply((RESULT, inv_id, payload), 2.0, 1024, pending, log))

    def print(self, text: bytes) -> None:
        """Write to the output pipe, as the function's print would."""
        os.write(self.output, text)

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(OSError):
            os.close(self.output)


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[FakeRuntime]:
    """A FakeRuntime for the environment tests (tests/test_environment.py, tests/test_streams.py), closed after."""
    fake = FakeRuntime(tmp_path / "env")
    yield fake
    fake.close()


class Recorded:
    """Stands in for the Runtime API proxy's Exchange (runtimes/proxy/server.py): a request, and the answer the
    handler gave (if any)."""

    def __init__(self, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.request = Request("POST", "/", "HTTP/1.1", {k.lower(): v for k, v in (headers or {}).items()})
        self.body = body
        self.closed = False
        self.on_close: Any = None
        self.answer: tuple[int, bytes, str] | None = None

    def respond(self, status: int, body: bytes = b"", headers: str = "", content_type: str = "") -> None:
        if self.answer is None:
            self.answer = (status, body, headers)

    @property
    def status(self) -> int:
        assert self.answer is not None
        return self.answer[0]

    @property
    def document(self) -> Any:
        assert self.answer is not None
        return json.loads(self.answer[1])


# -- an in-memory event source for the poller runtime (gateway.events.pollers.source.Source) ------------------------


class FakeSource:
    """A broker in memory: `add` puts messages on it; `fetch` hands out those not in flight, oldest first (waiting up
    to max_wait for one); `settle` acknowledges the succeeded and puts the failed back at the front, in order;
    `discard` acknowledges. `unavailable` (a reason) makes `open` and `fetch` raise SourceUnavailable. Every call is
    counted in `calls` (name -> count) and what was acknowledged is in `acked` / `discarded`."""

    kind = "fake"

    def __init__(self) -> None:
        self.waiting: list[Record] = []
        self.in_flight: list[Record] = []
        self.acked: list[Record] = []
        self.discarded: list[Record] = []
        self.unavailable: str | None = None
        self.calls: dict[str, int] = {}
        self.opened = self.closed = 0
        self._added = asyncio.Event()

    def add(self, *bodies: Any, group: str = "", timestamp: float | None = None, size: int = 10) -> list[Record]:
        made = []
        for body in bodies:
            ident = str(len(self.waiting) + len(self.in_flight) + len(self.acked) + len(self.discarded) + len(made))
            event = {"id": ident, "body": json.dumps(body)}
            stamp = time.time() if timestamp is None else timestamp
            made.append(Record(ident, event, {"id": ident, "body": body}, stamp, size, group))
        self.waiting += made
        self._added.set()
        return made

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    async def open(self) -> None:
        self._count("open")
        if self.unavailable:
            raise SourceUnavailable(self.unavailable)
        self.opened += 1

    async def fetch(self, max_records: int, max_wait: float) -> list[Record]:
        self._count("fetch")
        if self.unavailable:
            raise SourceUnavailable(self.unavailable)
        if not self.waiting:
            self._added.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._added.wait(), max_wait)
        taken, self.waiting = self.waiting[:max_records], self.waiting[max_records:]
        self.in_flight += taken
        return taken

    def event(self, records: list[Record]) -> bytes:
        return json.dumps({"Records": [r.event for r in records]}).encode()

    def _settled(self, records: list[Record]) -> None:
        ids = {id(r) for r in records}
        self.in_flight = [r for r in self.in_flight if id(r) not in ids]

    async def settle(self, succeeded: list[Record], failed: list[Record]) -> None:
        self._count("settle")
        self._settled(succeeded + failed)
        self.acked += succeeded
        self.waiting = sorted(failed, key=lambda r: int(r.item_id)) + self.waiting

    async def discard(self, records: list[Record]) -> None:
        self._count("discard")
        self._settled(records)
        self.discarded += records

    async def close(self) -> None:
        self.closed += 1


@pytest.fixture(scope="session")
def web_layer() -> bytes:
    """FastAPI, Mangum, Powertools and what they require, as a Python layer zip (`python/...`) built once per session
    from this venv (tests/site_layer.py)."""
    from tests.site_layer import layer_zip

    return layer_zip(["fastapi", "mangum", "aws-lambda-powertools"])
