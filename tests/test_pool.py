"""gateway.execution.pool and .modes against fakes (conftest: FakeZygoteClient, FakeEnvironment): which environment an
invocation gets, what happens to it afterwards, provisioning, reaping, retiring, and the census metrics reads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import TooManyRequestsException
from gateway.execution.modes import ExclusivePool, SharedPool
from gateway.execution.pool import RETIRE_GRACE, PoolCensus
from gateway.execution.pools import PoolManager
from gateway.settings import Settings
from gateway.store.records import LATEST, FunctionConfig
from tests.conftest import RUNTIME, FakeEnvironment, FakeZygoteClient, fake_config

MakePool = Callable[..., tuple[Any, Any]]


async def serve(pool: Any, n: int) -> list[FakeEnvironment]:
    """Acquire `n` environments at once (each busy until released)."""
    return [(await pool.acquire())[0] for _ in range(n)]


def counts(census: PoolCensus) -> tuple[int, int, int, int]:
    return census.initializing, census.idle, census.busy, census.executions


def test_the_mode_follows_max_concurrency(fake_pool: MakePool) -> None:
    assert isinstance(fake_pool()[0], ExclusivePool)
    assert isinstance(fake_pool(max_concurrency=4)[0], SharedPool)


async def test_a_cold_start_forks_and_the_next_invocation_reuses_it(fake_pool: MakePool) -> None:
    pool, zygote = fake_pool()
    env, cold = await pool.acquire()
    assert cold and env.ready and zygote.forked == [env]
    pool.release(env)
    again, cold = await pool.acquire()
    assert again is env and not cold and len(zygote.forked) == 1


async def test_the_most_recently_used_idle_environment_comes_first(fake_pool: MakePool) -> None:
    pool, _ = fake_pool()
    a, b, c = await serve(pool, 3)
    for env in (a, b, c):
        pool.release(env)
    assert await serve(pool, 3) == [c, b, a]


async def test_a_dead_idle_environment_is_skipped_and_forgotten(fake_pool: MakePool) -> None:
    pool, _ = fake_pool()
    a, b = await serve(pool, 2)
    pool.release(a)
    pool.release(b)
    b.dead = True  # it died while idle
    assert (await pool.acquire())[0] is a
    assert b not in pool.environments


async def test_dead_or_failed_init_environments_are_discarded_on_release(fake_pool: MakePool) -> None:
    pool, zygote = fake_pool()
    crashed, _ = await pool.acquire()
    crashed.kill("invocation timed out")
    pool.release(crashed)
    zygote.init_error = {"errorType": "Runtime.ImportModuleError", "errorMessage": "x", "stackTrace": b"[]"}
    broken, _ = await pool.acquire()
    pool.release(broken)
    assert broken.killed == "shut down"
    assert pool.environments == set() and pool.evictable() == []


async def test_provisioned_environments_are_served_first(fake_pool: MakePool) -> None:
    pool, zygote = fake_pool()
    on_demand, _ = await pool.acquire()
    pool.set_provisioned_target(1)
    await pool.ensure_provisioned()
    assert pool.provisioned_available == 1
    pool.release(on_demand)  # released after the provisioned one became ready: more recently used
    env, cold = await pool.acquire()
    assert env.provisioned and env is zygote.forked[1] and not cold
    assert (await pool.acquire())[0] is on_demand


async def test_lowering_the_provisioned_target_shuts_idle_extras_now_and_busy_ones_on_release(
    fake_pool: MakePool,
) -> None:
    pool, _ = fake_pool()
    pool.set_provisioned_target(3)
    await pool.ensure_provisioned()
    first, second = await serve(pool, 2)
    pool.set_provisioned_target(1)
    assert [env.killed for env in pool.environments if env not in (first, second)] == []  # the idle one: shut
    assert len(pool.provisioned) == 2
    pool.release(first)  # still one too many
    pool.release(second)
    assert first.killed == "shut down" and second.killed is None
    assert pool.provisioned_available == 1 and (await pool.acquire())[0] is second


async def test_an_init_failure_stops_provisioning_until_a_new_target(fake_pool: MakePool) -> None:
    pool, zygote = fake_pool()
    zygote.init_error = {"errorType": "Runtime.HandlerNotFound", "errorMessage": "no handler", "stackTrace": b"[]"}
    pool.set_provisioned_target(2)
    await pool.ensure_provisioned()
    assert pool.provisioning_error == "Runtime.HandlerNotFound: no handler"
    assert pool.provisioned_available == 0
    await pool.ensure_provisioned()
    assert len(zygote.forked) == 2  # not retried
    zygote.init_error = None
    pool.set_provisioned_target(2, retry_failed=True)
    await pool.ensure_provisioned()
    assert pool.provisioning_error is None and pool.provisioned_available == 2


async def test_reaping_shuts_idle_on_demand_environments_after_the_idle_timeout(fake_pool: MakePool) -> None:
    pool, _ = fake_pool()
    pool.set_provisioned_target(1)
    await pool.ensure_provisioned()
    warm, old, recent = await serve(pool, 3)  # the provisioned one serves first
    assert warm.provisioned
    for env in (warm, old, recent):
        pool.release(env)
    now = time.monotonic()
    old.last_used = warm.last_used = now - 100
    assert pool.reap(cutoff=now - 10) == 1
    assert old.killed == "shut down"
    assert recent.killed is None and warm.killed is None  # provisioned: never reaped


async def test_aged_environments_are_shut_when_idle_provisioned_ones_too(fake_pool: MakePool) -> None:
    pool, _ = fake_pool()
    pool.set_provisioned_target(1)
    await pool.ensure_provisioned()
    provisioned, on_demand, busy = await serve(pool, 3)
    pool.release(provisioned)
    pool.release(on_demand)
    pool.born_before = time.monotonic() + 1  # their session credentials are about to expire
    assert pool.reap(cutoff=0.0) == 1  # counts the on-demand ones
    assert provisioned.killed == on_demand.killed == "shut down" and pool.provisioned_available == 0
    pool.release(busy)  # aged: shut on release
    assert busy.killed == "shut down" and pool.environments == set()


async def test_a_replaced_pool_shuts_idle_environments_after_a_grace_and_busy_ones_on_release(
    fake_pool: MakePool,
) -> None:
    pool, _ = fake_pool()
    idle, busy = await serve(pool, 2)
    pool.release(idle)
    pool.retire(replaced=True)
    # leaving, not shut yet: its teardown must not run while the new code's first invocation cold-starts
    assert idle.killed is None and pool.leaving == {idle} and pool.evictable() == [idle]
    assert idle not in pool._waiting()  # never handed out again
    await asyncio.sleep(RETIRE_GRACE + 0.05)
    assert idle.killed == "shut down" and busy.killed is None and not pool.empty and not pool.leaving
    assert pool.in_use  # its code stays on disk while the busy one runs
    pool.release(busy)
    assert busy.killed == "shut down"


async def test_a_deleted_functions_idle_environments_are_shut_at_once(fake_pool: MakePool) -> None:
    pool, _ = fake_pool()
    (idle,) = await serve(pool, 1)
    pool.release(idle)
    pool.retire()
    assert idle.killed == "shut down" and pool.empty


async def test_a_leaving_environment_is_evicted_first_to_make_room(fake_pool: MakePool) -> None:
    pool, _ = fake_pool()
    (idle,) = await serve(pool, 1)
    pool.release(idle)
    pool.retire(replaced=True)
    pool.evict(idle)
    assert idle.killed == "shut down" and not pool.leaving and pool.empty


async def test_evictable_lists_idle_on_demand_environments_only(fake_pool: MakePool) -> None:
    pool, _ = fake_pool()
    pool.set_provisioned_target(1)
    await pool.ensure_provisioned()
    warm, a, b = await serve(pool, 3)
    for env in (warm, a, b):
        pool.release(env)
    assert pool.evictable() == [a, b]
    pool.evict(a)
    assert a.killed == "shut down" and pool.evictable() == [b]
    assert (await pool.acquire())[0] is warm


async def test_no_room_on_the_node_throttles_before_forking(fake_pool: MakePool) -> None:
    def full(pool: Any) -> None:
        raise TooManyRequestsException("no room", "ReservedFunctionConcurrentInvocationLimitExceeded")

    pool, zygote = fake_pool(make_room=full)
    with pytest.raises(TooManyRequestsException):
        await pool.acquire()
    assert zygote.forked == [] and pool.spawning == 0


async def test_a_shared_environment_takes_invocations_while_it_has_free_slots(fake_pool: MakePool) -> None:
    pool, _ = fake_pool(max_concurrency=2)
    (a, cold_a), (b, cold_b), (c, cold_c) = [await pool.acquire() for _ in range(3)]
    assert a is b and cold_a and not cold_b and c is not a and cold_c
    assert (a.load, c.load) == (2, 1)
    assert counts(pool.census()) == (0, 0, 2, 3)
    pool.release(c)
    assert counts(pool.census()) == (0, 1, 1, 2)
    assert pool.evictable() == [c]
    assert (await pool.acquire())[0] is c  # the newest with a free slot
    for env in (a, a, c):
        pool.release(env)
    assert counts(pool.census()) == (0, 2, 0, 0)
    pool.retire(replaced=True)
    assert counts(pool.census()) == (0, 2, 0, 0)  # leaving: still idle
    await asyncio.sleep(RETIRE_GRACE + 0.05)
    assert a.killed == c.killed == "shut down" and pool.empty


async def test_a_shared_environment_in_use_when_retired_is_shut_after_its_last_invocation(
    fake_pool: MakePool,
) -> None:
    pool, _ = fake_pool(max_concurrency=2)
    env, _ = await pool.acquire()
    await pool.acquire()
    pool.retire()
    pool.release(env)
    assert env.killed is None
    pool.release(env)
    assert env.killed == "shut down"


async def test_shared_provisioned_environments_are_trimmed_when_idle(fake_pool: MakePool) -> None:
    pool, _ = fake_pool(max_concurrency=2)
    pool.set_provisioned_target(2)
    await pool.ensure_provisioned()
    first, second = pool.shared
    busy, _ = await pool.acquire()
    assert busy is second  # the newest with a free slot
    pool.set_provisioned_target(1)
    assert first.killed == "shut down" and second.killed is None
    pool.set_provisioned_target(0)
    pool.release(busy)  # its last invocation ended: surplus
    assert busy.killed == "shut down" and pool.provisioned_available == 0


async def test_the_census_counts_environments_by_state(fake_pool: MakePool) -> None:
    pool, zygote = fake_pool()
    pool.set_provisioned_target(2)
    await pool.ensure_provisioned()
    busy, spare, idle, crashed = await serve(pool, 4)  # the two provisioned ones first
    assert busy.provisioned and spare.provisioned and not idle.provisioned
    zygote.hold = asyncio.Event()
    starting = asyncio.get_running_loop().create_task(pool.acquire())  # nothing idle: a cold start, Init held
    while len(zygote.forked) < 5:
        await asyncio.sleep(0)
    pool.release(spare)
    pool.release(idle)
    crashed.kill("crashed")  # busy and dead: not counted
    # one initializing (for an invocation: it counts as an execution), two idle, one busy; both provisioned allocated
    assert pool.census() == PoolCensus("f", "1", 1, 2, 1, 2, 2, 1, True)
    zygote.hold.set()
    started, cold = await starting
    assert cold and started.ready
    for env in (started, crashed, busy):
        pool.release(env)
    assert counts(pool.census()) == (0, 4, 0, 0)


# -- the node's memory across pools (PoolManager.make_room) and retirement ---------------------------------------


def _manager(tmp_path: Path, budget_mb: int) -> tuple[PoolManager, Callable[[str], FunctionConfig]]:
    def config(name: str) -> FunctionConfig:
        return fake_config(tmp_path, name, LATEST)  # type: ignore[no-any-return]

    settings = Settings(data_dir=tmp_path, memory_budget_mb=budget_mb)
    return PoolManager(settings, {RUNTIME: FakeZygoteClient()}), config  # type: ignore[dict-item]


async def test_room_is_made_by_evicting_a_replaced_pools_leaving_environment_first(
    fake_pool: MakePool, tmp_path: Path
) -> None:
    pools, config = _manager(tmp_path, budget_mb=256)
    g_env, _ = await pools.pool_for(config("g")).acquire()
    pools.pool_for(config("g")).release(g_env)
    old_f = pools.pool_for(config("f"))
    f_env, _ = await old_f.acquire()
    old_f.release(f_env)  # used after g's: plain LRU would evict g's
    pools.retire_function("f", LATEST, replaced=True)  # UpdateFunctionCode
    assert old_f.leaving == {f_env}
    _, cold = await pools.pool_for(config("f")).acquire()  # the node is full: room for one more
    assert cold and f_env.killed == "shut down" and g_env.killed is None


async def test_a_delete_right_after_an_update_shuts_the_leaving_environments_at_once(
    fake_pool: MakePool, tmp_path: Path
) -> None:
    pools, config = _manager(tmp_path, budget_mb=1024)
    old_f = pools.pool_for(config("f"))
    f_env, _ = await old_f.acquire()
    old_f.release(f_env)
    pools.retire_function("f", LATEST, replaced=True)
    assert f_env.killed is None
    pools.retire_function("f")  # DeleteFunction within RETIRE_GRACE
    assert f_env.killed == "shut down" and not old_f.leaving


async def test_a_functions_pools_share_one_brake_on_set_up_failures(fake_pool: MakePool, tmp_path: Path) -> None:
    """A replaced pool's successor keeps the brake (and its once-a-minute log line); a deleted function's goes."""
    pools, config = _manager(tmp_path, budget_mb=1024)
    first = pools.pool_for(config("f"))
    pools.retire_function("f", LATEST, replaced=True)
    second = pools.pool_for(config("f"))
    assert second is not first and second.setup_failures is first.setup_failures
    assert pools.pool_for(config("g")).setup_failures is not first.setup_failures
    pools.retire_function("f")
    assert pools.pool_for(config("f")).setup_failures is not first.setup_failures
