"""Code signing and deployments against a real gateway with boto3: what a function shows of its package's signature,
integrity before trust, and a configuration attached or changed while a deployment is in flight (the deployment
commits only if the configuration it was checked against is still the function's: ResourceConflictException
otherwise). Helpers and fixtures are tests/test_api_code_signing.py's (that module is at the 500-line limit).
"""

from __future__ import annotations

import io
import struct
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError

from gateway.store import signatures
from tests.conftest import HANDLER, ROLE, RUNTIME, RunningGateway, _gateway_env, make_zip
from tests.test_api_code_signing import OTHER, TRUSTED, UNREGISTERED, Keys, _code, _create, _csc, _error, _name
from tests.test_api_code_signing import gw as gw
from tests.test_api_code_signing import keys as keys
from tests.test_api_code_signing import lam as lam

SIGNING = ("SigningProfileVersionArn", "SigningJobArn")


def test_new_code_of_a_function_without_a_configuration_shows_no_signature(lam: Any, keys: Keys) -> None:
    name = _name()
    csc = _csc(lam, "Enforce")
    created = _create(lam, name, keys.sign(_code(1)), csc)
    assert all(k in created for k in SIGNING)
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    lam.delete_function_code_signing_config(FunctionName=name)
    dry = lam.update_function_code(FunctionName=name, ZipFile=_code(2), DryRun=True)
    assert not any(k in dry for k in SIGNING)
    out = lam.update_function_code(FunctionName=name, ZipFile=_code(2))
    assert not any(k in out for k in SIGNING)
    assert not any(k in lam.get_function_configuration(FunctionName=name) for k in SIGNING)


def _tampered(keys: Keys, profile: str) -> bytes:
    """A stored (uncompressed) package signed for `profile`, then edited with its CRCs fixed: a valid zip whose
    signed bytes no longer hash to the signature's digest."""
    z = io.BytesIO()
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("lambda_function.py", "def lambda_handler(e, c):\n    return {'v': 'AAAA'}\n")
    s = bytearray(keys.sign(z.getvalue(), profile, key_of=TRUSTED if profile == UNREGISTERED else None))
    j = s.find(b"AAAA")
    s[j : j + 4] = b"BBBB"
    crc = struct.pack("<I", zlib.crc32(b"def lambda_handler(e, c):\n    return {'v': 'BBBB'}\n"))
    k = s.find(b"PK\x03\x04")
    s[k + 14 : k + 18] = crc
    k = s.find(b"PK\x01\x02")
    s[k + 16 : k + 20] = crc
    return bytes(s)


@pytest.mark.parametrize("profile", [OTHER, UNREGISTERED])
def test_a_tampered_package_fails_integrity_under_warn_whatever_its_profile(lam: Any, keys: Keys, profile: str) -> None:
    tampered = _tampered(keys, profile)
    sig = signatures.read(tampered)
    assert sig is not None and sig.sha256 != sig.actual_sha256
    csc = _csc(lam, "Warn")  # allows TRUSTED only
    with pytest.raises(ClientError) as exc:
        _create(lam, _name(), tampered, csc)
    assert _error(exc)[0] == "InvalidCodeSignatureException"


