"""The fork server: imports the runtime and the heavy stdlib once, then forks environments on request.

Started by the gateway with exec (`python -m runtimes.python.zygote --control-fd N --envs-root DIR --sandbox
JSON`, the plan of gateway/isolation/sandbox.py); never runs user code itself. The control socket is a SOCK_SEQPACKET
socketpair, one msgpack message per packet:

    gateway -> zygote   [FORK, req_id, spec]  + two fds via SCM_RIGHTS: the environment's socket, and the write
                                                  end of its output pipe (the gateway keeps the read end)
                        [TAKEN, pid]                      the gateway has given the spare `pid` its spec
    zygote -> gateway   [HELLO, pid, {"private_tmp": bool, "jail": bool, "seccomp": bool}]  once, when ready
                        [SPARE, pid, env_dir]  + two fds: the gateway's end of that spare's socket, and the
                                                 read end of its output pipe
                        [FORKED, req_id, pid, env_dir] | [FORK_FAILED, req_id, message]
                        [EXITED, pid, wait_status]        for every child that ended (spares too)

Each environment gets a directory of its own under DIR (`env_dir`: its `tmp/`, or its jail's root), named
by the zygote; the gateway removes it when the environment ends. The zygote dies with the gateway
(PR_SET_PDEATHSIG: SIGTERM, upon which it first kills every process of its environments' uids and cgroups, so no
daemon a function detached outlives a gateway's SIGKILL), exits when the control socket closes, and reaps its
children, reporting each exit so the gateway can say how an environment died. When it exits it kills what is left in
its environments' groups and thaws them (the gateway freezes idle environments, and a frozen process acts on its own
PDEATHSIG only once thawed).

A cold start waits neither for a fork nor for the zygote: the zygote keeps one *spare* child that has already
forked, dropped the zygote's descriptors and done the spec-independent set-up (`bootstrap.prepare`: session,
limits, its directory, its cgroups, its jail or its /tmp, a rehearsal of the hot paths), and announces it to the
gateway with one end of its socket (SPARE). The gateway turns a spare into an environment by writing a SPEC frame
on that socket, and tells the zygote (TAKEN), which forks the next spare SPARE_DELAY later, once that
environment's Init had the CPU.
Without a spare (cold starts came faster, or it died) the gateway asks for a FORK. A spare is never given user
code before its SPEC, so an idle one holds the zygote's state and an empty directory, nothing more; it dies with
the zygote, or exits when the gateway closes its socket.
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
import fcntl
import hashlib  # noqa: F401
import http.client  # noqa: F401
import json
import logging  # noqa: F401
import os
import selectors
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

from gateway.contracts import environment as protocol
from gateway.isolation import cgroups, leftovers, uids
from gateway.isolation.cgroups import Hierarchy
from runtimes.python import bootstrap, jail, seccomp
from runtimes.python import concurrent as _concurrent  # noqa: F401  # imported once here, shared by every fork

#: seconds from handing out the spare to forking the next: a fork (about a millisecond of the zygote's CPU, and the
#: new spare's own set-up after it) would compete with the Init of the environment that just took the spare
SPARE_DELAY = 0.02
#: the longest pause between attempts while spares cannot be forked or keep dying before they are taken
MAX_SPARE_BACKOFF = 2.0
#: an environment's output pipe holds this much (Linux's default is 64 KB; 1 MB is what an unprivileged process
#: may ask for by default)
OUTPUT_PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = 1031

FORK = 1
HELLO = 2
FORKED = 3
FORK_FAILED = 4
EXITED = 5
SPARE = 6
TAKEN = 7
#: gateway -> zygote: it is stopping (closing the socket next); not a death, nothing to sweep
STOP = 8


def _recv_fds(sock: socket.socket) -> tuple[bytes, list[int]]:
    fds = array.array("i")
    msg, ancdata, _flags, _addr = sock.recvmsg(1 << 20, socket.CMSG_SPACE(4 * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    return msg, list(fds)


class _Spare:
    """A forked child, announced to the gateway, waiting for the SPEC frame on its environment socket.

    Its directory is the gateway's from the announcement on: the gateway removes it when the spare ends, taken
    or not (the zygote cannot tell which side of a hand-over the spare died on).
    """

    def __init__(self, pid: int, env_dir: str) -> None:
        self.pid = pid
        self.env_dir = env_dir


def _read_spec(fd: int) -> dict[str, Any]:
    """In a spare: block until the gateway's SPEC frame arrives on the environment socket; exit on EOF."""
    decoder = protocol.FrameDecoder(protocol.FROM_GATEWAY)
    while True:
        data = os.read(fd, 1 << 16)
        if not data:
            os._exit(0)  # the gateway dropped the spare (it restarts, stops, or lost its zygote): nothing to serve
        try:
            frames = decoder.feed(data)
        except protocol.ProtocolError:
            os._exit(3)
        if frames:
            if len(frames) != 1 or frames[0][0] != protocol.SPEC:
                os._exit(3)
            spec: dict[str, Any] = frames[0][1]
            return spec


