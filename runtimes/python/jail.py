"""An environment's own view of the machine, when the gateway runs as root: its own root filesystem and uid.

In a mount namespace of its own, an environment gets a new root (a small tmpfs) that holds only

- the system (/usr, /etc, and /bin, /lib ... as links or directories), read-only;
- the interpreter and the runtime (`expose`: sys.base_prefix, sys.prefix, the runtime's packages), read-only;
- /dev with the harmless devices and a /dev/shm, and a /proc that shows only its own processes (hidepid);
- /tmp, a tmpfs of EphemeralStorage MB;
- the runtime at /var/runtime (LAMBDA_RUNTIME_DIR), as on Lambda: its source merged with its packages (boto3 ...,
  gateway/runtime_packages.py), which sys.path names there once sealed; its command line (/proc/self/cmdline) is
  Lambda's, its initial environment (/proc/self/environ) empty: neither names the zygote's paths nor the gateway's pid;
- /opt, as on Lambda: empty and read-only, or the function's layers;
- once its spec arrives: the function's code and layers, read-only, at the paths the gateway gave.

Nothing else: not the gateway's data directory (the registry, the code of other functions, the logs), nor its
files, nor /root, /home or /work. Then it drops to a uid and gid of its own, with no supplementary groups and no
capabilities (`no_new_privs` was set before), so it can neither undo any of this nor see, signal or trace other
environments or the gateway.

`build()` runs in a spare, before any spec (its cost is paid ahead of demand); `seal()` adds what the spec
says and drops root, just before Init. Both run in the forked child, before any user code. Without a jail,
`private_tmp_mount()` gives an environment at least a /tmp of its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import struct
import sys
from collections.abc import Sequence

from gateway.contracts.environment import Mount
from gateway.contracts.file_systems import FileSystemMount
from gateway.contracts.zygote import ExitCode
from gateway.isolation import network as netns
from runtimes.python import file_systems as file_system_mounts

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
#: pivot_root(2)'s number where we know it; elsewhere there is no jail
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine)
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PR_SET_DUMPABLE = 4
SIOCSIFFLAGS = 0x8914
IFF_UP_LOOPBACK_RUNNING = 0x1 | 0x8 | 0x40
#: the host's top-level system directories an environment sees (links stay links)
SYSTEM = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
#: the name of a jailed environment's uid, as on Lambda
USER = "sbx_user1051"
#: where the old root waits, inside the new one, until `seal()` has taken the code from it
HOST = "/.host"
#: where a jail shows the runtime (LAMBDA_RUNTIME_DIR), as on Lambda
RUNTIME = "/var/runtime"
#: the host name extensions use for their own listeners (runtimes/proxy/telemetry.py)
SANDBOX_HOST = "sandbox.localdomain"
#: what /proc/self/cmdline says in a jail
CMDLINE = b"/var/lang/bin/python3\0/var/runtime/bootstrap.py\0"
#: where a jail shows the layers (an empty directory without any)
LAYERS = "/opt"


def _runtime_dirs() -> list[str]:
    """What a jail merges at RUNTIME: the runtime's source (this directory), over its packages (named by the gateway
    in GATEWAY_RUNTIME_PACKAGES, gateway/runtime_packages.py) when they exist."""
    here = os.path.dirname(os.path.abspath(__file__))
    packages = os.environ.get("GATEWAY_RUNTIME_PACKAGES", "")
    return [here, packages] if packages and os.path.isdir(packages) else [here]


RUNTIME_DIRS = _runtime_dirs()

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.syscall.restype = ctypes.c_long


class JailError(OSError):
    """A step of the set-up failed; the environment must not run user code."""


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise JailError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {source or fstype} on {target}",
    )


def _bind(source: str, target: str, read_only: bool = True, recursive: bool = True) -> None:
    _mount(source, target, None, MS_BIND | (MS_REC if recursive else 0))
    if read_only:
        _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _mountpoint(root: str, path: str, is_file: bool = False) -> str:
    """Make `path` (absolute) under `root` to mount on: a directory, or an empty file."""
    target = root + path
    if is_file:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
    else:
        os.makedirs(target, exist_ok=True)
    return target


def build(env_dir: str, expose: list[str], uid: int | None = None, network_slot: int | None = None) -> None:
    """Enter a private network namespace, connected to the gateway's bridge in `network_slot` (isolation/network.py:
    outbound to other hosts, nothing of the host's) or with only lo when None. Enter a private mount namespace and
    pivot into a new root under `env_dir` that holds the system, the `expose`d directories, /dev, /proc and /tmp
    (see the module's docstring). The host's root stays reachable at HOST, for `seal()`, and this process stays
    root. A namespace of its own for System V IPC and POSIX message queues, too: those would otherwise be shared
    with the host and outlive the environment. /etc/passwd and /etc/group also name `uid` (if given, else
    `name_user` does it later), the user `seal()` becomes, as Lambda's name its sandbox user; /etc/resolv.conf names
    servers an environment can reach (`gateway.isolation.network.resolver_config`)."""
    if SYS_PIVOT_ROOT is None:
        raise JailError(0, f"no pivot_root for {os.uname().machine}")
    host = netns.HostSide(network_slot) if network_slot is not None else None  # opened in the host's namespace
    try:
        _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWNET), "unshare(CLONE_NEWNS | IPC | NET)")
        if host is not None:
            netns.attach(host)
        else:
            _loopback_up()
    finally:
        if host is not None:
            host.rt.close()  # a netlink socket keeps its opener's privileges: never left to user code
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount propagates back to the host
    root = os.path.join(env_dir, "root")
    os.makedirs(root, mode=0o755, exist_ok=True)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")
    for name in SYSTEM:
        path = "/" + name
        if os.path.islink(path):
            os.symlink(os.readlink(path), root + path)
        elif os.path.isdir(path):
            _bind(path, _mountpoint(root, path))
    if network_slot is not None and (resolver := netns.resolver_config()) is not None:
        _put_file(root, "/etc/resolv.conf", resolver)
    if os.path.isfile("/etc/hosts") and not os.path.islink("/etc/hosts"):
        _put_file(root, "/etc/hosts", _hosts())
    # /tmp before what is exposed: an interpreter or virtual environment that lives under /tmp stays visible in it
    _mount("tmpfs", _mountpoint(root, "/tmp"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=512m")
    for path in expose:
        _bind(path, _mountpoint(root, path))
    _mountpoint(root, "/dev")
    for device in DEVICES:
        if os.path.exists("/dev/" + device):
            _bind("/dev/" + device, _mountpoint(root, "/dev/" + device, is_file=True), read_only=False, recursive=False)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "0"), ("stdout", "1"), ("stderr", "2")):
        os.symlink(target if name == "fd" else "/proc/self/fd/" + target, root + "/dev/" + name)
    _mount("tmpfs", _mountpoint(root, "/dev/shm"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=64m")
    _mount("proc", _mountpoint(root, "/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible")
    if len(RUNTIME_DIRS) == 1:
        _bind(RUNTIME_DIRS[0], _mountpoint(root, RUNTIME))
    else:  # one read-only view of both, as Lambda's /var/runtime holds its runtime and boto3
        lower = ":".join(_escape(d) for d in RUNTIME_DIRS)
        _mount("overlay", _mountpoint(root, RUNTIME), "overlay", MS_RDONLY | MS_NOSUID | MS_NODEV, "lowerdir=" + lower)
    _mountpoint(root, LAYERS)  # always there, as on Lambda: read-only once sealed, unless layers are mounted on it
    os.mkdir(root + HOST, 0o700)
    os.chdir(root)
    _check(_libc.syscall(SYS_PIVOT_ROOT, b".", HOST[1:].encode()), "pivot_root")
    os.chdir("/")
    _scrub_exec_strings()
    if uid is not None:
        name_user(uid)


def _hosts() -> str:
    """The host's /etc/hosts and the name Lambda's extensions listen on (the Telemetry API's destinations:
    http://sandbox.localdomain:<port>), which is this environment's own loopback, as on Lambda."""
    with open("/etc/hosts") as f:
        text = f.read()
    return text + ("" if text.endswith("\n") or not text else "\n") + f"127.0.0.1\t{SANDBOX_HOST}\n"


def _put_file(root: str, path: str, content: str) -> None:
    """Make `path` (under /etc) in the new root read `content`: a copy mounted over it; where it is a link (resolv.conf
    to /run/systemd/...), the file it points to, made in the root's tmpfs."""
    if os.path.islink(root + path):
        target = os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(root + path)))
        with contextlib.suppress(OSError):  # a target in a read-only system directory: the link stays as it is
            os.makedirs(os.path.dirname(root + target), exist_ok=True)
            with open(root + target, "x") as f:
                f.write(content)
            os.chmod(root + target, 0o644)
        return
    copy = f"{root}/.{os.path.basename(path)}"
    with open(copy, "w") as f:
        f.write(content)
    os.chmod(copy, 0o644)
    _bind(copy, root + path, recursive=False)
    os.unlink(copy)  # the mount keeps the file


