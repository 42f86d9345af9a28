"""Control groups for environments: one group per environment, inside one group per gateway.

    <the gateway's own group>/lambda-gateway-<gateway pid>/<environment name>

under each of the memory, pids and cpu hierarchies, and the freezer's where it is mounted (cgroup v1), or once in
the unified hierarchy (v2). Both
sides use this module: the gateway finds a writable hierarchy (`Hierarchy.create`), the environment, still root
in its forked child, makes its own group and joins it (`join`) before any user code, then sets its limits when
it learns its configuration (`limit`); the gateway reads how it ended (`out_of_memory`) and removes it
(`remove`, which first kills whatever is left in it: processes a handler started and detached).

An environment records its groups in `<env_dir>/cgroups` (written while it is still root, before user code runs),
so whoever removes the directory can remove the groups too. A jail hides that file from user code; without one,
user code could rewrite it, so the gateway acts only on groups directly under its own (`recorded`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

CONTROLLERS = ("memory", "pids", "cpu")
#: v1 controllers used where mounted, not required: the freezer (v2 has cgroup.freeze in every group)
OPTIONAL = ("freezer",)
#: per version: the file that freezes a group, and what to write to freeze and to thaw it
FREEZE_FILES = {1: ("freezer", "freezer.state", b"FROZEN", b"THAWED"), 2: ("", "cgroup.freeze", b"1", b"0")}
#: Lambda's per-environment limit on processes and threads
PIDS_MAX = 1024
#: MemorySize that buys one full vCPU on Lambda; CPU weight is proportional to memory on that scale
MB_PER_VCPU = 1769
RECORD = "cgroups"
#: an empty, frozen group next to the environments' (v1): see _anchor
ANCHOR = "frozen-anchor"
#: a gateway's group is this plus its pid
INSTANCE_PREFIX = "lambda-gateway-"


@dataclass(frozen=True)
class Hierarchy:
    """Where this gateway's environment groups go: `parents` maps each controller to this gateway's group
    (v2: the one group, under the key "")."""

    version: int
    parents: dict[str, str]

    @classmethod
    def create(cls) -> Hierarchy | None:
        """Make this gateway's group in a hierarchy we can write to (v2 preferred, then v1); None if there is
        none (not root, no delegation, controllers missing). Stale groups of dead gateways are removed first.
        Blocking (the sweep waits for kills)."""
        for make in (_create_v2, _create_v1):
            try:
                parents = make(_instance_name())
            except OSError:
                continue
            if parents is not None:
                return cls(2 if "" in parents else 1, parents)
        return None

    def to_wire(self) -> dict[str, Any]:
        return {"version": self.version, "parents": self.parents}

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> Hierarchy:
        return cls(int(wire["version"]), {str(k): str(v) for k, v in wire["parents"].items()})

    def describe(self) -> str:
        return f"cgroup v{self.version}"

    @property
    def can_freeze(self) -> bool:
        """Whether environments' groups can be frozen (v1: the freezer is mounted; v2: Linux 5.2 or later)."""
        controller, name, _, _ = FREEZE_FILES[self.version]
        parent = self.parents.get(controller)
        return parent is not None and os.path.exists(os.path.join(parent, name))

    def freeze_file(self, environment: str) -> str | None:
        """The file that freezes the group of the environment named `environment`, if there is one."""
        controller, name, _, _ = FREEZE_FILES[self.version]
        parent = self.parents.get(controller)
        return os.path.join(parent, environment, name) if parent is not None else None

    def close(self) -> None:
        """Remove this gateway's groups (at shutdown, once its environments are gone)."""
        for parent in self.parents.values():
            _remove_tree(parent)


def _instance_name() -> str:
    """This gateway's group, under the group it runs in."""
    return f"{INSTANCE_PREFIX}{os.getpid()}"


def _own_groups() -> dict[str, str]:
    """This process's group per controller ("" for the unified hierarchy), from /proc/self/cgroup."""
    groups: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                groups[controller] = path
    return groups


def _mounts() -> dict[str, tuple[str, str]]:
    """Mounted hierarchies: controller ("" for v2) -> (mount point, the group at its root), from mountinfo."""
    mounts: dict[str, tuple[str, str]] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fstype, options = fields[sep + 1], fields[sep + 3].split(",")
            root, point = fields[3], fields[4].replace("\\040", " ")
            if fstype == "cgroup2":
                mounts.setdefault("", (point, root))
            elif fstype == "cgroup":
                for option in options:
                    if option in CONTROLLERS or option in OPTIONAL:
                        mounts.setdefault(option, (point, root))
    return mounts


