"""Which instruction set architectures (Lambda's `Architectures`: x86_64, arm64) this host can run, and how.

Lambda runs a function on the processor its `Architectures` names. This gateway runs it on the host's, so it accepts
only what the host can run (`check`, at CreateFunction, UpdateFunctionCode and UpdateFunctionConfiguration):

- the host's own architecture (x86_64 on an x86_64 machine, arm64 on an aarch64 one), for every runtime;
- the other one for a custom runtime (`provided.*`) only, and only where QEMU's user-mode emulator for it is installed
  (`qemu-aarch64-static` or `qemu-aarch64` for arm64 on x86_64; `qemu-x86_64[-static]` the other way; Debian's
  package `qemu-user-static`). A bootstrap that is an ELF program of the function's architecture is then started
  through it (`emulated`: the environment runs `qemu-aarch64-static /var/task/bootstrap`); it must be statically
  linked (Go with CGO_ENABLED=0, Rust with musl), as the jail holds no libraries of the other architecture. An ELF
  program of the host's architecture goes through the emulator too, which refuses it: it does not quietly run
  natively in a function that says it is of the other architecture. Anything else (a shell script bootstrap) is
  started as it is: what it executes must run on the host. A layer's extensions are started the same way.
- Python and Node.js need an interpreter built for the function's architecture, which this gateway does not have:
  refused, as Lambda refuses an architecture a runtime does not support (`check`'s message is Lambda's, as it answers
  CreateFunction: "Runtime provided does not support the following architectures [arm64]. Please select different
  architectures from [x86_64, arm64] or select a different runtime.").

On a host whose kernel has binfmt_misc handlers for QEMU (Debian registers them, with the F flag, when
qemu-user-static is installed along binfmt-support or systemd's binfmt), the kernel itself runs any program of the
other architecture through QEMU, in a jail too: a function of the host's architecture whose bootstrap is of the
other one then runs, where Lambda answers "exec format error". The gateway cannot see nor refuse that; remove the
handlers (`update-binfmts --disable`, or /proc/sys/fs/binfmt_misc/qemu-*: echo 0) for Lambda's behaviour.

Pure apart from `emulator` (a PATH look-up, cached) and `elf_architecture` (reads 20 bytes).
"""

from __future__ import annotations

import functools
import os
import shutil

from gateway.errors import InvalidParameterValueException

#: Lambda's names, in the order its messages list them
ARCHITECTURES = ("x86_64", "arm64")
#: uname's machine -> Lambda's name
_MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}
#: ELF e_machine -> Lambda's name (EM_X86_64, EM_AARCH64)
_ELF_MACHINES = {0x3E: "x86_64", 0xB7: "arm64"}
#: the emulator's program names, preferred first (the static build needs no libraries of its own in a jail)
_EMULATORS = {"arm64": ("qemu-aarch64-static", "qemu-aarch64"), "x86_64": ("qemu-x86_64-static", "qemu-x86_64")}
#: where the emulators are looked for besides PATH (Debian installs them in /usr/bin)
_SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
_PROVIDED_PREFIX = "provided"


def host_architecture() -> str:
    """The host's architecture in Lambda's words (an unknown machine is named as uname names it)."""
    machine = os.uname().machine
    return _MACHINES.get(machine, machine)


@functools.cache
def emulator(architecture: str) -> str | None:
    """The path of QEMU's user-mode emulator for `architecture`, or None when none is installed. Cached: looked up
    once per process (installing one later needs a restart)."""
    path = f"{os.environ.get('PATH', '')}:{_SYSTEM_PATH}"
    for name in _EMULATORS.get(architecture, ()):
        found = shutil.which(name, path=path)
        if found is not None:
            return os.path.realpath(found)
    return None


def default() -> tuple[str, ...]:
    """A new function's Architectures when CreateFunction names none: Lambda's default, x86_64, on an x86_64 host;
    the host's own on an aarch64 one, where an x86_64 Python or Node.js function could not run (so that functions
    and examples deployed without the member run there, and say truly what they run on)."""
    host = host_architecture()
    return (host,) if host in ARCHITECTURES else ("x86_64",)


def supported(runtime: str, host: str | None = None) -> tuple[str, ...]:
    """The architectures `runtime` runs on here, in Lambda's order: the host's; and for a custom runtime also those
    an emulator is installed for."""
    host = host or host_architecture()
    if not runtime.startswith(_PROVIDED_PREFIX):
        return tuple(a for a in ARCHITECTURES if a == host)
    return tuple(a for a in ARCHITECTURES if a == host or emulator(a) is not None)


def check(runtime: str, architectures: tuple[str, ...], host: str | None = None) -> None:
    """Refuse, with Lambda's InvalidParameterValueException, a runtime and architecture this host cannot run. The
    message lists Lambda's architectures, as AWS's does (what runs here is in the first part: the refused ones)."""
    runs = supported(runtime, host)
    wanted = [a for a in architectures if a not in runs]
    if wanted:
        raise InvalidParameterValueException(
            f"Runtime {runtime} does not support the following architectures [{', '.join(wanted)}]. Please select "
            f"different architectures from [{', '.join(ARCHITECTURES)}] or select a different runtime."
        )


def elf_architecture(path: str) -> str | None:
    """The architecture of the ELF program at `path` (Lambda's name), or None if it is not one (a script, missing)."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")  # EI_DATA: 1 little-endian
    return _ELF_MACHINES.get(machine)


def emulated(bootstrap: list[str], host_path: str, architectures: tuple[str, ...]) -> list[str]:
    """A custom runtime's command line (or an extension's), through the emulator when the function's architecture is
    not the host's and its program (`host_path`: where the gateway reads it) is an ELF program: of the function's
    architecture, it runs; of the host's, the emulator refuses it ("Invalid ELF image for this architecture": the
    environment exits), as Lambda's processor would not run it (there, "exec format error") instead of letting it
    run natively. Anything else (a script, the host's architecture's function): `bootstrap` as it is."""
    wanted = architectures[0] if architectures else "x86_64"
    host = host_architecture()
    if wanted == host or elf_architecture(host_path) not in (wanted, host):
        return bootstrap
    program = emulator(wanted)
    return [program, *bootstrap] if program is not None else bootstrap
