"""How environments are isolated: the strongest way this host allows, chosen once at start-up.

- "jail" (the gateway runs as root): every environment has its own root filesystem (the system, the interpreter
  and its function's code, read-only; its own /tmp of EphemeralStorage MB; nothing of the data directory, the
  registry, other functions or the gateway), its own uid and gid (gateway/uids.py: never one that another process
  has), `no_new_privs`, and its own cgroups when a hierarchy is writable: memory limit = MemorySize (the kernel's
  OOM killer ends it, reported as Runtime.OutOfMemory), at most 1024 processes and threads, CPU weight proportional
  to memory.
  See runtimes/python/jail.py and gateway/cgroups.py.
- "rlimits" (not root, or asked for with GATEWAY_SANDBOX=rlimits): the environment runs as the gateway's user,
  with limits on its address space (MemoryError instead of an OOM kill), CPU time (a backstop), the size of a file,
  open files and processes. A weaker guarantee: it can read what the gateway's user can read.

The zygote gets the plan (`to_wire`), tries the jail once in a throwaway child and falls back to rlimits if the
host refuses it (its HELLO says which it uses).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from gateway.cgroups import Hierarchy
from gateway.uids import UidRange, activate

log = logging.getLogger("gateway.sandbox")


@dataclass(frozen=True)
class Sandbox:
    jail: bool
    cgroups: Hierarchy | None
    #: where a jailed environment's uid (and gid) comes from: see gateway/uids.py
    uids: UidRange = field(default_factory=UidRange)

    @classmethod
    def choose(cls, mode: str, uids: UidRange | None = None) -> Sandbox:
        """The strongest sandbox allowed: a jail (and cgroups where writable) as root, unless `mode` is "rlimits".
        Blocking (making the cgroups sweeps those of dead gateways)."""
        if mode == "rlimits" or os.geteuid() != 0:
            return cls(jail=False, cgroups=None)
        sandbox = cls(jail=True, cgroups=Hierarchy.create(), uids=uids or UidRange())
        activate(sandbox.uids)  # the gateway's clean-ups kill the uids of ended environments in this range
        return sandbox

    def to_wire(self) -> dict[str, Any]:
        """The plan as the zygote takes it (`--sandbox`, JSON)."""
        return {
            "jail": self.jail,
            "uids": self.uids.to_wire(),
            "cgroups": self.cgroups.to_wire() if self.cgroups is not None else None,
        }

    def describe(self, jailed: bool) -> dict[str, Any]:
        """What /healthz reports, given whether the zygote could set up the jail (`jailed`)."""
        cgroups = self.cgroups.describe() if self.cgroups is not None else None
        if jailed:
            limits = ["memory", "pids", "cpu weight"] if cgroups else ["open files", "processes"]
            return {"mode": "jail", "uid": "one per environment", "cgroups": cgroups, "limits": limits}
        return {
            "mode": "rlimits",
            "uid": "the gateway's (root)" if os.geteuid() == 0 else "the gateway's",
            "cgroups": cgroups,
            "limits": ["address space", "cpu time", "file size", "open files", "processes"],
        }

    def warn_if_weaker(self, jailed: bool) -> None:
        """Log loudly when the zygote could not set up the jail it was asked for: functions then run as root."""
        if self.jail and not jailed:
            log.warning(
                "this host refused the jail (mount, IPC or network namespace, pivot_root, or the uid change): "
                "functions run as root with rlimits only, and can read everything the gateway can"
            )

    def close(self) -> None:
        if self.cgroups is not None:
            self.cgroups.close()
