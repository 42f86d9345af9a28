"""Honest Python versions, end to end: a python3.X function runs on a Python 3.X of the host, sees what Lambda's runtime
has (the standard library, boto3 at the pinned version) and never the gateway's own packages; a Python the host lacks
is refused with what to do, or, with GATEWAY_RUNTIME_FALLBACK=1, runs on another one and says so.

The versions other than the gateway's own are skipped, with the reason, on a host without them (pyenv's here and on
CI). The C-extension wheels come from `pip download` (cached for the session).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import zipfile
from typing import Any

import pytest
from botocore.exceptions import ClientError

from gateway.pythons import find_pythons
from gateway.runtime_packages import PINS
from tests.conftest import RUNTIME, GatewayFactory, RunningGateway, create_function, invoke_json

FOUND, _ = find_pythons(os.environ, range(10, 16))
BOTO3 = next(pin.split("==")[1] for pin in PINS if pin.startswith("boto3=="))
#: a small package with a C extension, for the wheel a function brings
C_PACKAGE = "markupsafe"

VERSION_SOURCE = """
import sys

type Number = int  # PEP 695: a syntax error before Python 3.12


def lambda_handler(event, context):
    from markupsafe import _speedups
    return {"version": list(sys.version_info[:2]), "speedups": _speedups.__file__, "number": Number.__value__.__name__}
"""


def needs_python(minor: int) -> pytest.MarkDecorator:
    return pytest.mark.skipif(minor not in FOUND, reason=f"no Python 3.{minor} on this host (pyenv, PATH, /usr/bin)")


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`wheel(minor)`: the files of C_PACKAGE's cp3`minor` wheel (pip download, once per session and version)."""
    cache = tmp_path_factory.mktemp("wheels")
    files: dict[int, dict[str, bytes]] = {}

    def wheel(minor: int) -> dict[str, bytes]:
        if minor not in files:
            target = cache / f"cp3{minor}"
            args = ["download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version", f"3.{minor}"]
            done = subprocess.run(
                [sys.executable, "-m", "pip", *args, "-d", str(target), C_PACKAGE], capture_output=True, timeout=120
            )
            if done.returncode != 0:
                pytest.skip(f"pip download {C_PACKAGE} for 3.{minor} failed: {done.stderr.decode()[-300:]}")
            (path,) = target.glob("*.whl")
            with zipfile.ZipFile(path) as zf:
                files[minor] = {name: zf.read(name) for name in zf.namelist() if not name.endswith("/")}
        return files[minor]

    return wheel


@pytest.mark.parametrize("minor", [pytest.param(m, marks=needs_python(m)) for m in (12, 13)])
def test_a_python3x_function_runs_on_python3x_with_its_syntax_and_its_wheels(
    lam: Any, fname: str, wheels: Any, minor: int
) -> None:
    files: dict[str, str | bytes] = dict(wheels(minor))
    create_function(lam, fname, VERSION_SOURCE, files=files, Runtime=f"python3.{minor}")
    resp, body = invoke_json(lam, fname)
    assert "FunctionError" not in resp, body
    assert body["version"] == [3, minor]
    assert f".cpython-3{minor}-" in body["speedups"]  # the C extension built for 3.X imported
    assert body["number"] == "int"


OTHER = next((m for m in (12, 13) if m in FOUND and m != sys.version_info.minor), None)
ABI_SOURCE = """
def lambda_handler(event, context):
    try:
        from markupsafe import _speedups
    except ImportError:
        return "ImportError"
    return _speedups.__file__
"""


@pytest.mark.skipif(OTHER is None, reason="needs a Python 3.12 or 3.13 besides the gateway's own")
def test_a_wheel_built_for_another_python_does_not_load(lam: Any, fname: str, wheels: Any) -> None:
    """Each version is its own interpreter: a C extension built for the gateway's Python does not load in another."""
    files: dict[str, str | bytes] = dict(wheels(sys.version_info.minor))
    create_function(lam, fname, ABI_SOURCE, files=files, Runtime=f"python3.{OTHER}")
    assert invoke_json(lam, fname)[1] == "ImportError"


@pytest.mark.skipif(14 in FOUND, reason="this host has a Python 3.14: the refusal cannot be seen")
def test_a_python_the_host_lacks_is_refused_with_what_to_do(lam: Any, fname: str) -> None:
    with pytest.raises(ClientError) as refused:
        create_function(lam, fname, "def lambda_handler(e, c): pass\n", Runtime="python3.14")
    error = refused.value.response["Error"]
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Code"] == "InvalidParameterValueException"
    assert "needs a Python 3.14" in error["Message"]
    assert "GATEWAY_RUNTIME_PYTHON3_14=/path/to/python3.14" in error["Message"]
    with pytest.raises(ClientError, match=r"needs a Python 3\.14"):  # nor can an update switch to it
        create_function(lam, fname, "def lambda_handler(e, c): pass\n")
        lam.update_function_configuration(FunctionName=fname, Runtime="python3.14")


