"""A seccomp filter for environments, modelled on Docker's default profile: the kernel's riskier interfaces are off.

Docker's profile is an allow list (about 350 calls) with a default of EPERM; this is the matching deny list, on
top of what the jail already takes away (root, capabilities, the host's files): whatever Docker refuses to a
container without extra capabilities is refused here, with `EPERM`, as Docker does, so that code probing for a
feature sees "not permitted" and carries on rather than dying. Refused:

- namespaces: `unshare` and `clone` with any CLONE_NEW* flag (so no user namespace, where a process would hold
  every capability), `setns`; `clone3` answers ENOSYS (its flags sit in memory a filter cannot read; libc then
  falls back to `clone`, whose flags it can), as in Docker;
- filesystems: `mount`, `umount2`, `pivot_root`, `chroot`, the new mount API (`fsopen`, `fsconfig`, `fsmount`,
  `fspick`, `open_tree`, `move_mount`, `mount_setattr`), `name_to_handle_at`/`open_by_handle_at`, `quotactl`;
- the kernel's keyring (`keyctl`, `add_key`, `request_key`), `bpf`, `perf_event_open`, `userfaultfd`,
  `io_uring_*` (Docker refuses it since 25.0: a large share of recent kernel exploits), `fanotify_init`,
  `lookup_dcookie`;
- other processes: `ptrace`, `process_vm_readv`/`writev`, `kcmp`, `pidfd_getfd` (see below);
- the machine: `kexec_*`, `init_module`/`finit_module`/`delete_module`, `reboot`, `swapon`/`swapoff`, `acct`,
  setting the clock (`settimeofday`, `clock_settime`, `clock_adjtime`, `adjtimex`), `syslog`, `vhangup`,
  `nfsservctl`, `iopl`/`ioperm`, NUMA policy (`mbind`, `set_mempolicy`, `migrate_pages`, `move_pages`),
  `uselib`, `ustat`, `sysfs`, `_sysctl`, `vm86`, `personality` with any value but Docker's five (0, PER_LINUX32,
  UNAME26, both, and the query 0xffffffff).

ptrace: Docker allows it on kernels from 4.8 on (before, a tracer could rewrite a call after the filter passed it).
Here it is refused all the same: the jail already makes ptrace of another environment or the gateway fail (its
own uid, hidepid), so what is left is tracing one's own processes (strace, gdb, py-spy in a handler), which Lambda
does not allow either, against one of the kernel interfaces with the longest list of privilege escalations.

The filter is built once in the zygote (`compile_filters`, ~20 ms of libseccomp) as raw BPF, and an environment only
hands those bytes to the kernel (`Filter.load`). It comes in two parts, because the kernel's own work on a filter
(checking and JIT-compiling it) is not free: ~0.2 ms for the whole of it, measured in an environment here. The first
part, everything but the calls the jail's last steps make, goes in in the spare, ahead of demand, once its jail is
built (`sandbox.prepare`); the second, `SETUP` (the mount calls, `setns`, `unshare` with namespace flags), is the
last step before Init, after the uid drop (`sandbox.Prepared.seal`), so a cold start pays only for that small one.
Filters stack: both stay, for the environment and every process it starts, and `no_new_privs` is set before either.
Calls through another architecture's entry (32-bit `int 0x80` on x86-64) get EPERM too. The binding is `pyseccomp`
(ctypes over the system's libseccomp.so.2, Debian's `libseccomp2`, which apt itself depends on); without either,
environments run without a filter and /healthz says so.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator
from typing import Any

#: the calls the jail's last steps make (`jail.seal`: mounts, a network namespace), refused only from `seal` on;
#: `unshare` with namespace flags too
SETUP = (
    "setns",
    "mount",
    "umount2",
    "umount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "open_tree",
    "move_mount",
    "mount_setattr",
)
#: the other calls refused whatever their arguments, from the spare on
DENIED = (
    "pivot_root",
    "chroot",
    "name_to_handle_at",
    "open_by_handle_at",
    "quotactl",
    "quotactl_fd",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "fanotify_init",
    "lookup_dcookie",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "settimeofday",
    "stime",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "syslog",
    "vhangup",
    "nfsservctl",
    "iopl",
    "ioperm",
    "mbind",
    "set_mempolicy",
    "migrate_pages",
    "move_pages",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "vm86",
    "vm86old",
)
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
#: clone(2) cannot take CLONE_NEWTIME (that bit of its flags is the exit signal); unshare(2) can
CLONE_NAMESPACES = (CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET)
UNSHARE_NAMESPACES = (*CLONE_NAMESPACES, CLONE_NEWTIME)
#: Docker's allowed personality(2) values: PER_LINUX, PER_LINUX32, UNAME26, both, and the query
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
#: seccomp(2)'s number where we know it
SYS_SECCOMP = {"x86_64": 317, "aarch64": 277}.get(os.uname().machine)


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def complement_blocks(allowed: tuple[int, ...], bits: int = 32) -> Iterator[tuple[int, int]]:
    """Every `bits`-bit value but those in `allowed`, as (mask, value) pairs: x is outside `allowed` exactly when
    x & mask == value for one of them (aligned blocks, as CIDR prefixes cover an address range). A rule of
    libseccomp compares an argument once, so "none of these values" becomes one MASKED_EQ rule per block."""

    def walk(prefix: int, depth: int, inside: list[int]) -> Iterator[tuple[int, int]]:
        if not inside:
            yield ((1 << bits) - (1 << (bits - depth))) if depth else 0, prefix
        elif depth < bits:
            bit = 1 << (bits - 1 - depth)
            yield from walk(prefix, depth + 1, [v for v in inside if not v & bit])
            yield from walk(prefix | bit, depth + 1, [v for v in inside if v & bit])

    yield from walk(0, 0, sorted(set(allowed)))


def compile_filters() -> tuple[bytes, bytes]:
    """The two parts of the filter as raw BPF (struct sock_filter[]), ready for `Filter`: (from the spare on, from
    `seal` on). Raises OSError (or ImportError, with no libseccomp) where they cannot be built; names this
    libseccomp does not know are skipped (the kernel it was built for cannot have them either, or they are older
    than x86-64)."""
    import pyseccomp as sc

    deny = sc.ERRNO(errno.EPERM)

    def new() -> Any:
        f = sc.SyscallFilter(sc.ALLOW)
        f.set_attr(sc.Attr.ACT_BADARCH, deny)
        f.set_attr(sc.Attr.CTL_OPTIMIZE, 2)  # a binary tree of syscall numbers, not a chain
        return f

    def known(name: str) -> bool:
        return bool(sc.resolve_syscall(sc.Arch.NATIVE, name) >= 0)

    early, late = new(), new()
    for name in DENIED:
        if known(name):
            early.add_rule(deny, name)
    for flag in CLONE_NAMESPACES:
        early.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    if known("clone3"):
        early.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for mask, value in complement_blocks(PERSONALITIES):  # the kernel reads only the low 32 bits: so do the masks
        early.add_rule(deny, "personality", sc.Arg(0, sc.MASKED_EQ, mask, value))
    for name in SETUP:
        if known(name):
            late.add_rule(deny, name)
    for flag in UNSHARE_NAMESPACES:
        late.add_rule(deny, "unshare", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    return _export(early), _export(late)


def _export(f: Any) -> bytes:
    fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
    with os.fdopen(fd, "w+b") as out:
        f.export_bpf(out)
        out.seek(0)
        return out.read()


class Filter:
    """A compiled filter, ready to install: built in the zygote, so that a forked environment only makes the call."""

    def __init__(self, program: bytes) -> None:
        if not program or len(program) % 8:
            raise ValueError("a BPF program is a whole number of 8-byte instructions")
        self.size = len(program) // 8
        self._buffer = ctypes.create_string_buffer(program, len(program))
        self._prog = _SockFprog(self.size, ctypes.cast(self._buffer, ctypes.c_void_p))

    def load(self) -> None:
        """Install the filter for this process and all its threads, for good. Needs `no_new_privs` (or
        CAP_SYS_ADMIN). Raises OSError."""
        if SYS_SECCOMP is None:
            raise OSError(errno.ENOSYS, f"no seccomp(2) number for {os.uname().machine}")
        result = _libc.syscall(
            ctypes.c_long(SYS_SECCOMP),
            ctypes.c_long(SECCOMP_SET_MODE_FILTER),
            ctypes.c_long(SECCOMP_FILTER_FLAG_TSYNC),
            ctypes.byref(self._prog),
        )
        if result != 0:
            code = ctypes.get_errno() if result < 0 else errno.ESRCH  # > 0: a thread that could not be synchronized
            raise OSError(code, f"seccomp(SECCOMP_SET_MODE_FILTER): {os.strerror(code)}")
