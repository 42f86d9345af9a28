"""The runtime process a proxy runs: its command line, its start (posix_spawn: no Python runs between fork and exec),
how its end is worded, its peak memory.

The runtime stays in the proxy's process group (the environment's: the gateway kills the group), inherits fds 1 and 2
(the environment's output pipe: what it prints reaches the gateway as the Python fast path's output does) and gets
/dev/null as stdin; every other descriptor of the proxy is close-on-exec. Signal dispositions the proxy's Python set
(SIGPIPE ignored, handlers) go back to their defaults, and no signal is blocked.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
from collections.abc import Mapping, Sequence

#: Lambda's variable: a program run with the runtime's command line as its arguments
EXEC_WRAPPER = "AWS_LAMBDA_EXEC_WRAPPER"
#: Lambda's error type for a bootstrap that cannot be run
INVALID_ENTRYPOINT = "Runtime.InvalidEntrypoint"
#: signals whose disposition the runtime gets back at their default (Python ignores SIGPIPE and SIGXFSZ, the
#: sandbox handles SIGXCPU, asyncio may handle SIGCHLD, ...)
_DEFAULT_SIGNALS = tuple(
    getattr(signal, name)
    for name in (
        "SIGPIPE",
        "SIGXFSZ",
        "SIGXCPU",
        "SIGCHLD",
        "SIGINT",
        "SIGTERM",
        "SIGHUP",
        "SIGQUIT",
        "SIGUSR1",
        "SIGUSR2",
        "SIGALRM",
    )
    if hasattr(signal, name)
)
_SIGNAL_NAMES: dict[int, str] = {
    signal.SIGKILL: "killed",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGABRT: "aborted",
    signal.SIGTERM: "terminated",
    signal.SIGBUS: "bus error",
    signal.SIGFPE: "floating point exception",
    signal.SIGILL: "illegal instruction",
    signal.SIGPIPE: "broken pipe",
}


def command(bootstrap: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """The runtime's command line: `bootstrap`, behind AWS_LAMBDA_EXEC_WRAPPER when the function sets it."""
    wrapper = env.get(EXEC_WRAPPER)
    return [wrapper, *bootstrap] if wrapper else list(bootstrap)


def spawn(argv: Sequence[str], env: Mapping[str, str], cwd: str, output: int | None = None) -> int:
    """Start the runtime: `argv` (argv[0] a path, or a name looked up on the runtime's PATH) with exactly `env`,
    in `cwd`, its fds 1 and 2 on `output` when given (a relay's pipe: runtimes/proxy/lifecycle.py) instead of the
    proxy's. Raises OSError when it cannot be run (missing, not executable, not a program)."""
    program = argv[0]
    if "/" not in program:
        found = shutil.which(program, path=env.get("PATH", os.defpath))
        if found is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        program = found
    os.chdir(cwd)  # posix_spawn has no chdir before 3.x's file actions; the proxy's own directory does not matter
    actions: list[tuple[object, ...]] = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]
    if output is not None:
        actions += [(os.POSIX_SPAWN_DUP2, output, 1), (os.POSIX_SPAWN_DUP2, output, 2)]
    signals = _DEFAULT_SIGNALS
    return os.posix_spawn(program, list(argv), dict(env), file_actions=actions, setsigdef=signals, setsigmask=())


def entrypoint_error(argv0: str, exc: OSError, env: Mapping[str, str]) -> str:
    """Lambda's message for a bootstrap that could not be started (errorType INVALID_ENTRYPOINT)."""
    if exc.errno == errno.ENOENT:
        task_root = env.get("LAMBDA_TASK_ROOT", "/var/task")
        if argv0 == f"{task_root}/bootstrap":  # the custom runtime's default: Lambda names both places it looks
            return f"Couldn't find valid bootstrap(s): [{argv0} /opt/bootstrap]"
        return f"Couldn't find valid bootstrap(s): [{argv0}]"
    reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    return f"fork/exec {argv0}: {reason}"


def describe(status: int) -> str:
    """Lambda's wording for how a runtime process ended ('exit status 1', 'signal: killed'), from a wait status."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"signal: {_SIGNAL_NAMES.get(sig, str(sig))}"
    if os.WIFEXITED(status):
        return f"exit status {os.WEXITSTATUS(status)}"
    return f"wait status {status}"


def end_like(status: int) -> None:
    """End this process the way the runtime ended (its exit code, or its signal), so that the gateway, which learns
    how the environment's process ended from its zygote, words it as the runtime's end. Never returns."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
            os.kill(os.getpid(), sig)
        except (OSError, ValueError):
            pass
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


class MemoryProbe:
    """The runtime's peak resident set (VmHWM of /proc/<pid>/status), in KB: a REPLY's max_rss_kb. The file stays
    open and is read again from offset 0 (the kernel regenerates it): one system call per reading."""

    __slots__ = ("_fd",)

    def __init__(self, pid: int) -> None:
        try:
            self._fd = os.open(f"/proc/{pid}/status", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._fd = -1

    def peak_kb(self) -> int:
        if self._fd < 0:
            return 0
        try:
            data = os.pread(self._fd, 4096, 0)
        except OSError:
            return 0
        at = data.find(b"VmHWM:")
        if at < 0:
            return 0
        end = data.find(b"kB", at)
        try:
            return int(data[at + 6 : end])
        except ValueError:
            return 0
