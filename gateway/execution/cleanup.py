"""Removing what an environment leaves behind once it is killed: its directory, its cgroups and what still runs in
them. Off the event loop, in threads of its own."""

from __future__ import annotations

import asyncio
import shutil
from concurrent.futures import ThreadPoolExecutor

from gateway.isolation import cgroups, uids

#: removals wait for killed processes to leave their cgroups: in threads of their own, not the loop's default
#: executor, which the registry and the log store use
_CLEANUP = ThreadPoolExecutor(max_workers=2, thread_name_prefix="environment-cleanup")


def remove_later(path: str) -> None:
    """Remove an environment's directory (its private /tmp may hold up to EphemeralStorage bytes) and its cgroups,
    with whatever still runs in them (without cgroups: every process of its uid, isolation/uids.py), off the event
    loop."""
    try:
        asyncio.get_running_loop().run_in_executor(_CLEANUP, _remove, path)
    except RuntimeError:  # no running loop (interpreter shutdown): do it now
        _remove(path)


def _remove(path: str) -> None:
    if cgroups.recorded(path):
        cgroups.remove(path)  # everything the environment started: a jail cannot leave its groups
    else:  # a jail without cgroups (no writable hierarchy): its processes are those of its uid (a /proc scan)
        uids.kill_recorded(path)
    shutil.rmtree(path, ignore_errors=True)
