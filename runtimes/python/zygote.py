"""The fork server: imports the runtime and the heavy stdlib once, then forks environments on request.

Started by the gateway with exec (`python -m runtimes.python.zygote --control-fd N --envs-root DIR`); never
runs user code itself. The control socket is a SOCK_SEQPACKET socketpair, one msgpack message per packet:

    gateway -> zygote   [FORK, req_id, spec]  + one fd (the environment's socket) via SCM_RIGHTS
    zygote -> gateway   [HELLO, pid, {"private_tmp": bool}]  once, when ready to fork
                        [FORKED, req_id, pid, env_dir] | [FORK_FAILED, req_id, message]
                        [EXITED, pid, wait_status]        for every environment that ended

Each environment gets a directory of its own under DIR (`env_dir`: its `tmp/` and its `output` file), named
by the zygote; the gateway removes it when the environment ends. The zygote dies with the gateway
(PR_SET_PDEATHSIG), exits when the control socket closes, and reaps its children, reporting each exit so the
gateway can say how an environment died.

A cold start does not wait for a fork: the zygote keeps one *spare* child that has already forked, dropped the
zygote's descriptors and done the spec-independent set-up (`bootstrap.prepare`: session, limits, its
directory, its /tmp, a rehearsal of the hot paths), and now waits on a socketpair of its own. A FORK hands the
spec and the environment's socket to the spare (SCM_RIGHTS) and answers FORKED with the spare's pid and
directory; the next spare is forked SPARE_DELAY later, once that environment's Init had the CPU. Without a spare
(it died, or cold starts came faster) the zygote forks on demand. A spare is never given user code before the
hand-off, so an idle one holds the zygote's state and an empty directory, nothing more; it dies with the zygote.
"""

from __future__ import annotations

import array

# The heavy stdlib, imported once here so that every forked environment starts with it (copy-on-write).
import asyncio  # noqa: F401
import base64  # noqa: F401
import collections  # noqa: F401
import contextlib
import dataclasses  # noqa: F401
import datetime  # noqa: F401
import decimal  # noqa: F401
import hashlib  # noqa: F401
import http.client  # noqa: F401
import json  # noqa: F401
import logging  # noqa: F401
import os
import selectors
import shutil
import signal
import socket
import ssl  # noqa: F401
import sys
import time
import traceback
import urllib.parse
import urllib.request  # noqa: F401
import uuid
from typing import Any

import msgpack

from runtimes.python import bootstrap

#: seconds from handing out the spare to forking the next: a fork (about a millisecond of the zygote's CPU, and the
#: new spare's own set-up after it) would compete with the Init of the environment that just took the spare
SPARE_DELAY = 0.02

FORK = 1
HELLO = 2
FORKED = 3
FORK_FAILED = 4
EXITED = 5


def _recv_fds(sock: socket.socket) -> tuple[bytes, list[int]]:
    fds = array.array("i")
    msg, ancdata, _flags, _addr = sock.recvmsg(1 << 20, socket.CMSG_SPACE(4 * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    return msg, list(fds)


class _Spare:
    """A forked child waiting for its spec (see the module docstring); `sock` is the zygote's end."""

    def __init__(self, pid: int, sock: socket.socket, env_dir: str) -> None:
        self.pid = pid
        self.sock = sock
        self.env_dir = env_dir

    def discard(self) -> None:
        """The spare is dead and was never handed out: its directory is nobody else's to remove."""
        self.sock.close()
        shutil.rmtree(self.env_dir, ignore_errors=True)

    def hand_over(self, msg: bytes, env_fd: int) -> bool:
        """Send the FORK message and the environment's socket; False if the spare is gone."""
        try:
            self.sock.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [env_fd]))])
            return True
        except OSError:
            return False
        finally:
            self.sock.close()


def _child(
    sel: selectors.BaseSelector,
    sock: socket.socket,
    wakeup_r: int,
    wakeup_w: int,
    keep_fd: int,
    spec: dict[str, Any] | None,
    zygote_pid: int,
    private_tmp: bool,
    env_dir: str,
) -> None:
    """In a forked child: drop the zygote's state and become an environment. Never returns.

    With a `spec`, `keep_fd` is the environment's socket; without one (a spare), `keep_fd` is the spare's
    end of its socketpair, on which the FORK message and the environment's socket arrive later.
    """
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        sel.close()
        sock.close()
        os.close(wakeup_r)
        os.close(wakeup_w)
        _close_fds_except(keep_fd)
        prepared = bootstrap.prepare(zygote_pid, private_tmp, env_dir, rehearse=spec is None)
        env_fd = keep_fd
        if spec is None:
            with socket.socket(fileno=keep_fd) as waiting:
                msg, fds = _recv_fds(waiting)
            if not msg or len(fds) != 1:
                os._exit(0)  # the zygote is gone, or sent nonsense: nothing to serve
            _kind, _req_id, spec = msgpack.unpackb(msg, raw=False)
            env_fd = fds[0]
        assert spec is not None
        bootstrap.run(env_fd, spec, prepared)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def _close_fds_except(keep: int) -> None:
    """Close every descriptor but stdio and `keep`: nothing of the gateway's may leak into user code."""
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 20)


