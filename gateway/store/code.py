"""Content-addressed function code: zips stored by SHA-256, each extracted once, read-only.

Layout under `root`:

    zips/<sha256 hex>.zip   the uploaded package, kept as uploaded (GetFunction serves it)
    <sha256 hex>/           its extracted, read-only tree (a function's LAMBDA_TASK_ROOT)
    .tmp-*                  extraction in progress; renamed into place atomically when complete

Extraction is defensive: absolute names, drive letters, `..` escaping the target, symlinks and other
non-regular entries are refused, and the bytes actually written are counted against the unzipped limit
(headers of a zip bomb lie). A refused zip leaves nothing behind.

Concurrency: `put` is blocking (hashing and unzipping) and meant to run in a worker thread; several
threads or processes may `put` the same zip at once, the first rename wins and the others reuse it.

Garbage collection (`collect`, driven by store.codegc): a package nothing references any more is removed, zip and
tree. Between `put` and the registry write that references its digest, the digest is unreferenced: `put` takes a
lease on it, which the registry gives back with `adopt` once the reference is stored (a put whose registry write
never comes, a refused CreateFunction, leaves a lease that expires after `LEASE_SECONDS`). `collect` never removes a
leased digest; the lease and the removal decision are taken under one lock, so a `put` racing a collection either
keeps the tree or extracts it again.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import io
import logging
import os
import posixpath
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import InvalidParameterValueException, LambdaError

log = logging.getLogger("gateway.codestore")

#: Lambda's limits on a directly uploaded package
MAX_ZIPPED = 52_428_800
MAX_UNZIPPED = 262_144_000

UNZIP_FAILED = "Could not unzip uploaded file. Please check your file, then try to upload again."

_CHUNK = 1 << 20
#: seconds a package may take to byte-compile at deploy time
COMPILE_TIMEOUT = 600
_DRIVE_RE = re.compile(r"^[a-zA-Z]:")
_HEX_RE = re.compile(r"[0-9a-f]{64}")
#: seconds a stored package is kept for a registry write that has not referenced it yet
LEASE_SECONDS = 600.0
#: fixed timestamp of every entry written by `from_directory` (the earliest a zip can hold)
_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class CodeInfo:
    """What the store knows about one package."""

    sha256_hex: str
    sha256_b64: str  # base64 of the raw digest: Lambda's CodeSha256
    size: int  # bytes of the zip
    unzipped_size: int  # bytes of the regular files extracted from it
    path: Path  # extracted, read-only directory


class _Refused(Exception):
    """Internal: the zip may not be stored; carries the user-facing message."""


class CodeStore:
    """Zips by SHA-256 under `root`, each extracted once into a read-only directory."""

    def __init__(self, root: Path, *, max_zipped: int = MAX_ZIPPED, max_unzipped: int = MAX_UNZIPPED) -> None:
        self.root = root
        self.max_zipped = max_zipped
        self.max_unzipped = max_unzipped
        self._unzipped_sizes: dict[str, int] = {}  # sha256 hex -> bytes; trees never change once extracted
        self._lock = threading.Lock()
        #: sha256 hex -> [puts not adopted yet, when the lease expires, when it was last adopted] (time.monotonic())
        self._leases: dict[str, list[float]] = {}
        (root / "zips").mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-*"):  # left by a crash mid-extraction
            _force_rmtree(stale)

    def path_for(self, sha256_hex: str) -> Path:
        """The extracted directory of a package (it may not exist)."""
        if not _HEX_RE.fullmatch(sha256_hex):
            raise ValueError(f"not a sha256 hex digest: {sha256_hex!r}")
        return self.root / sha256_hex

    def zip_path(self, sha256_hex: str) -> Path:
        """The stored zip of a package (it may not exist)."""
        self.path_for(sha256_hex)  # validates the digest
        return self.root / "zips" / f"{sha256_hex}.zip"

    def put(self, zip_bytes: bytes, *, direct: bool = True) -> CodeInfo:
        """Store and extract a zip, or reuse the copy already stored. Blocking: run it in a thread.

        Raises InvalidParameterValueException (and stores nothing) if the zip is too large, invalid or unsafe.
        `direct`: uploaded in the request, so bounded by `max_zipped` (a package from S3 only by the unzipped limit).
        """
        return self._store(zip_bytes, keep=True, direct=direct)

    def check(self, zip_bytes: bytes, *, direct: bool = True) -> CodeInfo:
        """Validate a zip exactly as `put` does, without storing it (DryRun). Blocking."""
        return self._store(zip_bytes, keep=False, direct=direct)

    def ensure_extracted(self, sha256_hex: str) -> bool:
        """Re-extract a stored zip whose directory went missing; False if the zip is missing too."""
        if self.path_for(sha256_hex).is_dir():
            return True
        zpath = self.zip_path(sha256_hex)
        if not zpath.is_file():
            return False
        self.put(zpath.read_bytes())
        return True

    def unzipped_size(self, sha256_hex: str) -> int:
        """Bytes of the regular files in a stored package's extracted tree; cached after the first call.

        The first call walks the tree (blocking: run it in a thread for big packages) and re-extracts it if
        it went missing. Raises FileNotFoundError if the package is not in the store.
        """
        size = self._unzipped_sizes.get(sha256_hex)
        if size is None:
            if not self.ensure_extracted(sha256_hex):
                raise FileNotFoundError(f"code {sha256_hex} is not in the code store")
            size = self._unzipped_sizes[sha256_hex] = _tree_size(self.path_for(sha256_hex))
        return size

    # -- garbage collection ------------------------------------------------------------------------

    def adopt(self, sha256_hex: str) -> None:
        """A registry write now references the digest a `put` returned: give back that put's lease.

        The last lease given back still protects the digest from collections whose list of references was taken
        before this call (it may not hold the new reference yet).
        """
        with self._lock:
            lease = self._leases.get(sha256_hex)
            if lease is not None:
                lease[0] = max(lease[0] - 1, 0)
                lease[2] = time.monotonic()

    def stored(self) -> set[str]:
        """Digests with a tree or a zip in the store (blocking: lists two directories)."""
        found = {e.name for e in os.scandir(self.root) if _HEX_RE.fullmatch(e.name)}
        zips = self.root / "zips"
        found.update(
            e.name[:-4] for e in os.scandir(zips) if e.name.endswith(".zip") and _HEX_RE.fullmatch(e.name[:-4])
        )
        return found

    def collect(self, keep: set[str], taken_at: float) -> list[str]:
        """Remove every stored package whose digest is neither in `keep` nor leased; return the removed digests.

        Blocking (directory listings and tree removal): run it in a thread. `keep` is what the registry, the layer
        store and running environments referenced at `taken_at` (time.monotonic()), computed by the caller.
        """
        removed: list[str] = []
        doomed: list[Path] = []
        now = time.monotonic()
        with self._lock:  # leases adopted before the references were listed have done their job
            for hex_ in [h for h, (count, _, adopted) in self._leases.items() if count == 0 and adopted < taken_at]:
                del self._leases[hex_]
        for hex_ in sorted(self.stored() - keep):
            with self._lock:
                lease = self._leases.get(hex_)
                if lease is not None:
                    count, expires, _ = lease
                    if (count > 0 and expires > now) or count == 0:
                        continue  # a put not referenced yet, or referenced after `keep` was listed
                    del self._leases[hex_]  # expired: its put never became a function or a layer
                tree = self.path_for(hex_)
                if tree.is_dir():
                    grave = self.root / f".tmp-gc-{hex_}"
                    if grave.exists():
                        _force_rmtree(grave)
                    os.rename(tree, grave)  # atomic: a put after this extracts it again
                    doomed.append(grave)
                self.zip_path(hex_).unlink(missing_ok=True)
                self._unzipped_sizes.pop(hex_, None)
            removed.append(hex_)
        for grave in doomed:
            _force_rmtree(grave)
        if removed:
            log.info("removed %d packages no function, version or layer uses", len(removed))
        return removed

    # -- internals ---------------------------------------------------------------------------------

    def _store(self, zip_bytes: bytes, *, keep: bool, direct: bool = True) -> CodeInfo:
        if direct and len(zip_bytes) > self.max_zipped:
            raise InvalidParameterValueException(f"Zipped size must be smaller than {self.max_zipped} bytes")
        digest = hashlib.sha256(zip_bytes).digest()
        hex_ = digest.hex()
        b64 = base64.b64encode(digest).decode("ascii")
        target = self.path_for(hex_)
        if keep:  # before looking at the tree: a collection cannot remove it from here on
            with self._lock:
                lease = self._leases.setdefault(hex_, [0, 0.0, 0.0])
                lease[0] += 1
                lease[1] = time.monotonic() + LEASE_SECONDS
        if target.is_dir():  # extracted before, so already validated
            if keep:
                self._write_zip(hex_, zip_bytes)  # no-op unless a crash lost it
            return CodeInfo(hex_, b64, len(zip_bytes), _tree_size(target), target)

        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
        try:
            unzipped = self._extract(zip_bytes, tmp)
            if not keep:
                return CodeInfo(hex_, b64, len(zip_bytes), unzipped, target)
            _precompile(tmp)
            _make_read_only(tmp)
            _sync_filesystem(tmp)  # the registry row that will point here is committed durably too
            self._write_zip(hex_, zip_bytes)
            try:
                os.rename(tmp, target)
                _fsync_dir(self.root)
            except OSError:
                if not target.is_dir():
                    raise
                log.debug("code %s was extracted concurrently; reusing it", hex_)
            else:
                log.info("stored code %s (%d bytes zipped, %d unzipped)", hex_, len(zip_bytes), unzipped)
            return CodeInfo(hex_, b64, len(zip_bytes), unzipped, target)
        finally:
            if tmp.exists():
                _force_rmtree(tmp)

    def _write_zip(self, hex_: str, zip_bytes: bytes) -> None:
        dest = self.zip_path(hex_)
        if dest.is_file():
            return
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".zip", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(zip_bytes)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp_name, 0o444)
            os.replace(tmp_name, dest)
            _fsync_dir(dest.parent)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def _extract(self, zip_bytes: bytes, dest: Path) -> int:
        """Extract every entry safely into `dest`; return the bytes written."""
        try:
            with zipfile.ZipFile(io.BytesIO(zip_bytes)) as zf:
                infos = zf.infolist()
                plan = [(info, _safe_name(info)) for info in infos]
                if _declared_size(infos) > self.max_unzipped:  # cheap early refusal
                    raise _Refused(f"Unzipped size must be smaller than {self.max_unzipped} bytes")
                written = 0
                for info, name in plan:
                    if name is None:
                        continue
                    path = dest.joinpath(*name.split("/"))
                    if info.is_dir():
                        path.mkdir(parents=True, exist_ok=True)
                        continue
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(path, "wb") as out:
                        while chunk := src.read(_CHUNK):
                            written += len(chunk)
                            if written > self.max_unzipped:
                                raise _Refused(f"Unzipped size must be smaller than {self.max_unzipped} bytes")
                            out.write(chunk)
                    if (info.external_attr >> 16) & 0o111:
                        path.chmod(0o755)  # keep executables executable (bootstrap scripts, binaries)
                return written
        except _Refused as exc:
            raise InvalidParameterValueException(str(exc)) from None
        except LambdaError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError,
                RuntimeError, ValueError, OSError) as exc:  # fmt: skip
            log.info("refused a zip: %s: %s", type(exc).__name__, exc)
            raise InvalidParameterValueException(UNZIP_FAILED) from None


def _sync_filesystem(path: Path) -> None:
    """Flush every extracted file at once (syncfs(2)), rather than one fsync per file."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


