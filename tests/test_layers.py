"""LayerStore: versions, deletes, persistence, resolve() and the unzipped-size limit, on a temporary directory."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import InvalidParameterValueException, ResourceNotFoundException
from gateway.settings import Settings
from gateway.store.code import CodeStore
from gateway.store.layers import LayerStore
from gateway.store.records import LayerRef
from tests.conftest import make_zip

ARN = "arn:aws:lambda:us-east-1:123456789012:layer"


def layer_zip(module: str = "helper", value: str = "1") -> bytes:
    return make_zip({f"python/{module}.py": f"VALUE = {value!r}\n"})


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def codestore(data_dir: Path) -> CodeStore:
    return CodeStore(data_dir / "code")


@pytest.fixture
def store(data_dir: Path, codestore: CodeStore) -> Iterator[LayerStore]:
    s = LayerStore(data_dir / "layers.sqlite3", codestore, Settings(data_dir=data_dir))
    yield s
    s.close()


def reopen(store: LayerStore, data_dir: Path) -> LayerStore:
    store.close()
    return LayerStore(data_dir / "layers.sqlite3", CodeStore(data_dir / "code"), Settings(data_dir=data_dir))


def test_publish_numbers_versions_and_describes_them(store: LayerStore) -> None:
    first = store.publish("libs", layer_zip(), description="d", compatible_runtimes=("python3.12",))
    second = store.publish("libs", layer_zip(value="2"), license_info="MIT", compatible_architectures=("arm64",))
    assert (first.version, second.version) == (1, 2)
    assert first.arn == f"{ARN}:libs:1" and first.layer_arn == f"{ARN}:libs"
    wire = second.to_wire("http://x/zip")
    assert wire["Content"]["Location"] == "http://x/zip"
    assert wire["Content"]["CodeSize"] == second.code_size == len(layer_zip(value="2"))
    assert wire["LicenseInfo"] == "MIT" and wire["CompatibleArchitectures"] == ["arm64"]
    assert "CompatibleRuntimes" not in wire
    assert wire["CreatedDate"].endswith("+0000") and len(wire["CreatedDate"]) == len("2018-11-14T23:03:52.894+0000")
    assert store.publish("other", layer_zip()).version == 1  # numbering is per layer


def test_version_numbers_are_never_reused(store: LayerStore, data_dir: Path) -> None:
    store.publish("libs", layer_zip())
    store.publish("libs", layer_zip())
    assert store.delete("libs", 2) is True
    assert store.publish("libs", layer_zip()).version == 3
    assert store.delete("libs", 1) and store.delete("libs", 3)
    assert store.list_versions("libs") == []
    store = reopen(store, data_dir)
    try:
        assert store.publish("libs", layer_zip()).version == 4
    finally:
        store.close()


def test_delete_hides_the_version_but_keeps_its_code(store: LayerStore) -> None:
    lv = store.publish("libs", layer_zip())
    assert store.delete("libs", 1)
    assert store.delete("libs", 1) is False  # deleting again is a no-op
    assert store.delete("nothing", 7) is False
    with pytest.raises(ResourceNotFoundException, match="The resource you requested does not exist"):
        store.get("libs", 1)
    with pytest.raises(ResourceNotFoundException):
        store.get_by_arn(lv.arn)
    assert store.codestore.path_for(lv.code_sha256).joinpath("python", "helper.py").is_file()
    assert store.codestore.zip_path(lv.code_sha256).is_file()


def test_everything_survives_a_reopen(store: LayerStore, data_dir: Path) -> None:
    kept = store.publish("libs", layer_zip(), description="kept", compatible_runtimes=("python3.11", "python3.12"))
    store.publish("libs", layer_zip(value="2"))
    store.delete("libs", 2)
    store = reopen(store, data_dir)
    try:
        assert store.get("libs", 1) == kept
        with pytest.raises(ResourceNotFoundException):
            store.get("libs", 2)
    finally:
        store.close()


def test_database_is_private(store: LayerStore, data_dir: Path) -> None:
    assert stat.S_IMODE(os.stat(data_dir / "layers.sqlite3").st_mode) == 0o600


def test_lists_filter_and_order(store: LayerStore) -> None:
    store.publish("b", layer_zip(), compatible_runtimes=("python3.12",), compatible_architectures=("x86_64",))
    store.publish("b", layer_zip(), compatible_runtimes=("python3.11",))
    store.publish("a", layer_zip(), compatible_runtimes=("python3.12",))
    assert [lv.version for lv in store.list_versions("b")] == [2, 1]
    assert [lv.version for lv in store.list_versions("b", "python3.12")] == [1]
    assert [lv.version for lv in store.list_versions("b", None, "arm64")] == []
    assert store.list_versions("missing") == []
    assert [(lv.name, lv.version) for lv in store.list_latest()] == [("a", 1), ("b", 2)]
    assert [(lv.name, lv.version) for lv in store.list_latest("python3.12")] == [("a", 1), ("b", 1)]
    assert [lv.name for lv in store.list_latest(after="a")] == ["b"]
    assert [lv.name for lv in store.list_latest(None, "x86_64")] == ["b"]


def test_local_name_accepts_names_and_own_arns_only(store: LayerStore) -> None:
    assert store.local_name("libs") == "libs"
    assert store.local_name(f"{ARN}:libs") == "libs"
    assert store.local_name("arn:aws:lambda:eu-west-1:123456789012:layer:libs") is None
    assert store.local_name("arn:aws:lambda:us-east-1:999999999999:layer:libs") is None


def test_resolve_returns_refs_and_directories_in_order(store: LayerStore) -> None:
    a = store.publish("a", layer_zip("mod_a"))
    b = store.publish("b", layer_zip("mod_b"))
    refs, dirs = store.resolve((b.arn, a.arn))
    assert refs == (b.ref(), a.ref())
    assert refs[0] == LayerRef(b.arn, b.code_size, b.code_sha256)
    assert (dirs[0] / "python" / "mod_b.py").is_file() and (dirs[1] / "python" / "mod_a.py").is_file()
    assert store.resolve(()) == ((), ())


@pytest.mark.parametrize(
    ("arns", "message"),
    [
        pytest.param([f"{ARN}:x:1"], f"Layer version {ARN}:x:1 does not exist.", id="missing"),
        pytest.param([f"{ARN}:a:2"], f"Layer version {ARN}:a:2 does not exist.", id="missing-version"),
        pytest.param([f"{ARN}:gone:1"], f"Layer version {ARN}:gone:1 does not exist.", id="deleted"),
        pytest.param([f"{ARN}:a"], f"Layer version {ARN}:a does not exist.", id="no-version"),
        pytest.param(["nonsense"], "Layer version nonsense does not exist.", id="malformed"),
        pytest.param(
            ["arn:aws:lambda:us-east-1:999999999999:layer:a:1"],
            "Layer version arn:aws:lambda:us-east-1:999999999999:layer:a:1 does not exist.",
            id="other-account",
        ),
        pytest.param(
            ["arn:aws:lambda:eu-west-1:123456789012:layer:a:1"],
            "Layers are not in the same region as the function. Layers are expected to be in region us-east-1.",
            id="other-region",
        ),
        pytest.param(
            [f"{ARN}:a:1", f"{ARN}:b:1", f"{ARN}:a:1"],
            "Two different versions of the same layer are not allowed to be referenced in the same function. "
            f"{ARN}:a:1 and {ARN}:a:1 are versions of the same layer.",
            id="same-twice",
        ),
        pytest.param([f"{ARN}:b:1"] * 6, "Cannot reference more than 5 layers.", id="six"),
    ],
)
def test_resolve_refuses(store: LayerStore, arns: list[str], message: str) -> None:
    store.publish("a", layer_zip())
    store.publish("b", layer_zip())
    store.publish("gone", layer_zip())
    store.delete("gone", 1)
    with pytest.raises(InvalidParameterValueException) as info:
        store.resolve(tuple(arns))
    assert info.value.message == message


def test_resolve_refuses_two_versions_of_a_layer(store: LayerStore) -> None:
    store.publish("a", layer_zip())
    store.publish("a", layer_zip(value="2"))
    with pytest.raises(InvalidParameterValueException, match=f"{ARN}:a:2 and {ARN}:a:1 are versions of the same"):
        store.resolve((f"{ARN}:a:2", f"{ARN}:a:1"))


def test_unzipped_size_limit_counts_function_and_layers(data_dir: Path) -> None:
    codestore = CodeStore(data_dir / "code", max_unzipped=1000)
    store = LayerStore(data_dir / "layers.sqlite3", codestore, Settings(data_dir=data_dir))
    try:
        big = store.publish("big", make_zip({"python/big.py": "#" * 600}))
        small = store.publish("small", make_zip({"python/small.py": "#" * 300}))
        assert store.unzipped_size([big.ref(), small.ref()]) == 900
        assert store.unzipped_size([]) == 0
        store.check_unzipped_size(100, [big.ref(), small.ref()])
        with pytest.raises(InvalidParameterValueException) as info:
            store.check_unzipped_size(101, [big.ref(), small.ref()])
        assert info.value.message == (
            "Function code combined with layers exceeds the maximum allowed size of 1000 bytes. "
            "The actual size is 1001 bytes."
        )
        other = store.publish("other", make_zip({"python/other.py": "#" * 600}))
        with pytest.raises(InvalidParameterValueException, match="Layers consume more than the available size of 1000"):
            store.check_unzipped_size(0, [big.ref(), other.ref()])
    finally:
        store.close()


def test_codestore_unzipped_size_counts_extracted_bytes(codestore: CodeStore) -> None:
    info = codestore.put(make_zip({"a.txt": "x" * 10, "d/b.txt": "y" * 5}))
    assert codestore.unzipped_size(info.sha256_hex) == 15 == info.unzipped_size
    with pytest.raises(FileNotFoundError):
        codestore.unzipped_size("0" * 64)
