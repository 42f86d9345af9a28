"""What a nodejs* environment runs, as Lambda's Node.js runtimes run it: our runtime (runtimes/node/index.mjs) under
the catalogue's Node.js (gateway/catalog.py), with Lambda's flags and NODE_PATH. Pure but for a few stats.

Lambda's /var/runtime/bootstrap for Node.js starts
`node --expose-gc --max-http-header-size 81920 --max-semi-space-size=S --max-old-space-size=O index.mjs`, the heap
sized from the function's memory (a tenth for the young generation, of which the semi-space is half; the rest for
the old one), and sets NODE_PATH (unless the function does) so that `require` finds the layers' packages:
/opt/nodejs/node<N>/node_modules, /opt/nodejs/node_modules, then the runtime's and the task root.

In a jail, a Node.js outside the system's directories runs as Lambda's does, from /var/lang/bin/node: its installation
(gateway/nodes.py: node_prefix; the catalogue refused one a jail must not show) mounted read-only at /var/lang, and
nothing else of the host's directories around it.

NODE_PATH serves only `require`; an ES module's `import` resolves through the node_modules directories above the
importing file. So that an .mjs handler imports the layers' packages as on Lambda (Node.js 18 and later), a jail
also shows them at /var/node_modules and /node_modules, above /var/task (`layer_module_mounts`).
"""

from __future__ import annotations

import os
from pathlib import Path

from gateway.contracts.environment import Mount
from gateway.nodes import node_prefix
from gateway.runtime_packages import PACKAGES_DIR

#: our Node.js runtime on the host (LAMBDA_RUNTIME_DIR without a jail)
NODE_RUNTIME_DIR = str(Path(__file__).resolve().parents[2] / "runtimes" / "node")
#: where a jail shows it, as Lambda's Node.js runtimes have theirs (/var/runtime/index.mjs), so stack traces name no
#: host path: on top of what the jail has there (runtimes/python and its packages, which the proxy's Python may
#: still import from), one read-only overlay
JAIL_RUNTIME_DIR = "/var/runtime"
#: what a jail shows at /var/runtime beneath it (runtimes/python/jail.py: RUNTIME_DIRS)
PYTHON_RUNTIME_DIR = str(Path(__file__).resolve().parents[2] / "runtimes" / "python")
#: where a jail shows a Node.js installation outside the system's directories, as Lambda has its Node.js
JAIL_NODE_PREFIX = "/var/lang"


def node_major(runtime: str) -> int:
    """22 for "nodejs22.x"."""
    return int(runtime[len("nodejs") : -len(".x")])


def runtime_dir(jailed: bool) -> str:
    """LAMBDA_RUNTIME_DIR of a nodejs* environment: where it finds runtimes/node."""
    return JAIL_RUNTIME_DIR if jailed else NODE_RUNTIME_DIR


def runtime_mounts(program: str | None, jailed: bool) -> list[Mount]:
    """What a jail mounts for a nodejs* environment: runtimes/node at /var/runtime (on top of what is there) and, for
    a Node.js installation outside the system's directories (nvm's, say), its prefix, read-only, at JAIL_NODE_PREFIX
    (never where the host has it: that path may be under a home directory, or under /opt, the layers'). A binary
    that is no installation gets no mount: it is not found in the jail (the catalogue refuses it first)."""
    if not jailed:
        return []
    beneath = [PYTHON_RUNTIME_DIR] + ([str(PACKAGES_DIR)] if PACKAGES_DIR.is_dir() else [])
    mounts = [Mount(JAIL_RUNTIME_DIR, [NODE_RUNTIME_DIR, *beneath])]
    if prefix := _prefix(program):
        mounts.append(Mount(JAIL_NODE_PREFIX, [prefix]))
    return mounts


def _prefix(program: str | None) -> str | None:
    """The installation a jail mounts for `program` (gateway/nodes.py: node_prefix), or None/"" for none."""
    return node_prefix(program) if program and os.path.isabs(program) else None


def command(program: str | None, memory_mb: int, jailed: bool) -> list[str]:
    """The runtime's command line: `program` (a Node.js; "node" from PATH without one; in a jail, its installation's
    /var/lang/bin/node when `runtime_mounts` mounts one) with Lambda's flags."""
    new_space = memory_mb // 10
    mounted = jailed and bool(_prefix(program))
    return [
        f"{JAIL_NODE_PREFIX}/bin/node" if mounted else program or "node",
        "--expose-gc",
        "--max-http-header-size",
        "81920",
        f"--max-semi-space-size={max(new_space // 2, 1)}",
        f"--max-old-space-size={memory_mb - new_space}",
        f"{runtime_dir(jailed)}/index.mjs",
    ]


def node_path(runtime: str, task_root: str, layers: list[str], jailed: bool, runtime_dir: str) -> str:
    """NODE_PATH as Lambda sets it: in a jail the merged /opt; without one each layer's directories, newest first
    (a later layer overrides an earlier one, as in Lambda's merge)."""
    major = node_major(runtime)
    roots = ["/opt"] if jailed else [str(layer) for layer in reversed(layers)]
    parts = [f"{root}/nodejs/node{major}/node_modules" for root in roots]
    parts += [f"{root}/nodejs/node_modules" for root in roots]
    return ":".join([*parts, f"{runtime_dir}/node_modules", runtime_dir, task_root])


#: where a jail shows the layers' packages for ES modules: an `import` from /var/task/<file> walks up through
#: /var/task/node_modules (the function's own, which wins), then these two, in NODE_PATH's order (`node_path`)
ESM_LAYER_DIRS = (("/var/node_modules", "nodejs/node{major}/node_modules"), ("/node_modules", "nodejs/node_modules"))


def layer_module_mounts(runtime: str, layers: list[str], jailed: bool) -> list[Mount]:
    """What a jail mounts so that ES modules import the layers' packages, as Lambda's Node.js runtimes (18 and later)
    let them: NODE_PATH serves only `require`, and an `import` resolves only through the node_modules directories
    above the importing file. So /var/node_modules shows the layers' nodejs/node<N>/node_modules and /node_modules
    their nodejs/node_modules, each merged as /opt merges them (a later layer on top), read-only; directories no
    layer has are not mounted, nor any reached through a symbolic link (a mount follows links in its source, which
    /opt never does: the code store refuses links in zips, and this holds without that). Without a jail: none (the
    code's host directory has no such parents of ours; only `require` finds the layers' packages there). Stats each
    layer's two directories."""
    if not jailed:
        return []
    major = node_major(runtime)
    mounts = []
    for target, pattern in ESM_LAYER_DIRS:
        sub = pattern.format(major=major)
        sources = [f"{layer}/{sub}" for layer in reversed(layers) if _own_dir(layer, sub)]  # the newest on top
        if sources:
            mounts.append(Mount(target, sources))
    return mounts


def _own_dir(layer: str, sub: str) -> bool:
    """Whether `layer`/`sub` is a directory of the layer's own tree (no link on the way)."""
    path = os.path.join(layer, sub)
    return os.path.isdir(path) and os.path.realpath(path) == os.path.join(os.path.realpath(layer), sub)
