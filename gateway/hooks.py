"""One shape for every observer in the gateway: a `Hook` that others `connect()` to and its owner calls.

An owner declares what it tells, typed by the arguments its observers take (`Hook[[Change]]`,
`Hook[[FunctionConfig, Outcome]]`, `Hook[[]]`), and calls the hook when that happens. The hooks of the gateway:
`Registry.on_change` (a write; gateway.store.records.Change), `Invoker.on_outcome` (an invocation ended),
`Zygote.on_ready` (a runtime can fork) and `Zygote.on_fork` (a fork took that many seconds). Values an owner
needs from elsewhere (what to provision, an environment's credentials) are providers instead: plain callables
given to its constructor.

Contract: observers are called in the order they were connected, on the caller's thread, and must be quick. An
observer's exception is logged (on the owner's logger) and swallowed: the owner and the other observers go on.

Cost: one Python call and a loop over a tuple; the invoker calls `on_outcome` once per invocation.

Concurrency: `connect()` at start-up, on the event loop; a hook may be called from any thread (the registry's
writes run in worker threads). `observers` is replaced, never mutated, so a caller iterating it while an
observer is connected sees the old tuple or the new one, never half of one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, ParamSpec

P = ParamSpec("P")


class Hook(Generic[P]):
    """Observers of one kind of event, called with the arguments `P` when the owner calls the hook."""

    __slots__ = ("log", "name", "observers")

    def __init__(self, name: str, log: logging.Logger) -> None:
        #: what the hook tells, for the log line of an observer that failed
        self.name = name
        self.log = log
        #: the connected observers, in order (replaced by `connect()`, never mutated)
        self.observers: tuple[Callable[P, object], ...] = ()

    def connect(self, observer: Callable[P, object]) -> None:
        """Call `observer` too from now on, after those connected before."""
        self.observers = (*self.observers, observer)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Call every observer with these arguments; one that raises is logged and the others still run."""
        for observer in self.observers:
            try:
                observer(*args, **kwargs)
            except Exception:
                self._failed(observer)

    def _failed(self, observer: Callable[P, object]) -> None:
        """Log the exception being handled, raised by `observer` (call it from an `except` block)."""
        self.log.exception("%s: observer %r failed", self.name, observer)

    def __repr__(self) -> str:
        return f"Hook({self.name!r}, {len(self.observers)} observers)"