def name_user(uid: int) -> None:
    """After `build()`, before `seal()`: name `uid` in /etc/passwd and /etc/group, as Lambda names its sandbox user.
    Each is a copy of the host's (still at HOST) with the entry added, made in the new root's tmpfs and mounted over
    the host's."""
    for name, entry in (("passwd", f"{USER}:x:{uid}:{uid}::/tmp:/sbin/nologin\n"), ("group", f"{USER}:x:{uid}:\n")):
        target = "/etc/" + name
        if not os.path.isfile(HOST + target) or not os.path.isfile(target):
            continue
        copy = "/." + name
        with open(HOST + target) as original, open(copy, "w") as f:
            f.write(original.read() + entry)
        os.chmod(copy, 0o644)
        _bind(copy, target, recursive=False)
        os.unlink(copy)  # the mount keeps the file


def _scrub_exec_strings() -> None:
    """Overwrite what /proc/self/cmdline and /proc/self/environ show, the zygote's command line and environment: the
    data directory's path, the cgroups', the gateway's pid. The command line becomes Lambda's runtime's; the
    environment, empty (the function's own lives in os.environ, never in this area). Both lie in this process's stack
    (writable), at the addresses /proc/self/stat gives."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields 48-51 of proc(5), counted from 1: after ")" the first is field 3
    arg_start, arg_end, env_start, env_end = (int(v) for v in fields[45:49])
    cmdline = CMDLINE[: max(arg_end - arg_start - 1, 0)]
    ctypes.memset(arg_start, 0, arg_end - arg_start)
    ctypes.memmove(arg_start, cmdline, len(cmdline))
    ctypes.memset(env_start, 0, env_end - env_start)
    # Both areas keep their length (a trail of NULs): shortening them (prctl PR_SET_MM) was refused (EPERM) to root
    # on the machines here.


def seal(
    mounts: Sequence[Mount],
    tmp_mb: int,
    network: bool,
    uid: int,
    zygote_pid: int,
    file_systems: Sequence[FileSystemMount] = (),
) -> None:
    """Finish the jail `build()` made and drop root: mount the code read-only (`mounts`: [target, [host directories]],
    one directory bound, several merged in an overlay, the first on top), the function's `file_systems` read-write
    (runtimes/python/file_systems.py: idmapped to `uid`), size /tmp, cut the network off unless
    `network` (delete eth0 from the namespace `build()` made: only lo stays), let go of the host's root, make /
    read-only, and become `uid` (gid the same).

    Dying with the zygote (PDEATHSIG) is set again: a change of uid clears it."""
    for target, sources in mounts:
        if len(sources) == 1:
            _bind(HOST + sources[0], _mountpoint("", target))
        else:
            lower = ":".join(_escape(HOST + source) for source in sources)
            _mount("overlay", _mountpoint("", target), "overlay", MS_RDONLY | MS_NOSUID | MS_NODEV, "lowerdir=" + lower)
    file_system_mounts.mount_all(file_systems, HOST, uid)
    _mount(None, "/tmp", None, MS_REMOUNT | MS_NOSUID | MS_NODEV, f"mode=1777,size={tmp_mb}m")
    if not network:
        netns.disconnect()
    _check(_libc.umount2(HOST.encode(), MNT_DETACH), "umount " + HOST)
    os.rmdir(HOST)
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    # A change of uid also makes the process undumpable, which gives its /proc/self files to root: the function
    # could not read its own fds or environ. Only its own uid (no other process has it) gains access.
    _check(_libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")
    if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != zygote_pid:
        os._exit(ExitCode.FAILED)  # the zygote died meanwhile


def runtime_on_path() -> None:
    """In a jail: sys.path names the runtime's packages where Lambda's names them, RUNTIME (the same files, merged
    there by `build()`), not by their host path. Before user code: nothing has imported from there yet."""
    if len(RUNTIME_DIRS) > 1:
        sys.path[:] = [RUNTIME if path == RUNTIME_DIRS[1] else path for path in sys.path]


def under_tmp(path: str) -> bool:
    """Would binding a private /tmp hide `path`?"""
    real = os.path.realpath(path) if path else ""
    return real == "/tmp" or real.startswith("/tmp/")


def private_tmp_mount(source: str) -> bool:
    """Make `source` this process's /tmp in a private mount namespace; False where that is not allowed."""
    try:
        _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        _mount(source, "/tmp", None, MS_BIND | MS_REC)
    except JailError:
        return False
    return True


def _escape(path: str) -> str:
    """A path as overlayfs's option parser wants it (`:` and `,` separate, `\\` escapes)."""
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def _loopback_up() -> None:
    """A new network namespace has only `lo`, down: bring it up, so the function can still talk to itself."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", IFF_UP_LOOPBACK_RUNNING))