def _child(
    sel: selectors.BaseSelector,
    sock: socket.socket,
    wakeup_r: int,
    wakeup_w: int,
    keep_fd: int,
    output_fd: int,
    spec: dict[str, Any] | None,
    zygote_pid: int,
    isolation: bootstrap.Isolation,
    env_dir: str,
) -> None:
    """In a forked child: drop the zygote's state and become an environment. Never returns.

    `keep_fd` is the environment's socket, `output_fd` the write end of its output pipe. Without a `spec` (a
    spare), the spec comes later, from the gateway, as the first frame on that socket.
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
        _close_fds_except(keep_fd, output_fd)
        connect = spec is None or bool(spec.get("network", True))
        prepared = bootstrap.prepare(zygote_pid, env_dir, output_fd, spec is None, isolation, connect)
        if spec is None:
            spec = _read_spec(keep_fd)
        bootstrap.run(keep_fd, spec, prepared)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def _close_fds_except(*keep: int) -> None:
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
    """What a jailed environment needs to see of the host besides the system: the interpreter (sys.base_prefix and
    a virtual environment's sys.prefix, with their site-packages) and the runtime's own two packages, not the tree
    they live in; outermost directories only, and none that holds the data directory or lies in it."""
    import site

    import gateway

    runtime = (os.path.dirname(os.path.dirname(bootstrap.__file__)), os.path.dirname(gateway.__file__))
    candidates = (sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix, *site.getsitepackages(), *runtime)
    wanted = {os.path.realpath(p) for p in candidates if p and os.path.isdir(p)}
    data = os.path.realpath(data_dir)

    def clashes(path: str) -> bool:
        return data == path or data.startswith(path + os.sep) or path.startswith(data + os.sep)

    kept = sorted(p for p in wanted if not clashes(p))
    return [p for p in kept if not any(p.startswith(q + os.sep) for q in kept if q != p)]


def _probe_jail(expose: list[str], envs_root: str, uid_range: uids.UidRange) -> bool:
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


def _in_child(attempt: Any) -> bool:
    """Run `attempt()` in a forked child (whatever it changes about the process dies with it); its result."""
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(0 if attempt() else 1)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def serve(control_fd: int, envs_root: str, sandbox: dict[str, Any]) -> None:
    """Fork environments for the gateway on `control_fd` until it closes. `sandbox` is gateway.isolation.sandbox's plan:
    {"jail": bool, "uids": a uids.UidRange's wire form, "cgroups": a cgroups.Hierarchy's wire form or None, "network":
    the slot of the environments' network (gateway/isolation/network.py) or None}."""
    sock = socket.socket(fileno=control_fd)
    sock.setblocking(True)
    packer = msgpack.Packer(use_bin_type=True)
    my_pid = os.getpid()
    uid_range = uids.UidRange.from_wire(sandbox["uids"])
    hierarchy = Hierarchy.from_wire(sandbox["cgroups"]) if sandbox.get("cgroups") else None
    expose = _jail_expose(os.path.dirname(envs_root)) if sandbox.get("jail") else None
    if expose is not None and not _probe_jail(expose, envs_root, uid_range):
        expose = None
    # Bind /tmp only where that cannot hide the code: it lives in the same data directory as the environments.
    bind_tmp = expose is None and _probe_private_tmp() and not jail.under_tmp(envs_root)
    isolation = bootstrap.Isolation(bind_tmp, expose, hierarchy, uid_range, sandbox.get("network"))
    isolation.seccomp = _seccomp_filters()

    def new_env_dir() -> str:
        return os.path.join(envs_root, uuid.uuid4().hex)

    def send(msg: list[object]) -> None:
        try:
            sock.send(packer.pack(msg))
        except (BrokenPipeError, ConnectionResetError):
            sys.exit(0)  # the gateway closed the control socket: it is stopping, and so do we

    def send_fds(msg: list[object], fds: list[int]) -> None:
        try:
            sock.sendmsg([packer.pack(msg)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        except (BrokenPipeError, ConnectionResetError):
            sys.exit(0)

    wakeup_r, wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wakeup_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the gateway decides when we stop
    children: dict[int, str] = {}  # environments (spares too) not reaped yet: pid -> name (of its directory, groups)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ, "control")
    sel.register(wakeup_r, selectors.EVENT_READ, "signal")

    import gc

    gc.collect()
    gc.freeze()  # keep the garbage collector from touching (and so copying) the zygote's objects in children

    def fork_spare() -> _Spare | None:
        """Fork a spare and announce it: the gateway gets its pid, directory and end of its socket."""
        env_dir = new_env_dir()
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
            _child(sel, sock, wakeup_r, wakeup_w, theirs.fileno(), out_w, None, my_pid, isolation, env_dir)
        children[pid] = os.path.basename(env_dir)
        theirs.close()
        os.close(out_w)
        try:
            send_fds([SPARE, pid, env_dir], [ours.fileno(), out_r])
        finally:
            ours.close()
            os.close(out_r)
        return _Spare(pid, env_dir)

    parent = os.getppid()
    orphaned = False
    stopped = False  # the gateway said STOP: a stop, not a death

    def on_gateway_death(signum: int, frame: Any) -> None:
        """SIGTERM, our PDEATHSIG: the gateway died without stopping us (a SIGKILL, a crash). Only a flag: the loop
        sees it when the signal wakes its select (it may come more than once: the kernel re-parents us to each of
        the dying gateway's threads in turn; it does so before it sends the signal). A SIGTERM while the gateway
        lives (a service manager signalling the whole group) is ignored: the gateway drains, then stops us."""
        nonlocal orphaned
        if os.getppid() != parent:
            orphaned = True

    signal.signal(signal.SIGTERM, on_gateway_death)  # after the jail probe: its child must not inherit it
    spare: _Spare | None = None
    spare_due = 0.0  # when to fork the next one: not while the environment that took the last one starts
    backoff = SPARE_DELAY  # grows while spares cannot be forked or die untaken (a full disk, no pids left ...)
    try:
        features = {"private_tmp": bind_tmp or expose is not None, "jail": expose is not None}
        send([HELLO, my_pid, {**features, "seccomp": isolation.seccomp is not None}])
        while not orphaned:
            if spare is None and time.monotonic() >= spare_due:
                spare = fork_spare()
                if spare is None:
                    backoff = min(backoff * 2, MAX_SPARE_BACKOFF)
                    spare_due = time.monotonic() + backoff
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
                        children.pop(pid, None)
                        if spare is not None and pid == spare.pid:
                            # died untaken (killed, or its set-up failed): the gateway drops it and removes its
                            # directory; the next one comes after a growing pause, not in a tight loop
                            spare = None
                            backoff = min(backoff * 2, MAX_SPARE_BACKOFF)
                            spare_due = time.monotonic() + backoff
                        send([EXITED, pid, status])
                    continue
                try:
                    msg, fds = _recv_fds(sock)
                except OSError:
                    return  # the gateway is gone
                if not msg:
                    return  # the gateway closed the control socket
                try:
                    request = msgpack.unpackb(msg, raw=False)
                    kind = request[0]
                except Exception:
                    request, kind = [], None
                if kind == STOP:
                    stopped = True
                    return
                if kind == TAKEN and len(request) == 2 and not fds:
                    if spare is not None and request[1] == spare.pid:
                        spare = None  # an environment now, the gateway's to watch; the next spare comes shortly
                        backoff = SPARE_DELAY
                        spare_due = time.monotonic() + SPARE_DELAY
                    continue
                if kind != FORK or len(request) != 3 or len(fds) != 2:
                    for fd in fds:
                        os.close(fd)
                    if kind == FORK and len(request) == 3:
                        send([FORK_FAILED, request[1], "bad fork request"])
                    continue
                _, req_id, spec = request
                env_fd, out_w = fds
                env_dir = new_env_dir()
                try:
                    pid = os.fork()
                except OSError as exc:
                    os.close(env_fd)
                    os.close(out_w)
                    send([FORK_FAILED, req_id, str(exc)])
                    continue
                if pid == 0:
                    _child(sel, sock, wakeup_r, wakeup_w, env_fd, out_w, spec, my_pid, isolation, env_dir)
                children[pid] = os.path.basename(env_dir)
                os.close(env_fd)
                os.close(out_w)
                send([FORKED, req_id, pid, env_dir])
    finally:
        if spare is not None:  # it would die with us anyway (PDEATHSIG), but not before we are gone: end it now
            with contextlib.suppress(OSError):
                os.kill(spare.pid, signal.SIGKILL)
                os.waitpid(spare.pid, 0)
        if hierarchy is not None:  # a frozen environment would ignore its PDEATHSIG until thawed: kill, then thaw
            for name in children.values():
                cgroups.kill_environment(hierarchy, name)
        # The gateway died (its SIGTERM, or the control socket closed without a STOP first): sweep. Not after a
        # STOP: the gateway stopped its environments itself, and a gateway restarted on the same data directory
        # may already have new ones there.
        if not stopped:
            leftovers.sweep_orphaned(envs_root, hierarchy, uid_range)


def main() -> None:
    args = sys.argv[1:]
    if len(args) != 6 or args[0] != "--control-fd" or args[2] != "--envs-root" or args[4] != "--sandbox":
        sys.exit("usage: python -m runtimes.python.zygote --control-fd N --envs-root DIR --sandbox JSON")
    # SIGTERM, not SIGKILL: a gateway that dies without stopping us leaves us to kill what its environments left
    jail._libc.prctl(jail.PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    expected_parent = int(os.environ.get("GATEWAY_PID", "0"))
    if expected_parent and os.getppid() != expected_parent:
        sys.exit(1)  # the gateway died before we set PDEATHSIG
    control_fd = int(args[1])
    _close_fds_except(control_fd)
    serve(control_fd, args[3], json.loads(args[5]))


if __name__ == "__main__":
    main()
