"""gateway/architectures.py: which architectures a runtime runs on here, Lambda's refusal, ELF programs, emulation."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import architectures
from gateway.errors import InvalidParameterValueException


def _no_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(architectures, "emulator", lambda arch: None)


def _emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(architectures, "emulator", lambda arch: f"/usr/bin/qemu-{arch}-static")


def test_interpreted_runtimes_run_only_on_the_hosts_architecture(monkeypatch: pytest.MonkeyPatch) -> None:
    _emulator(monkeypatch)  # an emulator does not help: there is no Python or Node.js of the other architecture
    assert architectures.supported("python3.12", "x86_64") == ("x86_64",)
    assert architectures.supported("nodejs22.x", "arm64") == ("arm64",)


@pytest.mark.parametrize(("machine", "expected"), [("x86_64", ("x86_64",)), ("aarch64", ("arm64",))])
def test_a_function_without_architectures_gets_the_hosts(
    monkeypatch: pytest.MonkeyPatch, machine: str, expected: tuple[str, ...]
) -> None:
    """Lambda's default (x86_64) where the host runs it; on an aarch64 host its own, so that a Python function created
    without the member (the examples `make run` deploys) runs there instead of being refused."""
    monkeypatch.setattr(architectures.os, "uname", lambda: type("U", (), {"machine": machine})())
    assert architectures.default() == expected


def test_custom_runtimes_run_the_other_architecture_only_with_an_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_emulator(monkeypatch)
    assert architectures.supported("provided.al2023", "x86_64") == ("x86_64",)
    _emulator(monkeypatch)
    assert architectures.supported("provided.al2023", "x86_64") == ("x86_64", "arm64")


def test_the_refusal_is_lambdas(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lambda's words for an architecture a runtime does not support, as CreateFunction answered them through
    CloudFormation (github.com/serverless/serverless issue 10057: "Runtime provided does not support the following
    architectures [arm64]. Please select different architectures from [x86_64, arm64] or select a different
    runtime."): the list is Lambda's architectures, whatever the host (an unknown one runs none of them)."""
    _no_emulator(monkeypatch)
    with pytest.raises(InvalidParameterValueException) as exc:
        architectures.check("python3.12", ("arm64",), "x86_64")
    assert str(exc.value) == (
        "Runtime python3.12 does not support the following architectures [arm64]. Please select different "
        "architectures from [x86_64, arm64] or select a different runtime."
    )
    with pytest.raises(InvalidParameterValueException) as exc:
        architectures.check("python3.12", ("x86_64",), "riscv64")
    assert "[x86_64]. Please select different architectures from [x86_64, arm64] or" in str(exc.value)
    architectures.check("python3.12", ("x86_64",), "x86_64")
    _emulator(monkeypatch)
    architectures.check("provided.al2", ("arm64",), "x86_64")


def test_elf_architecture(tmp_path: Path) -> None:
    def elf(machine: int) -> bytes:
        return b"\x7fELF\x02\x01\x01" + b"\0" * 11 + machine.to_bytes(2, "little") + b"\0" * 44

    (tmp_path / "arm").write_bytes(elf(0xB7))
    (tmp_path / "x86").write_bytes(elf(0x3E))
    (tmp_path / "script").write_text("#!/bin/sh\nexec ./app\n")
    (tmp_path / "short").write_bytes(b"\x7fELF")
    assert architectures.elf_architecture(str(tmp_path / "arm")) == "arm64"
    assert architectures.elf_architecture(str(tmp_path / "x86")) == "x86_64"
    for name in ("script", "short", "missing"):
        assert architectures.elf_architecture(str(tmp_path / name)) is None


def test_emulated_only_a_program_of_the_functions_foreign_architecture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _emulator(monkeypatch)
    host = architectures.host_architecture()
    other = "arm64" if host == "x86_64" else "x86_64"
    program = tmp_path / "bootstrap"
    machine = (0xB7 if other == "arm64" else 0x3E).to_bytes(2, "little")
    program.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 11 + machine)
    argv = ["/var/task/bootstrap"]
    assert architectures.emulated(argv, str(program), (other,)) == [f"/usr/bin/qemu-{other}-static", *argv]
    assert architectures.emulated(argv, str(program), (host,)) == argv  # the host's: exec format error, as Lambda
    native = tmp_path / "native"
    machine = (0x3E if other == "arm64" else 0xB7).to_bytes(2, "little")
    native.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 11 + machine)
    # the host's program in a function of the other architecture: the emulator refuses it (not run natively)
    assert architectures.emulated(argv, str(native), (other,)) == [f"/usr/bin/qemu-{other}-static", *argv]
    assert architectures.emulated(argv, str(native), (host,)) == argv
    program.write_text("#!/bin/sh\n")
    assert architectures.emulated(argv, str(program), (other,)) == argv  # a script runs on the host's shell