class _SlowS3(BaseHTTPRequestHandler):
    """Serves `package` for any GET after `delay` seconds (an S3 endpoint that stalls a deployment)."""

    package = b""
    delay = 3.0

    def do_GET(self) -> None:
        time.sleep(self.delay)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.package)))
        self.send_header("Content-Type", "application/zip")
        self.end_headers()
        self.wfile.write(self.package)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[RunningGateway]:
    """A gateway whose S3 endpoint stalls 3 s before answering an unsigned package."""
    handler = type("H", (_SlowS3,), {"package": _code(99)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = _gateway_env(GATEWAY_SIGNING_PROFILES=str(keys.path),
                       GATEWAY_S3_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}")  # fmt: skip
    gateway = RunningGateway(tmp_path_factory.mktemp("slow-s3") / "data", env)
    gateway.start()
    yield gateway
    gateway.stop()
    server.shutdown()
    thread.join()


def _during(gateway: RunningGateway, deploy: Callable[[Any], Any], meanwhile: Callable[[], None]) -> dict[str, Any]:
    """Run `deploy(client)` in a thread; 1 s in (while its package is being fetched), `meanwhile()`; the outcome."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["out"] = deploy(gateway.client())
        except ClientError as exc:
            result["err"] = exc.response["Error"]["Code"]

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(1)
    meanwhile()
    thread.join()
    return result


def test_a_configuration_attached_during_an_update_applies_to_it(slow: RunningGateway) -> None:
    op = slow.client()
    name = _name()
    op.create_function(FunctionName=name, Runtime=RUNTIME, Role=ROLE, Handler=HANDLER,
                       Code={"ZipFile": _code(1)})  # fmt: skip
    op.get_waiter("function_active_v2").wait(FunctionName=name)
    before = op.get_function_configuration(FunctionName=name)["CodeSha256"]
    csc = _csc(op, "Enforce")
    result = _during(
        slow,
        lambda c: c.update_function_code(FunctionName=name, S3Bucket="bucket", S3Key="k.zip"),
        lambda: op.put_function_code_signing_config(FunctionName=name, CodeSigningConfigArn=csc),
    )
    assert result.get("err") == "ResourceConflictException"
    assert op.get_function_configuration(FunctionName=name)["CodeSha256"] == before


def test_a_policy_changed_during_a_create_applies_to_it(slow: RunningGateway) -> None:
    op = slow.client()
    name = _name()
    csc = _csc(op, "Warn")
    result = _during(
        slow,
        lambda c: c.create_function(FunctionName=name, Runtime=RUNTIME, Role=ROLE,
                                    Handler=HANDLER, CodeSigningConfigArn=csc,
                                    Code={"S3Bucket": "bucket", "S3Key": "k.zip"}),
        lambda: op.update_code_signing_config(CodeSigningConfigArn=csc,
                                              CodeSigningPolicies={"UntrustedArtifactOnDeployment": "Enforce"}),
    )  # fmt: skip
    assert result.get("err") == "ResourceConflictException"
    with pytest.raises(ClientError) as exc:
        op.get_function(FunctionName=name)
    assert _error(exc)[0] == "ResourceNotFoundException"
    assert op.list_functions_by_code_signing_config(CodeSigningConfigArn=csc)["FunctionArns"] == []


def test_a_configuration_deleted_during_a_create_fails_it(slow: RunningGateway) -> None:
    """CreateFunction attaches its configuration before the function exists (never after): a configuration deleted
    while the package is fetched fails the creation, and no function is left without it."""
    op = slow.client()
    name = _name()
    csc = _csc(op, "Warn")
    result = _during(
        slow,
        lambda c: c.create_function(FunctionName=name, Runtime=RUNTIME, Role=ROLE, Handler=HANDLER,
                                    CodeSigningConfigArn=csc, Code={"S3Bucket": "bucket", "S3Key": "k.zip"}),
        lambda: op.delete_code_signing_config(CodeSigningConfigArn=csc),
    )  # fmt: skip
    assert result.get("err") == "CodeSigningConfigNotFoundException"
    with pytest.raises(ClientError) as exc:
        op.get_function(FunctionName=name)
    assert _error(exc)[0] == "ResourceNotFoundException"


def test_a_failed_creation_takes_its_mapping_back(lam: Any, keys: Keys) -> None:
    name = _name()
    csc = _csc(lam, "Warn")
    _create(lam, name, keys.sign(_code(1)), csc)
    other = _csc(lam, "Warn")
    with pytest.raises(ClientError) as exc:  # the name is taken: the existing function keeps its configuration
        _create(lam, name, _code(2), other)
    assert _error(exc)[0] == "ResourceConflictException"
    assert lam.get_function_code_signing_config(FunctionName=name)["CodeSigningConfigArn"] == csc
    assert lam.list_functions_by_code_signing_config(CodeSigningConfigArn=other)["FunctionArns"] == []
    lam.delete_code_signing_config(CodeSigningConfigArn=other)


def test_start_up_deployment_of_signed_packages(tmp_path: Path, keys: Keys) -> None:
    """`serve --deploy`: a directory's `package.zip` is its package byte for byte, so a signed one deploys under
    Enforce (a zip of the directory never could); a configuration a function.json names from a restart on is attached
    even when nothing else changed."""
    top = tmp_path / "deploy"
    plain, packaged = top / "plain", top / "packaged"
    plain.mkdir(parents=True)
    packaged.mkdir()
    (plain / "lambda_function.py").write_text("def lambda_handler(e, c):\n    return 1\n")
    (plain / "function.json").write_text('{"Handler": "lambda_function.lambda_handler"}')
    gateway = RunningGateway(tmp_path / "data", _gateway_env(GATEWAY_SIGNING_PROFILES=str(keys.path)),
                             args=("--deploy", str(top)))  # fmt: skip
    gateway.start()
    try:
        op = gateway.client()
        enforce, warn = _csc(op, "Enforce"), _csc(op, "Warn")
        (packaged / "package.zip").write_bytes(keys.sign(_code(5)))
        (packaged / "function.json").write_text(orjson.dumps({"Handler": HANDLER, "CodeSigningConfigArn": enforce})
                                                .decode())  # fmt: skip
        (plain / "function.json").write_text(orjson.dumps({"Handler": HANDLER, "CodeSigningConfigArn": warn}).decode())
        gateway.stop()
        gateway.start()
        op = gateway.client()
        got = op.get_function_configuration(FunctionName="packaged")
        assert got["SigningProfileVersionArn"] == TRUSTED
        assert op.get_function_code_signing_config(FunctionName="packaged")["CodeSigningConfigArn"] == enforce
        assert op.get_function_code_signing_config(FunctionName="plain")["CodeSigningConfigArn"] == warn
    finally:
        gateway.stop()


def test_a_layer_s_stored_package_is_checked_as_published(lam: Any, keys: Keys, gw: RunningGateway) -> None:
    """The layer check reads the stored zip: one changed on disk is not the package published (and is never
    verified in its place); one missing is a Lambda error, not a crash."""
    import base64
    import hashlib

    layer = keys.sign(make_zip({"python/helper.py": f"X = {time.time()}\n"}))
    published = lam.publish_layer_version(LayerName="stored-layer", Content={"ZipFile": layer})
    digest = base64.b64decode(published["Content"]["CodeSha256"]).hex()
    assert digest == hashlib.sha256(layer).hexdigest()
    (stored,) = gw.data_dir.rglob(f"zips/{digest}.zip")
    csc = _csc(lam, "Enforce")
    stored.chmod(0o644)
    stored.write_bytes(keys.sign(make_zip({"python/helper.py": "X = 'swapped'\n"})))  # signed, but not this layer
    for _ in range(2):
        with pytest.raises(ClientError) as exc:
            _create(lam, _name(), keys.sign(_code(1)), csc, Layers=[published["LayerVersionArn"]])
        assert _error(exc)[0] == "ServiceException" and "missing from, or damaged in" in _error(exc)[1]
        stored.unlink(missing_ok=True)


def test_empty_values_are_not_defaults_and_the_configuration_is_checked_first(lam: Any, keys: Keys) -> None:
    with pytest.raises(ClientError) as exc:
        lam.create_code_signing_config(AllowedPublishers={"SigningProfileVersionArns": [TRUSTED]},
                                       CodeSigningPolicies={"UntrustedArtifactOnDeployment": ""})  # fmt: skip
    assert _error(exc)[0] == "ValidationException" and "enum value set" in _error(exc)[1]
    with pytest.raises(ClientError) as exc:
        _create(lam, _name(), keys.sign(_code(1)), CodeSigningConfigArn="")
    assert _error(exc)[0] == "ValidationException" and "codeSigningConfigArn" in _error(exc)[1]
    missing = "arn:aws:lambda:us-east-1:123456789012:code-signing-config:csc-0123456789abcdef0"
    with pytest.raises(ClientError) as exc:  # neither exists: the configuration is named (LocalStack's order)
        lam.put_function_code_signing_config(FunctionName="no-such-function", CodeSigningConfigArn=missing)
    assert _error(exc)[0] == "CodeSigningConfigNotFoundException"


def test_layer_versions_show_their_signer(lam: Any, keys: Keys) -> None:
    """Layer (FunctionConfiguration.Layers[]) and LayerVersionContentOutput carry SigningProfileVersionArn and
    SigningJobArn of a package whose signature holds; an unsigned or tampered one shows neither."""
    layer = make_zip({"python/signed_helper.py": "X = 1\n"})
    signed = lam.publish_layer_version(LayerName="signer-shown", Content={"ZipFile": keys.sign(layer)})
    sig = signatures.read(keys.sign(layer))
    assert sig is not None
    assert signed["Content"]["SigningProfileVersionArn"] == TRUSTED
    assert signed["Content"]["SigningJobArn"].startswith(sig.job_arn().rsplit("/", 1)[0] + "/")
    got = lam.get_layer_version(LayerName="signer-shown", VersionNumber=signed["Version"])
    assert got["Content"]["SigningJobArn"] == signed["Content"]["SigningJobArn"]
    plain = lam.publish_layer_version(LayerName="signer-hidden", Content={"ZipFile": layer})
    tampered = lam.publish_layer_version(LayerName="signer-hidden", Content={"ZipFile": _tampered(keys, TRUSTED)})
    assert not any(k in plain["Content"] or k in tampered["Content"] for k in SIGNING)
    name = _name()
    out = _create(lam, name, _code(1), Layers=[signed["LayerVersionArn"], plain["LayerVersionArn"]])
    assert out["Layers"][0]["SigningProfileVersionArn"] == TRUSTED
    assert out["Layers"][0]["SigningJobArn"] == signed["Content"]["SigningJobArn"]
    assert not any(k in out["Layers"][1] for k in SIGNING)
