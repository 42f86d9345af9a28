"""The Node.js function of the bench's `runtimes` scenario: the same no-op as the other kinds (it returns its event),
as an ES module on the host's Node.js (`nodejs<major>.x`, so that no fallback is measured).

`nodejs_function(tmp)` -> (runtime id, handler, zip bytes), the shape bench/scenarios/runtimes.py's kinds build;
it raises LookupError when this host has no `node` (the scenario then reports the kind as skipped).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bench.harness import make_zip

NOOP_MJS = "export const handler = async (event) => event;\n"


def nodejs_function(tmp: Path) -> tuple[str, str, bytes]:
    """A no-op Node.js function for the host's Node.js major (`tmp` unused: nothing to build)."""
    node = shutil.which("node")
    if node is None:
        raise LookupError("no `node` on PATH")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True, timeout=30).stdout
    major = version.strip().lstrip("v").split(".")[0]
    return f"nodejs{major}.x", "index.handler", make_zip({"index.mjs": NOOP_MJS})
