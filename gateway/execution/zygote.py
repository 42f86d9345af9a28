"""The gateway's side of the fork server (`runtimes/python/forkserver.py`): start it, ask it for forks, watch exits.

One `Zygote` per interpreter. `fork(spec)` turns the zygote's spare (announced with its socket, already forked
and prepared) into the environment by writing the spec on that socket, without a round trip; when there is no
spare it hands the zygote one end of a fresh socketpair and the write end of a fresh output pipe over the control
socket (SCM_RIGHTS) and waits for the fork. Either way it returns a `Forked`: the environment's pid, the gateway's
end of its socket, its exit status to come, its directory, and the read end of its output pipe (fds 1 and 2). The
gateway itself never forks. If the zygote dies, pending forks fail, `supervise()` restarts it with back-off,
and environments it had forked die with it (their PDEATHSIG), which the pools see as crashes.

The control messages, the sandbox plan and the output pipe's size are the contract's (gateway/contracts/zygote.py).

Concurrency: all methods run on the event loop; replies are read by a loop reader callback.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import itertools
import logging
import os
import signal
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from gateway.contracts import environment as wire
from gateway.contracts import zygote as control
from gateway.contracts.environment import EnvironmentSpec
from gateway.contracts.zygote import F_SETPIPE_SZ, OUTPUT_PIPE_SIZE
from gateway.execution.environment import remove_later
from gateway.hooks import Hook
from gateway.isolation.sandbox import Sandbox
from gateway.runtime_packages import PACKAGES_DIR, STAMP

log = logging.getLogger("gateway.zygote")

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: a zygote's first statement: its sys.path is the runtime's source and packages, then the standard library. With
#: -I -S (no site-packages, no PYTHON* variables, no current directory) and -B (no bytecode written by root into the
#: tree), a function imports what Lambda's runtime has, never what the gateway installed for itself.
BOOT = "import sys; sys.path[:0] = sys.argv[1:3]; del sys.argv[1:3]; from runtimes.python.zygote import main; main()"
#: seconds a fork waits for a (re)starting zygote before the invocation fails with ServiceException
READY_WAIT = 3.0
#: seconds the first fork of a lazy zygote waits for it to start (imports, the isolation probes)
FIRST_START_WAIT = 15.0


class Forked(NamedTuple):
    """A new environment, the gateway's to connect (gateway.execution.environment.connect) and to close."""

    pid: int
    sock: socket.socket
    exit_status: asyncio.Future[int | None]
    env_dir: str
    output: int  # the read end of its output pipe, non-blocking


def zygote_command(interpreter: str) -> list[str]:
    """The command line that starts a zygote on `interpreter` (its arguments follow)."""
    return [interpreter, "-I", "-S", "-B", "-c", BOOT, str(PROJECT_ROOT), str(PACKAGES_DIR)]


def output_pipe() -> tuple[int, int]:
    """A fresh output pipe: (read end, non-blocking; write end, for the environment). Both close-on-exec."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(read_end, False)
    with contextlib.suppress(OSError):
        fcntl.fcntl(read_end, F_SETPIPE_SZ, OUTPUT_PIPE_SIZE)
    return read_end, write_end


class ZygoteUnavailable(Exception):
    """The zygote is not running (starting, restarting or stopped); the fork could not be made."""


def describe_wait_status(status: int | None) -> str:
    """Lambda's wording for how a runtime process ended: 'exit status 1', 'signal: killed', ..."""
    if status is None:
        return "signal: killed"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        names = {
            9: "killed",
            11: "segmentation fault",
            6: "aborted",
            15: "terminated",
            7: "bus error",
            8: "floating point exception",
            4: "illegal instruction",
            13: "broken pipe",
        }
        return f"signal: {names.get(sig, str(sig))}"
    if os.WIFEXITED(status):
        return f"exit status {os.WEXITSTATUS(status)}"
    return f"wait status {status}"