_libc = ctypes.CDLL(None, use_errno=True)


def _fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _declared_size(infos: list[zipfile.ZipInfo]) -> int:
    """What the headers claim; only a first filter, the bytes written are what is enforced."""
    return sum(info.file_size for info in infos)


def _safe_name(info: zipfile.ZipInfo) -> str | None:
    """The entry's normalized relative path; None for the root itself. Raises _Refused if unsafe."""
    raw = info.filename
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        raise _Refused(f"Could not unzip uploaded file: entry {raw!r} is a symbolic link, which is not allowed.")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise _Refused(f"Could not unzip uploaded file: entry {raw!r} is not a regular file or directory.")
    name = raw.replace("\\", "/")
    if name.startswith("/") or _DRIVE_RE.match(name) or "\x00" in name:
        raise _Refused(f"Could not unzip uploaded file: entry {raw!r} has an absolute path.")
    norm = posixpath.normpath(name)
    if norm == ".":
        return None
    if norm == ".." or norm.startswith("../"):
        raise _Refused(f"Could not unzip uploaded file: entry {raw!r} points outside the package.")
    return norm


def _make_read_only(top: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(top):
        for fn in filenames:
            p = os.path.join(dirpath, fn)
            os.chmod(p, 0o555 if os.stat(p).st_mode & 0o100 else 0o444)
        for dn in dirnames:
            os.chmod(os.path.join(dirpath, dn), 0o555)
    os.chmod(top, 0o555)


def _force_rmtree(top: Path) -> None:
    """Remove a tree even if it was made read-only (needed when not running as root)."""
    for dirpath, dirnames, _ in os.walk(top):
        os.chmod(dirpath, 0o700)
        for dn in dirnames:
            os.chmod(os.path.join(dirpath, dn), 0o700)
    shutil.rmtree(top, ignore_errors=True)


def _precompile(top: Path) -> None:
    """Byte-compile the tree's Python sources now, as pip does at install time: the tree is read-only from here
    on, so otherwise every cold start would compile the handler's modules again. A file that does not compile is
    left alone (its import fails in Init, with Lambda's error).

    In a child process: compiling holds the GIL for a whole module at a time, which a thread of the gateway
    would take from its event loop. Only for trees with Python sources (the child's start costs ~50 ms).
    """
    if not any(name.endswith(".py") for _, _, names in os.walk(top) for name in names):
        return
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cmd = [sys.executable, "-m", "compileall", "-q", "-q", "-j", "1", str(top)]
    try:
        subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=COMPILE_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as exc:  # slower cold starts, nothing worse
        log.warning("could not byte-compile %s: %s", top, exc)


def _tree_size(top: Path) -> int:
    """Bytes of the extracted files, without the byte-code `_precompile` added (unzipped size is the zip's)."""
    total = 0
    for dirpath, _, filenames in os.walk(top):
        compiled = os.path.basename(dirpath) == "__pycache__"
        for fn in filenames:
            if not (compiled and fn.endswith(".pyc")):
                total += os.lstat(os.path.join(dirpath, fn)).st_size
    return total


def from_directory(directory: Path) -> bytes:
    """A deterministic zip of a directory's regular files: sorted entries, fixed timestamps.

    The same tree always gives the same bytes (hence the same CodeSha256). `__pycache__` and `*.pyc`
    are left out; the executable bit is kept.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for dirpath, dirnames, filenames in os.walk(directory):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for fn in sorted(filenames):
                path = Path(dirpath, fn)
                if fn.endswith(".pyc") or not path.is_file():
                    continue
                info = zipfile.ZipInfo(path.relative_to(directory).as_posix(), date_time=_EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3  # unix, so external_attr carries the mode
                executable = path.stat().st_mode & 0o111
                info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
                zf.writestr(info, path.read_bytes())
    return buf.getvalue()
