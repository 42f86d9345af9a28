"""What a new environment is told (gateway/execution/spec.py): its variables, where its code and layers are, with
and without a jail, and its sandbox's sizes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gateway.contracts.environment import EnvironmentSpec, Mount
from gateway.execution.spec import API_CLIENT, CONTRACTS_DIR, JAIL_RUNTIME_DIR, RUNTIME_DIR, environment_spec
from gateway.runtime_packages import PACKAGES_DIR
from gateway.settings import Settings
from gateway.store.records import FunctionConfig

CONFIG = FunctionConfig(
    name="f",
    arn="arn:aws:lambda:us-east-1:123456789012:function:f",
    runtime="python3.12",
    handler="app.handler",
    role="r",
    code_sha256="0" * 64,
    code_size=1,
    code_dir=Path("/data/code/abc"),
    last_modified="",
    revision_id="r1",
    memory_size=256,
    ephemeral_storage=1024,
    environment={"MINE": "1"},
    layer_dirs=(Path("/data/layers/one"), Path("/data/layers/two")),
)
SETTINGS = Settings(data_dir=Path("/data"))


def test_without_a_jail_the_code_and_layers_are_where_the_store_keeps_them() -> None:
    spec = environment_spec(CONFIG, SETTINGS, "on-demand", jailed=False, credentials={"AWS_ACCESS_KEY_ID": "k"})
    assert (spec.code_dir, spec.handler, spec.mounts) == ("/data/code/abc", "app.handler", [])
    assert spec.extra_paths == [
        "/data/layers/two/python/lib/python3.12/site-packages",
        "/data/layers/one/python/lib/python3.12/site-packages",
        "/data/layers/two/python",
        "/data/layers/one/python",
    ]
    env = spec.env
    assert (env["LAMBDA_TASK_ROOT"], env["LAMBDA_RUNTIME_DIR"], env["_HANDLER"]) == (
        "/data/code/abc",
        RUNTIME_DIR,
        "app.handler",
    )
    assert (env["AWS_LAMBDA_INITIALIZATION_TYPE"], env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]) == ("on-demand", "256")
    assert (env["AWS_ACCESS_KEY_ID"], env["MINE"]) == ("k", "1")
    assert (spec.memory_size, spec.ephemeral_storage, spec.max_concurrency, spec.network) == (256, 1024, 1, True)


def test_in_a_jail_the_paths_are_lambdas() -> None:
    spec = environment_spec(CONFIG, SETTINGS, "provisioned-concurrency", jailed=True)
    assert spec.code_dir == spec.env["LAMBDA_TASK_ROOT"] == "/var/task"
    assert spec.env["LAMBDA_RUNTIME_DIR"] == JAIL_RUNTIME_DIR
    assert spec.mounts == [
        Mount("/var/task", ["/data/code/abc"]),
        Mount("/opt", ["/data/layers/two", "/data/layers/one"]),  # the last layer on top
    ]
    assert spec.extra_paths == ["/opt/python/lib/python3.12/site-packages", "/opt/python"]
    no_layers = environment_spec(dataclasses.replace(CONFIG, layer_dirs=()), SETTINGS, "on-demand", jailed=True)
    assert (no_layers.mounts, no_layers.extra_paths) == ([Mount("/var/task", ["/data/code/abc"])], [])


def test_json_logging_and_the_network_switch() -> None:
    config = dataclasses.replace(
        CONFIG,
        extra={"LoggingConfig": {"LogFormat": "JSON", "ApplicationLogLevel": "DEBUG"}},
        environment={"GATEWAY_NETWORK": "none"},
    )
    spec = environment_spec(config, SETTINGS, "on-demand", jailed=True)
    assert (spec.env["AWS_LAMBDA_LOG_FORMAT"], spec.env["AWS_LAMBDA_LOG_LEVEL"]) == ("JSON", "DEBUG")
    assert spec.network is False


def test_the_spec_survives_its_wire_form() -> None:
    spec = environment_spec(CONFIG, SETTINGS, "on-demand", jailed=True)
    assert EnvironmentSpec.from_wire(spec.to_wire()) == spec


def test_extensions_are_the_layers_extension_files_by_name_a_later_layer_winning(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for layer, names in ((one, ("zeta", "alpha")), (two, ("alpha", "mid"))):
        (layer / "extensions").mkdir(parents=True)
        for name in names:
            (layer / "extensions" / name).write_text("#!/bin/sh\n")
    (one / "extensions" / "subdir").mkdir()  # not an extension
    config = dataclasses.replace(CONFIG, layer_dirs=(one, two))
    host = environment_spec(config, SETTINGS, "on-demand", jailed=False, interpreter="/usr/bin/python3.12")
    assert host.extensions == [str(two / "extensions/alpha"), str(two / "extensions/mid"), str(one / "extensions/zeta")]
    jailed = environment_spec(config, SETTINGS, "on-demand", jailed=True, interpreter="/usr/bin/python3.12")
    assert jailed.extensions == ["/opt/extensions/alpha", "/opt/extensions/mid", "/opt/extensions/zeta"]
    # A Python function with extensions runs through the proxy, with our Runtime API client on its Python; in a jail
    # its command line names no host path: the client's tree at /var/rapid, the packages at /var/runtime.
    assert jailed.bootstrap == [
        "/usr/bin/python3.12",
        "-I",
        "-S",
        "-B",
        "/var/rapid/runtimes/python/api_client.py",
        "/var/runtime",
        *jailed.extra_paths,
    ]
    assert Mount("/var/rapid/runtimes/python", [RUNTIME_DIR]) in jailed.mounts
    assert Mount("/var/rapid/gateway/contracts", [CONTRACTS_DIR]) in jailed.mounts
    assert Path(API_CLIENT).is_file() and Path(CONTRACTS_DIR, "environment.py").is_file()
    assert host.bootstrap[4:6] == [API_CLIENT, str(PACKAGES_DIR)] and host.mounts == []
    # An interpreter outside the system's directories (pyenv's, a venv's base): its installation at /var/lang.
    python = tmp_path / "pyenv" / "bin" / "python3.12"
    python.parent.mkdir(parents=True)
    python.write_text("")
    (tmp_path / "pyenv" / "lib" / "python3.12").mkdir(parents=True)
    (tmp_path / "pyenv" / "lib" / "python3.12" / "os.py").write_text("")
    own = environment_spec(config, SETTINGS, "on-demand", jailed=True, interpreter=str(python))
    assert own.bootstrap[0] == "/var/lang/bin/python3.12"
    assert Mount("/var/lang", [str(tmp_path / "pyenv")]) in own.mounts
    inside = dataclasses.replace(SETTINGS, data_dir=tmp_path / "pyenv" / "data")  # never shown to a function
    assert environment_spec(config, inside, "on-demand", jailed=True, interpreter=str(python)).bootstrap[0] == str(
        python
    )
    bare = tmp_path / "bare" / "python3"  # no installation around it: where the jail shows it (sys.base_prefix)
    bare.parent.mkdir()
    bare.write_text("")
    assert environment_spec(config, SETTINGS, "on-demand", jailed=True, interpreter=str(bare)).bootstrap[0] == str(bare)
    # Without extensions or AWS_LAMBDA_EXEC_WRAPPER: the fast path.
    assert environment_spec(CONFIG, SETTINGS, "on-demand", jailed=True).bootstrap == []
    wrapped = dataclasses.replace(CONFIG, environment={"AWS_LAMBDA_EXEC_WRAPPER": "/opt/wrapper"})
    bootstrap = environment_spec(wrapped, SETTINGS, "on-demand", jailed=False, interpreter="/py").bootstrap
    assert bootstrap[0] == "/py" and bootstrap[4:6] == [API_CLIENT, str(PACKAGES_DIR)]


def test_a_custom_runtime_runs_the_codes_bootstrap_else_a_layers(tmp_path: Path) -> None:
    code, first, second = tmp_path / "code", tmp_path / "one", tmp_path / "two"
    for d in (code, first, second):
        d.mkdir()
    config = dataclasses.replace(CONFIG, runtime="provided.al2023", code_dir=code, layer_dirs=(first, second))
    assert environment_spec(CONFIG, SETTINGS, "on-demand", jailed=True).bootstrap == []  # python: the fast path
    assert "AWS_EXECUTION_ENV" not in environment_spec(config, SETTINGS, "on-demand", jailed=True).env  # OS-only
    # neither has one: the code's path, which the proxy reports as Lambda does (Runtime.InvalidEntrypoint)
    assert environment_spec(config, SETTINGS, "on-demand", jailed=True).bootstrap == ["/var/task/bootstrap"]
    (first / "bootstrap").write_text("#!/bin/sh\n")
    assert environment_spec(config, SETTINGS, "on-demand", jailed=True).bootstrap == ["/opt/bootstrap"]
    assert environment_spec(config, SETTINGS, "on-demand", jailed=False).bootstrap == [str(first / "bootstrap")]
    (second / "bootstrap").write_text("#!/bin/sh\n")  # the later layer's, as their merge at /opt shows
    assert environment_spec(config, SETTINGS, "on-demand", jailed=False).bootstrap == [str(second / "bootstrap")]
    (code / "bootstrap").write_text("#!/bin/sh\n")
    assert environment_spec(config, SETTINGS, "on-demand", jailed=True).bootstrap == ["/var/task/bootstrap"]
    assert environment_spec(config, SETTINGS, "on-demand", jailed=False).bootstrap == [str(code / "bootstrap")]