class Zygote:
    """A supervised fork server for one interpreter."""

    def __init__(
        self,
        interpreter: str,
        runtimes: list[str],
        envs_root: Path,
        sandbox: Sandbox,
        lazy: bool = False,
        programs: Mapping[str, str] | None = None,
    ) -> None:
        self.interpreter = interpreter
        self.runtimes = runtimes
        #: runtime id -> the program its environments run (a nodejs* runtime's Node.js), for their specs
        self.programs = dict(programs or {})
        self.envs_root = envs_root  # where the zygote makes each environment's directory
        self.sandbox = sandbox
        self.pid: int | None = None
        self.restarts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._sock: socket.socket | None = None
        self._ready = asyncio.Event()
        self._req_ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[tuple[int, asyncio.Future[int | None], str]]] = {}
        self.private_tmp = False
        #: whether the zygote jails its environments (it falls back to rlimits if the host refuses; see sandbox.py)
        self.jailed = False
        #: whether its environments install the seccomp filter (runtimes/python/seccomp.py)
        self.seccomp = False
        #: called each time the zygote becomes ready (at start and after a restart)
        self.on_ready: Hook[[]] = Hook("zygote ready", log)
        #: called with the seconds each successful fork took (request sent -> pid known), for metrics
        self.on_fork: Hook[[float]] = Hook("zygote fork", log)
        self._exits: dict[int, asyncio.Future[int | None]] = {}
        self._closing = False
        #: the zygote's spare, ready to become an environment
        self._spare: Forked | None = None
        #: set once the zygote is to run: at once, or (`lazy`) at its first fork, so that a Python no function uses
        #: costs no memory
        self._wanted = asyncio.Event()
        if not lazy:
            self._wanted.set()

    @property
    def wanted(self) -> bool:
        """Whether the zygote runs (or is starting): not a lazy one before its first fork."""
        return self._wanted.is_set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def wait_ready(self, timeout: float) -> None:
        """Wait until the zygote is ready, starting a lazy one; its first start may take up to FIRST_START_WAIT."""
        self._wanted.set()
        await asyncio.wait_for(self._ready.wait(), timeout if self.pid is not None else max(timeout, FIRST_START_WAIT))

    async def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "GATEWAY_PID": str(os.getpid()),
            # a jail shows them at /var/runtime (runtimes/python/jail.py)
            "GATEWAY_RUNTIME_PACKAGES": str(PACKAGES_DIR),
        }
        if not (PACKAGES_DIR / STAMP).exists():
            log.error("the runtime's packages are missing from %s: run `make install`", PACKAGES_DIR)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *zygote_command(self.interpreter),
                "--control-fd",
                str(theirs.fileno()),
                "--envs-root",
                str(self.envs_root),
                "--sandbox",
                self.sandbox.plan().to_json(),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
                env=env,
                cwd=str(PROJECT_ROOT),
            )
        finally:
            theirs.close()
        self.attach(ours)

    def attach(self, sock: socket.socket) -> None:
        """Talk to a zygote on `sock`, the gateway's end of its control socket (SOCK_SEQPACKET): what a start does once
        the zygote runs, and what a test does with a fake zygote. Ready once it says HELLO."""
        sock.setblocking(False)
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        sock = self._sock
        assert sock is not None
        while True:
            fds = array.array("i")
            try:
                data, ancdata, _flags, _addr = sock.recvmsg(1 << 16, socket.CMSG_SPACE(fds.itemsize))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, ancdata = b"", []
            for level, kind_, raw in ancdata:
                if level == socket.SOL_SOCKET and kind_ == socket.SCM_RIGHTS:
                    fds.frombytes(raw[: len(raw) - (len(raw) % fds.itemsize)])
            if not data:
                for fd in fds:
                    os.close(fd)
                self._on_lost()
                return
            try:
                msg = control.decode(data, len(fds), control.FROM_ZYGOTE)
            except control.MessageError as exc:
                log.error("zygote for %s sent a malformed message (ignored): %s", ",".join(self.runtimes), exc)
                msg = None
            if isinstance(msg, control.Spare):  # the only message with descriptors (decode checked how many)
                os.set_blocking(fds[1], False)
                self._on_spare(msg.pid, socket.socket(fileno=fds[0]), msg.env_dir, fds[1])
                continue
            for fd in fds:
                os.close(fd)
            match msg:
                case control.Exited(pid, wait_status):
                    if self._spare is not None and self._spare.pid == pid:
                        self._drop_spare()
                    fut = self._exits.pop(pid, None)
                    if fut is not None and not fut.done():
                        fut.set_result(wait_status)
                case control.Forked(req_id, pid, env_dir):
                    self._on_forked(req_id, pid, env_dir)
                case control.ForkFailed(req_id, message):
                    pending = self._pending.pop(req_id, None)
                    if pending is not None and not pending.done():
                        pending.set_exception(ZygoteUnavailable(f"fork failed: {message}"))
                case control.Hello(pid, features):
                    self._on_hello(pid, features)

    def _on_hello(self, pid: int, features: control.Features) -> None:
        self.pid = pid
        self.private_tmp = features.private_tmp
        self.jailed = features.jail
        self.seccomp = features.seccomp
        self.sandbox.warn_if_weaker(self.jailed)
        self._ready.set()
        self.on_ready()
        log.info(
            "zygote for %s ready (pid %s, %s, sandbox: %s, /tmp: %s)",
            ",".join(self.runtimes),
            self.pid,
            self.interpreter,
            self.sandbox.describe(self.jailed, self.seccomp),
            "private mount" if self.private_tmp else "TMPDIR only",
        )

    def _on_forked(self, req_id: int, pid: int, env_dir: str) -> None:
        # The exit future exists from this moment on, so an EXITED read in the same batch is not lost.
        loop = asyncio.get_running_loop()
        exit_fut: asyncio.Future[int | None] = loop.create_future()
        self._exits[pid] = exit_fut
        pending = self._pending.pop(req_id, None)
        if pending is not None and not pending.done():
            pending.set_result((pid, exit_fut, env_dir))
        else:  # the caller gave up (cancelled) while the fork was under way: nobody owns this environment
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            remove_later(env_dir)

    def _on_spare(self, pid: int, sock: socket.socket, env_dir: str, output: int) -> None:
        self._drop_spare()
        exit_fut: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._exits[pid] = exit_fut
        self._spare = Forked(pid, sock, exit_fut, env_dir, output)

    def _drop_spare(self) -> None:
        """Forget the spare (it died, or the zygote did) and remove its directory, which is ours from its
        announcement on, once it has exited: closing our end of its socket makes a live one exit, and until then it
        may still be making its directory and cgroups."""
        spare, self._spare = self._spare, None
        if spare is not None:
            spare.sock.close()
            os.close(spare.output)
            env_dir = spare.env_dir
            spare.exit_status.add_done_callback(lambda _: remove_later(env_dir))

    def _take_spare(self, spec: EnvironmentSpec) -> Forked | None:
        """Turn the spare into an environment running `spec`: write the SPEC frame, tell the zygote. None if none."""
        spare, self._spare = self._spare, None
        if spare is None:
            return None
        assert self._sock is not None  # fork() checked: the zygote is ready
        if spare.exit_status.done():
            spare.sock.close()
            os.close(spare.output)
            remove_later(spare.env_dir)
            return None
        frame = wire.encode_spec(spec)
        try:
            spare.sock.setblocking(False)
            if spare.sock.send(frame) != len(frame):  # a fresh socket has room for a spec (env vars are capped at 4 KB)
                raise BlockingIOError("the SPEC frame did not fit")
            self._sock.send(control.Taken(spare.pid).encode())
        except OSError:
            # It may have its spec and start Init for nobody: end it. The zygote still counts it as its spare and
            # reports its exit; the directory is ours either way.
            with contextlib.suppress(ProcessLookupError):
                os.kill(spare.pid, signal.SIGKILL)
            spare.sock.close()
            os.close(spare.output)
            remove_later(spare.env_dir)
            return None
        return spare

    def _on_lost(self) -> None:
        """The control socket closed: the zygote is gone. Fail what waits on it."""
        self._ready.clear()
        self._drop_spare()
        if self._sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ZygoteUnavailable("the zygote exited"))
        self._pending.clear()
        for exit_fut in self._exits.values():
            if not exit_fut.done():
                exit_fut.set_result(None)
        self._exits.clear()

    async def fork(self, spec: EnvironmentSpec) -> Forked:
        """Fork an environment (see `Forked`; the caller owns its socket and output descriptor).

        While the zygote (re)starts, waits up to READY_WAIT seconds for it; a fork that failed (the zygote died
        during it, or could not fork) is tried once more, waiting again. Raises ZygoteUnavailable when that is not
        enough, or at once when the gateway is stopping.
        """
        try:
            return await self._fork(spec)
        except ZygoteUnavailable:
            if self._closing:
                raise
            return await self._fork(spec)

    async def _fork(self, spec: EnvironmentSpec) -> Forked:
        self._wanted.set()
        if not self._ready.is_set() and not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), READY_WAIT if self.pid is not None else FIRST_START_WAIT)
        if not self._ready.is_set() or self._sock is None:
            raise ZygoteUnavailable("the runtime zygote is not ready")
        started = time.perf_counter()
        taken = self._take_spare(spec)
        if taken is not None:
            self.on_fork(time.perf_counter() - started)
            return taken
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            out_r, out_w = output_pipe()
        except OSError:
            ours.close()
            theirs.close()
            raise
        req_id = next(self._req_ids)
        fut: asyncio.Future[tuple[int, asyncio.Future[int | None], str]] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        try:
            data = control.Fork(req_id, spec).encode()
            fds = array.array("i", [theirs.fileno(), out_w])
            await self._send_with_fd(data, fds)
        except BaseException:
            self._pending.pop(req_id, None)
            ours.close()
            os.close(out_r)
            raise
        finally:
            theirs.close()
            os.close(out_w)
        try:
            pid, exit_fut, env_dir = await fut
        except BaseException:
            ours.close()
            os.close(out_r)
            raise
        self.on_fork(time.perf_counter() - started)
        return Forked(pid, ours, exit_fut, env_dir, out_r)

    async def _send_with_fd(self, data: bytes, fds: array.array[int]) -> None:
        """Send one packet with descriptors; if the socket buffer is full (rare), wait until it is writable."""
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())]
        loop = asyncio.get_running_loop()
        while True:
            sock = self._sock
            if sock is None:
                raise ZygoteUnavailable("the zygote exited")
            try:
                sock.sendmsg([data], anc)
                return
            except (BlockingIOError, InterruptedError):
                writable = loop.create_future()
                loop.add_writer(sock.fileno(), writable.set_result, None)
                try:
                    await asyncio.wait_for(writable, 5.0)
                except TimeoutError:
                    raise ZygoteUnavailable("the zygote is not reading its control socket") from None
                finally:
                    loop.remove_writer(sock.fileno())

    async def supervise(self, max_backoff: float = 5.0) -> None:
        """Start the zygote (a lazy one: once wanted) and keep it running until `close()`; restart with back-off when
        it dies."""
        await self._wanted.wait()
        backoff = 0.1
        while not self._closing:
            started = time.monotonic()
            try:
                await self._start()
            except OSError as exc:
                log.error("cannot start the zygote for %s with %s: %s", self.runtimes, self.interpreter, exc)
            else:
                assert self._proc is not None
                code = await self._proc.wait()
                self._on_lost()
                if self._stopping():
                    return
                log.error("zygote (pid %s) exited with %s; restarting", self._proc.pid, code)
                self.restarts += 1
            if time.monotonic() - started > 10:
                backoff = 0.1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)

    def _stopping(self) -> bool:
        return self._closing

    async def close(self, timeout: float = 3.0) -> None:
        """Stop the zygote: close its control socket (it exits on EOF), then kill it if it lingers."""
        self._closing = True
        proc = self._proc
        if self._sock is not None:  # a stop, not a death: the zygote then sweeps nothing (a one-byte-ish write)
            with contextlib.suppress(OSError):
                self._sock.send(control.Stop().encode())
        self._on_lost()
        if proc is None or proc.returncode is not None:
            return
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
