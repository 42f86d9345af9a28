"""How the zygote isolates its environments: the gateway's plan, less what this host refuses, probed once at start.

`decide()` runs in the zygote before it serves (gateway/contracts/zygote.py's `SandboxPlan` in, an `Isolation` out):
each probe forks a throwaway child that tries one thing (a jail, a private /tmp, the seccomp filter) and dies with
whatever it changed. Every environment is then set up the same way (runtimes/python/sandbox.py), and the zygote's
HELLO says what they get (`Isolation.features`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable

from gateway.contracts.zygote import Features, SandboxPlan
from gateway.isolation import uids
from gateway.isolation.cgroups import Hierarchy
from gateway.isolation.uids import UidRange
from runtimes.python import jail, seccomp


class Isolation:
    """How the zygote isolates every environment, decided once at its start (see gateway/isolation/sandbox.py).

    `jail_expose` (the directories of the interpreter and runtime): each environment gets a jail (its own root
    filesystem and uid, runtimes/python/jail.py); None: rlimits only, and a private /tmp when `private_tmp`.
    `cgroups`: each environment gets its own groups (isolation/cgroups.py), or None. A jailed environment's uid and gid
    come from `uids` (gateway/isolation/uids.py): no other process has it, whichever zygote or gateway forked them.
    A jailed environment has its own network namespace: connected to the gateway's bridge in slot `network`
    (gateway/isolation/network.py), or with only lo when None.
    `seccomp`: the two parts of the seccomp filter (runtimes/python/seccomp.py), or None: the first installed once
    the spare's jail is built, the second (the calls that set-up makes) last, before Init.
    """

    def __init__(
        self,
        private_tmp: bool,
        jail_expose: list[str] | None,
        cgroups: Hierarchy | None,
        uids: UidRange,
        network: int | None = None,
    ) -> None:
        self.private_tmp = private_tmp
        self.jail_expose = jail_expose
        self.cgroups = cgroups
        self.uids = uids
        self.network = network
        self.seccomp: tuple[seccomp.Filter, seccomp.Filter] | None = None

    def features(self) -> Features:
        """What the zygote's HELLO tells the gateway."""
        jailed = self.jail_expose is not None
        return Features(private_tmp=self.private_tmp or jailed, jail=jailed, seccomp=self.seccomp is not None)


def decide(plan: SandboxPlan, envs_root: str) -> Isolation:
    """The strongest isolation of `plan` this host gives environments made under `envs_root`. Blocking (forks)."""
    uid_range = UidRange.from_wire(plan.uids)
    hierarchy = Hierarchy.from_wire(plan.cgroups) if plan.cgroups else None
    expose = _jail_expose(os.path.dirname(envs_root)) if plan.jail else None
    if expose is not None and not _probe_jail(expose, envs_root, uid_range):
        expose = None
    # Bind /tmp only where that cannot hide the code: it lives in the same data directory as the environments.
    bind_tmp = expose is None and _probe_private_tmp() and not jail.under_tmp(envs_root)
    isolation = Isolation(bind_tmp, expose, hierarchy, uid_range, plan.network)
    isolation.seccomp = _seccomp_filters()
    return isolation


def _probe_private_tmp() -> bool:
    """Can a forked environment get a private /tmp (a mount namespace)? Tried once, in a throwaway child.

    Not when the interpreter or the runtime itself lives under /tmp: the private /tmp would hide them.
    """
    import tempfile

    if any(jail.under_tmp(p) for p in (*sys.path, sys.prefix, sys.exec_prefix)):
        return False
    probe_dir = tempfile.mkdtemp(prefix="gateway-probe-")
    try:
        return _in_child(lambda: jail.private_tmp_mount(probe_dir))
    finally:
        os.rmdir(probe_dir)


def _jail_expose(data_dir: str) -> list[str]:
    """What a jailed environment needs to see of the host besides the system: the interpreter (sys.base_prefix, and
    sys.prefix: the same under -S); the runtime's own packages (`runtimes`, and of `gateway` only `contracts` and
    `isolation`: every module of theirs, new ones too, not the tree they live in); its packages (jail.RUNTIME_DIRS:
    msgpack, boto3 ..., at their host path too, where the zygote imported msgpack from). Outermost directories only,
    and none that holds the data directory or lies in it. Not a virtual environment's site-packages: the runtime
    runs without them."""
    import gateway

    # of the gateway, only what the runtime imports (tests/test_architecture.py's RUNTIME_MAY_IMPORT): not its server
    package = os.path.dirname(gateway.__file__)
    runtime = (
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        os.path.join(package, "contracts"),
        os.path.join(package, "isolation"),
    )
    candidates = (sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix, *runtime, *jail.RUNTIME_DIRS)
    wanted = {os.path.realpath(p) for p in candidates if p and os.path.isdir(p)}
    data = os.path.realpath(data_dir)

    def clashes(path: str) -> bool:
        return data == path or data.startswith(path + os.sep) or path.startswith(data + os.sep)

    kept = sorted(p for p in wanted if not clashes(p))
    return [p for p in kept if not any(p.startswith(q + os.sep) for q in kept if q != p)]


def _probe_jail(expose: list[str], envs_root: str, uid_range: UidRange) -> bool:
    """Can a forked environment be jailed (a uid of its own, mount, IPC and network namespaces, new root)? Tried once,
    in a throwaway child, which must then see the interpreter and not the data directory."""
    probe_dir = os.path.join(envs_root, f"probe-{os.getpid()}")
    data_dir = os.path.dirname(envs_root)

    def attempt() -> bool:
        uid = uids.allocate(uid_range)
        jail.build(probe_dir, expose, uid)
        jail.seal([], 1, False, uid, os.getppid())
        return os.getuid() == uid and os.path.isdir(sys.base_prefix) and not os.path.exists(data_dir)

    try:
        return _in_child(attempt)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(probe_dir, "root"))
            os.rmdir(probe_dir)


def _seccomp_filters() -> tuple[seccomp.Filter, seccomp.Filter] | None:
    """The environments' seccomp filter, compiled once here, in its two parts (runtimes/python/seccomp.py); None
    where libseccomp or the kernel cannot give it (tried in a throwaway child, which must then be refused a user
    namespace and a mount)."""
    try:
        early, late = (seccomp.Filter(program) for program in seccomp.compile_filters())
    except (ImportError, OSError, ValueError, RuntimeError) as exc:  # pyseccomp raises RuntimeError without the .so
        sys.stderr.write(f"no seccomp filter for environments: {exc}\n")
        return None

    def attempt() -> bool:
        if jail._libc.prctl(jail.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return False
        early.load()
        late.load()
        refused = jail._libc.unshare(seccomp.CLONE_NEWUSER) != 0
        return bool(refused and jail._libc.mount(b"none", b"/", b"tmpfs", 0, None) != 0)

    return (early, late) if _in_child(attempt) else None


def _in_child(attempt: Callable[[], bool]) -> bool:
    """Run `attempt()` in a forked child (whatever it changes about the process dies with it); its result."""
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(0 if attempt() else 1)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
