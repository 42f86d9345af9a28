"""What a new environment becomes: its process environment, where it finds its code and layers, its sandbox's sizes.

`environment_spec()` builds the `EnvironmentSpec` (gateway/contracts/environment.py) that a pool hands its zygote for
each new environment. Pure but for a custom runtime's `bootstrap`, looked up in the code, then the layers (two stats):
the caller says whether the zygote jails (the paths differ) and passes the credentials it minted.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from gateway import architectures
from gateway.catalog import PROVIDED_RUNTIMES
from gateway.contracts.environment import EnvironmentSpec, Mount
from gateway.contracts.file_systems import FileSystemMount
from gateway.errors import EFSMountFailureException
from gateway.execution import nodejs
from gateway.isolation.network import NETWORK_VARIABLE
from gateway.nodes import PROJECT
from gateway.runtime_packages import PACKAGES_DIR
from gateway.settings import Settings
from gateway.store.records import FunctionConfig

#: the runtime on the host (LAMBDA_RUNTIME_DIR without a jail)
RUNTIME_DIR = str(Path(__file__).resolve().parents[2] / "runtimes" / "python")
#: where a jailed environment sees its function's code and its layers, as on Lambda
TASK_ROOT = "/var/task"
#: the Runtime API client of Python functions that need one (`python_bootstrap`)
API_CLIENT = f"{RUNTIME_DIR}/api_client.py"
#: the contracts the client imports (runtimes/python/init.py, replies.py)
CONTRACTS_DIR = str(Path(__file__).resolve().parents[1] / "contracts")
#: where a jail shows the client's tree (runtimes/python, gateway/contracts): not /var/runtime, whose runtime modules
#: the client would put first on sys.path (its concurrent.py would shadow the standard library's)
JAIL_CLIENT_ROOT = "/var/rapid"
#: where a jail shows an interpreter outside the system's directories (pyenv's, say), as Lambda has its Python
JAIL_PYTHON_PREFIX = "/var/lang"
SYSTEM_DIRS = ("/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/")
#: Lambda's variable: a program run with the runtime's command line as its arguments (runtimes/proxy/process.py)
EXEC_WRAPPER = "AWS_LAMBDA_EXEC_WRAPPER"
#: where a jail shows the runtime (runtimes/python/jail.py)
JAIL_RUNTIME_DIR = "/var/runtime"
LAYERS_ROOT = "/opt"


def environment_spec(
    config: FunctionConfig,
    settings: Settings,
    init_type: str,
    jailed: bool,
    credentials: Mapping[str, str] | None = None,
    interpreter: str | None = None,
    *,
    program: str | None = None,
) -> EnvironmentSpec:
    """The spec of one new environment of `config` (`init_type`: "on-demand" or "provisioned-concurrency"), for a
    zygote that jails its environments or not; `credentials` join its reserved variables. `interpreter` is the
    zygote's Python: a Python function that needs the Runtime API (`python_bootstrap`) runs its client on it.
    `program` is what runs the runtime when the zygote says (the Node.js of a nodejs* runtime, gateway/catalog.py)."""
    task_root, extra_paths, mounts = code_layout(config, jailed)
    environ = environment_variables(config, settings, init_type, task_root, credentials)
    if jailed:
        environ["LAMBDA_RUNTIME_DIR"] = JAIL_RUNTIME_DIR  # not a host path
    bootstrap = custom_bootstrap(config, task_root, jailed) if config.runtime in PROVIDED_RUNTIMES else []
    if config.runtime.startswith("nodejs"):
        bootstrap = nodejs.command(program, config.memory_size, jailed)
        mounts += nodejs.runtime_mounts(program, jailed)
        mounts += nodejs.layer_module_mounts(config.runtime, [str(d) for d in config.layer_dirs], jailed)
        environ["LAMBDA_RUNTIME_DIR"] = nodejs.runtime_dir(jailed)
        if "NODE_PATH" not in config.environment:  # the function's own wins, as on Lambda
            layers = [str(d) for d in config.layer_dirs]
            environ["NODE_PATH"] = nodejs.node_path(
                config.runtime, task_root, layers, jailed, nodejs.runtime_dir(jailed)
            )
    extensions = extension_paths(config, jailed)
    spec = EnvironmentSpec(
        env=environ,
        code_dir=task_root,
        handler=config.handler,
        extra_paths=extra_paths,
        max_concurrency=config.max_concurrency,
        mounts=mounts,
        memory_size=config.memory_size,
        ephemeral_storage=config.ephemeral_storage,
        # only "default" (or nothing) connects: a value stored before validation, "NONE" say, fails closed
        network=config.environment.get(NETWORK_VARIABLE, "default") == "default",
        bootstrap=bootstrap,
        extensions=extensions,
        extension_emulators=extension_emulators(config, jailed),
        file_systems=file_system_mounts(config, settings, jailed),
    )
    if not spec.bootstrap and config.runtime.startswith("python") and (extensions or EXEC_WRAPPER in environ):
        private = [str(settings.data_dir), PROJECT]
        argv, more = python_bootstrap(interpreter or sys.executable, extra_paths, jailed, private)
        spec = spec._replace(bootstrap=argv, mounts=[*mounts, *more])
    return spec


def file_system_mounts(config: FunctionConfig, settings: Settings, jailed: bool) -> list[FileSystemMount]:
    """The function's FileSystemConfigs as its environment mounts them: each access point's directory and POSIX user
    (GATEWAY_FILE_SYSTEMS, gateway/file_systems.py). Raises EFSMountFailureException, Invoke's error, when an access
    point is no longer mapped (the settings changed since the function was configured) or the zygote does not jail."""
    mounts = []
    for fs in config.extra.get("FileSystemConfigs") or ():
        access_point = settings.file_systems.get(fs["Arn"])
        if access_point is None or not jailed:
            why = "it is not mapped here" if access_point is None else "this gateway does not jail its environments"
            raise EFSMountFailureException(
                f"The function couldn't mount the file system of access point {fs['Arn']}: {why}."
            )
        ap = access_point
        mounts.append(FileSystemMount(fs["LocalMountPath"], ap.path, ap.uid, ap.gid, ap.dev, ap.ino))
    return mounts


def _extension_files(config: FunctionConfig, jailed: bool) -> dict[str, Path]:
    """The function's external extensions: path as the environment sees it -> the file on the host."""
    found: dict[str, Path] = {}
    for layer in config.layer_dirs:
        directory = Path(layer) / "extensions"
        if directory.is_dir():
            for entry in directory.iterdir():
                if entry.is_file():
                    found[entry.name] = entry
    return {f"{LAYERS_ROOT}/extensions/{name}" if jailed else str(found[name]): found[name] for name in sorted(found)}