def _group_dir(mount: tuple[str, str], group: str) -> str:
    point, root = mount
    relative = group[len(root) :] if root != "/" and group.startswith(root) else group
    return os.path.join(point, relative.lstrip("/"))


def _create_v1(name: str) -> dict[str, str] | None:
    mounts, own = _mounts(), _own_groups()
    if not all(c in mounts and c in own for c in CONTROLLERS):
        return None
    parents = {}
    # the freezer first: removals go in this order, and a process in a frozen v1 group dies only once thawed
    for controller in (*(c for c in OPTIONAL if c in mounts and c in own), *CONTROLLERS):
        base = _group_dir(mounts[controller], own[controller])
        _sweep_stale(base)
        parents[controller] = os.path.join(base, name)
    for parent in parents.values():
        os.makedirs(parent, exist_ok=True)
    if "freezer" in parents:
        _anchor(parents["freezer"])
    return parents


def _anchor(parent: str) -> None:
    """Keep an empty group frozen under `parent` for the gateway's life. While no group at all is frozen, v1 turns
    the kernel's freezer off (a static key: code patched at run time), and the next freeze turns it back on: that
    made every freeze or thaw of an environment cost ~100 us instead of ~10 (measured on Linux 6.18). Best effort."""
    path = os.path.join(parent, ANCHOR)
    with contextlib.suppress(OSError):
        os.makedirs(path, exist_ok=True)
        _write(os.path.join(path, "freezer.state"), "FROZEN")


def _create_v2(name: str) -> dict[str, str] | None:
    """v2 needs the controllers delegated to our group, and our group free of processes to hand them down: when
    the gateway is alone in its group (a container, a systemd unit with Delegate=yes) it moves into a leaf."""
    mounts, own = _mounts(), _own_groups()
    if "" not in mounts or "" not in own:
        return None
    base = _group_dir(mounts[""], own[""])
    with open(os.path.join(base, "cgroup.controllers")) as f:
        if not set(CONTROLLERS) <= set(f.read().split()):
            return None
    _sweep_stale(base)
    enable = " ".join("+" + c for c in CONTROLLERS)
    try:
        _write(os.path.join(base, "cgroup.subtree_control"), enable)
    except OSError:  # processes in our group: move ourselves into a leaf and try once more
        leaf = os.path.join(base, "lambda-gateway-self")
        os.makedirs(leaf, exist_ok=True)
        _write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
        _write(os.path.join(base, "cgroup.subtree_control"), enable)
    parent = os.path.join(base, name)
    os.makedirs(parent, exist_ok=True)
    _write(os.path.join(parent, "cgroup.subtree_control"), enable)
    return {"": parent}


def _sweep_stale(base: str) -> None:
    """Remove the groups of gateways that are gone (killed with SIGKILL), with whatever still runs in them."""
    for entry in os.listdir(base):
        pid = entry.removeprefix(INSTANCE_PREFIX)
        if pid == entry or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            _remove_tree(os.path.join(base, entry))
        except PermissionError:
            continue


def _write(path: str, value: str, dir_fd: int | None = None) -> None:
    fd = os.open(path, os.O_WRONLY, dir_fd=dir_fd)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


# -- in the environment (root, before user code) ------------------------------------------------------------------


def join(hierarchy: Hierarchy, name: str, env_dir: str) -> dict[str, int]:
    """Make the environment's own groups, move this process into them and cap its processes; record them in
    `env_dir`. Returns directory descriptors of the groups by controller, for `limit` once the mounts that
    follow have hidden /sys."""
    dirs = {controller: os.path.join(parent, name) for controller, parent in hierarchy.parents.items()}
    with open(os.path.join(env_dir, RECORD), "w") as f:
        json.dump(sorted(dirs.values()), f)
    fds: dict[str, int] = {}
    for controller, path in dirs.items():
        os.mkdir(path)
        fds[controller] = fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if controller in ("pids", ""):
            _write("pids.max", str(PIDS_MAX), fd)
        _write("cgroup.procs", "0", fd)  # "0": the writing process
    return fds


