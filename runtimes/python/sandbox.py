"""An environment's sandbox, set up in the forked child before any of the function's code: `prepare()` what needs no
spec (in a spare, ahead of demand), then `Prepared.seal()` what the spec decides (limits, mounts, uid), just before
Init. The zygote decided once how much isolation the host allows (runtimes/python/isolation.py); a step that fails
here ends the process with ExitCode.SANDBOX_FAILED: no user code runs in a half-built sandbox.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import sys
from typing import Any, NoReturn

from gateway.contracts.environment import EnvironmentSpec
from gateway.contracts.zygote import MOUNT_FAILED_LINE, SANDBOX_FAILED_LINE, ExitCode
from gateway.isolation import cgroups, uids
from runtimes.python import jail, seccomp
from runtimes.python.file_systems import MountFailed
from runtimes.python.isolation import Isolation
from runtimes.python.jail import PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG, _libc, private_tmp_mount
from runtimes.python.output import OutputCapture

ENV_LIMITS = {resource.RLIMIT_NOFILE: 1024, resource.RLIMIT_NPROC: 1024}
#: without a jail: CPU seconds a process the handler started may use before the kernel ends it (a backstop)
CPU_BACKSTOP_SECONDS = 3600
#: without a jail: address space beyond MemorySize (a process maps much more than it uses)
AS_HEADROOM_MB = 1024


def _failed(exc: BaseException) -> NoReturn:
    if isinstance(exc, MountFailed):  # Invoke answers EFSMountFailureException (gateway/execution/failures.py)
        sys.stderr.write(MOUNT_FAILED_LINE.decode() + f"{exc}\n")
        os._exit(ExitCode.MOUNT_FAILED)
    sys.stderr.write(SANDBOX_FAILED_LINE.decode() + f"{exc}\n")
    os._exit(ExitCode.SANDBOX_FAILED)


class Prepared:
    """What `prepare()` set up: the environment's directory, its /tmp as the function will see it, its output,
    and what `seal()` still has to do once the spec is known."""

    def __init__(self, env_dir: str, tmp_dir: str, capture: OutputCapture, zygote_pid: int, uid: int | None) -> None:
        self.env_dir = env_dir
        self.tmp_dir = tmp_dir
        self.capture = capture
        self.zygote_pid = zygote_pid
        self.uid = uid  # the jail's uid; None: no jail
        self.cgroup_version = 0
        self.cgroup_fds: dict[str, int] = {}
        self.seccomp: seccomp.Filter | None = None

    def seal(self, spec: EnvironmentSpec) -> None:
        """Apply the limits and mounts that depend on the function's configuration; in a jail, drop root. Runs
        before any of the function's code, and ends the process if any step fails."""
        try:
            if self.cgroup_fds:
                cgroups.limit(self.cgroup_version, self.cgroup_fds, spec.memory_size)
            if spec.file_systems and self.uid is None:  # the gateway asks only a jail (gateway/execution/spec.py)
                raise MountFailed(errno.EPERM, "a file system is mounted only in a jail, and this environment has none")
            if self.uid is not None:
                jail.seal(
                    spec.mounts, spec.ephemeral_storage, spec.network, self.uid, self.zygote_pid, spec.file_systems
                )
                jail.runtime_on_path()
            limits = rlimits_for(spec.memory_size, spec.ephemeral_storage, self.uid is not None, bool(spec.bootstrap))
            for limit, (soft, hard) in limits.items():
                resource.setrlimit(limit, (soft, hard))
            if self.uid is None:
                signal.signal(signal.SIGXCPU, _extend_cpu_backstop)
            if self.seccomp is not None:  # last: the steps above mount and unshare (see runtimes/python/seccomp.py)
                self.seccomp.load()
        except (OSError, ValueError) as exc:
            _failed(exc)


