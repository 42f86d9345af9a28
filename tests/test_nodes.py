"""Which Node.js runs each nodejs* runtime (gateway/nodes.py), and how the catalogue and settings carry it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gateway.catalog import Catalog, Kind, UnsupportedRuntime
from gateway.nodes import choose_node, jail_problem, node_candidates, node_prefix, node_version
from gateway.settings import Settings


def fake_node(directory: Path, version: str) -> str:
    """An executable that answers `--version` like a Node.js of `version`, in an installation's layout
    (<prefix>/bin/node, <prefix>/include/node): `directory` is its bin/, or its prefix."""
    if directory.name != "bin":
        directory = directory / "bin"
    (directory.parent / "include" / "node").mkdir(parents=True, exist_ok=True)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "node"
    path.write_text(f"#!/bin/sh\necho v{version}\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture(autouse=True)
def _fresh_versions() -> None:
    node_version.cache_clear()


def test_the_node_of_the_runtimes_major_is_chosen(tmp_path: Path) -> None:
    n20 = fake_node(tmp_path / "a", "20.20.2")
    n22 = fake_node(tmp_path / "b", "22.11.0")
    assert choose_node("nodejs22.x", None, False, {}, [n20, n22]) == (n22, None)
    assert choose_node("nodejs20.x", None, False, {}, [n20, n22]) == (n20, None)


def test_without_that_major_it_is_refused_and_the_message_says_what_to_set(tmp_path: Path) -> None:
    refusal = choose_node("nodejs24.x", None, False, {}, [fake_node(tmp_path / "a", "20.20.2")])
    assert isinstance(refusal, str)
    assert "needs a Node.js 24" in refusal
    assert "GATEWAY_RUNTIME_NODEJS24_X" in refusal and "GATEWAY_RUNTIME_FALLBACK=1" in refusal


def test_a_fallback_only_when_allowed_and_its_note_says_so(tmp_path: Path) -> None:
    n18 = fake_node(tmp_path / "a", "18.1.0")
    n20 = fake_node(tmp_path / "b", "20.20.2")
    program, note = choose_node("nodejs22.x", None, True, {}, [n18, n20])
    assert program == n20  # the nearest major
    assert note is not None and "Node.js 20.20.2" in note and "no Node.js 22" in note


def test_an_explicit_setting_wins_and_must_be_that_major(tmp_path: Path) -> None:
    n22 = fake_node(tmp_path / "explicit", "22.1.0")
    other = fake_node(tmp_path / "path", "22.9.0")
    assert choose_node("nodejs22.x", n22, False, {}, [other]) == (n22, None)
    refusal = choose_node("nodejs20.x", n22, False, {}, [fake_node(tmp_path / "c", "20.1.0")])
    assert isinstance(refusal, str) and "is not a Node.js 20 (it is 22.1.0)" in refusal


def test_the_catalogue_and_the_settings_carry_it(tmp_path: Path) -> None:
    n22 = fake_node(tmp_path / "node" / "bin", "22.1.0")
    environ = {
        "GATEWAY_DATA_DIR": str(tmp_path / "data"),
        "GATEWAY_RUNTIME_NODEJS22_X": n22,
        "GATEWAY_RUNTIME_NODEJS24_X": n22,
    }
    settings = Settings.from_args(argparse.Namespace(), environ)
    assert settings.runtimes["nodejs22.x"] == n22 and not settings.runtime_fallback
    catalog = Catalog.discover(settings, {"PATH": str(tmp_path / "node" / "bin")})
    choice = catalog.resolve("nodejs22.x")
    assert (choice.kind, choice.program, choice.note) == (Kind.NODE, n22, None)
    with pytest.raises(UnsupportedRuntime, match=r"is not a Node\.js 24 \(it is 22\.1\.0\)"):
        catalog.resolve("nodejs24.x")
    fallback = Settings.from_args(argparse.Namespace(), {**environ, "GATEWAY_RUNTIME_FALLBACK": "1"})
    note = Catalog.discover(fallback, {"PATH": str(tmp_path / "node" / "bin")}).resolve("nodejs24.x").note
    assert note is not None and "runs on Node.js 22.1.0" in note


def test_what_does_not_run_is_no_node(tmp_path: Path) -> None:
    broken = tmp_path / "node"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    assert node_version(str(broken)) is None
    assert node_version(str(tmp_path / "missing")) is None
    nvm = fake_node(tmp_path / "nvm" / "versions" / "node" / "v22.1.0" / "bin", "22.1.0")
    found = node_candidates({"PATH": str(tmp_path / "nowhere"), "NVM_DIR": str(tmp_path / "nvm")})
    assert found[0] == nvm  # nvm's, before the system's


def test_a_jail_shows_only_a_node_installation_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The prefix of a Node.js outside the system is mounted into every jail (at /var/lang): one that is no
    installation, or whose prefix is the root, a home directory, or holds the data directory or the project, is
    refused when named, passed over when found."""
    data = tmp_path / "nvm" / "data"
    good = fake_node(tmp_path / "nvm" / "v20", "20.1.0")
    assert node_prefix(good) == str(tmp_path / "nvm" / "v20") and jail_problem(good, [str(data)]) is None
    assert node_prefix("/usr/bin/node") == "" and jail_problem("/usr/bin/node", [str(data)]) is None
    loose = tmp_path / "home" / "bin" / "node"  # ~/bin/node: a copy, no include/ beside it
    loose.parent.mkdir(parents=True)
    loose.write_text("#!/bin/sh\necho v20.1.0\n")
    loose.chmod(0o755)
    assert node_prefix(str(loose)) is None
    assert "is not part of a Node.js installation" in (jail_problem(str(loose), []) or "")
    holding = fake_node(tmp_path / "nvm", "20.2.0")  # its prefix, tmp/nvm, holds the data directory
    assert "which holds " + str(data) in (jail_problem(holding, [str(data)]) or "")
    assert jail_problem(holding, [str(data / "x")]) is not None and jail_problem(holding, []) is None
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert "which holds " + str(tmp_path / "home") in (jail_problem(fake_node(tmp_path / "home", "20.3.0"), []) or "")
    # the catalogue: a named one is refused with the reason, one found on PATH passed over
    environ = {"GATEWAY_DATA_DIR": str(data), "GATEWAY_RUNTIME_NODEJS20_X": holding}
    catalog = Catalog.discover(Settings.from_args(argparse.Namespace(), environ), {"PATH": ""})
    with pytest.raises(UnsupportedRuntime, match=r"GATEWAY_RUNTIME_NODEJS20_X=.*which holds .*data"):
        catalog.resolve("nodejs20.x")
    assert choose_node("nodejs20.x", None, False, {}, [str(loose), holding, good], [str(data)]) == (good, None)
