"""Delivery of asynchronous invocations' outcomes to SQS, SNS and EventBridge, and of dead letters to SQS and SNS.

`Delivery.send` puts an invocation record on a destination (an SQS queue, an SNS topic or an EventBridge bus) and
`Delivery.dead_letter` a discarded event on a dead-letter queue (SQS or SNS), in the form Lambda gives them
(`gateway/events/messages.py`); each raises `DeliveryFailed` (defined with its catcher, `gateway.events.destinations`,
and importable from here) when the target did not take it. Its message names the service, the target and the reason
(the service's error code and words, or the size), never the payload and never a credential. A function target is
not sent from here: the caller invokes it (asynchronously) itself.

Where: each service at the endpoint the operator names for it (`targets.endpoint`: GATEWAY_SQS_ENDPOINT, ...; AWS
itself or a compatible server), requests signed for `settings.region`.

Credentials: botocore's standard chain, or placeholders for a compatible server; never in an error or a log line
(`gateway/events/aws.py`, which makes the clients, says how). Against AWS without credentials, every delivery fails,
saying so.

Bounds: each request has a connect timeout (2 s) and a read timeout (5 s) and is tried at most twice (botocore's
standard retry mode, which backs off up to 1 s between the two), so a dead or stuck endpoint answers within about
15 s; a refused connection fails within about a second.

Concurrency model: the coroutines are called on the event loop; each builds its message (decoding megabytes of
JSON, maybe) and makes its blocking botocore calls in a thread of Delivery's own pool (`WORKERS` threads, so that a
slow endpoint never takes the loop's default executor; more deliveries than threads wait their turn), where the one
client per service is created on first use under a lock (botocore sessions are not thread-safe; clients are, and
are shared by the pool's threads). SQS queue URLs (GetQueueUrl, by name and owner account) are cached.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gateway.events import messages
from gateway.events.aws import Clients, NoCredentials, is_aws_endpoint
from gateway.events.destinations import DeliveryFailed
from gateway.events.messages import Message
from gateway.events.targets import Service, Target, endpoint
from gateway.settings import Settings

__all__ = ["Delivery", "DeliveryFailed", "is_aws_endpoint"]

log = logging.getLogger("gateway.events.delivery")

WORKERS = 8
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 5.0
#: attempts per request, the first included
ATTEMPTS = 2
#: how much of a service's error text an error keeps
_ERROR_TEXT = 300
_BOTOCORE_NAMES = {Service.SQS: "sqs", Service.SNS: "sns", Service.EVENTS: "events"}


class Delivery:
    """Sends records and dead letters to the SQS, SNS and EventBridge endpoints named in the settings."""

    def __init__(
        self, settings: Settings, *, connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT
    ) -> None:
        self.settings = settings
        self._timeouts = (connect_timeout, read_timeout)
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="delivery")
        self._lock = threading.Lock()
        self._maker = Clients(log)
        self._clients: dict[Service, Any] = {}
        self._queue_urls: dict[tuple[str, str], str] = {}
        self._closed = False

    async def send(self, target: Target, record: bytes, success: bool) -> None:
        """Put a destination record (JSON bytes) on an SQS queue, SNS topic or EventBridge bus, as Lambda does.

        `success` picks the EventBridge DetailType. Raises DeliveryFailed (the target did not take it, it is too
        large for the service, or the service has no endpoint).
        """
        await self._run(target, "record", lambda: messages.destination(target, record, success))

    async def dead_letter(
        self, target: Target, payload: bytes, request_id: str, error_code: str, error_message: str
    ) -> None:
        """Put a discarded event on an SQS or SNS dead-letter queue: `payload` (the original event) as the body,
        message attributes RequestID, ErrorCode (a 3-digit HTTP status, e.g. "200" for a function error) and
        ErrorMessage (truncated to 1 KB). Raises DeliveryFailed."""
        await self._run(
            target, "dead letter", lambda: messages.dead_letter(target, payload, request_id, error_code, error_message)
        )

    async def close(self) -> None:
        """Refuse new deliveries, wait for those in flight (bounded by the timeouts), close the clients."""
        self._closed = True
        await asyncio.to_thread(self._pool.shutdown, wait=True)
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    # -- in the pool's threads ----------------------------------------------------------------------------

    async def _run(self, target: Target, what: str, build: Callable[[], Message]) -> None:
        """Build the message and send it, both in the pool: a record can be megabytes of JSON to decode, and the
        loop has better things to do."""
        if self._closed:
            raise DeliveryFailed(f"{what} not sent to {target.arn}: delivery is closed")
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._pool, self._guarded, target, what, build)
        except RuntimeError as exc:  # the pool shut down between the check and the submission
            raise DeliveryFailed(f"{what} not sent to {target.arn}: {exc}") from None

    def _guarded(self, target: Target, what: str, build: Callable[[], Message]) -> None:
        """Build and send, with every failure (a message the service would refuse, botocore's errors, the
        service's refusal) turned into a scrubbed DeliveryFailed."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            message = build()
        except ValueError as exc:  # too large, not text, not a service sent to from here
            raise DeliveryFailed(f"{what} not sent to {target.arn}: {exc}") from None
        senders: dict[Service, Callable[[Target, Message], None]] = {
            Service.SQS: self._send_sqs,
            Service.SNS: self._publish_sns,
            Service.EVENTS: self._put_events,
        }
        try:
            senders[message.service](target, message)
        except DeliveryFailed as exc:
            raise DeliveryFailed(self._scrub(str(exc))) from None
        except ClientError as exc:
            error = exc.response.get("Error", {})
            reason = f"{error.get('Code', 'Error')}: {error.get('Message', '')}"
            raise DeliveryFailed(self._failure(target, reason)) from None
        except BotoCoreError as exc:
            raise DeliveryFailed(self._failure(target, f"{type(exc).__name__}: {exc}")) from None
        except Exception as exc:  # e.g. an endpoint botocore cannot use: the caller sees one exception type
            log.warning("delivery to %s failed unexpectedly: %s", target.arn, type(exc).__name__)
            raise DeliveryFailed(self._failure(target, f"{type(exc).__name__}: {exc}")) from None

    def _failure(self, target: Target, reason: str) -> str:
        service = target.service.value.upper()
        return self._scrub(f"{service} did not take the message for {target.arn}: {reason[:_ERROR_TEXT]}")

    def _scrub(self, text: str) -> str:
        return self._maker.scrub(text)

    def _client(self, service: Service) -> Any:
        """The service's client, created on first use (credentials resolved then; placeholders as documented)."""
        url = endpoint(self.settings, service)
        if url is None:
            raise DeliveryFailed(f"no endpoint is set for {service.value.upper()}")
        with self._lock:
            client = self._clients.get(service)
            if client is not None:
                return client
            connect, read = self._timeouts
            try:
                client = self._maker.create(
                    _BOTOCORE_NAMES[service],
                    url,
                    self.settings.region,
                    connect_timeout=connect,
                    read_timeout=read,
                    attempts=ATTEMPTS,
                    connections=WORKERS,
                )
            except NoCredentials as exc:
                raise DeliveryFailed(str(exc)) from None
            self._clients[service] = client
            return client

    def _queue_url(self, client: Any, target: Target) -> str:
        key = (target.account, target.name)
        with self._lock:
            url = self._queue_urls.get(key)
        if url is None:
            url = str(client.get_queue_url(QueueName=target.name, QueueOwnerAWSAccountId=target.account)["QueueUrl"])
            with self._lock:
                self._queue_urls[key] = url
        return url

    def _send_sqs(self, target: Target, message: Message) -> None:
        from botocore.exceptions import ClientError

        client = self._client(Service.SQS)
        url = self._queue_url(client, target)
        try:
            answer = client.send_message(
                QueueUrl=url, MessageBody=message.body, MessageAttributes=message.sqs_attributes()
            )
        except ClientError:
            with self._lock:  # the queue may be gone, or have moved: ask again next time
                self._queue_urls.pop((target.account, target.name), None)
            raise
        expected = hashlib.md5(message.body.encode(), usedforsecurity=False).hexdigest()
        if answer.get("MD5OfMessageBody") != expected:
            raise DeliveryFailed(self._failure(target, "the MD5 of the body it stored is not the body's"))

    def _publish_sns(self, target: Target, message: Message) -> None:
        self._client(Service.SNS).publish(
            TopicArn=target.arn, Message=message.body, MessageAttributes=message.sqs_attributes()
        )

    def _put_events(self, target: Target, message: Message) -> None:
        answer = self._client(Service.EVENTS).put_events(Entries=[message.entry])
        if answer.get("FailedEntryCount"):
            entry = (answer.get("Entries") or [{}])[0]
            reason = f"{entry.get('ErrorCode', 'Failed')}: {entry.get('ErrorMessage', '')}"
            raise DeliveryFailed(self._failure(target, reason))
