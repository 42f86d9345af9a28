"""botocore clients for the services the gateway talks to outside itself (SQS, SNS, EventBridge), at the endpoints
the operator names (AWS itself or a compatible server): shared by `delivery.py` (destinations, dead letters) and
`pollers/sqs.py` (SQS as an event source).

Credentials: botocore's standard chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN, AWS_PROFILE and
the shared files, container and instance roles, ...), resolved when the first client is made. If the chain finds
none and the endpoint is not an AWS one (a host under amazonaws.com, amazonaws.com.cn or api.aws), requests are
signed with placeholder credentials: compatible servers (moto, ElasticMQ) take any, and a placeholder authenticates
nowhere. Against AWS without credentials, `Clients.create` raises `NoCredentials`. Credentials never appear in an
error or a log line: `Clients.scrub` takes the key id, the secret and the token out of a text, and botocore's DEBUG
log (which prints request headers, a session token among them) is held at INFO.

Concurrency model: `Clients.create` blocks (the chain may ask an instance's metadata service) and must run in a
worker thread, never on the event loop; it is thread-safe (botocore sessions are not: a lock guards this one). The
clients it makes are thread-safe and are shared by their owner's threads.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Clients", "NoCredentials", "is_aws_endpoint", "quiet_botocore"]

_AWS_HOSTS = (".amazonaws.com", ".amazonaws.com.cn", ".api.aws")
_PLACEHOLDER = ("AKIDGATEWAYPLACEHOLDER", "placeholder-secret-for-a-compatible-server")
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


class NoCredentials(Exception):
    """The standard chain found no credentials and the endpoint is one of AWS's own (no placeholders there)."""


def is_aws_endpoint(url: str) -> bool:
    """Whether `url` is one of AWS's own endpoints (where placeholder credentials must never be used)."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    return any(host == suffix[1:] or host.endswith(suffix) for suffix in _AWS_HOSTS)


class Clients:
    """Makes botocore clients from one session, signed with the standard chain's credentials (or placeholders)."""

    def __init__(self, log: logging.Logger) -> None:
        """`log`: the owner's logger, which says when placeholders sign its requests."""
        self._log = log
        self._lock = threading.Lock()
        self._session: Any = None
        #: botocore's credentials in use (None: none found, or not looked up yet)
        self._credentials: Any = None
        quiet_botocore()

    def create(
        self,
        service: str,
        url: str,
        region: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        attempts: int,
        connections: int,
        s3_addressing: str | None = None,
    ) -> Any:
        """A new client of `service` ("sqs", "sns", "events") at `url`, signing for `region`: each request bounded
        by the timeouts and tried at most `attempts` times (botocore's standard retry mode, which backs off up to
        1 s between tries), `connections` kept open at most; `s3_addressing` ("path", "virtual") for S3 clients.
        Blocking. Raises NoCredentials."""
        import botocore.session
        from botocore.config import Config

        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "total_max_attempts": attempts},
            max_pool_connections=connections,
            s3={"addressing_style": s3_addressing} if s3_addressing else None,
        )
        with self._lock:
            if self._session is None:
                self._session = botocore.session.get_session()
            self._credentials = self._session.get_credentials()
            keys: dict[str, str] = {}
            if self._credentials is None:
                if is_aws_endpoint(url):
                    raise NoCredentials(f"no AWS credentials are configured to reach {service.upper()}")
                self._log.info("no AWS credentials found: signing %s requests with placeholders", service.upper())
                keys = {"aws_access_key_id": _PLACEHOLDER[0], "aws_secret_access_key": _PLACEHOLDER[1]}
            return self._session.create_client(service, region_name=region, endpoint_url=url, config=config, **keys)

    def scrub(self, text: str) -> str:
        """`text` without the credentials in use, nor a user:password in a URL."""
        text = _USERINFO.sub("***@", text)
        for secret in self._secrets():
            if secret and len(secret) >= 4:
                text = text.replace(secret, "***")
        return text

    def _secrets(self) -> tuple[str, ...]:
        with self._lock:
            credentials = self._credentials
        if credentials is None:
            return ()
        frozen = credentials.get_frozen_credentials()
        return (frozen.access_key or "", frozen.secret_key or "", frozen.token or "")


def quiet_botocore() -> None:
    """Hold botocore's log at INFO or above: at DEBUG it prints signed requests' headers, a session token among
    them (a gateway run at GATEWAY_LOG_LEVEL=DEBUG must not write credentials to its log)."""
    logger = logging.getLogger("botocore")
    if logger.level == logging.NOTSET or logger.level < logging.INFO:
        logger.setLevel(logging.INFO)
