"""Which Node.js runs each nodejs* runtime (gateway/catalog.py: node_choice)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gateway.catalog import Kind, RuntimeChoice, node_choice, node_version
from gateway.settings import Settings


def fake_node(directory: Path, version: str) -> str:
    """An executable that answers `--version` like a Node.js of `version`."""
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
    settings = Settings(data_dir=tmp_path)
    assert node_choice("nodejs22.x", settings, [n20, n22]) == RuntimeChoice(
        "nodejs22.x", Kind.NODE, sys.executable, program=n22
    )
    assert node_choice("nodejs20.x", settings, [n20, n22]) == RuntimeChoice(
        "nodejs20.x", Kind.NODE, sys.executable, program=n20
    )


def test_without_that_major_it_is_refused_and_the_message_says_what_to_set(tmp_path: Path) -> None:
    n20 = fake_node(tmp_path / "a", "20.20.2")
    refusal = node_choice("nodejs24.x", Settings(data_dir=tmp_path), [n20])
    assert isinstance(refusal, str)
    assert "needs a Node.js 24" in refusal
    assert "GATEWAY_RUNTIME_NODEJS24_X" in refusal and "GATEWAY_RUNTIME_FALLBACK=1" in refusal


def test_a_fallback_only_when_allowed_and_its_note_says_so(tmp_path: Path) -> None:
    n18 = fake_node(tmp_path / "a", "18.1.0")
    n20 = fake_node(tmp_path / "b", "20.20.2")
    choice = node_choice("nodejs22.x", Settings(data_dir=tmp_path, runtime_fallback=True), [n18, n20])
    assert isinstance(choice, RuntimeChoice)
    assert choice.program == n20  # the nearest major
    assert choice.note is not None
    assert "Node.js 20.20.2" in choice.note and "no Node.js 22" in choice.note


def test_an_explicit_setting_wins_and_must_be_that_major(tmp_path: Path) -> None:
    n22 = fake_node(tmp_path / "explicit", "22.1.0")
    other = fake_node(tmp_path / "path", "22.9.0")
    settings = Settings(data_dir=tmp_path, runtimes={"nodejs22.x": n22})
    choice = node_choice("nodejs22.x", settings, [other])
    assert isinstance(choice, RuntimeChoice) and choice.program == n22
    wrong = Settings(data_dir=tmp_path, runtimes={"nodejs20.x": n22})
    refusal = node_choice("nodejs20.x", wrong, [fake_node(tmp_path / "c", "20.1.0")])
    assert isinstance(refusal, str) and "is not a Node.js 20 (it is 22.1.0)" in refusal


def test_the_explicit_setting_comes_from_the_environment(tmp_path: Path) -> None:
    import argparse

    settings = Settings.from_args(
        argparse.Namespace(),
        {
            "GATEWAY_DATA_DIR": str(tmp_path),
            "GATEWAY_RUNTIME_NODEJS22_X": "/opt/node22/bin/node",
            "GATEWAY_RUNTIME_FALLBACK": "1",
        },
    )
    assert settings.runtimes["nodejs22.x"] == "/opt/node22/bin/node"
    assert settings.runtime_fallback


def test_what_does_not_run_is_no_node(tmp_path: Path) -> None:
    broken = tmp_path / "node"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    assert node_version(str(broken)) is None
    assert node_version(str(tmp_path / "missing")) is None