def extension_paths(config: FunctionConfig, jailed: bool) -> list[str]:
    """The function's external extensions: the files of its layers' extensions/ directories, as Lambda's merged
    /opt/extensions shows them (a later layer's file hides an earlier one's of the same name), sorted by name (the
    order Lambda starts them in); paths as the environment sees them."""
    return list(_extension_files(config, jailed))


def extension_emulators(config: FunctionConfig, jailed: bool) -> dict[str, str]:
    """Which of the function's extensions run through an emulator (an ELF program of the function's architecture,
    when it is not the host's: gateway/architectures.py `emulated`), and which: path as the environment sees it ->
    the emulator."""
    out = {}
    for path, host in _extension_files(config, jailed).items():
        argv = architectures.emulated([path], str(host), config.architectures)
        if argv != [path]:
            out[path] = argv[0]
    return out


def python_bootstrap(
    interpreter: str, extra_paths: list[str], jailed: bool, private: Sequence[str] = ()
) -> tuple[list[str], list[Mount]]:
    """A Python function's runtime when it needs the Runtime API (extensions, or AWS_LAMBDA_EXEC_WRAPPER), and the
    mounts a jail adds for it: our Runtime API client (runtimes/python/api_client.py) on the function's Python, run
    as a zygote is (-I -S -B: no site-packages, no PYTHON* variables, no bytecode written, nor the script's directory
    on sys.path), then the runtime's packages (boto3 ...; the client puts them after the standard library) and the
    layers' sys.path entries as its arguments.

    Without a jail, host paths. In a jail none (its /proc/self/cmdline and sys.path name no host path, as the fast
    path's): the client's tree at JAIL_CLIENT_ROOT, the packages at /var/runtime (jail.py merges them there), and an
    interpreter outside the system's directories from its installation mounted at JAIL_PYTHON_PREFIX (the jail
    shows it where the host has it too: sys.base_prefix, runtimes/python/isolation.py), unless that installation is
    the root or holds one of `private` (the data directory, the project): then its host path, as the jail shows it."""
    if not jailed:
        return [interpreter, "-I", "-S", "-B", API_CLIENT, str(PACKAGES_DIR), *extra_paths], []
    mounts = [
        Mount(f"{JAIL_CLIENT_ROOT}/runtimes/python", [RUNTIME_DIR]),
        Mount(f"{JAIL_CLIENT_ROOT}/gateway/contracts", [CONTRACTS_DIR]),
    ]
    program = interpreter
    real = os.path.realpath(interpreter)
    prefix = os.path.dirname(os.path.dirname(real))
    holds = any(p == prefix or p.startswith(prefix + "/") for p in map(os.path.realpath, private))
    if not real.startswith(SYSTEM_DIRS) and prefix != "/" and not holds and _is_python_prefix(prefix):
        mounts.append(Mount(JAIL_PYTHON_PREFIX, [prefix]))
        program = f"{JAIL_PYTHON_PREFIX}/bin/{os.path.basename(real)}"
    client = f"{JAIL_CLIENT_ROOT}/runtimes/python/api_client.py"
    return [program, "-I", "-S", "-B", client, JAIL_RUNTIME_DIR, *extra_paths], mounts


