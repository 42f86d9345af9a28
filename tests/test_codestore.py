"""CodeStore: content addressing, dedup, read-only trees and refusal of unsafe zips."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import stat
import sys
import time
import zipfile
from pathlib import Path

import pytest

from gateway.errors import InvalidParameterValueException
from gateway.store import code as codestore
from gateway.store.code import UNZIP_FAILED, CodeStore, from_directory


def _zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return buf.getvalue()


def _entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def _nothing_stored(root: Path) -> bool:
    return sorted(p.name for p in root.iterdir()) == ["zips"] and not any((root / "zips").iterdir())


@pytest.fixture
def store(tmp_path: Path) -> CodeStore:
    return CodeStore(tmp_path / "code")


def test_put_stores_zip_and_read_only_tree(store: CodeStore) -> None:
    data = _zip([("lambda_function.py", b"def h(e, c):\n    return 1\n"), ("pkg/mod.py", b"X = 1\n")])
    info = store.put(data)
    digest = hashlib.sha256(data).digest()
    assert info.sha256_hex == digest.hex()
    assert info.sha256_b64 == base64.b64encode(digest).decode()
    assert info.size == len(data)
    assert info.unzipped_size == len(b"def h(e, c):\n    return 1\n") + len(b"X = 1\n")
    assert info.path == store.path_for(info.sha256_hex) == store.root / info.sha256_hex
    assert (info.path / "pkg" / "mod.py").read_bytes() == b"X = 1\n"
    assert store.zip_path(info.sha256_hex).read_bytes() == data
    assert stat.S_IMODE(os.stat(info.path / "lambda_function.py").st_mode) == 0o444
    assert stat.S_IMODE(os.stat(info.path / "pkg").st_mode) == 0o555
    assert stat.S_IMODE(os.stat(info.path).st_mode) == 0o555
    assert not list(store.root.glob(".tmp-*"))


def test_executable_bit_is_kept(store: CodeStore) -> None:
    info = store.put(_zip([(_entry("bootstrap", stat.S_IFREG | 0o755), b"#!/bin/sh\n")]))
    assert stat.S_IMODE(os.stat(info.path / "bootstrap").st_mode) == 0o555


def test_same_zip_is_stored_once(store: CodeStore) -> None:
    data = _zip([("a.py", b"A = 1\n")])
    first = store.put(data)
    mtime = first.path.stat().st_mtime_ns
    second = store.put(data)
    assert second == first
    assert first.path.stat().st_mtime_ns == mtime
    assert len([p for p in store.root.iterdir() if p.name != "zips"]) == 1
    assert len(list((store.root / "zips").iterdir())) == 1


def test_different_zips_get_different_dirs(store: CodeStore) -> None:
    a = store.put(_zip([("a.py", b"A = 1\n")]))
    b = store.put(_zip([("a.py", b"A = 2\n")]))
    assert a.path != b.path
    assert (a.path / "a.py").read_bytes() != (b.path / "a.py").read_bytes()


@pytest.mark.parametrize(
    "name",
    ["../evil.py", "a/../../evil.py", "/etc/evil.py", "C:/evil.py", "c:\\evil.py", "..\\evil.py"],
)
def test_unsafe_names_are_refused(store: CodeStore, name: str) -> None:
    data = _zip([("ok.py", b"1"), (_entry(name, stat.S_IFREG | 0o644), b"evil")])
    with pytest.raises(InvalidParameterValueException):
        store.put(data)
    assert _nothing_stored(store.root)
    assert not (store.root.parent / "evil.py").exists()


def test_dotdot_inside_the_package_is_allowed(store: CodeStore) -> None:
    info = store.put(_zip([("a/../b.py", b"B = 1\n")]))
    assert (info.path / "b.py").read_bytes() == b"B = 1\n"


def test_symlink_is_refused(store: CodeStore) -> None:
    data = _zip([("ok.py", b"1"), (_entry("link", stat.S_IFLNK | 0o777), b"/etc/passwd")])
    with pytest.raises(InvalidParameterValueException, match="symbolic link"):
        store.put(data)
    assert _nothing_stored(store.root)


@pytest.mark.parametrize("kind", [stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFSOCK])
def test_special_files_are_refused(store: CodeStore, kind: int) -> None:
    with pytest.raises(InvalidParameterValueException):
        store.put(_zip([(_entry("dev", kind | 0o644), b"")]))
    assert _nothing_stored(store.root)


def test_invalid_zip_is_refused(store: CodeStore) -> None:
    with pytest.raises(InvalidParameterValueException) as exc:
        store.put(b"this is not a zip file")
    assert exc.value.message == UNZIP_FAILED
    assert _nothing_stored(store.root)


def test_corrupt_member_is_refused(store: CodeStore) -> None:
    data = bytearray(_zip([("a.py", b"A = 1\n" * 1000)]))
    start = data.index(b"a.py") + 4  # just after the local header's name: compressed data
    data[start : start + 20] = b"\xff" * 20
    with pytest.raises(InvalidParameterValueException):
        store.put(bytes(data))
    assert _nothing_stored(store.root)


def test_zipped_limit(tmp_path: Path) -> None:
    store = CodeStore(tmp_path / "code", max_zipped=1000)
    with pytest.raises(InvalidParameterValueException, match="Zipped size must be smaller than 1000 bytes"):
        store.put(_zip([("big.bin", os.urandom(2000))]))
    assert _nothing_stored(store.root)


def test_bomb_with_lying_headers_is_refused(tmp_path: Path) -> None:
    """A highly compressible file whose headers claim it is small: refused, nothing stored."""
    store = CodeStore(tmp_path / "code", max_unzipped=1_000_000)
    data = _zip([("bomb.bin", b"\0" * 5_000_000)])
    assert len(data) < 10_000
    real, fake = (5_000_000).to_bytes(4, "little"), (1_000).to_bytes(4, "little")
    assert data.count(real) == 2  # local header and central directory
    with pytest.raises(InvalidParameterValueException):
        store.put(data.replace(real, fake))
    assert _nothing_stored(store.root)


def test_bomb_with_honest_headers_is_refused(tmp_path: Path) -> None:
    store = CodeStore(tmp_path / "code", max_unzipped=1_000_000)
    with pytest.raises(InvalidParameterValueException, match="Unzipped size must be smaller than 1000000"):
        store.put(_zip([("a.bin", b"\0" * 600_000), ("b.bin", b"\0" * 600_000)]))
    assert _nothing_stored(store.root)


def test_bytes_written_are_enforced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the header pre-check defeated, counting the bytes written still stops the extraction."""
    import gateway.store.code as codestore

    monkeypatch.setattr(codestore, "_declared_size", lambda infos: 0)
    store = CodeStore(tmp_path / "code", max_unzipped=1_000_000)
    written: list[int] = []
    real_open = open

    def spy_open(path: Path, mode: str = "r") -> io.BufferedWriter:
        f = real_open(path, mode)
        written.append(0)
        return f  # type: ignore[return-value]

    monkeypatch.setattr(codestore, "open", spy_open, raising=False)
    data = _zip([(f"f{i}.bin", b"\0" * 400_000) for i in range(10)])
    with pytest.raises(InvalidParameterValueException, match="Unzipped size must be smaller than 1000000"):
        store.put(data)
    assert len(written) == 3  # stopped in the third file, the rest never opened
    assert _nothing_stored(store.root)