def rlimits_for(memory_mb: int, tmp_mb: int, jailed: bool, exec_runtime: bool = False) -> dict[int, tuple[int, int]]:
    """Limits set once the configuration is known. Always: the size of any one file written (EphemeralStorage; output
    goes down a pipe, which this does not limit). Without a jail, which has cgroups and a /tmp of that size, the limits
    that stand in for them (a weaker guarantee, see SECURITY.md): address space (MemoryError rather than an OOM kill;
    the headroom is for what a process maps but does not use: thread stacks, malloc arenas), and CPU time as a
    backstop for the processes a handler starts, which the gateway's timeout may not reach (the environment itself
    extends its own limit on SIGXCPU). A runtime the environment executes (`exec_runtime`: Go, Node.js, ... through
    the Runtime API proxy) reserves gigabytes of address space it never uses (Go's heap arenas, V8's pointer cage)
    and cannot start under that limit: it gets the same figure as RLIMIT_DATA instead, which counts the writable
    private memory it maps, not its inaccessible reservations."""
    limits = {resource.RLIMIT_FSIZE: (tmp_mb * 1024 * 1024,) * 2}
    if not jailed:
        memory = resource.RLIMIT_DATA if exec_runtime else resource.RLIMIT_AS
        limits[memory] = ((memory_mb + AS_HEADROOM_MB) * 1024 * 1024,) * 2
        limits[resource.RLIMIT_CPU] = (CPU_BACKSTOP_SECONDS, resource.RLIM_INFINITY)
    return limits


def _extend_cpu_backstop(signum: int, frame: Any) -> None:
    """SIGXCPU: the environment has used CPU_BACKSTOP_SECONDS more; it lives on (the gateway times invocations)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (soft + CPU_BACKSTOP_SECONDS, hard))


def prepare(zygote_pid: int, env_dir: str, output_fd: int, isolation: Isolation, connect: bool = True) -> Prepared:
    """The part of an environment's set-up that needs no spec, done ahead of demand in a spare child of the
    zygote: own session and process group, death with the zygote, no new privileges, batch scheduling (a woken
    environment never preempts the gateway), rlimits, its directory (`env_dir`), fds 1 and 2 on `output_fd` (the
    write end of the output pipe whose read end the gateway holds), its own cgroups and, with
    `isolation.jail_expose`, its jail (sealed later, with its uid); or without a jail, `tmp/` under `env_dir`
    bind-mounted at /tmp in a private mount namespace when `isolation.private_tmp`; then the first part of the
    seccomp filter. A jail's network namespace is connected to the gateway's bridge unless not `connect` (the spec,
    known already, says GATEWAY_NETWORK=none: no veth pair to make and remove)."""
    os.setsid()
    if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != zygote_pid:
        os._exit(ExitCode.FAILED)  # the zygote died meanwhile
    # Nothing the function runs may gain privileges: setuid binaries and file capabilities are ignored from here.
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        os._exit(ExitCode.FAILED)
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError:  # a policy this host does not allow: the default one does, at some cost to the gateway
        pass
    for limit, value in ENV_LIMITS.items():
        try:
            resource.setrlimit(limit, (value, value))
        except (ValueError, OSError):
            pass
    os.makedirs(env_dir, mode=0o700, exist_ok=True)
    capture = OutputCapture(output_fd)
    prepared = Prepared(env_dir, os.path.join(env_dir, "tmp"), capture, zygote_pid, None)
    try:
        if isolation.cgroups is not None:
            prepared.cgroup_version = isolation.cgroups.version
            prepared.cgroup_fds = cgroups.join(isolation.cgroups, os.path.basename(env_dir), env_dir)
        if isolation.jail_expose is not None:
            # Ahead of demand: a uid of its own (isolation/uids.py), cleared of every process by a thread, and if one
            # of its processes would not go (a zombie nobody reaps), the next free one. Before the jail is built, not
            # while: its namespaces, the uid drop and the seccomp filter want a process with one thread (overlapping
            # them, about one spare in 200 aborted).
            uid = uids.allocate(isolation.uids)
            uids.record(env_dir, uid)
            jail.build(env_dir, isolation.jail_expose, network_slot=isolation.network if connect else None)
            prepared.tmp_dir, prepared.uid = "/tmp", uid
            jail.name_user(uid)
    except OSError as exc:
        _failed(exc)
    if prepared.uid is None:
        os.makedirs(prepared.tmp_dir, mode=0o700, exist_ok=True)
        if isolation.private_tmp and private_tmp_mount(prepared.tmp_dir):
            prepared.tmp_dir = "/tmp"
    if isolation.seccomp is not None:  # most of the filter, ahead of demand: nothing from here on needs those calls
        early, prepared.seccomp = isolation.seccomp
        try:
            early.load()
        except OSError as exc:
            _failed(exc)
    return prepared
