"""The runtime catalogue: Lambda's runtime ids from botocore's model, and what this host runs each with."""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

import pytest

from gateway.catalog import (
    DEPRECATED_RUNTIMES,
    LENIENT_RUNTIMES,
    Catalog,
    Kind,
    RuntimeChoice,
    UnsupportedRuntime,
    lambda_runtimes,
)
from gateway.pythons import candidates, find_pythons, own_python, probe
from gateway.settings import Settings

OWN = own_python()


def fake_python(path: Path, version: str, implementation: str = "cpython", log: Path | None = None) -> str:
    """A stand-in interpreter: a shell script that answers the probe with `implementation` and `version`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = f"echo run >> {log}\n" if log else ""
    path.write_text(f"#!/bin/sh\n{record}echo {implementation} {version.replace('.', ' ')}\n")
    path.chmod(0o755)
    return str(path)


def bare_env(tmp_path: Path, *path: Path) -> dict[str, str]:
    """An environment whose PATH is only `path` and whose HOME has no ~/.pyenv."""
    return {"PATH": os.pathsep.join(map(str, path)), "HOME": str(tmp_path / "home")}


def unfound(minor: int) -> bool:
    """Whether the host itself has no Python 3.`minor` where discovery always looks."""
    return not any(os.path.exists(f"{d}/python3.{minor}") for d in ("/usr/bin", "/usr/local/bin"))


def test_the_runtime_ids_come_from_botocores_model() -> None:
    ids = lambda_runtimes()
    assert {"python3.14", "provided.al2023", "provided.al2", "nodejs22.x"} <= set(ids)


def test_deprecated_runtimes_are_refused_in_lambdas_words() -> None:
    with pytest.raises(UnsupportedRuntime, match=r"python3\.7 is no longer supported"):
        Catalog({}).resolve("python3.7")


def test_an_unknown_runtime_is_not_a_lambda_runtime() -> None:
    # issue 18 cause 11: AWS's words (LocalStack's recorded answer): "Value X at 'runtime' failed to satisfy
    # constraint: Member must satisfy enum value set: [...] or be a valid ARN"
    with pytest.raises(
        UnsupportedRuntime,
        match=r"^Value cobol85 at 'runtime' failed to satisfy constraint: Member "
        r"must satisfy enum value set: \[nodejs20\.x, .*python3\.12.*\] or be a valid ARN$",
    ):
        Catalog({}).resolve("cobol85")


def test_a_refusal_carries_its_reason() -> None:
    catalog = Catalog({}, {"nodejs24.x": "no Node.js 24 here"})
    with pytest.raises(UnsupportedRuntime, match=r"no Node\.js 24 here"):
        catalog.resolve("nodejs24.x")


def test_custom_runtimes_run_on_the_gateways_interpreter(tmp_path) -> None:
    catalog = Catalog.discover(Settings(data_dir=tmp_path))
    for runtime in ("provided.al2023", "provided.al2"):
        assert catalog.resolve(runtime) == RuntimeChoice(runtime, Kind.PROVIDED, OWN.path)


def test_one_zygote_serves_every_runtime_of_an_interpreter() -> None:
    a = RuntimeChoice("python3.11", Kind.PYTHON, "/py311")
    b = RuntimeChoice("provided.al2023", Kind.PROVIDED, "/py311")
    c = RuntimeChoice("python3.12", Kind.PYTHON, "/py312")
    catalog = Catalog({x.runtime: x for x in (a, b, c)})
    assert catalog.by_interpreter() == {"/py311": ["python3.11", "provided.al2023"], "/py312": ["python3.12"]}


def test_a_python_on_path_is_found_and_verified(tmp_path: Path) -> None:
    script = fake_python(tmp_path / "bin" / "python3.42", "3.42.4")
    found, problems = find_pythons(bare_env(tmp_path, tmp_path / "bin"), [42])
    assert (found[42].path, found[42].version, problems) == (script, (3, 42, 4), {})


def test_a_candidate_of_another_version_or_implementation_is_passed_over(tmp_path: Path) -> None:
    fake_python(tmp_path / "a" / "python3.42", "3.41.0")
    fake_python(tmp_path / "b" / "python3.42", "3.42.0", implementation="pypy")
    good = fake_python(tmp_path / "c" / "python3.42", "3.42.1")
    found, _ = find_pythons(bare_env(tmp_path, tmp_path / "a", tmp_path / "b", tmp_path / "c"), [42])
    assert found[42].path == good


def test_a_pyenv_shim_stands_for_pyenvs_newest_release_of_that_version(tmp_path: Path) -> None:
    root = tmp_path / "pyenv"
    shim = root / "shims" / "python3.42"
    shim.parent.mkdir(parents=True)
    shim.write_text("#!/usr/bin/env bash\nexit 99\n")  # never run: a shim costs ~90 ms per exec
    shim.chmod(0o755)
    fake_python(root / "versions" / "3.42.2" / "bin" / "python3.42", "3.42.2")
    newest = fake_python(root / "versions" / "3.42.10" / "bin" / "python3.42", "3.42.10")
    fake_python(root / "versions" / "3.42.11t" / "bin" / "python3.42", "3.42.11")  # free-threaded: not a release
    fake_python(root / "versions" / "3.42-dev" / "bin" / "python3.42", "3.42.12")
    env = bare_env(tmp_path, root / "shims")
    assert candidates(42, env)[0] == newest
    found, _ = find_pythons(env, [42])
    assert found[42].path == newest


def test_pyenv_root_is_looked_at_without_a_shim_on_path(tmp_path: Path) -> None:
    wanted = fake_python(tmp_path / "p" / "versions" / "3.42.0" / "bin" / "python3.42", "3.42.0")
    found, _ = find_pythons({**bare_env(tmp_path), "PYENV_ROOT": str(tmp_path / "p")}, [42])
    assert found[42].path == wanted


def test_an_explicit_interpreter_is_the_only_one_tried_and_a_wrong_one_is_explained(tmp_path: Path) -> None:
    fake_python(tmp_path / "bin" / "python3.42", "3.42.0")
    wrong = fake_python(tmp_path / "opt" / "py", "3.41.7")
    found, problems = find_pythons(bare_env(tmp_path, tmp_path / "bin"), [42], {42: wrong})
    assert 42 not in found
    assert problems[42] == (
        f"The runtime parameter of python3.42 cannot run here: GATEWAY_RUNTIME_PYTHON3_42={wrong} is Python 3.41.7, "
        "not a Python 3.42."
    )
    right = fake_python(tmp_path / "opt" / "py42", "3.42.3")
    assert find_pythons(bare_env(tmp_path), [42], {42: right})[0][42].path == right
    missing = find_pythons(bare_env(tmp_path), [42], {42: str(tmp_path / "nope")})[1][42]
    assert "could not be run as CPython" in missing


def test_the_gateways_own_version_is_its_own_interpreter_without_a_probe(tmp_path: Path) -> None:
    found, _ = find_pythons(bare_env(tmp_path), [OWN.minor])
    assert found[OWN.minor] == OWN


def test_each_candidate_runs_once(tmp_path: Path) -> None:
    log = tmp_path / "runs"
    script = fake_python(tmp_path / "bin" / "python3.42", "3.42.0", log=log)
    assert probe([script, script]) == {script: (3, 42, 0)}
    assert probe([script]) == {script: (3, 42, 0)}
    assert log.read_text().count("run") == 1


def test_candidates_run_in_parallel(tmp_path: Path) -> None:
    slow = []
    for minor in range(40, 44):
        path = tmp_path / f"v{minor}" / f"python3.{minor}"
        path.parent.mkdir()
        path.write_text(f"#!/bin/sh\nsleep 0.5\necho cpython 3 {minor} 0\n")
        path.chmod(0o755)
        slow.append(tmp_path / f"v{minor}")
    start = time.monotonic()
    found, _ = find_pythons(bare_env(tmp_path, *slow), range(40, 44))
    assert sorted(found) == [40, 41, 42, 43]
    assert time.monotonic() - start < 1.5  # four half-second probes at once, not one after another


@pytest.mark.skipif(not unfound(14), reason="this host has a Python 3.14 in /usr/bin or /usr/local/bin")
def test_a_python_runtime_without_its_python_is_refused_with_what_to_do(tmp_path: Path) -> None:
    catalog = Catalog.discover(Settings(data_dir=tmp_path), bare_env(tmp_path))
    with pytest.raises(UnsupportedRuntime) as refused:
        catalog.resolve("python3.14")
    message = str(refused.value)
    assert "needs a Python 3.14" in message and "GATEWAY_RUNTIME_PYTHON3_14=/path/to/python3.14" in message
    assert catalog.resolve(f"python3.{OWN.minor}").interpreter == OWN.path


@pytest.mark.parametrize("runtime", ["python3.9", "nodejs18.x", "ruby3.2", "java8", "dotnet6"])
def test_runtimes_past_lambdas_block_create_date_are_refused_as_deprecated(tmp_path: Path, runtime: str) -> None:
    settings = Settings(data_dir=tmp_path, runtime_fallback=True)  # no fallback brings them back
    catalog = Catalog.discover(settings, bare_env(tmp_path))
    with pytest.raises(UnsupportedRuntime, match=f"{re.escape(runtime)} is no longer supported for creating"):
        catalog.resolve(runtime)
    assert runtime not in catalog.refusals()  # not a lack of this host: /healthz does not list them


def test_a_lambda_runtime_not_implemented_here_points_at_custom_runtimes() -> None:
    catalog = Catalog({"provided.al2023": RuntimeChoice("provided.al2023", Kind.PROVIDED, OWN.path)})
    for runtime in ("java21", "ruby3.3", "dotnet8", "java8.al2023"):
        with pytest.raises(UnsupportedRuntime) as refused:
            catalog.resolve(runtime)
        message = str(refused.value)
        assert message.startswith(f"The runtime parameter of {runtime} is not supported by this gateway.")
        assert "Supported runtimes: provided.al2023." in message
        assert "A custom runtime can bring it: create the function with runtime provided.al2023" in message
    with pytest.raises(UnsupportedRuntime) as refused:
        catalog.resolve("cobol85")
    assert "custom runtime" not in str(refused.value)  # not a Lambda runtime at all


def test_nodejs20_is_accepted_past_lambdas_block_create_date_and_the_log_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert "nodejs20.x" not in DEPRECATED_RUNTIMES and LENIENT_RUNTIMES["nodejs20.x"] == "2026-08-31"
    assert set(LENIENT_RUNTIMES) <= set(lambda_runtimes()) and not set(LENIENT_RUNTIMES) & DEPRECATED_RUNTIMES
    catalog = Catalog.discover(Settings(data_dir=tmp_path))
    if "nodejs20.x" not in catalog:
        pytest.skip("no Node.js 20 on this host")
    with caplog.at_level(logging.WARNING, logger="gateway.catalog"):
        Catalog.discover(Settings(data_dir=tmp_path))
    assert any("nodejs20.x is accepted here although Lambda blocks" in r.message for r in caplog.records)


@pytest.mark.skipif(not unfound(14), reason="this host has a Python 3.14 in /usr/bin or /usr/local/bin")
def test_with_fallback_a_missing_python_runs_on_the_nearest_and_says_so(tmp_path: Path) -> None:
    catalog = Catalog.discover(Settings(data_dir=tmp_path, runtime_fallback=True), bare_env(tmp_path))
    choice = catalog.resolve("python3.14")
    assert (choice.kind, choice.interpreter) == (Kind.PYTHON, OWN.path)  # the only Python of a bare environment
    assert choice.note is not None
    assert choice.note.startswith(f"The runtime python3.14 runs on Python {OWN.version_text} on this gateway")
    assert OWN.path not in choice.note  # API callers read it: the path goes to the log only
    assert "GATEWAY_RUNTIME_FALLBACK=1" in choice.note
    assert catalog.resolve(f"python3.{OWN.minor}").note is None
    assert catalog.note("python3.14") == choice.note and catalog.note(f"python3.{OWN.minor}") == ""


def test_a_runtime_that_cannot_run_here_now_says_why_in_its_note(tmp_path: Path) -> None:
    catalog = Catalog.discover(Settings(data_dir=tmp_path), bare_env(tmp_path))
    assert catalog.note("python3.14").startswith("This function cannot run on this gateway now: ")


def test_an_explicit_interpreter_maps_its_runtime(tmp_path: Path) -> None:
    script = fake_python(tmp_path / "py" / "python", "3.14.1")
    settings = Settings(data_dir=tmp_path, runtimes={"python3.14": script})
    assert Catalog.discover(settings, bare_env(tmp_path)).resolve("python3.14").interpreter == script
