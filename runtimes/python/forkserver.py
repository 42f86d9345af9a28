"""The fork server: one blocking loop in the zygote that forks environments for the gateway and reports their exits.

Messages are the contract's (gateway/contracts/zygote.py). Each environment gets a directory of its own under the
environments' root (`env_dir`: its `tmp/`, or its jail's root), named here; the gateway removes it when the
environment ends. The server exits when the control socket closes or the gateway says STOP, and reaps its children,
reporting each exit (EXITED) so the gateway can say how an environment died. When it ends it kills what is left in
its environments' groups (the gateway freezes idle environments, and a frozen process acts on its own PDEATHSIG only
once thawed); after a gateway's death (no STOP first) it also sweeps what the environments left on the host.

A cold start waits neither for a fork nor for the zygote: the server keeps one *spare* child that has already forked,
dropped the zygote's descriptors and done the spec-independent set-up (runtimes/python/sandbox.py's `prepare`, and a
rehearsal of the hot paths), and announces it to the gateway with one end of its socket (SPARE). The gateway turns a
spare into an environment by writing a SPEC frame on that socket, and tells the server (TAKEN), which forks the next
spare SPARE_DELAY later, once that environment's Init had the CPU. Without a spare (cold starts came faster, or it
died) the gateway asks for a FORK. A spare is never given user code before its SPEC, so an idle one holds the
zygote's state and an empty directory, nothing more; it dies with the zygote, or exits when the gateway closes its
socket.

Concurrency: single-threaded; signals (SIGCHLD, and SIGTERM, the zygote's PDEATHSIG) only wake the loop or set a flag.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import gc
import os
import selectors
import signal
import socket
import sys
import time
import traceback
import uuid
from typing import Any, NamedTuple, NoReturn

from gateway.contracts import zygote as control
from gateway.contracts.environment import EnvironmentSpec
from gateway.contracts.zygote import F_SETPIPE_SZ, OUTPUT_PIPE_SIZE, ExitCode
from gateway.isolation import cgroups, leftovers
from runtimes.python import bootstrap
from runtimes.python.bootstrap import Child
from runtimes.python.isolation import Isolation

#: seconds from handing out the spare to forking the next: a fork (about a millisecond of the zygote's CPU, and the
#: new spare's own set-up after it) would compete with the Init of the environment that just took the spare
SPARE_DELAY = 0.02
#: the longest pause between attempts while spares cannot be forked or keep dying before they are taken
MAX_SPARE_BACKOFF = 2.0
#: seconds between two lines on stderr (the gateway's log) saying that spares cannot set up their sandbox
SAY_EVERY = 60.0


class _Spare(NamedTuple):
    """A forked child, announced to the gateway, waiting for the SPEC frame on its environment socket.

    Its directory is the gateway's from the announcement on: the gateway removes it when the spare ends, taken
    or not (the zygote cannot tell which side of a hand-over the spare died on).
    """

    pid: int
    env_dir: str


def close_fds_except(*keep: int) -> None:
    """Close every descriptor but stdio and `keep`: nothing of the gateway's may leak into user code."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


