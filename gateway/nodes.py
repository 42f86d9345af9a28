"""The Node.js installations on this host: which one runs Lambda's `nodejs<N>.x` (gateway/catalog.py asks).

`choose_node(runtime, explicit, fallback, environ)` takes the Node.js the operator named (`explicit`, from
GATEWAY_RUNTIME_NODEJS<N>_X: only it, and it must be a Node.js N), else the first Node.js N of `node_candidates`:
`node` on PATH, nvm's versions (`$NVM_DIR`, ~/.nvm: the newest first), /usr/local/bin/node, /usr/bin/node. None: the
runtime is refused with what to install or set; with `fallback` (GATEWAY_RUNTIME_FALLBACK=1) the nearest major found
runs it instead (the newer of two as near), and the note says so.

In a jail (runtimes/python/jail.py) a Node.js outside the system's directories runs from its installation, mounted
read-only at /var/lang (gateway/execution/nodejs.py): `node_prefix` finds that installation, `jail_problem` refuses
one a jail must not show (the root, a home directory, one holding the data directory or the gateway's project): a
candidate with a problem is passed over, an explicit one refused with it.

Each candidate's version is read once (`node --version`, ~40 ms), cached for the process by path. Blocking; called
once at start-up.
"""

from __future__ import annotations

import functools
import glob
import os
import pwd
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

PROBE_TIMEOUT = 10.0
#: where a jail shows the host's system (runtimes/python/jail.py): a Node.js under these needs no mount of its own
SYSTEM_DIRS = ("/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/")
#: the gateway's own tree (its code, its virtual environment): never shown to a function
PROJECT = str(Path(__file__).resolve().parents[1])


def node_prefix(node: str) -> str | None:
    """The installation of a Node.js outside the system's directories: <prefix> when its real path is
    <prefix>/bin/node and <prefix> has include/node or lib/node_modules (as Node.js's archives, nvm's and nodeenv's
    installations have); "" for one in the system's directories (a jail shows them as they are); None for a binary
    that is no installation (a copy in ~/bin, say), whose directories say nothing about what it needs."""
    real = os.path.realpath(node)
    if real.startswith(SYSTEM_DIRS):
        return ""
    bin_dir = os.path.dirname(real)
    prefix = os.path.dirname(bin_dir)
    if os.path.basename(bin_dir) != "bin" or os.path.basename(real) != "node":
        return None
    if os.path.isdir(os.path.join(prefix, "include", "node")) or os.path.isdir(
        os.path.join(prefix, "lib", "node_modules")
    ):
        return prefix
    return None


def _homes() -> set[str]:
    homes = {os.path.expanduser("~")}
    homes.update(entry.pw_dir for entry in pwd.getpwall() if entry.pw_dir not in ("", "/"))
    return {os.path.realpath(home) for home in homes}


def jail_problem(node: str, private: Sequence[str]) -> str | None:
    """Why a jail cannot show `node`, or None: it is no Node.js installation (`node_prefix`), or its prefix is the
    root, a home directory, or holds one of `private` (the data directory, the gateway's project) or a home
    directory; all of a prefix is mounted into every environment of its runtimes."""
    prefix = node_prefix(node)
    if prefix == "":
        return None
    if prefix is None:
        return (
            f"{node} is not part of a Node.js installation (<prefix>/bin/node with <prefix>/include/node or "
            "<prefix>/lib/node_modules), which a jail would show at /var/lang"
        )
    for other in [*(os.path.realpath(p) for p in private), *_homes()]:
        if prefix == "/" or other == prefix or other.startswith(prefix + "/"):
            return (
                f"{node} belongs to {prefix}, which a jail would show to every function, and which holds {other}: "
                "install Node.js in a directory of its own (nvm's, /usr/local, /opt/node ...)"
            )
    return None


def node_major(runtime: str) -> int:
    """22 for "nodejs22.x"."""
    return int(runtime[len("nodejs") : -len(".x")])


def node_candidates(environ: Mapping[str, str]) -> list[str]:
    """Node.js binaries this host has, in order of preference; each once (by real path)."""
    paths = [shutil.which("node", path=environ.get("PATH")) or ""]
    for nvm in (environ.get("NVM_DIR", ""), os.path.expanduser("~/.nvm")):
        if nvm:
            paths += sorted(glob.glob(os.path.join(nvm, "versions", "node", "v*", "bin", "node")), reverse=True)
    paths += ["/usr/local/bin/node", "/usr/bin/node"]
    seen: set[str] = set()
    out = []
    for path in paths:
        real = os.path.realpath(path) if path else ""
        if real and real not in seen and os.access(real, os.X_OK):
            seen.add(real)
            out.append(path)
    return out


@functools.cache
def node_version(node: str) -> str | None:
    """`node --version` without its "v" ("20.20.2"), or None when `node` does not run."""
    try:
        out = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=PROBE_TIMEOUT, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    version = out.strip().lstrip("v")
    return version if version.split(".")[0].isdigit() else None


def _major(version: str) -> int:
    return int(version.split(".")[0])


def choose_node(
    runtime: str,
    explicit: str | None,
    fallback: bool,
    environ: Mapping[str, str],
    candidates: Sequence[str] | None = None,
    private: Sequence[str] = (),
) -> tuple[str, str | None] | str:
    """(the Node.js that runs `runtime`, a note when it is another major) or, when none may, the refusal's message.
    `candidates` defaults to `node_candidates(environ)`; one with a `jail_problem` (given `private`, the paths no
    function may see) is passed over, an explicit one refused."""
    major = node_major(runtime)
    if explicit and (problem := jail_problem(explicit, private)):
        return f"The runtime parameter of {runtime} cannot run here: GATEWAY_RUNTIME_NODEJS{major}_X={problem}."
    paths = [explicit] if explicit else (candidates if candidates is not None else node_candidates(environ))
    paths = [path for path in paths if not jail_problem(path, private)]
    found = [(path, version) for path in paths if (version := node_version(path))]
    for path, version in found:
        if _major(version) == major:
            return path, None
    setting = f"GATEWAY_RUNTIME_NODEJS{major}_X"
    if found and fallback:
        path, version = min(found, key=lambda pv: (abs(_major(pv[1]) - major), -_major(pv[1])))
        return path, (
            f"The runtime {runtime} runs on Node.js {version} on this gateway: no Node.js {major} is here, "
            f"and GATEWAY_RUNTIME_FALLBACK=1 lets another Node.js stand in. Install Node.js {major}, or set "
            f"{setting}=/path/to/node, to run it on its own version."
        )
    if explicit:
        what = f"{explicit} is not a Node.js {major}" + (f" (it is {found[0][1]})" if found else " (it does not run)")
        return f"The runtime parameter of {runtime} cannot run here: {setting}={what}."
    return (
        f"The runtime parameter of {runtime} needs a Node.js {major} on the gateway's host: none was found (on PATH, "
        f"in nvm's versions, /usr/local/bin, /usr/bin). Install Node.js {major}, or name one with "
        f"{setting}=/path/to/node and restart the gateway (GATEWAY_RUNTIME_FALLBACK=1 runs it on another Node.js "
        "instead)."
    )
