"""Uids for jailed environments: handed out in sequence from a large range, never while any process has one.

A jailed environment runs as a uid of its own (runtimes/python/jail.py), and a uid is all the kernel looks at when a
process asks to read another's /proc/<pid>/environ, to ptrace it or to signal it. So a uid must never be shared by
two environments, nor by an environment and a process another environment left behind (a daemon that outlived its
function). The allocator guarantees it host-wide, whichever gateway or zygote asks, and across gateway restarts:

- **Sequence, host-wide.** Uids come from `[base, base + count)` (GATEWAY_UID_BASE, GATEWAY_UID_COUNT; by default
  100 million uids from 1,900,000,000) in order, wrapping around. The last uid handed out is kept in a state file,
  `/run/lambda-gateway/uids-<base>-<count>`, read and advanced under `flock(LOCK_EX)`: two gateways on one host, a
  restarted gateway (even after a SIGKILL) and every spare of every zygote share one counter, so a uid comes back
  only after `count` others were handed out. /run is a tmpfs: the counter starts again at a reboot, which no process
  survives either. Gateways on one host must use the same range or disjoint ones.
- **Cleared before use.** Before a uid is handed out, a throwaway thread takes it (the raw `setresuid` syscall: that
  thread only) and calls `kill(-1, SIGKILL)`. The kernel signals every process whose real or saved uid it is, in this
  PID namespace and those below it, undumpable ones included (/proc ownership is not what counts), and the processes
  of user namespaces the uid created. It walks its task list under a lock that `fork` also takes, and a process with
  a fatal signal pending cannot complete a fork, so nothing of the uid escapes by forking. The thread then checks,
  from the kernel's count of the uid's tasks (RLIMIT_NPROC, see `_kill_all`), that it is the uid's only task, killing
  again until it is. A uid whose processes do not go within CLEAR_TIMEOUT (a zombie whose parent never reaps it, a
  process stuck in the kernel) is skipped: a uid is never handed out while any process, even a zombie, has it.
- **Ahead of demand.** A spare takes and clears its uid in `prepare` (runtimes/python/sandbox.py) while it builds its
  jail, so a cold start that finds a spare pays nothing for it, and the spare about 0.2 ms (a thread, a walk of the
  task list).
- **Killed at the end.** The spare records its uid in its directory (`<env_dir>/uid`, written as root and hidden by
  the jail). When an environment ends, the gateway removes its cgroups with everything in them (a jailed process
  cannot leave them), or, on a host without cgroups, kills every process of its uid (`kill_recorded`, a /proc scan:
  about 0.1 ms per process on the host). A zygote whose gateway died kills every recorded uid
  (runtimes/python/forkserver.py).

A range smaller than the number of environments alive at once would clear (kill) live environments; the default is
far beyond that. Tests shrink it to force reuse.
"""

from __future__ import annotations

import _thread
import contextlib
import ctypes
import errno
import fcntl
import os
import resource
import signal
import time
from dataclasses import dataclass
from typing import Any

#: where the counters live: a tmpfs shared by every gateway on the host
STATE_DIR = "/run/lambda-gateway"
BASE = 1_900_000_000
COUNT = 100_000_000
#: uids are 32 bits and (uid_t)-1 means "unchanged": the highest one a range may reach
MAX_UID = 2**32 - 2
#: seconds the processes of a uid get to die before the uid is skipped
CLEAR_TIMEOUT = 0.5
#: uids tried (and skipped) before an allocation gives up
MAX_SKIPS = 64
#: the file in an environment's directory that names its uid
RECORD = "uid"
#: setresuid(2)'s number, to change the uid of one thread only
SYS_SETRESUID = {"x86_64": 117, "aarch64": 147}.get(os.uname().machine)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class UidError(OSError):
    """No uid could be allocated (the state file is not writable, or every uid tried kept a process)."""


