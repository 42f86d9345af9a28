"""The Pythons on this host: which interpreter can run Lambda's `python3.X` (gateway/catalog.py asks).

`find_pythons(environ, minors, explicit)` looks, for each minor X, at: the interpreter the operator named (`explicit`,
from GATEWAY_RUNTIME_PYTHON3_X: only it), else this gateway's own interpreter for its own version (no probe: its
version is known), else the first of

1. `python3.X` on PATH. A shim (a script in a `shims` directory: pyenv's execs `pyenv exec`, ~90 ms per start) is
   not used: it stands for its pyenv root, whose versions come next;
2. pyenv's versions: `$PYENV_ROOT` (and the root of any shim directory on PATH, and ~/.pyenv):
   `versions/3.X.Y/bin/python3.X`, the newest Y first (release builds only: no `3.13t`, no `-dev`);
3. /usr/bin/python3.X, /usr/local/bin/python3.X.

Each candidate is verified once: run with `-I -S -c` to print its implementation and version (CPython 3.X wanted).
The first candidate of every minor runs at the same time (parallel subprocesses; ~30 ms in all); a minor whose
candidate fails tries its next one in the following round. Results are cached for the process, by file identity.

Blocking (subprocesses); called once at start-up and by `make install` (gateway/runtime_packages.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: the oldest Python the runtime (runtimes/python, gateway/contracts) runs on: it uses 3.10's syntax
MIN_PYTHON_MINOR = 10
#: what a candidate prints: its implementation and version
PROBE = "import sys; print(sys.implementation.name, *sys.version_info[:3])"
PROBE_TIMEOUT = 10.0
_RELEASE = re.compile(r"3\.(\d+)(?:\.(\d+))?")

_probed: dict[tuple[str, int, int, int], tuple[int, int, int] | None] = {}


@dataclass(frozen=True)
class Python:
    """A CPython interpreter, verified: its path (what a zygote is started with) and version."""

    path: str
    version: tuple[int, int, int]

    @property
    def minor(self) -> int:
        return self.version[1]

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))


def own_python() -> Python:
    """This gateway's interpreter: the installation a virtual environment was made from (its `-I -S` sys.path is the
    same, and a jail need not show the virtual environment), else sys.executable."""
    base = getattr(sys, "_base_executable", "")
    path = base if base and os.access(base, os.X_OK) else sys.executable
    return Python(path, (sys.version_info.major, sys.version_info.minor, sys.version_info.micro))


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _is_script(path: str) -> bool:
    """Whether `path` is a `#!` script (a pyenv shim, a wrapper) rather than an interpreter binary."""
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"#!"
    except OSError:
        return False


def _pyenv_versions(root: str, minor: int) -> list[str]:
    """`root`/versions/3.`minor`.Y/bin/python3.`minor`, newest Y first (release builds only)."""
    versions = os.path.join(root, "versions")
    try:
        names = os.listdir(versions)
    except OSError:
        return []
    found = []
    for name in names:
        match = _RELEASE.fullmatch(name)
        if match and int(match.group(1)) == minor:
            path = os.path.join(versions, name, "bin", f"python3.{minor}")
            if _executable(path):
                found.append((int(match.group(2) or 0), path))
    return [path for _, path in sorted(found, reverse=True)]


def candidates(minor: int, environ: Mapping[str, str]) -> list[str]:
    """Where a Python 3.`minor` may be, in the order they are tried (see the module's docstring); no duplicates."""
    name = f"python3.{minor}"
    found: list[str] = []
    roots = [environ["PYENV_ROOT"]] if environ.get("PYENV_ROOT") else []
    for directory in environ.get("PATH", "").split(os.pathsep):
        path = os.path.join(directory, name)
        if not directory or not _executable(path):
            continue
        if os.path.basename(os.path.normpath(directory)) == "shims" and _is_script(path):
            roots.append(os.path.dirname(os.path.normpath(directory)))  # pyenv's: its versions come next
            continue
        found.append(path)
    if environ.get("HOME"):
        roots.append(os.path.join(environ["HOME"], ".pyenv"))
    for root in dict.fromkeys(roots):
        found += _pyenv_versions(root, minor)
    found += [p for p in (f"/usr/bin/{name}", f"/usr/local/bin/{name}") if _executable(p)]
    unique: dict[str, str] = {}
    for path in found:
        unique.setdefault(os.path.realpath(path), path)
    return list(unique.values())


def _identity(path: str) -> tuple[str, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.path.realpath(path), st.st_ino, st.st_mtime_ns, st.st_size)


def probe(paths: Iterable[str]) -> dict[str, tuple[int, int, int] | None]:
    """The CPython version of each of `paths` (None: not runnable, or not CPython), all run at once."""
    out: dict[str, tuple[int, int, int] | None] = {}
    running: list[tuple[str, tuple[str, int, int, int], subprocess.Popen[bytes]]] = []
    for path in dict.fromkeys(paths):
        key = _identity(path)
        if key is None:
            out[path] = None
        elif key in _probed:
            out[path] = _probed[key]
        else:
            try:
                proc = subprocess.Popen(
                    [path, "-I", "-S", "-c", PROBE],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
                )
            except OSError:
                out[path] = _probed[key] = None
                continue
            running.append((path, key, proc))
    for path, key, proc in running:
        try:
            stdout, _ = proc.communicate(timeout=PROBE_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            stdout = b""
        out[path] = _probed[key] = _parse(stdout) if proc.returncode == 0 else None
    return out


def _parse(stdout: bytes) -> tuple[int, int, int] | None:
    fields = stdout.decode(errors="replace").split()
    if len(fields) != 4 or fields[0] != "cpython" or not all(f.isdigit() for f in fields[1:]):
        return None
    major, minor, micro = (int(f) for f in fields[1:])
    return (major, minor, micro) if major == 3 else None


def find_pythons(
    environ: Mapping[str, str], minors: Iterable[int] | None = None, explicit: Mapping[int, str] | None = None
) -> tuple[dict[int, Python], dict[int, str]]:
    """For each of `minors` (default: 3.MIN_PYTHON_MINOR to 3.15) the Python 3.X found (see the module's docstring):
    (found, problems): `problems` says why an `explicit` interpreter cannot be used."""
    explicit = dict(explicit or {})
    own = own_python()
    found: dict[int, Python] = {}
    problems: dict[int, str] = {}
    todo: dict[int, list[str]] = {}
    for minor in dict.fromkeys(range(MIN_PYTHON_MINOR, 16) if minors is None else minors):
        if minor in explicit:
            named = explicit[minor]
            todo[minor] = [named if os.sep in named else shutil.which(named, path=environ.get("PATH")) or named]
        elif minor == own.minor:
            found[minor] = own
        else:
            todo[minor] = candidates(minor, environ)
    while any(todo.values()):
        batch = {minor: paths.pop(0) for minor, paths in todo.items() if paths}
        versions = probe(batch.values())
        for minor, path in batch.items():
            version = versions[path]
            if version is not None and version[1] == minor:
                found[minor] = Python(path, version)
                todo[minor] = []
            elif minor in explicit:
                what = "could not be run as CPython" if version is None else f"is Python {'.'.join(map(str, version))}"
                problems[minor] = (
                    f"The runtime parameter of python3.{minor} cannot run here: GATEWAY_RUNTIME_PYTHON3_{minor}="
                    f"{explicit[minor]} {what}, not a Python 3.{minor}."
                )
    return found, problems
