"""How a pool hands out its environments: one invocation per environment, or several at once.

`pool_class` is the one place that looks at a function's `max_concurrency`: `ExclusivePool` (1, Lambda's model) keeps
idle environments on stacks and hands each to one invocation; `SharedPool` (> 1, async handlers) keeps every
environment in one list and hands it to invocations while it has free slots. Everything else a pool does is
written once in `gateway.execution.pool.Pool`, in terms of the hooks these implement.

Concurrency: event loop only, like `Pool`; `acquire` awaits only when it forks.
"""

from __future__ import annotations

from gateway.execution.environment import Environment
from gateway.execution.pool import Pool
from gateway.store.records import FunctionConfig


def pool_class(config: FunctionConfig) -> type[Pool]:
    """The kind of pool `config` needs (constructed as any `Pool`): shared if its environments run several
    invocations at once, else exclusive."""
    return SharedPool if config.max_concurrency > 1 else ExclusivePool


class ExclusivePool(Pool):
    """One invocation per environment (Lambda's model). Idle environments wait on two stacks, most recently used
    last: provisioned ones (`warm`) are served before on-demand ones (`idle`), each LIFO, O(1)."""

    def _hold_idle(self) -> None:
        self.idle: list[Environment] = []  # on-demand, most recently used last
        self.warm: list[Environment] = []  # idle provisioned environments

    def take(self) -> Environment | None:
        for stack in (self.warm, self.idle):
            while stack:
                env = stack.pop()
                if not env.dead:
                    return env
                self._forget(env)
        return None

    async def acquire(self) -> tuple[Environment, bool]:
        env = self.take()
        if env is not None:
            return env, False
        return await self._spawn(), True

    def release(self, env: Environment) -> None:
        if env.dead or self.retired or env.init_error is not None or env.started < self.born_before:
            self._discard(env)
        elif env.provisioned:
            if len(self.provisioned) > self.provisioned_target:
                self._discard(env)  # provisioned concurrency was lowered while it ran
            else:
                self.warm.append(env)
                self._went_idle(env)
        else:
            self.idle.append(env)
            self._went_idle(env)

    def _waiting(self) -> list[Environment]:
        return [*self.warm, *self.idle]

    def _take(self, env: Environment) -> None:
        if env in self.idle:
            self.idle.remove(env)
        elif env in self.warm:
            self.warm.remove(env)

    def _drop_idle(self) -> list[Environment]:
        idle = [*self.idle, *self.warm]
        self.idle.clear()
        self.warm.clear()
        return idle

    def _park(self, env: Environment) -> None:
        self.warm.append(env)

    def _running(self, env: Environment) -> int:
        return 1


class SharedPool(Pool):
    """Several invocations per environment (`max_concurrency` > 1: async handlers). Every live environment stays in
    `shared`, newest last, and takes invocations while it has free slots (`load` < `capacity`, the capacity its
    READY frame said); it is idle while its `load` is 0."""

    def _hold_idle(self) -> None:
        self.shared: list[Environment] = []  # every live environment, newest last

    def take(self) -> Environment | None:
        for env in reversed(self.shared):
            if not env.dead and env.load < env.capacity:
                env.load += 1
                return env
        return None

    async def acquire(self) -> tuple[Environment, bool]:
        env = self.take()
        if env is not None:
            return env, False
        env = await self._spawn()
        env.load += 1
        self.shared.append(env)
        return env, True

    def release(self, env: Environment) -> None:
        env.load -= 1
        surplus = env.provisioned and len(self.provisioned) > self.provisioned_target
        aged = env.started < self.born_before
        if env.dead or self.retired or env.init_error is not None or aged or (surplus and env.load <= 0):
            if env in self.shared:
                self.shared.remove(env)
            if env.load <= 0:
                self._discard(env)
        elif env.load <= 0:  # its last invocation ended: idle until the next
            self._went_idle(env)

    def _waiting(self) -> list[Environment]:
        return [env for env in self.shared if env.load <= 0]

    def _take(self, env: Environment) -> None:
        if env in self.shared:
            self.shared.remove(env)

    def _drop_idle(self) -> list[Environment]:
        idle = self._waiting()
        self.shared = [env for env in self.shared if env.load > 0]
        return idle

    def _park(self, env: Environment) -> None:
        self.shared.append(env)

    def _running(self, env: Environment) -> int:
        return env.load