def test_check_validates_without_storing(store: CodeStore) -> None:
    info = store.check(_zip([("a.py", b"A = 1\n")]))
    assert info.size > 0
    assert _nothing_stored(store.root)
    with pytest.raises(InvalidParameterValueException):
        store.check(_zip([(_entry("../x", stat.S_IFREG | 0o644), b"x")]))


def test_ensure_extracted_restores_a_lost_tree(store: CodeStore) -> None:
    info = store.put(_zip([("a.py", b"A = 1\n")]))
    for dirpath, _, _ in os.walk(info.path):
        os.chmod(dirpath, 0o755)
    shutil.rmtree(info.path)
    assert store.ensure_extracted(info.sha256_hex)
    assert (info.path / "a.py").read_bytes() == b"A = 1\n"
    assert not store.ensure_extracted("0" * 64)


def test_sources_are_byte_compiled_once_at_store_time(store: CodeStore) -> None:
    info = store.put(_zip([("a.py", b"A = 1\n"), ("pkg/b.py", b"B = 2\n"), ("bad.py", b"def broken(:\n")]))
    tag = sys.implementation.cache_tag
    assert (info.path / "__pycache__" / f"a.{tag}.pyc").is_file()
    assert (info.path / "pkg" / "__pycache__" / f"b.{tag}.pyc").is_file()
    assert not (info.path / "__pycache__" / f"bad.{tag}.pyc").exists()  # its import fails in Init, as on Lambda
    assert info.unzipped_size == len(b"A = 1\n") + len(b"B = 2\n") + len(b"def broken(:\n")
    assert CodeStore(store.root).unzipped_size(info.sha256_hex) == info.unzipped_size  # byte code not counted


