"""How environments are isolated: the strongest way this host allows, chosen once at start-up.

- "jail" (the gateway runs as root): every environment has its own root filesystem (the system, the interpreter
  and its function's code, read-only; its own /tmp of EphemeralStorage MB; nothing of the data directory, the
  registry, other functions or the gateway), its own uid and gid (isolation/uids.py: never one that another process
  has), `no_new_privs`, and its own cgroups when a hierarchy is writable: memory limit = MemorySize (the kernel's
  OOM killer ends it, reported as Runtime.OutOfMemory), at most 1024 processes and threads, CPU weight proportional
  to memory; and, with a freezer, it is frozen while idle, as Lambda freezes an environment between invocations
  (isolation/freezer.py). See runtimes/python/jail.py and isolation/cgroups.py. And its own network namespace:
  outbound to other hosts through the gateway's bridge and NAT, nothing of the host's or of other environments
  (isolation/network.py); only lo with GATEWAY_NETWORK=none, or when the host side could not be set up (fail closed).
- in both modes, where libseccomp and the kernel allow: a seccomp filter modelled on Docker's default profile
  (runtimes/python/seccomp.py).
- "rlimits" (not root, or asked for with GATEWAY_SANDBOX=rlimits): the environment runs as the gateway's user,
  with limits on its address space (MemoryError instead of an OOM kill), CPU time (a backstop), the size of a file,
  open files and processes. A weaker guarantee: it can read what the gateway's user can read.

The zygote gets the plan (`plan()`), tries the jail once in a throwaway child and falls back to rlimits if the
host refuses it (its HELLO says which it uses).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from gateway.contracts.zygote import SandboxPlan
from gateway.isolation.cgroups import Hierarchy
from gateway.isolation.freezer import FREEZE_AFTER
from gateway.isolation.network import HostNetwork
from gateway.isolation.uids import UidRange, activate

log = logging.getLogger("gateway.sandbox")

#: what /healthz says of the seccomp filter (runtimes/python/seccomp.py)
SECCOMP = "Docker's default profile as a deny list: EPERM"


@dataclass(frozen=True)
class Sandbox:
    jail: bool
    cgroups: Hierarchy | None
    #: where a jailed environment's uid (and gid) comes from: see gateway/isolation/uids.py
    uids: UidRange = field(default_factory=UidRange)
    #: jail mode: the environments' network (its `slot` None: they have none, fail closed)
    network: HostNetwork | None = None

    @staticmethod
    def may_jail(mode: str) -> bool:
        """Whether `choose(mode)` tries the jail (the host may still refuse it)."""
        return mode != "rlimits" and os.geteuid() == 0

    @classmethod
    def choose(cls, mode: str, port: int = 0, uids: UidRange | None = None) -> Sandbox:
        """The strongest sandbox allowed: a jail (and cgroups where writable, and a network per environment whose
        environment-facing listener is TCP `port`, 0: none) as root, unless `mode` is "rlimits". Blocking (making
        the cgroups and the network sweeps those of dead gateways)."""
        if not cls.may_jail(mode):
            return cls(jail=False, cgroups=None)
        uids = uids or UidRange()
        activate(uids)  # the gateway's clean-ups kill the uids of ended environments in this range
        return cls(jail=True, cgroups=Hierarchy.create(), uids=uids, network=HostNetwork.create(port))

    def plan(self) -> SandboxPlan:
        """The plan as the zygote takes it (`--sandbox`, its JSON: gateway/contracts/zygote.py)."""
        return SandboxPlan(
            jail=self.jail,
            uids=self.uids.to_wire(),
            cgroups=self.cgroups.to_wire() if self.cgroups is not None else None,
            network=self.network.to_wire() if self.network is not None else None,
        )

    @property
    def freezes(self) -> bool:
        """Whether idle environments are frozen between invocations (a jail with a freezer: isolation/freezer.py)."""
        return self.cgroups is not None and self.cgroups.can_freeze

    def describe(self, jailed: bool, seccomp: bool = False) -> dict[str, Any]:
        """What /healthz reports, given whether the zygote could set up the jail (`jailed`) and the seccomp filter
        (`seccomp`)."""
        cgroups = self.cgroups.describe() if self.cgroups is not None else None
        filtered = SECCOMP if seccomp else None
        if jailed:
            limits = ["memory", "pids", "cpu weight"] if cgroups else ["open files", "processes"]
            network = self.network.describe() if self.network is not None else {"mode": "none"}
            after = f"{FREEZE_AFTER * 1000:g}-{FREEZE_AFTER * 2000:g} ms"
            freeze = (
                f"idle environments, {after} after their last invocation ({cgroups} freezer)" if self.freezes else None
            )
            return {
                "mode": "jail",
                "uid": "one per environment",
                "cgroups": cgroups,
                "limits": limits,
                "network": network,
                "seccomp": filtered,
                "freeze": freeze,
            }
        return {
            "network": {"mode": "host", "reason": "without a jail, environments share the gateway's network"},
            "mode": "rlimits",
            "uid": "the gateway's (root)" if os.geteuid() == 0 else "the gateway's",
            "cgroups": cgroups,
            "limits": ["address space", "cpu time", "file size", "open files", "processes"],
            "seccomp": filtered,
            "freeze": None,
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
        if self.network is not None:
            self.network.close()
