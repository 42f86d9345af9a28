"""FreezeQueue (gateway/isolation/freezer.py): which idle environments it freezes, and when. The freezing itself (a real
cgroup) is tested end to end in tests/test_e2e_freeze.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from gateway.isolation.freezer import FreezeQueue


class Idle:
    """What FreezeQueue reads of an environment: its freezer (any), when it was last used, and `freeze()`."""

    def __init__(self) -> None:
        self.freezer = object()
        self.last_used = time.monotonic()
        self.frozen_at: float | None = None

    def freeze(self) -> None:
        if self.frozen_at is None:
            self.frozen_at = time.monotonic()


async def test_an_idle_environment_is_frozen_soon_after_the_delay_and_a_busy_one_is_not() -> None:
    queue = FreezeQueue(after=0.1)  # not the production 5 ms: a loaded CI machine oversleeps by tens of ms
    idle, busy = Idle(), Idle()
    released = time.monotonic()
    queue.idle(cast(Any, idle))
    queue.idle(cast(Any, busy))
    for _ in range(6):  # invoked again every 30 ms: always used more recently than the delay
        await asyncio.sleep(0.03)
        busy.last_used = time.monotonic()
        queue.idle(cast(Any, busy))
    assert idle.frozen_at is not None and 0.1 <= idle.frozen_at - released <= 0.3
    assert busy.frozen_at is None
    await asyncio.sleep(0.3)  # now idle too
    assert busy.frozen_at is not None
    queue.close()


async def test_environments_without_a_freezer_are_not_queued() -> None:
    queue = FreezeQueue(after=0.01)
    env = Idle()
    env.freezer = None  # type: ignore[assignment]
    queue.idle(cast(Any, env))
    await asyncio.sleep(0.03)
    assert env.frozen_at is None
    queue.close()
