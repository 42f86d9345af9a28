"""What environments leave behind, and the sweeps that remove it.

A process a handler started can outlive its environment (a process group is not a container; cgroups and the uid
allocator take care of most). Two sweeps catch the rest:

- `sweep_leftovers`, by the gateway at start-up and shutdown: processes whose mounts come from the data directory (a
  jail's code, a private /tmp), then the environments' directories;
- `sweep_orphaned`, by a zygote whose gateway died (its PDEATHSIG, or its control socket closed without a STOP):
  every process of the uids its environments recorded, the gateway's cgroups, then `sweep_leftovers`.

Both are blocking and run off the gateway's event loop (or in the zygote, which has none).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
from pathlib import Path

from gateway.isolation import uids
from gateway.isolation.cgroups import Hierarchy


def sweep_leftovers(envs_root: Path, always: bool = False) -> int:
    """Remove what environments of an earlier gateway left behind (after a SIGKILL of the gateway).

    Processes started by a handler can outlive their environment (a process group is not a container; with
    cgroups, isolation.cgroups removes them). Those whose mount namespace holds a mount from the data directory (a
    private /tmp under `envs_root`, or a jail's code) are killed; then every leftover environment directory is
    removed. The scan of /proc runs when directories are left
    over, or `always` (at shutdown, when directories may already be gone). Returns how many it killed.
    """
    killed = 0
    if envs_root.is_dir() and (always or any(envs_root.iterdir())):
        marker = " " + _path_in_mountinfo(envs_root.parent) + "/"
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/mountinfo") as f:
                    if marker not in f.read():  # the root of a bind mount of its lies in our data directory
                        continue
                os.kill(int(entry), signal.SIGKILL)
                killed += 1
            except (OSError, ProcessLookupError):
                continue
        for child in envs_root.iterdir():
            shutil.rmtree(child, ignore_errors=True)
    return killed


def _path_in_mountinfo(path: Path) -> str:
    """How `path` appears as a mount root in /proc/*/mountinfo: relative to its filesystem's root."""
    real = str(path.resolve())
    best_point, best_root = "/", "/"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            root, point = fields[3], fields[4]
            if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) > len(best_point):
                best_point, best_root = point, root
    rest = real[len(best_point) :].lstrip("/") if best_point != "/" else real.lstrip("/")
    return best_root.rstrip("/") + "/" + rest


def sweep_orphaned(envs_root: str, hierarchy: Hierarchy | None, uid_range: uids.UidRange) -> None:
    """The gateway died: nothing its environments started may outlive it. The environments themselves die with us
    (their PDEATHSIG), but a daemon a function detached (its own session, re-parented away) would live on until the
    next start: kill every process of every uid the environments recorded, then what is left in the gateway's
    cgroups (with the groups), then (without a jail) what holds a mount of the data directory, and remove the
    environments' directories. Every zygote of the gateway does it; the second finds less."""
    cleared = 0
    with contextlib.suppress(OSError):
        for name in os.listdir(envs_root):
            uid = uids.recorded(os.path.join(envs_root, name), uid_range)
            if uid is not None:
                uids.clear(uid)
                cleared += 1
    if hierarchy is not None:
        hierarchy.close()
    # without a jail: processes whose mounts come from the data directory (private /tmp), as the next start would
    sweep_leftovers(Path(envs_root), always=True)
    sys.stderr.write(f"zygote {os.getpid()}: the gateway died; killed what {cleared} environments left\n")
