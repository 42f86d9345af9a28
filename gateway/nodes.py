"""The Node.js installations on this host: which one runs Lambda's `nodejs<N>.x` (gateway/catalog.py asks).

`choose_node(runtime, explicit, fallback, environ)` takes the Node.js the operator named (`explicit`, from
GATEWAY_RUNTIME_NODEJS<N>_X: only it, and it must be a Node.js N), else the first Node.js N of `node_candidates`:
`node` on PATH, nvm's versions (`$NVM_DIR`, ~/.nvm: the newest first), /usr/local/bin/node, /usr/bin/node. None: the
runtime is refused with what to install or set; with `fallback` (GATEWAY_RUNTIME_FALLBACK=1) the nearest major found
runs it instead (the newer of two as near), and the note says so.

Each candidate's version is read once (`node --version`, ~40 ms), cached for the process by path. Blocking; called
once at start-up.
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence

PROBE_TIMEOUT = 10.0


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
) -> tuple[str, str | None] | str:
    """(the Node.js that runs `runtime`, a note when it is another major) or, when none may, the refusal's message.
    `candidates` defaults to `node_candidates(environ)`."""
    major = node_major(runtime)
    paths = [explicit] if explicit else (candidates if candidates is not None else node_candidates(environ))
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
