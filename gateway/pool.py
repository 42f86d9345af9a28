"""Environments of one function version: acquire, release, reap, retire.

A `Pool` holds the environments of exactly one configuration snapshot (name, version, revision). Idle
environments sit on a stack: `acquire()` takes the most recently used one in O(1), or forks a new one
(a cold start) when none is idle. `PoolManager` maps each function version to its current pool; when a
function's configuration changes, its pool is retired: idle environments are shut down at once and busy
ones when their invocation ends, so no invocation that resolved the new configuration ever runs the old
code or settings.

Concurrency: everything runs on the event loop; only `_spawn()` awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.config import Settings
from gateway.configs import FunctionConfig
from gateway.environment import Environment, connect
from gateway.zygote import Zygote, ZygoteUnavailable

log = logging.getLogger("gateway.pool")

RUNTIME_DIR = str(Path(__file__).resolve().parent.parent / "runtimes" / "python")


def environment_variables(config: FunctionConfig, settings: Settings, init_type: str) -> dict[str, str]:
    """The environment an execution environment sees: Lambda's reserved set, then the function's own."""
    stream = time.strftime("%Y/%m/%d", time.gmtime()) + f"/[{config.version}]{uuid.uuid4().hex}"
    env = {
        "PATH": "/usr/local/bin:/usr/bin/:/bin:/opt/bin",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "_HANDLER": config.handler,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{config.runtime}",
        "AWS_REGION": settings.region,
        "AWS_DEFAULT_REGION": settings.region,
        "AWS_LAMBDA_FUNCTION_NAME": config.name,
        "AWS_LAMBDA_FUNCTION_VERSION": config.version,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_size),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{config.name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": stream,
        "AWS_LAMBDA_INITIALIZATION_TYPE": init_type,
        "LAMBDA_TASK_ROOT": str(config.code_dir),
        "LAMBDA_RUNTIME_DIR": RUNTIME_DIR,
    }
    env.update(config.environment)
    return env


def layer_paths(config: FunctionConfig) -> list[str]:
    """sys.path entries for the function's layers, after its own code, as Lambda's merged /opt orders them.

    Lambda extracts layers in order into /opt (a later layer overwrites an earlier one) and puts
    /opt/python/lib/pythonX.Y/site-packages before /opt/python; separate directories get the same lookup
    order by listing every layer's site-packages first, later layers before earlier ones.
    """
    newest_first = list(reversed(config.layer_dirs))
    site = [str(d / "python" / "lib" / config.runtime / "site-packages") for d in newest_first]
    return site + [str(d / "python") for d in newest_first]


class Pool:
    """The environments of one configuration snapshot."""

    def __init__(self, config: FunctionConfig, settings: Settings, zygote: Zygote) -> None:
        self.config = config
        self.settings = settings
        self.zygote = zygote
        self.idle: list[Environment] = []
        self.environments: set[Environment] = set()
        self.retired = False
        self.spawning = 0
        self._envs_root = settings.data_dir / "envs"

    async def acquire(self) -> tuple[Environment, bool]:
        """An environment for one invocation, and whether it was just created (a cold start)."""
        idle = self.idle
        while idle:
            env = idle.pop()
            if not env.dead:
                return env, False
            self.environments.discard(env)
        return await self._spawn(), True

    async def _spawn(self, init_type: str = "on-demand") -> Environment:
        config = self.config
        env_dir = str(self._envs_root / uuid.uuid4().hex)
        spec: dict[str, Any] = {
            "env": environment_variables(config, self.settings, init_type),
            "code_dir": str(config.code_dir),
            "handler": config.handler,
            "env_dir": env_dir,
            "extra_paths": layer_paths(config),
            "max_concurrency": config.max_concurrency,
        }
        self.spawning += 1
        try:
            pid, sock, exit_status = await self.zygote.fork(spec)
            env = await connect((config.name, config.version), pid, sock, exit_status, env_dir)
            env.initialization_type = init_type
            self.environments.add(env)
            try:
                await env.wait_ready()
            except BaseException:
                self.environments.discard(env)
                env.kill("init failed")
                raise
            return env
        finally:
            self.spawning -= 1

    @property
    def empty(self) -> bool:
        return not self.environments and not self.spawning

    def release(self, env: Environment) -> None:
        """Give an environment back after an invocation; dead, failed-init or retired ones are discarded."""
        if env.dead or self.retired or env.init_error is not None:
            self.environments.discard(env)
            env.shutdown()
            return
        self.idle.append(env)

    def reap(self, cutoff: float) -> int:
        """Shut down idle environments unused since `cutoff` (monotonic seconds); return how many."""
        keep: list[Environment] = []
        reaped = 0
        for env in self.idle:  # oldest first: the stack's bottom
            if env.dead or env.last_used < cutoff:
                self.environments.discard(env)
                env.shutdown()
                reaped += 1
            else:
                keep.append(env)
        self.idle[:] = keep
        return reaped

    def retire(self) -> None:
        """No new invocations here: shut idle environments now, busy ones when they are released."""
        self.retired = True
        for env in self.idle:
            self.environments.discard(env)
            env.shutdown()
        self.idle.clear()

    def kill_all(self) -> None:
        self.retire()
        for env in list(self.environments):
            env.kill("gateway stopping")
        self.environments.clear()


class PoolManager:
    """Maps each function version to its current pool; reaps idle environments in the background."""

    def __init__(self, settings: Settings, zygotes: Mapping[str, Zygote]) -> None:
        self.settings = settings
        self.zygotes = zygotes
        self.pools: dict[tuple[str, str], Pool] = {}
        #: retired pools whose busy environments have not been released yet
        self.retired: list[Pool] = []

    def pool_for(self, config: FunctionConfig) -> Pool:
        """The pool serving exactly this configuration snapshot (hot path: one dict lookup)."""
        key = (config.name, config.version)
        pool = self.pools.get(key)
        if pool is None or pool.config.revision_id != config.revision_id:
            if pool is not None:
                self._retire(pool)
            zygote = self.zygotes.get(config.runtime)
            if zygote is None:
                raise ZygoteUnavailable(f"no zygote serves runtime {config.runtime}")
            pool = self.pools[key] = Pool(config, self.settings, zygote)
        return pool

    def retire_function(self, name: str, version: str | None = None) -> None:
        """Retire the pool of one version of a function, or of all its versions (after an update or delete)."""
        for key in [k for k in self.pools if k[0] == name and version in (None, k[1])]:
            self._retire(self.pools.pop(key))

    def _retire(self, pool: Pool) -> None:
        pool.retire()
        if not pool.empty:
            self.retired.append(pool)

    def reap(self) -> int:
        cutoff = time.monotonic() - self.settings.idle_timeout
        reaped = sum(pool.reap(cutoff) for pool in self.pools.values())
        for key in [k for k, p in self.pools.items() if p.empty]:
            del self.pools[key]
        self.retired = [p for p in self.retired if not p.empty]
        return reaped

    async def reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reap_interval)
            with contextlib.suppress(Exception):
                reaped = self.reap()
                if reaped:
                    log.debug("reaped %d idle environments", reaped)

    def count(self) -> int:
        return sum(len(p.environments) for p in (*self.pools.values(), *self.retired))

    def close(self) -> None:
        """Kill every environment, busy or idle (call after draining)."""
        for pool in (*self.pools.values(), *self.retired):
            pool.kill_all()
        self.pools.clear()
        self.retired.clear()