def limit(version: int, fds: dict[str, int], memory_mb: int) -> None:
    """Memory limit = MemorySize (no swap beyond it), CPU weight proportional to it; closes the descriptors."""
    memory = str(memory_mb * 1024 * 1024)
    try:
        if version == 1:
            _write("memory.limit_in_bytes", memory, fds["memory"])
            with contextlib.suppress(OSError):  # only with swap accounting
                _write("memory.memsw.limit_in_bytes", memory, fds["memory"])
            _write("cpu.shares", str(max(2, 1024 * memory_mb // MB_PER_VCPU)), fds["cpu"])
        else:
            _write("memory.max", memory, fds[""])
            with contextlib.suppress(OSError):
                _write("memory.swap.max", "0", fds[""])
            _write("cpu.weight", str(min(10000, max(1, 100 * memory_mb // MB_PER_VCPU))), fds[""])
    finally:
        for fd in fds.values():
            os.close(fd)


# -- in the gateway, when an environment has ended ----------------------------------------------------------------


def kill_environment(hierarchy: Hierarchy, name: str) -> None:
    """Kill every process in the groups of the environment named `name` and thaw them (the zygote, when it exits
    with environments left: its own PDEATHSIG reaches a frozen process only once it is thawed). Best effort."""
    controller = FREEZE_FILES[hierarchy.version][0]
    parent = hierarchy.parents.get(controller) or next(iter(hierarchy.parents.values()))
    _kill_members(os.path.join(parent, name))


def recorded(env_dir: str) -> list[str]:
    """The groups an environment recorded (none without cgroups): only groups directly under this gateway's own,
    whatever else the file says (without a jail, function code could have written it)."""
    try:
        with open(os.path.join(env_dir, RECORD)) as f:
            dirs = json.load(f)
    except (OSError, ValueError):
        return []
    ours = _instance_name()
    return [
        d
        for d in dirs
        if isinstance(d, str) and os.path.isabs(d) and os.path.normpath(d) == d and _parent_name(d) == ours
    ]


def _parent_name(path: str) -> str:
    return os.path.basename(os.path.dirname(path))


def out_of_memory(env_dir: str) -> int | None:
    """If the kernel's OOM killer killed in the environment's memory group: the group's peak usage, bytes."""
    for path in recorded(env_dir):
        for events, peak in (("memory.oom_control", "memory.max_usage_in_bytes"), ("memory.events", "memory.peak")):
            try:
                with open(os.path.join(path, events)) as f:
                    counters = dict(line.split() for line in f if line.strip())
            except (OSError, ValueError):
                continue
            if int(counters.get("oom_kill", "0")) > 0:
                try:
                    with open(os.path.join(path, peak)) as f:
                        return int(f.read())
                except (OSError, ValueError):
                    return 0
    return None


def remove(env_dir: str) -> None:
    """Kill what is left in an environment's groups and remove them. Blocking (it waits for the kills)."""
    paths = recorded(env_dir)
    for path in paths:  # frozen (v1): killed processes stay until thawed, and hold every group they are in
        if os.path.exists(os.path.join(path, "freezer.state")):
            _kill_members(path)
    for path in paths:
        _remove_tree(path)


def _remove_tree(path: str, attempts: int = 50) -> None:
    """Kill every process in `path` and its sub-groups, then remove them, deepest first. Best effort."""
    for sub in sorted((root for root, _, _ in os.walk(path)), key=len, reverse=True):
        for _ in range(attempts):
            try:
                os.rmdir(sub)
                break
            except FileNotFoundError:
                break
            except OSError:  # busy: processes still in it (or dying)
                _kill_members(sub)
                time.sleep(0.01)


def _kill_members(path: str) -> None:
    """SIGKILL every process in the group `path`. A v1 freezer group is thawed after the signals: a frozen task
    acts on SIGKILL only once thawed (v2's freezer lets it through), and thawing after the signal lets no user code
    run."""
    with contextlib.suppress(OSError):
        _write(os.path.join(path, "cgroup.kill"), "1")  # v2 (Linux 5.14+): the whole group at once
        return
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            pids = [int(line) for line in f if line.strip()]
    except (OSError, ValueError):
        pids = []
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        _write(os.path.join(path, "freezer.state"), "THAWED")