def test_stale_temp_dirs_are_removed_at_start(tmp_path: Path) -> None:
    root = tmp_path / "code"
    (root / ".tmp-crashed" / "sub").mkdir(parents=True)
    os.chmod(root / ".tmp-crashed" / "sub", 0o555)
    CodeStore(root)
    assert not (root / ".tmp-crashed").exists()


def test_from_directory_is_deterministic(tmp_path: Path, store: CodeStore) -> None:
    src = tmp_path / "src"
    (src / "pkg" / "__pycache__").mkdir(parents=True)
    (src / "lambda_function.py").write_text("def h(e, c):\n    return 1\n")
    (src / "pkg" / "m.py").write_text("M = 1\n")
    (src / "pkg" / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"junk")
    first = from_directory(src)
    os.utime(src / "pkg" / "m.py", (1, 1))
    assert from_directory(src) == first
    with zipfile.ZipFile(io.BytesIO(first)) as zf:
        assert zf.namelist() == ["lambda_function.py", "pkg/m.py"]
    info = store.put(first)
    assert (info.path / "pkg" / "m.py").read_text() == "M = 1\n"


def test_collect_removes_unreferenced_packages_but_honours_leases(store: CodeStore) -> None:
    package = _zip([("a.py", b"a = 1\n")])
    a = store.put(package).sha256_hex
    b = store.put(_zip([("b.py", b"b = 1\n")])).sha256_hex
    assert store.stored() == {a, b}
    assert store.collect(set(), time.monotonic()) == []  # both leased: stored, not registered yet
    before = time.monotonic()
    store.adopt(a)
    store.adopt(b)
    # references listed before the adoption may miss the new reference: the lease still protects the package
    assert store.collect(set(), before) == []
    assert store.collect({b}, time.monotonic()) == [a]
    assert store.stored() == {b}
    assert not store.zip_path(a).exists() and not store.path_for(a).exists()
    assert store.path_for(b).is_dir()
    assert sorted(p.name for p in store.root.iterdir()) == [b, "zips"]  # nothing half-removed left
    again = store.put(package)  # stored again from scratch
    assert again.sha256_hex == a and (again.path / "a.py").read_bytes() == b"a = 1\n"


def test_an_expired_lease_does_not_keep_a_package(store: CodeStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codestore, "LEASE_SECONDS", 0.0)
    digest = store.put(_zip([("x.py", b"x = 1\n")])).sha256_hex  # a CreateFunction that failed after the upload
    assert store.collect(set(), time.monotonic()) == [digest]
    assert _nothing_stored(store.root)