def _is_python_prefix(prefix: str) -> bool:
    """Is `prefix` a Python installation's (<prefix>/lib/python3.X/os.py, the landmark Python finds its own by), so
    that its interpreter runs from wherever the whole prefix is shown?"""
    return any(Path(prefix, "lib").glob("python3.*/os.py"))


def custom_bootstrap(config: FunctionConfig, task_root: str, jailed: bool) -> list[str]:
    """A custom runtime's command line, as Lambda finds it: `bootstrap` in the function's code (LAMBDA_TASK_ROOT),
    else in its layers (/opt/bootstrap: the last layer that has one, as their merge shows it). With neither, the
    code's path: the proxy then reports Runtime.InvalidEntrypoint ("Couldn't find valid bootstrap(s)"), as Lambda
    does; one that is not executable likewise ("permission denied"). A bootstrap built for the function's architecture
    when that is not the host's runs through QEMU's emulator (gateway/architectures.py)."""
    found = Path(config.code_dir) / "bootstrap"
    argv = [f"{task_root}/bootstrap"]
    if not found.exists():
        for layer in reversed(config.layer_dirs):
            if (Path(layer) / "bootstrap").exists():
                found = Path(layer) / "bootstrap"
                argv = [f"{LAYERS_ROOT}/bootstrap" if jailed else str(found)]
                break
    return architectures.emulated(argv, str(found), config.architectures)


def environment_variables(
    config: FunctionConfig, settings: Settings, init_type: str, task_root: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment an execution environment sees: Lambda's reserved set (with `extra`), then the function's own."""
    stream = time.strftime("%Y/%m/%d", time.gmtime()) + f"/[{config.version}]{uuid.uuid4().hex}"
    env = {
        "PATH": "/usr/local/bin:/usr/bin/:/bin:/opt/bin",
        "LD_LIBRARY_PATH": "/lib64:/usr/lib64:/var/task:/var/task/lib:/opt/lib",  # Lambda's, for the layers' libraries
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "_HANDLER": config.handler,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{config.runtime}",
        "AWS_REGION": settings.region,
        "AWS_DEFAULT_REGION": settings.region,
        "AWS_LAMBDA_FUNCTION_NAME": config.name,
        "AWS_LAMBDA_FUNCTION_VERSION": config.version,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_size),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{config.name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": stream,
        "AWS_LAMBDA_INITIALIZATION_TYPE": init_type,
        "LAMBDA_TASK_ROOT": task_root,
        "LAMBDA_RUNTIME_DIR": RUNTIME_DIR,
    }
    if config.runtime in PROVIDED_RUNTIMES:  # "not defined for OS-only runtimes (the provided family)", as on Lambda
        del env["AWS_EXECUTION_ENV"]
    logging_config = config.extra.get("LoggingConfig") or {}
    if logging_config.get("LogFormat") == "JSON":  # the runtime then writes JSON records at this level
        env["AWS_LAMBDA_LOG_FORMAT"] = "JSON"
        env["AWS_LAMBDA_LOG_LEVEL"] = logging_config.get("ApplicationLogLevel", "INFO")
    if extra:
        env.update(extra)
    env.update(config.environment)
    return env


def code_layout(config: FunctionConfig, jailed: bool) -> tuple[str, list[str], list[Mount]]:
    """Where an environment finds the function's code and layers: (LAMBDA_TASK_ROOT, the layers' sys.path entries,
    the mounts a jail makes).

    In a jail, as on Lambda: the code at /var/task, the layers merged at /opt (an overlay, the last layer on top, as
    Lambda extracts them in order), so paths in the code and in the layers' binaries work unchanged. Without a jail,
    the directories where the code store keeps them.
    """
    if not jailed:
        return str(config.code_dir), layer_paths(config), []
    mounts = [Mount(TASK_ROOT, [str(config.code_dir)])]
    if not config.layer_dirs:
        return TASK_ROOT, [], mounts
    mounts.append(Mount(LAYERS_ROOT, [str(d) for d in reversed(config.layer_dirs)]))
    return TASK_ROOT, [f"{LAYERS_ROOT}/python/lib/{config.runtime}/site-packages", f"{LAYERS_ROOT}/python"], mounts


def layer_paths(config: FunctionConfig) -> list[str]:
    """sys.path entries for the function's layers, after its own code, as Lambda's merged /opt orders them.

    Lambda extracts layers in order into /opt (a later layer overwrites an earlier one) and puts
    /opt/python/lib/pythonX.Y/site-packages before /opt/python; separate directories get the same lookup
    order by listing every layer's site-packages first, later layers before earlier ones.
    """
    newest_first = list(reversed(config.layer_dirs))
    site = [str(d / "python" / "lib" / config.runtime / "site-packages") for d in newest_first]
    return site + [str(d / "python") for d in newest_first]
