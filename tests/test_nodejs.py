"""What a nodejs* environment runs (gateway/execution/nodejs.py) and how its spec says it (execution/spec.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gateway.contracts.environment import Mount
from gateway.execution import nodejs
from gateway.execution.spec import environment_spec
from gateway.settings import Settings
from tests.conftest import UNSTORED_CONFIG


def test_the_command_runs_our_runtime_with_lambdas_flags() -> None:
    argv = nodejs.command("/usr/bin/node", 1024, jailed=True)
    assert argv[0] == "/usr/bin/node" and argv[-1] == "/var/runtime/index.mjs"
    assert argv[1:-1] == [
        "--expose-gc",
        "--max-http-header-size",
        "81920",
        "--max-semi-space-size=51",
        "--max-old-space-size=922",
    ]
    host = nodejs.command(None, 128, jailed=False)
    assert host[0] == "node" and host[-1] == nodejs.NODE_RUNTIME_DIR + "/index.mjs"
    assert Path(host[-1]).is_file()


def test_node_path_finds_the_layers_packages_as_lambdas() -> None:
    jailed = nodejs.node_path("nodejs22.x", "/var/task", ["/l/1", "/l/2"], True, "/var/runtime")
    assert jailed.split(":") == [
        "/opt/nodejs/node22/node_modules",
        "/opt/nodejs/node_modules",
        "/var/runtime/node_modules",
        "/var/runtime",
        "/var/task",
    ]
    host = nodejs.node_path("nodejs20.x", "/code", ["/l/1", "/l/2"], False, "/rt").split(":")
    assert host[:4] == [
        "/l/2/nodejs/node20/node_modules",
        "/l/1/nodejs/node20/node_modules",
        "/l/2/nodejs/node_modules",
        "/l/1/nodejs/node_modules",
    ]
    assert host[-1] == "/code"


def test_a_jail_shows_the_runtime_at_var_runtime_and_a_node_installation_at_var_lang(tmp_path: Path) -> None:
    node = tmp_path / "v22" / "bin" / "node"
    node.parent.mkdir(parents=True)
    node.write_text("")
    (tmp_path / "v22" / "include" / "node").mkdir(parents=True)
    runtime = nodejs.runtime_mounts(None, jailed=True)[0]
    assert runtime.target == "/var/runtime" and runtime.sources[:2] == [
        nodejs.NODE_RUNTIME_DIR,
        nodejs.PYTHON_RUNTIME_DIR,
    ]
    assert nodejs.runtime_mounts(str(node), jailed=True) == [runtime, Mount("/var/lang", [str(tmp_path / "v22")])]
    assert nodejs.command(str(node), 128, jailed=True)[0] == "/var/lang/bin/node"
    assert nodejs.command(str(node), 128, jailed=False)[0] == str(node)
    assert nodejs.runtime_mounts(str(node), jailed=False) == []
    assert nodejs.runtime_mounts("/usr/bin/node", jailed=True) == [runtime]
    assert nodejs.command("/usr/bin/node", 128, jailed=True)[0] == "/usr/bin/node"


def test_a_node_that_is_no_installation_mounts_nothing(tmp_path: Path) -> None:
    """~/bin/node, /bin2/node, .venv/bin/node without include/: its directories are not mounted (the catalogue
    refuses it, gateway/nodes.py: jail_problem)."""
    for node in (tmp_path / "bin" / "node", tmp_path / "node"):
        node.parent.mkdir(parents=True, exist_ok=True)
        node.write_text("")
        assert nodejs.runtime_mounts(str(node), jailed=True) == nodejs.runtime_mounts(None, jailed=True)
        assert nodejs.command(str(node), 128, jailed=True)[0] == str(node)


def test_the_spec_of_a_nodejs_environment(tmp_path: Path) -> None:
    config = dataclasses.replace(UNSTORED_CONFIG, runtime="nodejs20.x", memory_size=256)
    spec = environment_spec(config, Settings(data_dir=tmp_path), "on-demand", True, program="/usr/bin/node")
    assert spec.bootstrap == nodejs.command("/usr/bin/node", 256, jailed=True)
    assert spec.env["NODE_PATH"].startswith("/opt/nodejs/node20/node_modules:")
    assert spec.env["LAMBDA_RUNTIME_DIR"] == "/var/runtime"
    assert any(m.target == "/var/runtime" and m.sources[0] == nodejs.NODE_RUNTIME_DIR for m in spec.mounts)
    python = environment_spec(UNSTORED_CONFIG, Settings(data_dir=tmp_path), "on-demand", True)
    assert python.bootstrap == [] and "NODE_PATH" not in python.env


def test_a_jail_shows_the_layers_packages_where_es_modules_find_them(tmp_path: Path) -> None:
    old, new, none = tmp_path / "old", tmp_path / "new", tmp_path / "none"
    for path in (old / "nodejs/node_modules", old / "nodejs/node22/node_modules", new / "nodejs/node_modules"):
        path.mkdir(parents=True)
    none.mkdir()
    layers = [str(old), str(new), str(none)]
    assert nodejs.layer_module_mounts("nodejs22.x", layers, jailed=True) == [
        Mount("/var/node_modules", [f"{old}/nodejs/node22/node_modules"]),
        Mount("/node_modules", [f"{new}/nodejs/node_modules", f"{old}/nodejs/node_modules"]),  # the newest on top
    ]
    assert nodejs.layer_module_mounts("nodejs20.x", layers, jailed=True) == [
        Mount("/node_modules", [f"{new}/nodejs/node_modules", f"{old}/nodejs/node_modules"])
    ]
    assert nodejs.layer_module_mounts("nodejs22.x", layers, jailed=False) == []
    assert nodejs.layer_module_mounts("nodejs22.x", [str(none)], jailed=True) == []
    (none / "nodejs").symlink_to(old / "nodejs")  # a mount would follow it, anywhere on the host
    assert nodejs.layer_module_mounts("nodejs22.x", [str(none)], jailed=True) == []
