"""The Python runtime's own packages: what a function finds besides the standard library and its own code, as Lambda's
Python runtimes ship boto3 in /var/runtime. Never the gateway's packages (aiohttp, pytest, numpy...).

One directory, `PACKAGES_DIR`, built by `make install` (`python -m gateway.runtime_packages`), holds at pinned
versions (`PINS`):

- boto3, botocore, s3transfer, jmespath, python-dateutil, six, urllib3: what Lambda's Python runtimes include (this
  gateway's pin, not the exact build Lambda runs today);
- msgpack (the runtime's frames) and pyseccomp (its seccomp filter): what the runtime itself needs. msgpack's C
  extension for every CPython ABI a wheel exists for sits side by side (`_cmsgpack.cpython-3XY-*.so`: each
  interpreter loads its own); an interpreter without one gets msgpack's pure-Python fallback, which msgpack itself
  picks when `_cmsgpack` does not import.

A zygote runs with `-I -S` and sys.path = [the runtime's source, this directory, the standard library]
(gateway/execution/zygote.py); a jail shows this directory merged with the runtime at /var/runtime
(runtimes/python/jail.py). Bytecode is compiled for every Python found on the host at build time: a jailed environment
cannot write it, and botocore compiled at each cold start would cost a second.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gateway.pythons import find_pythons

PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: where `make install` builds the packages
PACKAGES_DIR = PROJECT_ROOT / "build" / "runtime-packages"
#: what a Python function can import besides the standard library (all pure Python, one copy for every version)
PINS = (
    "boto3==1.44.18",
    "botocore==1.44.18",
    "s3transfer==0.19.3",
    "jmespath==1.1.0",
    "python-dateutil==2.9.0.post0",
    "six==1.17.0",
    "urllib3==2.8.0",
    "pyseccomp==0.1.2",
)
MSGPACK = "msgpack==1.2.4"
#: the CPython minors whose msgpack wheels are fetched (3.10 is the oldest the runtime runs on)
ABI_MINORS = range(10, 16)
#: marks a complete build (its content: the pins)
STAMP = ".installed"


def _pip(pip: Sequence[str], *args: str, check: bool = True) -> bool:
    done = subprocess.run([*pip, *args], stdout=subprocess.DEVNULL, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join([*pip, *args])} failed ({done.returncode})")
    return done.returncode == 0


def build(target: Path, pip: Sequence[str]) -> list[str]:
    """Install PINS and msgpack into `target` (replaced whole, so a failed build leaves the old one); add msgpack's C
    extension for each ABI of ABI_MINORS with a wheel. Returns the ABIs that have one ("cp312", ...)."""
    staging = target.with_name(target.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    _pip(pip, "install", "--quiet", "--no-deps", "--no-compile", "--only-binary=:all:", "--target", str(staging),
         *PINS, MSGPACK)  # fmt: skip
    abis = []
    with tempfile.TemporaryDirectory() as wheels:
        for minor in ABI_MINORS:  # a version without a wheel (yet) falls back to pure Python
            _pip(pip, "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version", f"3.{minor}",
                 "-d", wheels, MSGPACK, check=False)  # fmt: skip
        for wheel in sorted(Path(wheels).glob("*.whl")):
            with zipfile.ZipFile(wheel) as zf:
                for name in zf.namelist():
                    if name.startswith("msgpack/_cmsgpack.") and name.endswith(".so"):
                        zf.extract(name, staging)
                        abis.append(name.split(".")[1].split("-")[1])
    (staging / STAMP).write_text("\n".join([*PINS, MSGPACK]) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return sorted(set(abis))


def compile_for(target: Path, pythons: Iterable[str]) -> None:
    """Compile `target`'s modules to bytecode for each of `pythons` (in parallel; a failure is only reported)."""

    def one(python: str) -> None:
        args = [python, "-I", "-S", "-m", "compileall", "-q", "-j", "0", str(target)]
        if subprocess.run(args, stdout=subprocess.DEVNULL, check=False).returncode != 0:
            print(f"runtime packages: bytecode for {python} failed (its cold starts compile in memory)")

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, pythons))


def main() -> None:
    """`make install`: build PACKAGES_DIR with this interpreter's pip, then compile it for every Python found. With
    `--sources` (make, when the runtime's sources changed since): only compile those sources again."""
    pythons, _ = find_pythons(os.environ)  # the catalog's own discovery: the interpreters zygotes will run on
    gateway = PROJECT_ROOT / "gateway"
    sources = (PROJECT_ROOT / "runtimes", gateway / "contracts", gateway / "isolation")
    if sys.argv[1:] == ["--sources"]:
        for directory in sources:
            compile_for(directory, [p.path for p in pythons.values()])
        print(f"runtime sources compiled for {', '.join(p.version_text for p in pythons.values())}")
        return
    abis = build(PACKAGES_DIR, [sys.executable, "-m", "pip"])
    for directory in (PACKAGES_DIR, *sources):  # a zygote writes no bytecode (-B): it would compile at every start
        compile_for(directory, [p.path for p in pythons.values()])
    found = ", ".join(f"{p.version_text} ({p.path})" for p in pythons.values())
    print(f"runtime packages in {PACKAGES_DIR}: msgpack C extension for {', '.join(abis)}; compiled for {found}")


if __name__ == "__main__":
    main()