@pytest.mark.skipif(14 in FOUND, reason="this host has a Python 3.14: no fallback is taken")
def test_with_fallback_a_missing_python_runs_on_another_and_says_so(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(env={"GATEWAY_RUNTIME_FALLBACK": "1"})
    lam = gw.client()
    source = "import sys\ndef lambda_handler(e, c):\n    return list(sys.version_info[:2])\n"
    created = create_function(lam, "fallback", source, Runtime="python3.14")
    assert created["State"] == "Pending"  # AWS's answer to CreateFunction (issue 18, cause 7); the note follows
    created = lam.get_function_configuration(FunctionName="fallback")
    assert created["State"] == "Active" and "StateReasonCode" not in created  # InvalidRuntime goes with Failed
    reason = created["StateReason"]
    assert reason.startswith("The runtime python3.14 runs on Python 3.") and "GATEWAY_RUNTIME_FALLBACK=1" in reason
    assert "/" not in reason.split("GATEWAY_RUNTIME_PYTHON3_14=")[0]  # no host path for API callers
    config = lam.get_function_configuration(FunctionName="fallback")
    assert (config["StateReason"], config["LastUpdateStatusReason"]) == (reason, reason)
    resp, body = invoke_json(lam, "fallback")
    assert "FunctionError" not in resp and body[0] == 3 and body[1] != 14
    assert reason in gw.log()  # the gateway's log says so too
    gw.env.pop("GATEWAY_RUNTIME_FALLBACK")  # the note follows the host: without the fallback, it cannot run here
    config = gw.restart().client().get_function_configuration(FunctionName="fallback")
    assert config["StateReason"].startswith("This function cannot run on this gateway now: ")
    assert "needs a Python 3.14" in config["StateReason"]
    gw.client().update_function_configuration(FunctionName="fallback", Runtime=RUNTIME)
    updated = gw.client().get_function_configuration(FunctionName="fallback")
    assert "StateReason" not in updated and "LastUpdateStatusReason" not in updated  # its own Python again


IMPORTS_SOURCE = """
import importlib, os, sys


def lambda_handler(event, context):
    missing = {}
    for name in ("aiohttp", "pytest", "numpy", "orjson", "uvloop", "prometheus_client", "gateway.api"):
        try:
            importlib.import_module(name)
            missing[name] = "imported"
        except ImportError:
            missing[name] = "ImportError"
    import boto3, botocore, concurrent.futures, s3transfer.manager
    opt = os.listdir("/opt") if os.path.isdir("/opt") else None
    return {"imports": missing, "boto3": boto3.__version__, "botocore": botocore.__version__,
            "boto3_file": boto3.__file__, "path": sys.path, "opt": opt,
            "runtime_dir": os.environ["LAMBDA_RUNTIME_DIR"], "runtime_files": sorted(os.listdir("/var/runtime"))
            if os.path.isdir("/var/runtime") else None, "venv": os.path.exists(event.get("venv", "/nonexistent"))}
"""


def test_a_function_sees_lambdas_packages_and_never_the_gateways(lam: Any, fname: str, gateway: RunningGateway) -> None:
    create_function(lam, fname, IMPORTS_SOURCE)
    resp, body = invoke_json(lam, fname, {"venv": sys.prefix})
    assert "FunctionError" not in resp, body
    jailed = gateway.health()["isolation"]["mode"] == "jail"
    server = body["imports"].pop("gateway.api")
    assert set(body["imports"].values()) == {"ImportError"}, body["imports"]
    assert body["boto3"] == BOTO3 and body["botocore"] == BOTO3
    assert not [p for p in body["path"] if "site-packages" in p and "/opt/python" not in p], body["path"]
    if jailed:  # as on Lambda
        assert server == "ImportError"  # a jail shows of the gateway only what the runtime imports
        assert body["venv"] is False  # nor the gateway's virtual environment
        assert body["boto3_file"] == "/var/runtime/boto3/__init__.py"
        assert body["runtime_dir"] == "/var/runtime"
        assert {"boto3", "botocore", "bootstrap.py"} <= set(body["runtime_files"])
        assert body["opt"] == []  # /opt is there without layers: empty


def test_without_a_jail_too_the_gateways_packages_do_not_import(gateway_factory: GatewayFactory) -> None:
    lam = gateway_factory(env={"GATEWAY_SANDBOX": "rlimits"}).client()
    create_function(lam, "imports", IMPORTS_SOURCE.replace('"/opt"', '"/nonexistent"'))
    resp, body = invoke_json(lam, "imports")
    assert "FunctionError" not in resp, body
    body["imports"].pop("gateway.api")  # the runtime's source tree is the host's, unjailed
    assert set(body["imports"].values()) == {"ImportError"}, body["imports"]
    assert body["boto3"] == BOTO3 and body["runtime_dir"].endswith("runtimes/python")


def test_opt_and_the_runtime_are_read_only(lam: Any, fname: str, gateway: RunningGateway) -> None:
    if gateway.health()["isolation"]["mode"] != "jail":
        pytest.skip("without a jail /opt is the host's")
    source = """
import os
def lambda_handler(event, context):
    out = []
    for path in ("/opt/x", "/var/runtime/x", "/var/runtime/boto3/x"):
        try:
            os.mkdir(path)
            out.append(0)
        except OSError as exc:
            out.append(exc.errno)
    return out
"""
    create_function(lam, fname, source)
    _, errnos = invoke_json(lam, fname)
    assert errnos == [30, 30, 30]  # EROFS: neither /opt nor the runtime and its packages can be changed


EXITS = [("sys.exit(3)", "exit status 3"), ("sys.exit('no')", "exit status 1")]


@pytest.mark.parametrize(("exit_call", "status"), EXITS)
def test_sys_exit_during_init_is_a_runtime_exit_error(lam: Any, fname: str, exit_call: str, status: str) -> None:
    source = f"import sys\nprint('leaving', flush=True)\n{exit_call}\ndef lambda_handler(e, c):\n    return 1\n"
    create_function(lam, fname, source)
    resp = lam.invoke(FunctionName=fname, Payload=b"{}", LogType="Tail")
    body = json.loads(resp["Payload"].read())
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.ExitError"
    request_id = resp["ResponseMetadata"]["RequestId"]
    assert body["errorMessage"] == f"RequestId: {request_id} Error: Runtime exited with error: {status}"
    log = base64.b64decode(resp["LogResult"]).decode()
    assert "leaving" in log and f"Runtime exited with error: {status}" in log  # what Init printed, then how it ended
