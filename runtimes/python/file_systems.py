"""A function's file systems (Lambda's FileSystemConfigs) in its jail: idmapped mounts of the access points'
directories (gateway/file_systems.py says what an access point is here).

Each directory is shown read-write at its LocalMountPath (/mnt/...), nosuid and nodev, through an idmapped mount
(mount_setattr(2), MOUNT_ATTR_IDMAP: Linux 5.12 and a file system that allows it: ext4, xfs, btrfs, tmpfs from 6.3
...): the access point's uid and gid on the host are the environment's own uid in the jail. So what the function
creates belongs, on the host, to the access point's POSIX user; it can read and write what that user (with only
that group) can; files of other owners show as nobody (65534) and allow what "others" may. The environment keeps
its own uid, which no other process has: it cannot signal or trace the host's processes of the access point's
user, as it could if it ran as that uid. Another environment of the function mounts the same directory the same
way, so they share its files; a function without FileSystemConfigs has no /mnt at all.

A symlink a function leaves in the directory resolves, in every jail, inside that jail's own root: it leads nowhere
the jail does not show. Only the host's own processes would follow it on the host.

The directory is found again at every environment's start, from the host's root (reachable then), by a look-up
that follows no symlink (openat2(2), RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_BENEATH: Linux 5.6) and
must end at the very directory the gateway found at its start (same st_dev and st_ino): with nested access points
(one's directory inside another's), a function of the outer one can rename the inner directory away and put a
symlink (to the gateway's data directory, say) or another directory in its place; the environments of the inner
one's functions then refuse to mount (EFSMountFailureException) rather than show what the swap points to.

Runs in the environment, as root, in `jail.seal()` before the old root is let go (the directories are reached
through it) and before the uid drop and the seccomp filter (which forbid all of this). A failure (`MountFailed`)
ends the environment before any of the function's code runs, with ExitCode.MOUNT_FAILED: Invoke then answers
EFSMountFailureException, as Lambda does (gateway/execution/failures.py).
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Sequence

from gateway.contracts.file_systems import FileSystemMount

CLONE_NEWUSER = 0x10000000
#: the same numbers on x86_64 and aarch64 (the generic table every architecture shares from 5.2 on)
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442
SYS_OPENAT2 = 437
AT_FDCWD = -100
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
AT_EMPTY_PATH = 0x1000
OPEN_TREE_CLONE = 1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_IDMAP = 0x100000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class MountFailed(OSError):
    """A function's file system could not be mounted (runtimes/python/sandbox.py: ExitCode.MOUNT_FAILED)."""


class MountAttr(ctypes.Structure):
    """struct mount_attr (linux/mount.h)."""

    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


class OpenHow(ctypes.Structure):
    """struct open_how (linux/openat2.h)."""

    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))


def _syscall(number: int, *args: object, what: str) -> int:
    """syscall(2) with explicitly typed arguments; raises OSError naming `what`."""
    result = int(_libc.syscall(ctypes.c_long(number), *args))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


def user_namespace(uid: int, gid: int, own: int) -> int:
    """An fd of a new user namespace where `uid` and `gid` (inside) are `own` (outside), and nothing else is mapped:
    the idmapping of the mounts. A child process makes it (a namespace needs a process to exist; the fd keeps it
    afterwards), its maps written from here (as root: no setgroups restriction applies)."""
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: unshare, say so, wait until the parent has the fd (its end closes), leave
        try:
            os.close(ready_r)
            os.close(hold_w)
            if _libc.unshare(CLONE_NEWUSER) != 0:
                os._exit(1)  # the parent reads EOF: it never waits on a child that failed
            os.write(ready_w, b"1")
            os.close(ready_w)
            os.read(hold_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(hold_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise OSError(0, "unshare(CLONE_NEWUSER) failed in the helper process")
        for name, inside in (("uid_map", uid), ("gid_map", gid)):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(f"{inside} {own} 1\n")
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(hold_w)
        os.waitpid(pid, 0)


def open_source(fs: FileSystemMount, host_root: str) -> int:
    """An O_PATH fd of `fs.source` under `host_root`, reached without following any symlink nor leaving
    `host_root`, and only if it is the directory `fs.dev`/`fs.ino` name. Raises OSError (ELOOP: a symlink on the
    way; ESTALE: another directory)."""
    root = os.open(host_root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        how = OpenHow(
            os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, 0, RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_BENEATH
        )
        relative = fs.source.lstrip("/").encode() or b"."
        size = ctypes.c_size_t(ctypes.sizeof(how))
        fd = _syscall(SYS_OPENAT2, ctypes.c_int(root), relative, ctypes.byref(how), size, what="openat2")
    finally:
        os.close(root)
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (fs.dev, fs.ino):
        os.close(fd)
        raise OSError(errno.ESTALE, "openat2: not the directory the gateway found at its start")
    return fd


def mount(fs: FileSystemMount, host_root: str, own: int, target: str) -> None:
    """Show `host_root` + `fs.source` at `target` (already a directory), idmapped so that `fs.uid`/`fs.gid` are
    `own`, read-write, nosuid, nodev: only if it is still the directory the gateway found (`open_source`). Raises
    OSError."""
    userns = user_namespace(fs.uid, fs.gid, own)
    source = tree = -1
    try:
        source = open_source(fs, host_root)
        # not recursive: mounts below the directory stay hidden
        flags = ctypes.c_uint(OPEN_TREE_CLONE | AT_EMPTY_PATH | os.O_CLOEXEC)
        tree = _syscall(SYS_OPEN_TREE, ctypes.c_int(source), b"", flags, what="open_tree")
        attr = MountAttr(MOUNT_ATTR_IDMAP | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, userns)
        size = ctypes.c_size_t(ctypes.sizeof(attr))
        at_empty = ctypes.c_uint(AT_EMPTY_PATH)
        _syscall(SYS_MOUNT_SETATTR, ctypes.c_int(tree), b"", at_empty, ctypes.byref(attr), size, what="mount_setattr")
        move = ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH)
        _syscall(
            SYS_MOVE_MOUNT, ctypes.c_int(tree), b"", ctypes.c_int(AT_FDCWD), target.encode(), move, what="move_mount"
        )
    finally:
        os.close(userns)
        for fd in (source, tree):
            if fd >= 0:
                os.close(fd)


def mount_all(file_systems: Sequence[FileSystemMount], host_root: str, own: int) -> None:
    """Mount each of `file_systems` at its target (made here, in the jail's root: still writable). Raises
    MountFailed."""
    for fs in file_systems:
        try:
            os.makedirs(fs.target, mode=0o755, exist_ok=True)
            mount(fs, host_root, own, fs.target)
        except OSError as exc:
            raise MountFailed(exc.errno, exc.strerror) from exc
