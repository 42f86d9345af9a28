"""Settings: one frozen object, parsed and validated once.

Sources, strongest first: command-line flags, then `GATEWAY_*` environment variables, then defaults.
The environment is passed in (never read from `os.environ` here) so tests can supply their own.
"""

from __future__ import annotations

import argparse
import configparser
import functools
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from gateway import file_systems
from gateway.file_systems import AccessPoint


def _machine_memory_mb() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)


#: floors of the header limits: below them boto3's own requests would be refused
MIN_HEADER_BYTES = 4096
MIN_HEADERS = 32

#: GATEWAY_RUNTIME_PYTHON3_12=/path: the Python that runs python3.12 (gateway/catalog.py finds one otherwise)
_PYTHON_OVERRIDE = re.compile(r"GATEWAY_RUNTIME_PYTHON3_(\d+)")
#: GATEWAY_RUNTIME_NODEJS22_X=/path: the Node.js that runs nodejs22.x (likewise)
_NODE_OVERRIDE = re.compile(r"GATEWAY_RUNTIME_NODEJS(\d+)_X")
_TRUE = ("1", "true", "yes")
#: GATEWAY_FUNCTION_INVOKE: a function's credentials invoke any function, or what resource policies grant them
FUNCTION_INVOKE_MODES = ("any", "policy")


def explicit_runtimes(environ: Mapping[str, str]) -> dict[str, str]:
    """The interpreters the environment names for runtime ids: GATEWAY_RUNTIME_PYTHON3_X=/path -> python3.X,
    GATEWAY_RUNTIME_NODEJSN_X=/path -> nodejsN.x. Only these: what else runs where is found on the host
    (gateway/catalog.py)."""
    out = {}
    for key, value in environ.items():
        if not value.strip():
            continue
        if match := _PYTHON_OVERRIDE.fullmatch(key):
            out[f"python3.{int(match.group(1))}"] = value.strip()
        elif match := _NODE_OVERRIDE.fullmatch(key):
            out[f"nodejs{int(match.group(1))}.x"] = value.strip()
    return out