def _probe_private_tmp() -> bool:
    """Can a forked environment get a private /tmp (a mount namespace)? Tried once, in a throwaway child.

    Not when the interpreter or the runtime itself lives under /tmp: the private /tmp would hide them.
    """
    import tempfile

    if any(bootstrap.under_tmp(p) for p in (*sys.path, sys.prefix, sys.exec_prefix)):
        return False
    probe_dir = tempfile.mkdtemp(prefix="gateway-probe-")
    try:
        pid = os.fork()
        if pid == 0:
            os._exit(0 if bootstrap.private_tmp_mount(probe_dir) else 1)
        _, status = os.waitpid(pid, 0)
        return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        os.rmdir(probe_dir)


def serve(control_fd: int, envs_root: str) -> None:
    sock = socket.socket(fileno=control_fd)
    sock.setblocking(True)
    packer = msgpack.Packer(use_bin_type=True)
    my_pid = os.getpid()
    private_tmp = _probe_private_tmp()
    # Bind /tmp only where that cannot hide the code: it lives in the same data directory as the environments.
    bind_tmp = private_tmp and not bootstrap.under_tmp(envs_root)

    def new_env_dir() -> str:
        return os.path.join(envs_root, uuid.uuid4().hex)

    def send(msg: list[object]) -> None:
        try:
            sock.send(packer.pack(msg))
        except (BrokenPipeError, ConnectionResetError):
            sys.exit(0)  # the gateway closed the control socket: it is stopping, and so do we

    wakeup_r, wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wakeup_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the gateway decides when we stop
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ, "control")
    sel.register(wakeup_r, selectors.EVENT_READ, "signal")

    import gc

    gc.collect()
    gc.freeze()  # keep the garbage collector from touching (and so copying) the zygote's objects in children

    def fork_spare() -> _Spare | None:
        env_dir = new_env_dir()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            return None
        if pid == 0:
            ours.close()
            _child(sel, sock, wakeup_r, wakeup_w, theirs.fileno(), None, my_pid, bind_tmp, env_dir)
        theirs.close()
        return _Spare(pid, ours, env_dir)

    spare = fork_spare()
    spare_due = 0.0  # when to fork the next one: not while the environment that took the last one starts
    try:
        send([HELLO, my_pid, {"private_tmp": private_tmp}])
        while True:
            if spare is None and time.monotonic() >= spare_due:
                spare = fork_spare()
            timeout = None if spare is not None else max(spare_due - time.monotonic(), 0.0)
            for key, _ in sel.select(timeout):
                if key.data == "signal":
                    try:
                        os.read(wakeup_r, 4096)
                    except BlockingIOError:
                        pass
                    while True:
                        try:
                            pid, status = os.waitpid(-1, os.WNOHANG)
                        except ChildProcessError:
                            break
                        if pid == 0:
                            break
                        if spare is not None and pid == spare.pid:
                            spare.discard()
                            spare = None  # killed while waiting: the next turn forks another
                            continue
                        send([EXITED, pid, status])
                    continue
                try:
                    msg, fds = _recv_fds(sock)
                except OSError:
                    return  # the gateway is gone
                if not msg:
                    return  # the gateway closed the control socket
                kind, req_id, spec = msgpack.unpackb(msg, raw=False)
                if kind != FORK or len(fds) != 1:
                    for fd in fds:
                        os.close(fd)
                    send([FORK_FAILED, req_id, "bad fork request"])
                    continue
                env_fd = fds[0]
                if spare is not None and spare.hand_over(msg, env_fd):
                    pid, env_dir = spare.pid, spare.env_dir
                else:
                    env_dir = new_env_dir()
                    try:
                        pid = os.fork()
                    except OSError as exc:
                        os.close(env_fd)
                        send([FORK_FAILED, req_id, str(exc)])
                        spare = None
                        continue
                    if pid == 0:
                        _child(sel, sock, wakeup_r, wakeup_w, env_fd, spec, my_pid, bind_tmp, env_dir)
                spare = None
                spare_due = time.monotonic() + SPARE_DELAY
                os.close(env_fd)
                send([FORKED, req_id, pid, env_dir])
    finally:
        if spare is not None:  # it would die with us anyway (PDEATHSIG), but not before we are gone: end it now
            with contextlib.suppress(OSError):
                os.kill(spare.pid, signal.SIGKILL)
                os.waitpid(spare.pid, 0)
            spare.discard()


def main() -> None:
    args = sys.argv[1:]
    if len(args) != 4 or args[0] != "--control-fd" or args[2] != "--envs-root":
        sys.exit("usage: python -m runtimes.python.zygote --control-fd N --envs-root DIR")
    libc = bootstrap._libc
    libc.prctl(bootstrap.PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    expected_parent = int(os.environ.get("GATEWAY_PID", "0"))
    if expected_parent and os.getppid() != expected_parent:
        sys.exit(1)  # the gateway died before we set PDEATHSIG
    control_fd = int(args[1])
    _close_fds_except(control_fd)
    serve(control_fd, args[3])


if __name__ == "__main__":
    main()
