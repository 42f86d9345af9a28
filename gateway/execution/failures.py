"""How an invocation fails for want of its environment: the environment died, or the invocation ran out of time.
Raised by gateway/execution/environment.py (which re-exports them), caught by the invoker and the pool."""

from __future__ import annotations

import asyncio
import time


class EnvironmentDied(Exception):
    """The environment's process ended (or was killed) before it replied."""

    def __init__(
        self, reason: str, exit_status: asyncio.Future[int | None] | None, oom_peak: int | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_status = exit_status
        #: time.perf_counter() when the gateway learnt of the death: an invocation's Duration ends here
        self.at = time.perf_counter()
        #: the memory group's peak usage (bytes) when the kernel's OOM killer ended the environment, else None
        self.oom_peak = oom_peak
        #: what it printed since it was last asked (set when it died in Init: that invocation's log shows it)
        self.output = b""


class InvocationTimeout(Exception):
    """The invocation ran past its deadline; the environment has been killed."""