@dataclass(frozen=True)
class UidRange:
    """The uids jailed environments get, and where their counter is kept."""

    base: int = BASE
    count: int = COUNT
    state_dir: str = STATE_DIR

    def __post_init__(self) -> None:
        if self.base < 65536 or self.count < 1 or self.base + self.count - 1 > MAX_UID:
            raise ValueError(f"uid range [{self.base}, {self.base + self.count}) must lie in [65536, {MAX_UID}]")

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, int) and self.base <= uid < self.base + self.count

    @property
    def state_file(self) -> str:
        return os.path.join(self.state_dir, f"uids-{self.base}-{self.count}")

    def to_wire(self) -> dict[str, Any]:
        return {"base": self.base, "count": self.count, "state_dir": self.state_dir}

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> UidRange:
        return cls(int(wire["base"]), int(wire["count"]), str(wire["state_dir"]))


def allocate(uids: UidRange) -> int:
    """A uid of `uids` that no process has, taken from the host-wide sequence; every process it had is killed.
    Root only; blocking (up to CLEAR_TIMEOUT per uid that keeps a process). Raises UidError."""
    for _ in range(min(MAX_SKIPS, uids.count)):
        uid = take(uids)
        if clear(uid):
            return uid
    raise UidError(errno.EAGAIN, f"no free uid in [{uids.base}, {uids.base + uids.count}) after {MAX_SKIPS} tries")


