"""Architectures through the real gateway: what the host runs, and a custom runtime of the other architecture run by
QEMU's user-mode emulator in the jail (an aws-lambda-go bootstrap built with GOARCH for the other architecture).

Lambda's wording for an architecture a runtime does not support is from CreateFunction's answer quoted in
github.com/serverless/serverless issue 10057 ("Runtime provided does not support the following architectures
[arm64]. Please select different architectures from [x86_64, arm64] or select a different runtime.").

The emulated test needs Go (and the Go module proxy) and `qemu-<arch>-static` (Debian's qemu-user-static): without
them it skips, with CI=true it fails (.ci/run installs both).
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bench import runtime_builds
from gateway import architectures
from tests.conftest import ROLE, RUNTIME, create_function, make_zip, unavailable

HOST = architectures.host_architecture()
OTHER = "arm64" if HOST == "x86_64" else "x86_64"
GOARCH = {"arm64": "arm64", "x86_64": "amd64"}
GO_SOURCE = """package main

import (
	"context"
	"runtime"

	"github.com/aws/aws-lambda-go/lambda"
)

func handler(ctx context.Context, event map[string]any) (map[string]any, error) {
	return map[string]any{"echo": event, "goarch": runtime.GOARCH}, nil
}

func main() { lambda.Start(handler) }
"""


GO_EXTENSION = """package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
)