def _host_port(text: str) -> tuple[str, int] | None:
    """`host:port` (`[v6]:port` for IPv6) -> (host, port); "" -> None. Raises ValueError."""
    if not text.strip():
        return None
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"GATEWAY_ENVIRONMENT_LISTEN must be host:port, got {text!r}")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 9000
    data_dir: Path = Path(".gateway-data")
    region: str = "us-east-1"
    account_id: str = "123456789012"
    #: seconds an on-demand environment may sit idle before it is reaped (scale to zero)
    idle_timeout: float = 300.0
    #: how often the reaper looks for idle environments, seconds
    reap_interval: float = 5.0
    #: account-wide limit on invocations in flight (Lambda's default: 1000)
    account_concurrency: int = 1000
    #: reservations may not leave less than this for functions without one (Lambda's default: 100)
    unreserved_min: int = 100
    #: MB of MemorySize that live environments may add up to (default: the machine's memory)
    memory_budget_mb: int = field(default_factory=lambda: _machine_memory_mb())
    #: seconds SIGTERM waits for in-flight invocations before killing them
    drain_timeout: float = 30.0
    #: HTTP connections open at once; one more is answered 503 ServiceUnavailableException and closed at once (the
    #: load generator in bench/ opens at most 1024)
    max_connections: int = 4096
    #: HTTP connections one client address may hold at once, so that one address cannot lock the others out (the
    #: bench's load generator opens at most 1024, and its control client a few more)
    max_connections_per_client: int = 1100
    #: seconds a connection may take to deliver a complete request head, counted from its opening or its previous
    #: response: idle keep-alive connections and clients that trickle their headers are closed after it. Longer
    #: than the 60 s idle timeout of common proxies and load balancers, so one in front never reuses a connection
    #: the gateway is closing
    keepalive_timeout: float = 75.0
    #: seconds a client may take to send a request body; past it: 408 RequestTimeoutException, connection closed.
    #: Also how long a streamed answer (InvokeWithResponseStream) waits for a client that takes none of it before
    #: its connection is aborted
    body_timeout: float = 60.0
    #: bytes of one request header field's value (or name); boto3's largest, X-Amz-Client-Context, is at most 3,583
    max_header_bytes: int = 16384
    #: header fields one request may have (boto3 sends about 12)
    max_headers: int = 64
    #: Lambda runtime id -> the interpreter the operator named for it (GATEWAY_RUNTIME_PYTHON3_X, a Node.js for
    #: GATEWAY_RUNTIME_NODEJSN_X); the others are found on the host (gateway/catalog.py)
    runtimes: Mapping[str, str] = field(default_factory=dict)
    #: a python3.X (nodejsN.x) whose Python (Node.js) is not on the host runs on the nearest one found
    #: (GATEWAY_RUNTIME_FALLBACK=1); its StateReason says so. Off: CreateFunction refuses it (400)
    runtime_fallback: bool = False
    #: directories whose sub-directories are deployed as functions at start-up
    deploy_dirs: tuple[Path, ...] = ()
    log_level: str = "INFO"
    #: the gateway's own log: "text" lines or "json" (one object per line, with an access log)
    log_format: str = "text"
    #: which requests the access log records: "api" (the control plane, not Invoke: metrics cover invokes and a
    #: log line per invoke would slow the hot path), "all", or "off"
    access_log: str = "api"
    #: a function's log stream is rotated past this many bytes
    log_max_bytes: int = 10 * 1024 * 1024
    #: rotated log streams kept per function (older ones are deleted)
    log_retention_files: int = 5
    #: SigV4 credentials the API accepts: access key id -> secret (see load_credentials)
    credentials: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: serve without authentication although bound beyond loopback (`--insecure-no-auth`)
    insecure_no_auth: bool = False
    #: "bearer": GET /metrics needs `Authorization: Bearer <metrics_token>`; "off": open (default)
    metrics_auth: str = "off"
    metrics_token: str = field(default="", repr=False)
    #: an extra listener for environments (host, port): every request it accepts must be SigV4-signed (a function's
    #: session credentials or an operator's), whatever else is configured; environments are pointed at it
    #: (AWS_ENDPOINT_URL_LAMBDA). None: environments are pointed at the main listener
    environment_listen: tuple[str, int] | None = None
    #: seconds a function's session credentials are valid (see isolation.credentials); environments are retired before
    session_ttl: float = 12 * 3600.0
    #: how environments are isolated: "auto" (the strongest the host allows) or "rlimits" (see isolation.sandbox)
    sandbox: str = "auto"
    #: the uids jailed environments get: [uid_base, uid_base + uid_count), handed out in sequence (isolation.uids)
    uid_base: int = 1_900_000_000
    uid_count: int = 100_000_000
    #: a factor on the delays between retries of asynchronous invocations (Lambda's 1 and 2 minutes after a function
    #: error; 1 s doubling to 5 min after a throttle or a system error): <1 for tests and development
    async_delay_scale: float = 1.0
    #: asynchronous invocations of one function in flight at once: queued events never take more of a function's
    #: (or the account's) concurrency than this, so synchronous callers keep the rest
    async_concurrency: int = 10
    #: asynchronous invocations of all functions in flight at once (default: half the account concurrency), so that
    #: queued work of many functions never takes the account's concurrency from synchronous callers
    async_concurrency_total: int = 500
    #: events one function may have waiting in the queue; one more is refused with 429 TooManyRequestsException, so
    #: that a function that invokes itself in a loop (or a flood of Event invokes) cannot fill the disk
    async_queue_max: int = 100_000
    #: bytes of queued events (all functions) the queue may hold; beyond it Event invokes get 429 until it drains
    async_queue_max_bytes: int = 4 * 1024**3
    #: where OnSuccess/OnFailure destinations and dead-letter queues of these services are delivered (AWS itself, or
    #: a compatible server such as ElasticMQ or moto); None: ARNs of that service are refused with a clear error
    sqs_endpoint: str | None = None
    sns_endpoint: str | None = None
    events_endpoint: str | None = None
    #: where packages named by S3Bucket/S3Key (functions, layers) are fetched: a compatible server's URL, or None for
    #: AWS S3 of `region`; and the seconds one fetch may take in all (gateway.api.functions.packages)
    s3_endpoint: str | None = None
    s3_timeout: float = 60.0
    #: Amazon MQ for RabbitMQ: broker ARN -> the AMQP URL it is reached at (GATEWAY_MQ_BROKERS, a JSON object), with
    #: the credentials the pollers log in with (a mapping's BASIC_AUTH secret is not resolved: see
    #: gateway/events/pollers/rabbitmq.py). Only these brokers can be reached: an ARN given to
    #: CreateEventSourceMapping names one of them, never a host
    mq_brokers: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: what a function's own credentials may invoke (Invoke, InvokeWithResponseStream, InvokeAsync, AWS_IAM function
    #: URLs): "any" function of the account (as a role allowed lambda:InvokeFunction on *), or only what the target's
    #: resource policy grants its role, its account or * ("policy"; see gateway.api.auth)
    function_invoke: str = "any"
    #: access-point ARN -> host directory and POSIX user a function's FileSystemConfigs may mount (GATEWAY_FILE_SYSTEMS)
    file_systems: Mapping[str, AccessPoint] = field(default_factory=dict)
    #: JSON file: signing-profile-version ARN -> Ed25519 public key (GATEWAY_SIGNING_PROFILES; store/signatures.py)
    signing_profiles: Path | None = None

    @property
    def loopback(self) -> bool:
        return self.host in ("127.0.0.1", "::1", "localhost") or self.host.startswith("127.")

    @property
    def auth_required(self) -> bool:
        """Whether API requests must be SigV4-signed: whenever credentials are configured, and always beyond
        loopback unless `insecure_no_auth`."""
        return bool(self.credentials) or not (self.loopback or self.insecure_no_auth)

    @property
    def environment_endpoint(self) -> str:
        """The URL environments reach the API at (their AWS_ENDPOINT_URL_LAMBDA)."""
        host, port = self.environment_listen or (self.host, self.port)
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def partition(self) -> str:
        """The ARN partition of `region`: `aws-cn` for China, `aws-us-gov` for GovCloud ... (see `partition_of`)."""
        return partition_of(self.region)

    def function_arn(self, name: str, qualifier: str | None = None) -> str:
        arn = f"arn:{partition_of(self.region)}:lambda:{self.region}:{self.account_id}:function:{name}"
        return f"{arn}:{qualifier}" if qualifier else arn

    def function_url(self, url_id: str) -> str:
        """A function URL as CreateFunctionUrlConfig answers it: `http://<url-id>.lambda-url.<region>.localhost:<port>/`
        (`*.localhost` resolves to loopback in curl and browsers; any name that reaches the gateway works)."""
        return f"http://{url_id}.lambda-url.{self.region}.localhost:{self.port}/"

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
        """Build settings from parsed `serve` flags and an environment mapping; raise ValueError if invalid."""

        def pick(flag: object, env_name: str, default: str) -> str:
            if flag is not None:
                return str(flag)
            return environ.get(env_name, default)

        deploy = getattr(args, "deploy", None) or [p for p in environ.get("GATEWAY_DEPLOY_DIRS", "").split(":") if p]
        account_concurrency = int(environ.get("GATEWAY_ACCOUNT_CONCURRENCY", cls.account_concurrency))
        settings = cls(
            host=pick(getattr(args, "host", None), "GATEWAY_HOST", cls.host),
            port=int(pick(getattr(args, "port", None), "GATEWAY_PORT", str(cls.port))),
            data_dir=Path(pick(getattr(args, "data_dir", None), "GATEWAY_DATA_DIR", str(cls.data_dir))).resolve(),
            region=environ.get("GATEWAY_REGION", cls.region),
            account_id=environ.get("GATEWAY_ACCOUNT_ID", cls.account_id),
            idle_timeout=float(
                pick(getattr(args, "idle_timeout", None), "GATEWAY_IDLE_TIMEOUT", str(cls.idle_timeout))
            ),
            reap_interval=float(environ.get("GATEWAY_REAP_INTERVAL", cls.reap_interval)),
            account_concurrency=account_concurrency,
            # a small account (tests, laptops) gets a floor it can satisfy unless one is set explicitly
            unreserved_min=int(environ.get("GATEWAY_UNRESERVED_MIN", min(cls.unreserved_min, account_concurrency))),
            drain_timeout=float(environ.get("GATEWAY_DRAIN_TIMEOUT", cls.drain_timeout)),
            max_connections=int(environ.get("GATEWAY_MAX_CONNECTIONS", cls.max_connections)),
            max_connections_per_client=int(
                environ.get("GATEWAY_MAX_CONNECTIONS_PER_CLIENT", cls.max_connections_per_client)
            ),
            keepalive_timeout=float(environ.get("GATEWAY_KEEPALIVE_TIMEOUT", cls.keepalive_timeout)),
            body_timeout=float(environ.get("GATEWAY_BODY_TIMEOUT", cls.body_timeout)),
            max_header_bytes=int(environ.get("GATEWAY_MAX_HEADER_BYTES", cls.max_header_bytes)),
            max_headers=int(environ.get("GATEWAY_MAX_HEADERS", cls.max_headers)),
            memory_budget_mb=int(environ.get("GATEWAY_MEMORY_BUDGET_MB", _machine_memory_mb())),
            runtimes=explicit_runtimes(environ),
            runtime_fallback=environ.get("GATEWAY_RUNTIME_FALLBACK", "").strip().lower() in _TRUE,
            deploy_dirs=tuple(Path(p) for p in deploy),
            log_level=environ.get("GATEWAY_LOG_LEVEL", cls.log_level).upper(),
            log_format=pick(getattr(args, "log_format", None), "GATEWAY_LOG_FORMAT", cls.log_format).lower(),
            log_max_bytes=int(environ.get("GATEWAY_LOG_MAX_BYTES", cls.log_max_bytes)),
            access_log=environ.get("GATEWAY_ACCESS_LOG", cls.access_log).lower(),
            log_retention_files=int(environ.get("GATEWAY_LOG_RETENTION_FILES", cls.log_retention_files)),
            credentials=load_credentials(environ),
            insecure_no_auth=bool(getattr(args, "insecure_no_auth", False))
            or environ.get("GATEWAY_INSECURE_NO_AUTH", "") in ("1", "true", "yes"),
            sandbox=environ.get("GATEWAY_SANDBOX", cls.sandbox).lower(),
            **_metrics_auth(environ),
            environment_listen=_host_port(environ.get("GATEWAY_ENVIRONMENT_LISTEN", "")),
            session_ttl=float(environ.get("GATEWAY_SESSION_TTL", cls.session_ttl)),
            uid_base=int(environ.get("GATEWAY_UID_BASE", cls.uid_base)),
            uid_count=int(environ.get("GATEWAY_UID_COUNT", cls.uid_count)),
            async_delay_scale=float(environ.get("GATEWAY_ASYNC_DELAY_SCALE", cls.async_delay_scale)),
            async_concurrency=int(environ.get("GATEWAY_ASYNC_CONCURRENCY", cls.async_concurrency)),
            async_queue_max=int(environ.get("GATEWAY_ASYNC_QUEUE_MAX", cls.async_queue_max)),
            async_queue_max_bytes=int(environ.get("GATEWAY_ASYNC_QUEUE_MAX_BYTES", cls.async_queue_max_bytes)),
            async_concurrency_total=int(
                environ.get("GATEWAY_ASYNC_CONCURRENCY_TOTAL", max(1, account_concurrency // 2))
            ),
            sqs_endpoint=environ.get("GATEWAY_SQS_ENDPOINT") or None,
            sns_endpoint=environ.get("GATEWAY_SNS_ENDPOINT") or None,
            events_endpoint=environ.get("GATEWAY_EVENTS_ENDPOINT") or None,
            s3_endpoint=environ.get("GATEWAY_S3_ENDPOINT") or None,
            s3_timeout=float(environ.get("GATEWAY_S3_TIMEOUT", cls.s3_timeout)),
            mq_brokers=mq_brokers(environ.get("GATEWAY_MQ_BROKERS", "")),
            file_systems=file_systems.parse(environ.get("GATEWAY_FILE_SYSTEMS", "")),
            function_invoke=environ.get("GATEWAY_FUNCTION_INVOKE", cls.function_invoke).strip().lower(),
            signing_profiles=Path(p) if (p := environ.get("GATEWAY_SIGNING_PROFILES")) else None,
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} out of range")
        if not (len(self.account_id) == 12 and self.account_id.isdigit()):
            raise ValueError(f"account id must be 12 digits, got {self.account_id!r}")
        if self.idle_timeout <= 0 or self.reap_interval <= 0:
            raise ValueError("idle timeout and reap interval must be positive")
        if self.account_concurrency < 1:
            raise ValueError("account concurrency must be at least 1")
        if self.memory_budget_mb < 128:
            raise ValueError("the memory budget must hold at least one 128 MB environment")
        if not 0 <= self.unreserved_min <= self.account_concurrency:
            raise ValueError("the unreserved minimum must be between 0 and the account concurrency")
        if self.max_connections < 1 or self.max_connections_per_client < 1:
            raise ValueError("max connections (in all and per client) must be at least 1")
        if self.metrics_auth not in ("off", "bearer"):
            raise ValueError(f"metrics auth must be off or bearer, got {self.metrics_auth!r}")
        if (self.metrics_auth == "bearer") != bool(self.metrics_token):
            raise ValueError("GATEWAY_METRICS_AUTH=bearer needs GATEWAY_METRICS_TOKEN (or _FILE), and only it uses one")
        if not (self.keepalive_timeout > 0 and self.body_timeout > 0):
            raise ValueError("keep-alive and body timeouts must be positive")
        if self.max_header_bytes < MIN_HEADER_BYTES:
            raise ValueError(
                f"max header bytes must be at least {MIN_HEADER_BYTES}: boto3's X-Amz-Client-Context may take 3,583"
            )
        if self.max_headers < MIN_HEADERS:
            raise ValueError(f"max headers must be at least {MIN_HEADERS}: boto3 and proxies send a dozen or more")
        if self.access_log not in ("api", "all", "off"):
            raise ValueError(f"access log must be api, all or off, got {self.access_log!r}")
        if self.function_invoke not in FUNCTION_INVOKE_MODES:
            raise ValueError(f"GATEWAY_FUNCTION_INVOKE must be any or policy, got {self.function_invoke!r}")
        if self.file_systems:
            private = file_systems.private_paths(self.data_dir, self.runtimes, os.environ)
            file_systems.check_outside(self.file_systems, private)
        if self.sandbox not in ("auto", "rlimits"):
            raise ValueError(f"sandbox must be auto or rlimits, got {self.sandbox!r}")
        if self.uid_base < 65536 or self.uid_count < 1 or self.uid_base + self.uid_count - 1 > 2**32 - 2:
            raise ValueError("the uid range (GATEWAY_UID_BASE, GATEWAY_UID_COUNT) must lie in [65536, 4294967294]")
        for arn, point in self.file_systems.items():  # an environment's uid: its files, its processes
            if any(self.uid_base <= n < self.uid_base + self.uid_count for n in (point.uid, point.gid)):
                raise ValueError(
                    f"GATEWAY_FILE_SYSTEMS: the uid and gid of {arn} must lie outside the environments' uid range "
                    f"[{self.uid_base}, {self.uid_base + self.uid_count - 1}] (GATEWAY_UID_BASE, GATEWAY_UID_COUNT)"
                )
        if self.log_format not in ("text", "json"):
            raise ValueError(f"log format must be text or json, got {self.log_format!r}")
        if self.log_max_bytes < 1 or self.log_retention_files < 0:
            raise ValueError("log max bytes must be positive and log retention files not negative")
        if self.environment_listen is not None and not 0 < self.environment_listen[1] < 65536:
            raise ValueError(f"environment listener port {self.environment_listen[1]} out of range")
        if self.environment_listen == (self.host, self.port):
            raise ValueError(
                "the environments' listener must differ from the main listener (GATEWAY_ENVIRONMENT_LISTEN)"
            )
        if not self.async_delay_scale > 0:
            raise ValueError("the async delay scale must be positive")
        if min(self.async_concurrency, self.async_concurrency_total, self.async_queue_max) < 1:
            raise ValueError("async concurrency (per function and in all) and the async queue's maximum must be >= 1")
        if self.async_queue_max_bytes < 1024 * 1024:
            raise ValueError("the async queue's byte limit must hold at least one 1 MB event")
        if self.session_ttl < 2:
            raise ValueError("the session TTL must be at least 2 seconds")
        _check_s3(self.s3_endpoint, self.s3_timeout)
        if self.auth_required and not self.credentials:
            raise ValueError(
                f"binding to {self.host} exposes an API that runs code: configure credentials (GATEWAY_ACCESS_KEY_ID "
                "and GATEWAY_SECRET_ACCESS_KEY, or GATEWAY_CREDENTIALS_FILE), or pass --insecure-no-auth"
            )


#: region prefix -> ARN partition, as botocore's partitions.json (`regionRegex`) assigns them; every other region is
#: in `aws`. Longest prefixes first: `us-isob-` before `us-iso-`.
_PARTITIONS = (
    ("us-gov-", "aws-us-gov"),
    ("us-isob-", "aws-iso-b"),
    ("us-isof-", "aws-iso-f"),
    ("us-iso-", "aws-iso"),
    ("eu-isoe-", "aws-iso-e"),
    ("eusc-", "aws-eusc"),
    ("cn-", "aws-cn"),
)


@functools.lru_cache(maxsize=64)
def partition_of(region: str) -> str:
    """The ARN partition a region belongs to (`aws`, `aws-cn`, `aws-us-gov`, `aws-iso`, ...)."""
    for prefix, partition in _PARTITIONS:
        if region.startswith(prefix):
            return partition
    return "aws"


#: an Amazon MQ broker's ARN: arn:aws:mq:<region>:<account>:broker:<name>:<id>
MQ_BROKER_ARN = re.compile(r"arn:aws[a-z-]*:mq:[a-z0-9-]+:\d{12}:broker:[^:\s]+:[^:\s]+")


def mq_brokers(text: str) -> dict[str, str]:
    """GATEWAY_MQ_BROKERS: a JSON object from Amazon MQ broker ARN to `amqp://` or `amqps://` URL
    (`amqp://user:password@host:5672/`; the path, a virtual host, is replaced by each mapping's VIRTUAL_HOST).
    "" -> {}. Raises ValueError (never echoing a URL: it may hold a password)."""
    if not text.strip():
        return {}
    try:
        brokers = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"GATEWAY_MQ_BROKERS is not JSON: {exc}") from None
    if not isinstance(brokers, dict):
        raise ValueError("GATEWAY_MQ_BROKERS must be a JSON object: broker ARN -> AMQP URL")
    for arn, url in brokers.items():
        if not MQ_BROKER_ARN.fullmatch(arn):
            raise ValueError(
                f"GATEWAY_MQ_BROKERS: {arn!r} is not a broker ARN (arn:aws:mq:REGION:ACCOUNT:broker:NAME:ID)"
            )
        scheme, sep, rest = url.partition("://") if isinstance(url, str) else ("", "", "")
        if not sep or scheme.lower() not in ("amqp", "amqps") or not rest.rpartition("@")[2].split("/")[0]:
            raise ValueError(f"GATEWAY_MQ_BROKERS: the URL of {arn} must be amqp://[user:password@]host[:port][/vhost]")
    return dict(brokers)


def _metrics_auth(environ: Mapping[str, str]) -> dict[str, str]:
    """`metrics_auth` and `metrics_token` from GATEWAY_METRICS_AUTH and GATEWAY_METRICS_TOKEN or _TOKEN_FILE.

    A token alone turns bearer auth on; the token file (Prometheus's `credentials_file` twin) keeps it out of the
    process environment. ValueError for a file that cannot be read.
    """
    token = environ.get("GATEWAY_METRICS_TOKEN", "")
    path = environ.get("GATEWAY_METRICS_TOKEN_FILE")
    if path:
        try:
            token = Path(path).read_text().strip()
        except OSError as exc:
            raise ValueError(f"cannot read GATEWAY_METRICS_TOKEN_FILE: {exc}") from None
    auth = environ.get("GATEWAY_METRICS_AUTH", "bearer" if token else Settings.metrics_auth).strip().lower()
    return {"metrics_auth": auth, "metrics_token": token}


def load_credentials(environ: Mapping[str, str]) -> dict[str, str]:
    """Access key id -> secret, from GATEWAY_ACCESS_KEY_ID/GATEWAY_SECRET_ACCESS_KEY and GATEWAY_CREDENTIALS_FILE.

    Raises ValueError for half a pair or a file that cannot be read or has no credentials.
    """
    keys: dict[str, str] = {}
    key_id, secret = environ.get("GATEWAY_ACCESS_KEY_ID"), environ.get("GATEWAY_SECRET_ACCESS_KEY")
    if bool(key_id) != bool(secret):
        raise ValueError("set both GATEWAY_ACCESS_KEY_ID and GATEWAY_SECRET_ACCESS_KEY, or neither")
    if key_id and secret:
        keys[key_id] = secret
    path = environ.get("GATEWAY_CREDENTIALS_FILE")
    if path:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with open(Path(path).expanduser()) as f:
                parser.read_file(f)
        except (OSError, configparser.Error) as exc:
            raise ValueError(f"cannot read the credentials file {path}: {exc}") from None
        found = 0
        for section in parser.sections():
            kid = parser.get(section, "aws_access_key_id", fallback=None)
            sec = parser.get(section, "aws_secret_access_key", fallback=None)
            if kid and sec:
                keys[kid.strip()] = sec.strip()
                found += 1
        if not found:
            raise ValueError(f"the credentials file {path} has no aws_access_key_id / aws_secret_access_key pair")
    return keys


def _check_s3(endpoint: str | None, timeout: float) -> None:
    """GATEWAY_S3_ENDPOINT an http(s) URL with a host (botocore refuses `minio:9000` only when a request is made:
    every S3 create would fail), GATEWAY_S3_TIMEOUT a finite number of seconds above 0."""
    if endpoint is not None:
        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"GATEWAY_S3_ENDPOINT must be an http:// or https:// URL with a host, got {endpoint!r}")
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"GATEWAY_S3_TIMEOUT must be a positive number of seconds, got {timeout!r}")