def take(uids: UidRange) -> int:
    """The next uid of the sequence, not yet cleared: read, advance and write the counter under an exclusive lock."""
    try:
        try:
            fd = os.open(uids.state_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:  # the first allocation on this host since it booted
            os.makedirs(uids.state_dir, mode=0o700, exist_ok=True)
            fd = os.open(uids.state_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise UidError(exc.errno, f"uid state {uids.state_file}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        text = os.pread(fd, 64, 0).strip()
        last = int(text) if text.isdigit() else uids.base - 1
        uid = last + 1 if uids.base <= last + 1 < uids.base + uids.count else uids.base
        data = b"%d\n" % uid
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        return uid
    finally:
        os.close(fd)  # and with it the lock


def clear(uid: int, timeout: float = CLEAR_TIMEOUT) -> bool:
    """Kill every process whose real or saved uid is `uid` (see the module's docstring); whether none is left.
    Root only. Blocking; not for two threads at once (see Clearing)."""
    return start_clear(uid, timeout).finish()


def start_clear(uid: int, timeout: float = CLEAR_TIMEOUT) -> Clearing:
    """Start `clear(uid)` in a thread of this process; `finish()` on the result waits for it. The caller does other
    work meanwhile, but starts no thread and forks no child until then (see Clearing)."""
    return Clearing(uid, timeout)


class Clearing:
    """A thread that takes `uid` (its own credentials only: the raw setresuid syscall, where glibc's would change
    every thread's) and kills every process of it. A thread rather than a child: no fork of a large process, no
    wait for a new process to be scheduled. The thread never gets root back; it ends when done.

    While it runs, this process's RLIMIT_NPROC is 2 (see `_kill_all`); root's own forks ignore it, and `finish()`
    restores it. So one at a time per process, and not in a process whose other threads start children that must
    not inherit the limit (the gateway: see `kill_scan`)."""

    def __init__(self, uid: int, timeout: float) -> None:
        if SYS_SETRESUID is None:
            raise UidError(errno.ENOSYS, f"no setresuid syscall number for {os.uname().machine}")
        self._syscall = SYS_SETRESUID
        self.result = False
        self._limit = resource.getrlimit(resource.RLIMIT_NPROC)
        resource.setrlimit(resource.RLIMIT_NPROC, (2, self._limit[1]))
        self._done = _thread.allocate_lock()
        self._done.acquire()
        _thread.start_new_thread(self._run, (uid, timeout))  # not threading.Thread: its start() waits for the thread

    def _run(self, uid: int, timeout: float) -> None:
        try:
            arg = ctypes.c_ulong(uid)
            if _libc.syscall(ctypes.c_long(self._syscall), arg, arg, arg) == 0:
                self.result = _kill_all(timeout)
        finally:
            self._done.release()

    def finish(self) -> bool:
        """Wait for the thread, and for every thread it started, to be gone: whether its uid has no process left."""
        self._done.acquire()
        _wait_single_threaded()
        resource.setrlimit(resource.RLIMIT_NPROC, self._limit)
        return self.result


def _wait_single_threaded(timeout: float = 1.0) -> None:
    """Wait until this process has one thread again. A thread that released its lock is still exiting: the spare
    must not build its jail, drop root (glibc signals every thread to change credentials) or load its seccomp filter
    while a thread with another uid's credentials lingers (spares aborted about once in 200 when they did not)."""
    deadline = time.monotonic() + timeout
    while len(os.listdir("/proc/self/task")) > 1 and time.monotonic() < deadline:
        time.sleep(0.0001)


def _kill_all(timeout: float) -> bool:
    """As the uid: SIGKILL every process of it, then wait until none is left. The caller itself is never signalled.

    kill(-1) cannot tell whether it found anyone (it succeeds whenever any other process exists), so the count comes
    from the kernel's per-uid task count, which RLIMIT_NPROC checks at every fork and thread creation (and which
    counts zombies until they are reaped, and tasks in user namespaces the uid created): with a limit of 2, a thread
    can start only while the calling thread is the uid's only task."""
    deadline = time.monotonic() + timeout
    pause = 0.0005
    while True:
        with contextlib.suppress(ProcessLookupError):
            os.kill(-1, signal.SIGKILL)  # again on every round: a killed process is gone only once reaped
        if _alone():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.02)


def _alone() -> bool:
    """Whether a thread can start under RLIMIT_NPROC = 2 (see `_kill_all`). The probe thread is waited for: one left
    running would be a thread of the spare's with the uid's credentials while the spare goes on to build its jail,
    drop root (glibc signals every thread to change their credentials) and load its seccomp filter, and the spare
    was seen to abort (SIGABRT) about once in 200 cold starts when it did not wait."""
    done = _thread.allocate_lock()
    done.acquire()
    try:
        _thread.start_new_thread(done.release, ())
    except RuntimeError:  # "can't start new thread": EAGAIN, the uid has another task
        return False
    done.acquire()
    return True


def record(env_dir: str, uid: int) -> None:
    """Name the environment's uid in its directory (as root, before user code: the jail hides the directory)."""
    with open(os.path.join(env_dir, RECORD), "w") as f:
        f.write(str(uid))


def recorded(env_dir: str, uids: UidRange | None) -> int | None:
    """The uid an environment recorded, if it lies in `uids` (a function without a jail could write any number)."""
    try:
        with open(os.path.join(env_dir, RECORD)) as f:
            uid = int(f.read())
    except (OSError, ValueError):
        return None
    return uid if uids is not None and uid in uids else None


def kill_scan(uid: int, rounds: int = 20) -> int:
    """Kill every process of `uid` found in /proc, again until a scan finds none; how many were signalled. For the
    gateway: `clear` sets RLIMIT_NPROC for the whole process while it runs, which a gateway's concurrent clean-ups
    and the zygotes it starts must not see. /proc/<pid>/status states the uids even of undumpable processes.
    Blocking. Repeated because a process may fork while the scan passes it; cgroups and the pids limit bound how long
    that can go on."""
    wanted = str(uid)
    killed = 0
    for _ in range(rounds):
        found = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/status") as f:
                    fields = dict(line.split(":", 1) for line in f if line[:4] in ("Stat", "Uid:"))
                real, _effective, saved, _fs = fields["Uid"].split()
                if wanted in (real, saved) and not fields["State"].lstrip().startswith("Z"):  # a zombie is dead
                    os.kill(int(entry), signal.SIGKILL)
                    found += 1
            except (OSError, KeyError, ValueError):
                continue
        if not found:
            break
        killed += found
        time.sleep(0.01)
    return killed


#: the range of this gateway's jail, once Sandbox.choose picked one: what `kill_recorded` trusts
_active: UidRange | None = None


def activate(uids: UidRange | None) -> None:
    """Set the range the gateway's clean-ups trust (gateway.isolation.sandbox, at start-up)."""
    global _active
    _active = uids


def kill_recorded(env_dir: str) -> int:
    """Kill every process of the uid an ended environment recorded (see `kill_scan`). Blocking."""
    uid = recorded(env_dir, _active)
    if uid is None:
        return 0
    with contextlib.suppress(OSError):
        return kill_scan(uid)
    return 0