func main() {
	api := "http://" + os.Getenv("AWS_LAMBDA_RUNTIME_API") + "/2020-01-01/extension"
	req, _ := http.NewRequest("POST", api+"/register", bytes.NewBufferString(`{"events": ["INVOKE"]}`))
	req.Header.Set("Lambda-Extension-Name", "arch-ext")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		os.Exit(1)
	}
	id := resp.Header.Get("Lambda-Extension-Identifier")
	resp.Body.Close()
	fmt.Printf("extension goarch=%s\\n", runtime.GOARCH)
	for {
		req, _ := http.NewRequest("GET", api+"/event/next", nil)
		req.Header.Set("Lambda-Extension-Identifier", id)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			os.Exit(1)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
"""


@pytest.fixture(scope="session")
def foreign_go_zip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A Go bootstrap of the architecture that is not the host's."""
    if architectures.emulator(OTHER) is None:
        unavailable(f"no QEMU user-mode emulator for {OTHER} (apt-get install qemu-user-static)")
    try:
        binary = runtime_builds.go_bootstrap(tmp_path_factory.mktemp("go-foreign"), GO_SOURCE, GOARCH[OTHER])
    except runtime_builds.Unavailable as exc:
        unavailable(str(exc))
    assert architectures.elf_architecture(str(binary)) == OTHER
    return make_zip({"bootstrap": binary.read_bytes()}, executable={"bootstrap"})


#: binfmt_misc's names for QEMU's handlers (Debian's qemu-user-static, systemd-binfmt)
BINFMT_NAMES = {"arm64": "qemu-aarch64", "x86_64": "qemu-x86_64"}


def binfmt_handler(architecture: str, root: str = "/proc/sys/fs/binfmt_misc") -> str | None:
    """The path of an enabled binfmt_misc handler for `architecture`'s programs, or None."""
    path = os.path.join(root, BINFMT_NAMES[architecture])
    try:
        with open(path) as f:
            enabled = f.readline().strip() == "enabled"
    except OSError:
        return None
    return path if enabled else None


@pytest.fixture(scope="session")
def native_go_zip(tmp_path_factory: pytest.TempPathFactory, foreign_go_zip: bytes) -> bytes:
    """A Go bootstrap of the host's architecture (after `foreign_go_zip`: skipped where it is)."""
    try:
        binary = runtime_builds.go_bootstrap(tmp_path_factory.mktemp("go-native"), GO_SOURCE, GOARCH[HOST])
    except runtime_builds.Unavailable as exc:
        unavailable(str(exc))
    return make_zip({"bootstrap": binary.read_bytes()}, executable={"bootstrap"})


@pytest.fixture(scope="session")
def foreign_extension_layer(tmp_path_factory: pytest.TempPathFactory, foreign_go_zip: bytes) -> bytes:
    """A layer whose extensions/arch-ext is a Go program of the architecture that is not the host's."""
    try:
        binary = runtime_builds.go_bootstrap(tmp_path_factory.mktemp("go-ext"), GO_EXTENSION, GOARCH[OTHER])
    except runtime_builds.Unavailable as exc:
        unavailable(str(exc))
    return make_zip({"extensions/arch-ext": binary.read_bytes()}, executable={"extensions/arch-ext"})


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    err = exc.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


def _refusal(runtime: str) -> str:
    return (
        f"Runtime {runtime} does not support the following architectures [{OTHER}]. Please select different "
        "architectures from [x86_64, arm64] or select a different runtime."
    )


def test_python_of_another_architecture_is_refused_as_lambda_refuses_it(lam: Any, fname: str) -> None:
    with pytest.raises(ClientError) as exc:
        create_function(lam, fname, "def lambda_handler(e, c): return 1\n", Architectures=[OTHER])
    assert _error(exc) == ("InvalidParameterValueException", _refusal(RUNTIME), 400)
    created = create_function(lam, fname, "def lambda_handler(e, c): return 1\n")
    assert created["Architectures"] == list(architectures.default())  # x86_64 on an x86_64 host, else the host's
    if HOST == "x86_64":
        with pytest.raises(ClientError) as exc:  # switching the architecture with new code: checked the same
            lam.update_function_code(FunctionName=fname, ZipFile=make_zip({"a.py": ""}), Architectures=[OTHER])
        assert _error(exc) == ("InvalidParameterValueException", _refusal(RUNTIME), 400)
        assert lam.get_function_configuration(FunctionName=fname)["Architectures"] == ["x86_64"]


def test_a_custom_runtime_of_the_other_architecture_runs_under_qemu_in_the_jail(
    lam: Any, fname: str, foreign_go_zip: bytes
) -> None:
    lam.create_function(FunctionName=fname, Runtime="provided.al2023", Role=ROLE, Handler="x",
                        Code={"ZipFile": foreign_go_zip}, Architectures=[OTHER])  # fmt: skip
    assert lam.get_function_configuration(FunctionName=fname)["Architectures"] == [OTHER]
    resp = lam.invoke(FunctionName=fname, Payload=b'{"n": 1}')
    body = json.loads(resp["Payload"].read())
    assert "FunctionError" not in resp, body
    assert body == {"echo": {"n": 1}, "goarch": GOARCH[OTHER]}
    with pytest.raises(ClientError) as exc:  # Node.js cannot follow it to that architecture
        lam.update_function_configuration(FunctionName=fname, Runtime="nodejs22.x", Handler="index.handler")
    assert _error(exc)[0] == "InvalidParameterValueException"


def test_a_foreign_bootstrap_of_a_function_of_the_hosts_architecture_is_not_emulated(
    lam: Any, fname: str, foreign_go_zip: bytes
) -> None:
    """Lambda runs a function on the architecture it names: a program built for another one does not start there
    ("exec format error"), and the gateway does not quietly emulate it. Where the host's kernel has a binfmt_misc
    handler for that architecture (Debian registers one when qemu-user-static is installed along binfmt-support or
    systemd-binfmt), the kernel itself runs the program through QEMU: nothing the gateway can refuse, so skipped."""
    if binfmt_handler(OTHER):
        pytest.skip(f"the kernel runs {OTHER} programs itself (binfmt_misc handler {binfmt_handler(OTHER)})")
    lam.create_function(FunctionName=fname, Runtime="provided.al2023", Role=ROLE, Handler="x",
                        Code={"ZipFile": foreign_go_zip}, Architectures=[HOST])  # fmt: skip
    resp = lam.invoke(FunctionName=fname, Payload=b"{}")
    body = json.loads(resp["Payload"].read())
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.InvalidEntrypoint" and "exec format error" in body["errorMessage"]


def test_binfmt_handler_finds_only_an_enabled_handler(tmp_path: Any) -> None:
    assert binfmt_handler("arm64", str(tmp_path)) is None
    (tmp_path / "qemu-aarch64").write_text("disabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n")
    assert binfmt_handler("arm64", str(tmp_path)) is None
    (tmp_path / "qemu-aarch64").write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n")
    assert binfmt_handler("arm64", str(tmp_path)) == str(tmp_path / "qemu-aarch64")
    assert binfmt_handler("x86_64", str(tmp_path)) is None


def test_an_extension_of_the_functions_architecture_runs_under_qemu_too(
    lam: Any, fname: str, foreign_go_zip: bytes, foreign_extension_layer: bytes
) -> None:
    """Lambda runs a layer's extensions on the function's architecture, as its runtime: an extension built for it is
    started through the emulator as the bootstrap is (without, its exec fails: Extension.LaunchError)."""
    layer = lam.publish_layer_version(LayerName=f"{fname}-ext", Content={"ZipFile": foreign_extension_layer})
    lam.create_function(FunctionName=fname, Runtime="provided.al2023", Role=ROLE, Handler="x",
                        Code={"ZipFile": foreign_go_zip}, Architectures=[OTHER],
                        Layers=[layer["LayerVersionArn"]])  # fmt: skip
    resp = lam.invoke(FunctionName=fname, Payload=b'{"n": 2}', LogType="Tail")
    body = json.loads(resp["Payload"].read())
    log = base64.b64decode(resp["LogResult"]).decode()
    assert "FunctionError" not in resp, (body, log)
    assert body == {"echo": {"n": 2}, "goarch": GOARCH[OTHER]}
    assert f"extension goarch={GOARCH[OTHER]}" in log


def test_a_bootstrap_of_the_hosts_architecture_does_not_run_in_a_function_of_the_other(
    lam: Any, fname: str, native_go_zip: bytes
) -> None:
    """Lambda's processor of the function's architecture does not run a program of another: neither does the
    emulator that stands in for it (the program is not run natively behind the function's Architectures)."""
    lam.create_function(FunctionName=fname, Runtime="provided.al2023", Role=ROLE, Handler="x",
                        Code={"ZipFile": native_go_zip}, Architectures=[OTHER])  # fmt: skip
    resp = lam.invoke(FunctionName=fname, Payload=b"{}", LogType="Tail")
    body = json.loads(resp["Payload"].read())
    log = base64.b64decode(resp["LogResult"]).decode()
    assert resp.get("FunctionError") == "Unhandled", body
    assert body["errorType"] == "Runtime.ExitError" and "goarch" not in body, body
    assert "Invalid ELF image" in log, log
