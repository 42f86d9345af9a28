"""Where the outcome of an asynchronous invocation goes: its OnSuccess / OnFailure destination and dead-letter queue.

A destination that is a function of this gateway receives the invocation record as an asynchronous invocation of its
own (queued here, durably, like any Event invoke). SQS, SNS and EventBridge destinations and dead-letter queues go
through `gateway.events.delivery.Delivery` to the endpoint the operator names. On failure, both the OnFailure
destination and the dead-letter queue receive theirs, as on Lambda. A delivery that fails is logged and counted
(DestinationDeliveryFailures, DeadLetterErrors); the event is not retried for it.

Concurrency: on the event loop; `deliver` awaits the queue's disk and the services' answers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Protocol

from gateway.events.queue import MAX_EVENT_PAYLOAD, EventQueue, QueuedEvent, full
from gateway.events.records import Response, error_message, invocation_record
from gateway.events.retries import Condition
from gateway.events.targets import Service, Target, parse_target
from gateway.execution.invoker import new_request_id
from gateway.settings import Settings

log = logging.getLogger("gateway.events")

#: records over this many bytes of payloads are built in a worker thread
RECORD_IN_THREAD = 256 * 1024


class DeliveryFailed(Exception):
    """A record or dead letter could not be delivered (the service refused it, or could not be reached)."""


class Sender(Protocol):
    """gateway.events.delivery.Delivery: sends to SQS, SNS and EventBridge."""

    async def send(self, target: Target, record: bytes, success: bool) -> None: ...

    async def dead_letter(
        self, target: Target, payload: bytes, request_id: str, error_code: str, error_message: str
    ) -> None: ...


class Counts(Protocol):
    """What destinations report to the metrics (gateway.observability.metrics.Metrics)."""

    def async_received(self, function: str) -> None: ...

    def destination_failed(self, function: str, service: str) -> None: ...

    def dead_letter_failed(self, function: str) -> None: ...


class Destinations:
    """Delivers invocation records and dead letters (see the module docstring)."""

    def __init__(
        self,
        queue: EventQueue,
        sender: Sender | None,
        metrics: Counts,
        exists: Callable[[str, str | None], bool],
        settings: Settings,
    ) -> None:
        self._settings = settings
        self._queue = queue
        self._sender = sender
        self._metrics = metrics
        self._exists = exists  # (name, qualifier) -> whether that function (version, alias) is on this gateway

    async def deliver(
        self,
        event: QueuedEvent,
        function_arn: str,
        condition: Condition,
        response: Response | None,
        destination: str | None,
        dead_letter: str | None,
    ) -> None:
        """Send the record of `event`'s end to `destination` (if any) and, when it failed, its payload to
        `dead_letter` (if any)."""
        now = time.time()
        if destination and (target := parse_target(destination)) is not None:
            big = len(event.payload or b"") + (len(response.payload) if response else 0) > RECORD_IN_THREAD
            build = functools.partial(invocation_record, event, function_arn, condition, response, now)
            record = await asyncio.to_thread(build) if big else build()  # 6 MB of JSON is not for the loop
            if target.service is Service.LAMBDA and len(record) > MAX_EVENT_PAYLOAD:
                record = build(payloads=False)  # as Lambda does for a target's size limit
            if not await self._send(event.function, target, record, condition is Condition.SUCCESS, now):
                self._metrics.destination_failed(event.function, target.service.value)
        failed = condition is not Condition.SUCCESS
        if failed and dead_letter and (target := parse_target(dead_letter)) is not None:  # noqa: SIM102
            if not await self._dead_letter(event, target, condition, response):
                self._metrics.dead_letter_failed(event.function)

    async def _send(self, function: str, target: Target, record: bytes, success: bool, now: float) -> bool:
        if target.service is Service.LAMBDA:
            if not self._exists(target.name, target.qualifier):
                log.warning("destination %s of %s: no such function here; record dropped", target.arn, function)
                return False
            if refusal := full(self._queue, self._settings, target.name, len(record)):
                log.warning("destination %s of %s: record dropped: %s", target.arn, function, refusal)
                return False
            try:
                await self._queue.put(QueuedEvent(new_request_id(), target.name, target.qualifier, record, now, now))
            except Exception as exc:  # the disk refused it: as any delivery that fails
                log.warning("destination %s of %s: could not queue the record: %s", target.arn, function, exc)
                return False
            self._metrics.async_received(target.name)
            return True
        if self._sender is None:
            return False
        try:
            await self._sender.send(target, record, success)
        except DeliveryFailed as exc:
            log.warning("destination %s of %s: %s", target.arn, function, exc)
            return False
        return True

    async def _dead_letter(
        self, event: QueuedEvent, target: Target, condition: Condition, response: Response | None
    ) -> bool:
        if self._sender is None:
            return False
        code = "200" if response is not None else "429"
        try:
            await self._sender.dead_letter(
                target, event.payload or b"{}", event.request_id, code, error_message(response, condition)
            )
        except DeliveryFailed as exc:
            log.warning("dead-letter queue %s of %s: %s", target.arn, event.function, exc)
            return False
        return True
