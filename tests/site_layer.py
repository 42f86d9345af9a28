"""A Lambda layer built from distributions installed in this venv: what a user's `pip install -t python/` and zip
would give, without the network.

`layer_zip(["fastapi", "mangum"])` walks each distribution's requirements recursively (markers evaluated for this
interpreter, extras not taken: what `pip install fastapi` installs), takes the files each one's RECORD lists under
site-packages (sources, C extensions such as pydantic-core's, dist-info: some libraries read their own version
with importlib.metadata), compiles the sources into hash-checked `.pyc` files, and zips all of it under `python/`,
Lambda's layout for Python layers (the gateway puts /opt/python on the function's sys.path: gateway/execution/spec.py).

Why the venv and not `pip install --target`: the Makefile installs these libraries from PyPI once (pyproject.toml's
`test` extra), and a second install per test session would fetch them again and resolve versions of its own; the
venv's are the versions the suite was installed with, for the interpreter the functions run on (the `RUNTIME` of
tests/conftest.py is the venv's Python, so a C extension built for it loads in the function).

Why hash-checked `.pyc` files: a jail mounts layers read-only and the runtime runs with -B, so a function would
compile FastAPI's and pydantic's sources again at every cold start (seconds on a busy 2-core machine); a `.pyc` whose
header holds its source's hash stays valid whatever modification times extraction gives the files.
"""

from __future__ import annotations

import compileall
import io
import py_compile
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

#: a fixed time stamp, so that the same files give the same zip (and the same CodeSha256)
_DATE = (2020, 1, 1, 0, 0, 0)


class MissingDistribution(LookupError):
    """A requirement of the closure is not installed in this venv (the test extra is not installed)."""


def closure(names: Iterable[str]) -> list[metadata.Distribution]:
    """The distributions `names` need, themselves included, each once, in a stable order (by name)."""
    found: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError as exc:
            raise MissingDistribution(f"{name} is not installed here (make install: the test extra)") from exc
        found[name] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return [found[name] for name in sorted(found)]


def _site_files(dist: metadata.Distribution) -> Iterable[tuple[str, Path]]:
    """(path relative to site-packages, file) of what `dist` installed there: no scripts in bin/, no cache."""
    for entry in dist.files or []:
        relative = Path(entry)
        if relative.parts[0] == ".." or "__pycache__" in relative.parts or relative.suffix == ".pyc":
            continue
        path = Path(str(dist.locate_file(entry)))
        if path.is_file():
            yield relative.as_posix(), path


def layer_zip(names: Iterable[str]) -> bytes:
    """A layer zip (`python/...`) with `names` and everything they require, compiled for this interpreter."""
    with tempfile.TemporaryDirectory(prefix="site-layer-") as tmp:
        root = Path(tmp) / "python"
        for dist in closure(names):
            for relative, path in _site_files(dist):
                target = root / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
        with warnings.catch_warnings():  # a library's SyntaxWarning is its own (pytest makes warnings errors)
            warnings.simplefilter("ignore")
            compileall.compile_dir(root, quiet=2, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                info = zipfile.ZipInfo(path.relative_to(tmp).as_posix(), date_time=_DATE)
                info.external_attr = 0o100644 << 16
                zf.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
        return buf.getvalue()
