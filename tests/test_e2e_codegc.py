"""Deleted functions' code leaves the disk: packages nothing references are removed, shared ones kept."""

from __future__ import annotations

import base64
import re
import shutil
import time
from pathlib import Path
from typing import Any

from tests.conftest import GatewayFactory, RunningGateway, create_function, invoke_json, make_zip

_HEX = re.compile(r"[0-9a-f]{64}")


def _code(gw: RunningGateway) -> set[str]:
    """Digests with a tree or a zip in the gateway's code store."""
    root = gw.data_dir / "code"
    found = {p.name for p in root.iterdir() if _HEX.fullmatch(p.name)}
    return found | {p.stem for p in (root / "zips").iterdir() if p.suffix == ".zip"}


def _eventually(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _source(tag: str) -> str:
    return f"def lambda_handler(event, context):\n    return {tag!r}\n"


def _digest(lam: Any, name: str, qualifier: str | None = None) -> str:
    kwargs = {"Qualifier": qualifier} if qualifier else {}
    cfg = lam.get_function_configuration(FunctionName=name, **kwargs)
    return base64.b64decode(cfg["CodeSha256"]).hex()


def test_a_deleted_functions_code_is_removed(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    lam = gw.client()
    create_function(lam, "f", _source("a"))
    assert invoke_json(lam, "f")[1] == "a"
    digest = _digest(lam, "f")
    assert digest in _code(gw)
    lam.delete_function(FunctionName="f")
    assert _eventually(lambda: not _code(gw)), _code(gw)


def test_shared_code_stays_until_its_last_user_goes(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    lam = gw.client()
    for name in ("one", "two"):
        create_function(lam, name, _source("shared"))
        assert invoke_json(lam, name)[1] == "shared"
    digest = _digest(lam, "one")
    assert _digest(lam, "two") == digest
    lam.delete_function(FunctionName="one")
    time.sleep(1.5)  # several collections
    assert digest in _code(gw)
    assert (gw.data_dir / "code" / digest / "lambda_function.py").is_file()
    assert invoke_json(lam, "two")[1] == "shared"
    gw.restart()  # the start-up collection keeps it too
    lam = gw.client()
    assert invoke_json(lam, "two")[1] == "shared"
    lam.delete_function(FunctionName="two")
    assert _eventually(lambda: not _code(gw)), _code(gw)


def test_a_published_version_keeps_its_code_after_latest_changes(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    lam = gw.client()
    create_function(lam, "g", _source("v1"), Publish=True)
    old = _digest(lam, "g", "1")
    lam.create_alias(FunctionName="g", Name="live", FunctionVersion="1")
    lam.update_function_code(FunctionName="g", ZipFile=make_zip({"lambda_function.py": _source("v2")}))
    new = _digest(lam, "g")
    time.sleep(1.5)
    assert _code(gw) == {old, new}
    assert invoke_json(lam, "g", Qualifier="1")[1] == "v1"
    assert invoke_json(lam, "g", Qualifier="live")[1] == "v1"
    assert invoke_json(lam, "g")[1] == "v2"
    lam.update_alias(FunctionName="g", Name="live", FunctionVersion="$LATEST")
    lam.delete_function(FunctionName="g", Qualifier="1")
    assert _eventually(lambda: _code(gw) == {new}), _code(gw)
    assert invoke_json(lam, "g", Qualifier="live")[1] == "v2"


def test_code_left_behind_is_collected_at_start_up(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    lam = gw.client()
    create_function(lam, "keep", _source("k"))
    kept = _digest(lam, "keep")
    gw.stop()
    root: Path = gw.data_dir / "code"
    stray = "ab" * 32  # what a crash between storing a package and deleting its function could leave
    shutil.copytree(root / kept, root / stray)
    shutil.copyfile(root / "zips" / f"{kept}.zip", root / "zips" / f"{stray}.zip")
    gw.start()
    assert _eventually(lambda: _code(gw) == {kept}), _code(gw)
    assert invoke_json(gw.client(), "keep")[1] == "k"