def output_pipe() -> tuple[int, int]:
    """An environment's output pipe (read end, write end), close-on-exec, with room for OUTPUT_PIPE_SIZE bytes, so
    that a function seldom waits for the gateway to read what it prints (best effort: a host may refuse)."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):
        fcntl.fcntl(write_end, F_SETPIPE_SZ, OUTPUT_PIPE_SIZE)
    return read_end, write_end


def _recv_fds(sock: socket.socket) -> tuple[bytes, list[int]]:
    fds = array.array("i")
    msg, ancdata, _flags, _addr = sock.recvmsg(1 << 20, socket.CMSG_SPACE(4 * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    return msg, list(fds)


class ForkServer:
    """Forks environments for the gateway on `control` (the zygote's end of the control socket), each isolated as
    `isolation` says, under `envs_root`. `serve()` runs until the gateway stops or dies."""

    def __init__(self, control_socket: socket.socket, envs_root: str, isolation: Isolation) -> None:
        self.control = control_socket
        self.envs_root = envs_root
        self.isolation = isolation
        self.pid = os.getpid()
        self.parent = os.getppid()
        #: environments (spares too) not reaped yet: pid -> name (of its directory, and of its groups)
        self.children: dict[int, str] = {}
        self.spare: _Spare | None = None
        self.spare_due = 0.0  # when to fork the next one: not while the environment that took the last one starts
        self.backoff = SPARE_DELAY  # grows while spares cannot be forked or die untaken (a full disk, no pids ...)
        self.orphaned = False  # the gateway died (our PDEATHSIG)
        self.said = -SAY_EVERY  # when stderr last said why spares die
        self.stopped = False  # the gateway said STOP: a stop, not a death
        self._wakeup_r = self._wakeup_w = -1
        self._selector = selectors.DefaultSelector()

    def serve(self) -> None:
        """Say HELLO, then fork, reap and report until the gateway closes the socket, says STOP or dies."""
        self._install()
        try:
            self._send(control.Hello(self.pid, self.isolation.features()))
            while not self.orphaned and self._step():
                pass
        finally:
            self._end()

    def _install(self) -> None:
        """Signals wake the loop through a pipe; the collector leaves the zygote's objects alone (children share them
        copy-on-write: a collection would copy them)."""
        self.control.setblocking(True)
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wakeup_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the gateway decides when we stop
        self._selector.register(self.control, selectors.EVENT_READ, "control")
        self._selector.register(self._wakeup_r, selectors.EVENT_READ, "signal")
        gc.collect()
        gc.freeze()
        signal.signal(signal.SIGTERM, self._on_gateway_death)  # after the probes: their children must not inherit it

    def _on_gateway_death(self, signum: int, frame: Any) -> None:
        """SIGTERM, our PDEATHSIG: the gateway died without stopping us (a SIGKILL, a crash). Only a flag: the loop
        sees it when the signal wakes its select (it may come more than once: the kernel re-parents us to each of
        the dying gateway's threads in turn; it does so before it sends the signal). A SIGTERM while the gateway
        lives (a service manager signalling the whole group) is ignored: the gateway drains, then stops us."""
        if os.getppid() != self.parent:
            self.orphaned = True

    def _step(self) -> bool:
        """Fork a spare if one is due, then handle what woke the loop. False: the gateway is gone or stopping."""
        if self.spare is None and time.monotonic() >= self.spare_due:
            self.spare = self._fork_spare()
            if self.spare is None:
                self._back_off()
        timeout = None if self.spare is not None else max(self.spare_due - time.monotonic(), 0.0)
        for key, _ in self._selector.select(timeout):
            if key.data == "signal":
                self._reap()
            elif not self._on_control():
                return False
        return True

    def _back_off(self) -> None:
        """A spare could not be forked, or died untaken: the next comes after a growing pause, not in a tight loop."""
        self.backoff = min(self.backoff * 2, MAX_SPARE_BACKOFF)
        self.spare_due = time.monotonic() + self.backoff

    def _say_why(self, status: int) -> None:
        """A spare died untaken: if in its set-up (no user code ran in it), say so, at most once a minute."""
        now = time.monotonic()
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == ExitCode.SANDBOX_FAILED and now - self.said >= SAY_EVERY:
            self.said = now
            sys.stderr.write(f"zygote {self.pid}: spares cannot set up their sandbox (exit status 4; an environment's "
                             f"output says why): the next in {self.backoff:.2f} s (said once a minute)\n")  # fmt: skip
            sys.stderr.flush()

    def _reap(self) -> None:
        """SIGCHLD: reap every child that ended and report it (a spare that died untaken: the gateway drops it)."""
        with contextlib.suppress(BlockingIOError):
            os.read(self._wakeup_r, 4096)
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.pop(pid, None)
            if self.spare is not None and pid == self.spare.pid:
                self.spare = None
                self._back_off()
                self._say_why(status)
            self._send(control.Exited(pid, status))

    def _on_control(self) -> bool:
        """One message from the gateway. False: the socket closed, or STOP."""
        try:
            packet, fds = _recv_fds(self.control)
        except OSError:
            return False  # the gateway is gone
        if not packet:
            return False  # the gateway closed the control socket
        try:
            request = control.decode(packet, len(fds), control.FROM_GATEWAY)
        except control.MessageError as exc:
            for fd in fds:
                os.close(fd)
            if exc.req_id is not None:  # a fork nobody can serve is still answered: the gateway's fork must not wait
                self._send(control.ForkFailed(exc.req_id, "bad fork request"))
            return True
        match request:
            case control.Stop():
                self.stopped = True
                return False
            case control.Taken(pid):
                if self.spare is not None and pid == self.spare.pid:
                    self.spare = None  # an environment now, the gateway's to watch; the next spare comes shortly
                    self.backoff = SPARE_DELAY
                    self.spare_due = time.monotonic() + SPARE_DELAY
            case control.Fork(req_id, spec):
                self._fork(req_id, spec, fds[0], fds[1])
        return True

    def _fork(self, req_id: int, spec: EnvironmentSpec, env_fd: int, out_w: int) -> None:
        """Fork the environment a FORK asked for, with the socket and output pipe the gateway sent; FORKED."""
        env_dir = self._new_env_dir()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(env_fd)
            os.close(out_w)
            self._send(control.ForkFailed(req_id, str(exc)))
            return
        if pid == 0:
            self._child(Child(env_fd, out_w, env_dir, spec, self.pid, self.isolation))
        self.children[pid] = os.path.basename(env_dir)
        os.close(env_fd)
        os.close(out_w)
        self._send(control.Forked(req_id, pid, env_dir))

    def _fork_spare(self) -> _Spare | None:
        """Fork a spare and announce it: the gateway gets its pid, directory and end of its socket. None: no fork."""
        env_dir = self._new_env_dir()
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError:
            return None
        try:
            out_r, out_w = output_pipe()
        except OSError:
            ours.close()
            theirs.close()
            return None
        try:
            pid = os.fork()
        except OSError:
            for fd in (out_r, out_w):
                os.close(fd)
            ours.close()
            theirs.close()
            return None
        if pid == 0:
            ours.close()
            self._child(Child(theirs.fileno(), out_w, env_dir, None, self.pid, self.isolation))
        self.children[pid] = os.path.basename(env_dir)
        theirs.close()
        os.close(out_w)
        try:
            self._send(control.Spare(pid, env_dir), [ours.fileno(), out_r])
        finally:
            ours.close()
            os.close(out_r)
        return _Spare(pid, env_dir)

    def _child(self, child: Child) -> NoReturn:
        """In a forked child: drop the zygote's state (signal handlers, descriptors), become the environment."""
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            self._selector.close()
            self.control.close()
            os.close(self._wakeup_r)
            os.close(self._wakeup_w)
            close_fds_except(child.socket_fd, child.output_fd)
        except BaseException:
            traceback.print_exc()
            os._exit(ExitCode.FAILED)
        bootstrap.main(child)

    def _new_env_dir(self) -> str:
        return os.path.join(self.envs_root, uuid.uuid4().hex)

    def _send(self, message: control.Report, fds: list[int] | None = None) -> None:
        """Send one message (with descriptors); if the gateway closed the control socket, it is stopping: so do we."""
        try:
            if fds:
                ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                self.control.sendmsg([message.encode()], ancillary)
            else:
                self.control.send(message.encode())
        except (BrokenPipeError, ConnectionResetError):
            sys.exit(ExitCode.OK)

    def _end(self) -> None:
        """Leave nothing behind: the spare, what runs in the environments' groups, and after a death, leftovers."""
        if self.spare is not None:  # it would die with us anyway (PDEATHSIG), but not before we are gone: end it now
            with contextlib.suppress(OSError):
                os.kill(self.spare.pid, signal.SIGKILL)
                os.waitpid(self.spare.pid, 0)
        hierarchy = self.isolation.cgroups
        if hierarchy is not None:  # a frozen environment would ignore its PDEATHSIG until thawed: kill, then thaw
            for name in self.children.values():
                cgroups.kill_environment(hierarchy, name)
        # The gateway died (its SIGTERM, or the control socket closed without a STOP first): sweep. Not after a
        # STOP: the gateway stopped its environments itself, and a gateway restarted on the same data directory
        # may already have new ones there.
        if not self.stopped:
            leftovers.sweep_orphaned(self.envs_root, hierarchy, self.isolation.uids)
