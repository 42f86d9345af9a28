"""The poller runtime: one `Poller` task per enabled event source mapping, following the mappings' store.

States: the API writes `Creating`, `Enabling`, `Updating`, `Disabling` (and deletes); the runner acts on each
(start, restart or stop the mapping's task) and writes `Enabled` or `Disabled` when done. At start-up every mapping
is taken up again: the enabled ones resume from their brokers' committed positions.

A mapping runs `ScalingConfig.MaximumConcurrency` pollers (1 when unset), each with its own `Source` and at most
one batch in flight: SQS and RabbitMQ consumers share the queue, Kafka consumers of one group share the partitions
(order is kept per partition).

Which module reads which kind of source is `SOURCES` (kind -> module exposing `source_for(mapping, settings)`),
imported lazily: a module that is not there (not installed, or its dependency missing) leaves the mapping Enabled
with StateTransitionReason saying so, and nothing polled.

An invocation goes the synchronous path (as Lambda's pollers invoke): `Concurrency.admit`, `Invoker.invoke`,
`release`; a throttle or an unavailable runtime is "not reached" (retried by the poller, not counted).

Concurrency model: everything runs on the event loop. `follow` is the store's `on_change` observer, called on the
writer's thread: it hands the mapping to the loop (`call_soon_threadsafe`). Store writes (states, reasons) run in
worker threads (`asyncio.to_thread`); each is conditional on the state it moves from, so a user's change that
came in between wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import logging
from collections.abc import Callable
from typing import Any

import orjson

from gateway.errors import LambdaError, ResourceNotFoundException, TooManyRequestsException
from gateway.events.pollers.poller import Attempt, Counts, Hooks, Poller
from gateway.events.pollers.source import Source
from gateway.events.targets import parse_target
from gateway.execution.admission import Concurrency
from gateway.execution.invoker import MAX_SYNC_PAYLOAD, Invoker
from gateway.settings import Settings
from gateway.store.mappings import (
    DELETING,
    DISABLED,
    ENABLED,
    Mapping,
    Mappings,
)
from gateway.store.registry import Registry

log = logging.getLogger("gateway.pollers")

#: the longest wait before a poller that failed unexpectedly is started again
RESTART_MAX = 60.0
#: how long `close` lets state writes under way land
UPDATES_GRACE = 2.0

#: the module that reads each kind of source
SOURCES = {
    "kafka": "gateway.events.pollers.kafka",
    "rabbitmq": "gateway.events.pollers.rabbitmq",
    "sqs": "gateway.events.pollers.sqs",
}

SourceFactory = Callable[[Mapping, Settings], Source]
Sender = Callable[[Any, bytes, bool], Any]  # Delivery.send(target, record, success)


class Runner:
    """Pollers of the enabled mappings (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        mappings: Mappings,
        registry: Registry,
        admission: Concurrency,
        invoker: Invoker,
        send: Sender,
        counts: Counts,
        factories: dict[str, SourceFactory] | None = None,
        backoff: tuple[float, float] = (1.0, 60.0),
    ) -> None:
        self._settings = settings
        self._mappings = mappings
        self._registry = registry
        self._admission = admission
        self._invoker = invoker
        self._send = send
        #: kind -> factory; those not given come from `SOURCES` at first use
        self._factories = dict(factories or {})
        self._hooks = Hooks(
            self._invoke, self._deliver, self._status, counts, self._function_arn, backoff[0], backoff[1]
        )
        self._tasks: dict[str, asyncio.Task[None]] = {}
        #: the mapping each running poller was started with
        self._configs: dict[str, Mapping] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._updates: set[asyncio.Task[Any]] = set()  # state writes under way (`_spawn`)

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Take up every mapping (on the loop, at start-up)."""
        self._loop = asyncio.get_running_loop()
        for mapping in self._mappings.all():
            self._apply(mapping, starting=True)

    def follow(self, mapping: Mapping) -> None:
        """`Mappings.on_change` observer, on any thread."""
        if self._loop is not None and not self._closed:
            self._loop.call_soon_threadsafe(self._apply, mapping, False)

    async def close(self) -> None:
        """Stop every poller (unsettled records stay with their brokers)."""
        self._closed = True
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._updates:  # state writes under way: let them land before the store closes
            await asyncio.wait(set(self._updates), timeout=UPDATES_GRACE)

    def running(self) -> list[str]:
        """The UUIDs whose poller runs."""
        return sorted(u for u, t in self._tasks.items() if not t.done())

    def _apply(self, mapping: Mapping, starting: bool) -> None:
        """Act on a mapping's state: start, restart or stop its poller, then write the state it reached."""
        if self._closed:
            return
        if mapping.state == DELETING:
            self._stop(mapping.uuid)
            self._hooks.counts.forget(mapping.uuid)
            return
        if mapping.state in (ENABLED, DISABLED) and not starting:
            return  # written by this runner, or a status change: nothing to do
        if mapping.enabled:
            running = self._configs.get(mapping.uuid)
            if running is None or not same_settings(running, mapping) or self._tasks[mapping.uuid].done():
                self._stop(mapping.uuid)
                self._begin(mapping)
            if mapping.state != ENABLED:
                self._transition(mapping, ENABLED)
        else:
            self._stop(mapping.uuid)
            if mapping.state != DISABLED:
                self._transition(mapping, DISABLED)

    def _begin(self, mapping: Mapping) -> None:
        factory = self._factory(mapping)
        if factory is None:
            return
        pollers = [
            Poller(mapping, lambda: factory(mapping, self._settings), self._hooks)
            for _ in range(mapping.maximum_concurrency or 1)
        ]
        task = asyncio.create_task(self._all(pollers), name=f"pollers {mapping.uuid}")
        self._tasks[mapping.uuid] = task
        self._configs[mapping.uuid] = mapping

    async def _all(self, pollers: list[Poller]) -> None:
        """ScalingConfig.MaximumConcurrency pollers, each with its own source (connection, consumer), each with at
        most one batch in flight: as many concurrent invocations at most. Cancelled together."""
        async with asyncio.TaskGroup() as group:
            for poller in pollers:
                group.create_task(self._guarded(poller))

    async def _guarded(self, poller: Poller) -> None:
        """A poller that fails unexpectedly (a bug, a client library's surprise such as a record it cannot decode)
        shows why and is started again after a back-off (1 s doubling to RESTART_MAX): the mapping stays Enabled and
        its records stay with the broker, as after any crash."""
        delay = 1.0
        while True:
            try:
                await poller.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception(
                    "event source mapping %s: poller failed; restarting in %.0f s", poller.mapping.uuid, delay
                )
                self._hooks.counts.polling_error(poller.mapping)
                reason = f"PROBLEM: the poller stopped: {type(exc).__name__}: {exc}"
                await self._status(poller.mapping, reason, reason)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_MAX)

    def _factory(self, mapping: Mapping) -> SourceFactory | None:
        """The kind's `source_for`, or None (and the reason shown) when its module cannot be imported."""
        found = self._factories.get(mapping.kind)
        if found is not None:
            return found
        try:
            module = importlib.import_module(SOURCES[mapping.kind])
            factory: SourceFactory = module.source_for
        except (ImportError, AttributeError, KeyError) as exc:
            reason = f"PROBLEM: this gateway cannot read {mapping.kind} sources: {exc}"
            log.warning("event source mapping %s: %s", mapping.uuid, reason)
            self._hooks.counts.polling_error(mapping)
            self._spawn(self._status(mapping, reason, reason))
            return None
        self._factories[mapping.kind] = factory
        return factory

    def _stop(self, uuid: str) -> None:
        self._configs.pop(uuid, None)
        task = self._tasks.pop(uuid, None)
        if task is not None:
            task.cancel()

    def _transition(self, mapping: Mapping, state: str) -> None:
        moving_from = mapping.state

        def change(current: Mapping) -> Mapping:
            if current.state != moving_from:
                return current  # the user changed it since: their change is followed instead
            return dataclasses.replace(current, state=state)

        self._spawn(asyncio.to_thread(self._mappings.update, mapping.uuid, change))

    def _spawn(self, work: Any) -> None:
        """A state update in the background, owned here: `close` waits for (or cancels) it."""
        task: asyncio.Task[Any] = asyncio.ensure_future(work)
        self._updates.add(task)
        task.add_done_callback(self._updates.discard)
        task.add_done_callback(_log_failure)

    # -- what the pollers use --------------------------------------------------------------------------------

    async def _status(self, mapping: Mapping, reason: str | None, result: str | None) -> None:
        """Show why (StateTransitionReason) and how the last batch went (LastProcessingResult)."""

        def change(current: Mapping) -> Mapping:
            changes: dict[str, Any] = {}
            if reason is not None and current.state_transition_reason != reason:
                changes["state_transition_reason"] = reason
            if result is not None and current.last_processing_result != result:
                changes["last_processing_result"] = result
            return dataclasses.replace(current, **changes) if changes else current

        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._mappings.update, mapping.uuid, change)

    def _function_arn(self, mapping: Mapping) -> str:
        return self._settings.function_arn(mapping.function, mapping.qualifier)

    async def _invoke(self, mapping: Mapping, payload: bytes) -> Attempt:
        """One synchronous invocation of the mapping's function, through admission."""
        try:
            config = self._registry.resolve(mapping.function, mapping.qualifier, route=True)
        except ResourceNotFoundException:
            return Attempt(False, reason=f"function {mapping.function} not found")
        if len(payload) > MAX_SYNC_PAYLOAD:  # it can never run: a failed attempt (retries, OnFailure, the broker's
            # dead-letter mechanism apply), not a retry for ever
            error = f"{len(payload)} byte payload is too large for a synchronous invocation (limit {MAX_SYNC_PAYLOAD})"
            body = orjson.dumps({"errorMessage": error, "errorType": "RequestEntityTooLargeException"})
            return Attempt(True, "Unhandled", body, config.version)
        try:
            token = self._admission.admit(mapping.function, mapping.qualifier)
        except TooManyRequestsException as exc:
            return Attempt(False, reason=f"throttled: {exc.reason}")
        try:
            outcome = await self._invoker.invoke(config, self._function_arn(mapping), payload, None, False)
        except LambdaError as exc:  # no room on the node, the runtime unavailable, the payload too large
            return Attempt(False, reason=str(exc))
        finally:
            self._admission.release(token)
        return Attempt(True, outcome.function_error, outcome.payload, outcome.executed_version, outcome.request_id)

    async def _deliver(self, destination: str, record: bytes) -> None:
        target = parse_target(destination)
        if target is None:
            raise ValueError(f"not a destination: {destination}")
        await self._send(target, record, False)


def same_settings(a: Mapping, b: Mapping) -> bool:
    """Whether two versions of a mapping differ only in their status (a poller need not restart)."""

    def settings(m: Mapping) -> Mapping:
        return dataclasses.replace(m, state="", state_transition_reason="", last_processing_result="", last_modified=0)

    return settings(a) == settings(b)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("event source mappings: a state update failed", exc_info=task.exception())
