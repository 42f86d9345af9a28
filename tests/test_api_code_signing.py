"""Code signing against a real gateway with boto3: the nine operations (paths, members and errors of botocore's model),
CreateFunction's CodeSigningConfigArn, and what Warn and Enforce do to deployments.

Sources: botocore's Lambda model (shapes, statuses: CodeVerificationFailedException and InvalidCodeSignatureException
400, CodeSigningConfigNotFoundException 404); AWS's "Using code signing to verify code integrity with Lambda"
(configuration-codesigning.html, "Signature validation": integrity always blocks; expiry, mismatch and revocation
follow UntrustedArtifactOnDeployment; layers must be signed too); AWS's "Lambda code signing with AWS Signer"
(governance-code-signing.html) for the wording of a blocked deployment; LocalStack's provider for the wording of
missing configurations; AWS's DeleteCodeSigningConfig ("only if no function is using it").
"""

from __future__ import annotations

import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError

from gateway.store import signatures
from tests.conftest import HANDLER, ROLE, RUNTIME, RunningGateway, _gateway_env, invoke_json, make_zip

ACCOUNT = "123456789012"
TRUSTED = f"arn:aws:signer:us-east-1:{ACCOUNT}:/signing-profiles/Trusted/abcdef1234"
OTHER = f"arn:aws:signer:us-east-1:{ACCOUNT}:/signing-profiles/Other/0123456789"
REVOKED = f"arn:aws:signer:us-east-1:{ACCOUNT}:/signing-profiles/Revoked/9876543210"
UNREGISTERED = f"arn:aws:signer:us-east-1:{ACCOUNT}:/signing-profiles/Nobody/aaaaaaaaaa"
MISSING_CSC = f"arn:aws:lambda:us-east-1:{ACCOUNT}:code-signing-config:csc-0123456789abcdef0"
UNTRUSTED = (
    "Lambda cannot deploy the function. The function or layer might be signed using a signature that the client is "
    "not configured to accept. Check the provided signature for {arn}."
)


class Keys:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.keys: dict[str, signatures.Ed25519PrivateKey] = {}
        doc: dict[str, Any] = {}
        for arn in (TRUSTED, OTHER, REVOKED):
            private, public = signatures.generate_key()
            self.keys[arn] = signatures.load_private_key(private)
            doc[arn] = {"public_key": public.decode(), "revoked": arn == REVOKED}
        self.keys[UNREGISTERED] = signatures.load_private_key(signatures.generate_key()[0])
        self.path = root / "profiles.json"
        self.path.write_bytes(orjson.dumps(doc))

    def sign(self, data: bytes, profile: str = TRUSTED, valid_days: int = 30, key_of: str | None = None) -> bytes:
        return signatures.sign(data, self.keys[key_of or profile], profile, int(time.time()), valid_days)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[RunningGateway]:
    env = _gateway_env(GATEWAY_SIGNING_PROFILES=str(keys.path))
    gateway = RunningGateway(tmp_path_factory.mktemp("signing") / "data", env)
    gateway.start()
    yield gateway
    gateway.stop()


@pytest.fixture
def lam(gw: RunningGateway) -> Iterator[Any]:
    yield gw.client()
    gw.close_clients()


_names = iter(range(10_000))


def _name() -> str:
    return f"signed-{next(_names)}"


def _code(version: int) -> bytes:
    return make_zip({"lambda_function.py": f"def lambda_handler(event, context):\n    return {{'v': {version}}}\n"})


def _csc(lam: Any, policy: str = "Enforce", *publishers: str) -> str:
    created = lam.create_code_signing_config(
        AllowedPublishers={"SigningProfileVersionArns": list(publishers or (TRUSTED,))},
        CodeSigningPolicies={"UntrustedArtifactOnDeployment": policy},
    )
    return str(created["CodeSigningConfig"]["CodeSigningConfigArn"])


def _create(lam: Any, name: str, zip_bytes: bytes, csc: str | None = None, **kwargs: Any) -> dict[str, Any]:
    extra = {"CodeSigningConfigArn": csc} if csc else {}
    return dict(lam.create_function(FunctionName=name, Runtime=RUNTIME, Role=ROLE, Handler=HANDLER,
                                    Code={"ZipFile": zip_bytes}, **extra, **kwargs))  # fmt: skip


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    err = exc.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


def _arn(name: str) -> str:
    return f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{name}"


# -- the configurations ---------------------------------------------------------------------------------------------


def test_create_get_update_list_delete(lam: Any) -> None:
    created = lam.create_code_signing_config(AllowedPublishers={"SigningProfileVersionArns": [TRUSTED]})
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    config = created["CodeSigningConfig"]
    arn, csc_id = config["CodeSigningConfigArn"], config["CodeSigningConfigId"]
    assert arn == f"arn:aws:lambda:us-east-1:{ACCOUNT}:code-signing-config:{csc_id}"
    assert len(csc_id) == 21 and csc_id.startswith("csc-")
    assert config["CodeSigningPolicies"] == {"UntrustedArtifactOnDeployment": "Warn"}  # the model's default
    assert config["Description"] == ""
    assert config["AllowedPublishers"] == {"SigningProfileVersionArns": [TRUSTED]}
    assert lam.get_code_signing_config(CodeSigningConfigArn=arn)["CodeSigningConfig"] == config

    updated = lam.update_code_signing_config(
        CodeSigningConfigArn=arn, Description="prod", CodeSigningPolicies={"UntrustedArtifactOnDeployment": "Enforce"}
    )["CodeSigningConfig"]
    assert updated["Description"] == "prod"
    assert updated["AllowedPublishers"] == config["AllowedPublishers"]  # members not given stay
    assert updated["CodeSigningPolicies"] == {"UntrustedArtifactOnDeployment": "Enforce"}

    others = [_csc(lam, "Warn") for _ in range(2)]
    listed: list[str] = []
    kwargs: dict[str, Any] = {"MaxItems": 1}
    while True:
        page = lam.list_code_signing_configs(**kwargs)
        assert len(page["CodeSigningConfigs"]) <= 1
        listed += [c["CodeSigningConfigArn"] for c in page["CodeSigningConfigs"]]
        if "NextMarker" not in page:
            break
        kwargs["Marker"] = page["NextMarker"]
    assert {arn, *others} <= set(listed)
    paginator = lam.get_paginator("list_code_signing_configs")
    assert {arn, *others} <= {c["CodeSigningConfigArn"] for p in paginator.paginate() for c in p["CodeSigningConfigs"]}

    assert lam.delete_code_signing_config(CodeSigningConfigArn=arn)["ResponseMetadata"]["HTTPStatusCode"] == 204
    for call in (
        lam.get_code_signing_config,
        lam.delete_code_signing_config,
        lam.list_functions_by_code_signing_config,
        lam.update_code_signing_config,
    ):
        with pytest.raises(ClientError) as exc:
            call(CodeSigningConfigArn=arn)
        assert _error(exc) == (
            "ResourceNotFoundException",
            f"The Lambda code signing configuration {arn} can not be found.",
            404,
        )


def test_tags_of_a_configuration(lam: Any) -> None:
    """CreateCodeSigningConfig's Tags, and TagResource / UntagResource / ListTags with its ARN (the model's
    TaggableResource includes code-signing-config ARNs)."""
    config = lam.create_code_signing_config(AllowedPublishers={"SigningProfileVersionArns": [TRUSTED]},
                                            Tags={"team": "a"})["CodeSigningConfig"]  # fmt: skip
    arn = config["CodeSigningConfigArn"]
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "a"}
    lam.tag_resource(Resource=arn, Tags={"env": "test"})
    lam.untag_resource(Resource=arn, TagKeys=["team"])
    assert lam.list_tags(Resource=arn)["Tags"] == {"env": "test"}
    assert (
        lam.get_code_signing_config(CodeSigningConfigArn=arn)["CodeSigningConfig"]["LastModified"]
        == (config["LastModified"])
    )
    with pytest.raises(ClientError) as exc:
        lam.list_tags(Resource=MISSING_CSC)
    assert _error(exc)[0::2] == ("ResourceNotFoundException", 404)


def test_the_model_s_constraints(gw: RunningGateway) -> None:
    raw = gw.client(parameter_validation=False)
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "Value null at 'allowedPublishers' failed to satisfy constraint: Member must not be null"),
        ({"AllowedPublishers": {"SigningProfileVersionArns": []}},
         "at 'allowedPublishers.signingProfileVersionArns' failed to satisfy constraint: Member must have length "
         "greater than or equal to 1"),
        ({"AllowedPublishers": {"SigningProfileVersionArns": [TRUSTED] * 21}},
         "Member must have length less than or equal to 20"),
        ({"AllowedPublishers": {"SigningProfileVersionArns": ["not-an-arn"]}},
         "Member must satisfy regular expression pattern"),
        ({"AllowedPublishers": {"SigningProfileVersionArns": [TRUSTED]},
          "CodeSigningPolicies": {"UntrustedArtifactOnDeployment": "Block"}},
         "Value 'Block' at 'codeSigningPolicies.untrustedArtifactOnDeployment' failed to satisfy constraint: Member "
         "must satisfy enum value set: [Enforce, Warn]"),
        ({"AllowedPublishers": {"SigningProfileVersionArns": [TRUSTED]}, "Description": "d" * 257},
         "at 'description' failed to satisfy constraint: Member must have length less than or equal to 256"),
    ]  # fmt: skip
    for params, message in cases:
        with pytest.raises(ClientError) as exc:
            raw.create_code_signing_config(**params)
        code, text, status = _error(exc)
        assert (code, status) == ("ValidationException", 400), text
        assert message in text
    status, _, body = gw.request(
        "POST", "/2020-04-22/code-signing-configs", orjson.dumps({"AllowedPublishers": {}, "Colour": "red"})
    )
    assert status == 400 and b"Unrecognized field" in body
    with pytest.raises(ClientError) as exc:
        raw.get_code_signing_config(CodeSigningConfigArn="arn:aws:lambda:us-east-1:123456789012:code-signing-config:x")
    assert _error(exc)[0] == "ValidationException" and "codeSigningConfigArn" in _error(exc)[1]


def test_functions_use_configurations(lam: Any, gw: RunningGateway) -> None:
    """Put/Get/DeleteFunctionCodeSigningConfig, ListFunctionsByCodeSigningConfig, the 409 of a configuration in use,
    and a deleted function letting go of its configuration."""
    csc = _csc(lam, "Warn")
    names = [_name() for _ in range(3)]
    for name in names:
        _create(lam, name, _code(1))
    for name in names[:2]:
        put = lam.put_function_code_signing_config(FunctionName=name, CodeSigningConfigArn=csc)
        assert (put["CodeSigningConfigArn"], put["FunctionName"]) == (csc, name)
    got = lam.get_function_code_signing_config(FunctionName=_arn(names[0]))
    assert (got["CodeSigningConfigArn"], got["FunctionName"]) == (csc, names[0])
    assert "CodeSigningConfigArn" not in lam.get_function_code_signing_config(FunctionName=names[2])
    assert lam.list_functions_by_code_signing_config(CodeSigningConfigArn=csc)["FunctionArns"] == [
        _arn(n) for n in names[:2]
    ]
    page = lam.list_functions_by_code_signing_config(CodeSigningConfigArn=csc, MaxItems=1)
    assert page["FunctionArns"] == [_arn(names[0])] and page["NextMarker"]

    with pytest.raises(ClientError) as exc:
        lam.delete_code_signing_config(CodeSigningConfigArn=csc)
    assert _error(exc)[0::2] == ("ResourceConflictException", 409)
    with pytest.raises(ClientError) as exc:
        lam.put_function_code_signing_config(FunctionName=names[2], CodeSigningConfigArn=MISSING_CSC)
    assert _error(exc) == (
        "CodeSigningConfigNotFoundException",
        "The code signing configuration cannot be found. Check that the provided configuration is not deleted: "
        f"{MISSING_CSC}.",
        404,
    )
    with pytest.raises(ClientError) as exc:
        lam.put_function_code_signing_config(FunctionName="no-such-function", CodeSigningConfigArn=csc)
    assert _error(exc) == ("ResourceNotFoundException", f"Function not found: {_arn('no-such-function')}", 404)

    resp = lam.delete_function_code_signing_config(FunctionName=names[0])
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    lam.delete_function(FunctionName=names[1])  # takes its mapping with it
    assert lam.list_functions_by_code_signing_config(CodeSigningConfigArn=csc)["FunctionArns"] == []
    lam.delete_code_signing_config(CodeSigningConfigArn=csc)


# -- deployments ----------------------------------------------------------------------------------------------------


def test_enforce_deploys_trusted_code_and_refuses_the_rest(lam: Any, keys: Keys) -> None:
    csc = _csc(lam, "Enforce")
    name = _name()
    created = _create(lam, name, keys.sign(_code(1)), csc)
    assert created["SigningProfileVersionArn"] == TRUSTED
    assert created["SigningJobArn"].startswith(f"arn:aws:signer:us-east-1:{ACCOUNT}:/signing-jobs/")
    assert lam.get_function_code_signing_config(FunctionName=name)["CodeSigningConfigArn"] == csc
    assert invoke_json(lam, name)[1] == {"v": 1}  # the signature is no obstacle to extraction

    refused = {
        "unsigned": _code(2),
        "not allowed": keys.sign(_code(2), OTHER),
        "not registered": keys.sign(_code(2), UNREGISTERED),
        "expired": keys.sign(_code(2), valid_days=0),
    }
    for why, package in refused.items():
        with pytest.raises(ClientError) as exc:
            lam.update_function_code(FunctionName=name, ZipFile=package)
        assert _error(exc) == ("CodeVerificationFailedException", UNTRUSTED.format(arn=_arn(name)), 400), why
    with pytest.raises(ClientError) as exc:
        _create(lam, _name(), _code(1), csc)
    assert _error(exc)[0] == "CodeVerificationFailedException"
    assert invoke_json(lam, name)[1] == {"v": 1}  # nothing refused was deployed

    updated = lam.update_function_code(FunctionName=name, ZipFile=keys.sign(_code(3)))
    assert updated["SigningProfileVersionArn"] == TRUSTED and updated["SigningJobArn"] != created["SigningJobArn"]
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert invoke_json(lam, name)[1] == {"v": 3}


def test_revoked_profiles_are_untrusted(lam: Any, keys: Keys) -> None:
    csc = _csc(lam, "Enforce", TRUSTED, REVOKED)
    with pytest.raises(ClientError) as exc:
        _create(lam, _name(), keys.sign(_code(1), REVOKED), csc)
    assert _error(exc)[0] == "CodeVerificationFailedException"


def test_integrity_failures_are_refused_under_warn_too(lam: Any, keys: Keys) -> None:
    """InvalidCodeSignatureException: "If the integrity check fails, then Lambda blocks deployment, even if the code
    signing policy is set to WARN" (botocore's model)."""
    csc = _csc(lam, "Warn")
    name = _name()
    _create(lam, name, keys.sign(_code(1)), csc)
    signed = keys.sign(_code(2))
    tampered = bytearray(signed)
    tampered[60] ^= 0x01  # the first entry's compressed code, after signing
    touched = bytearray(signed)
    touched[10] ^= 0x01  # its modification time: still a valid zip
    other = _code(666)
    comment = signed[signed.rfind(b"PK\x05\x06") + 22 :]
    eocd = other.rfind(b"PK\x05\x06")
    replayed = other[: eocd + 20] + struct.pack("<H", len(comment)) + comment
    forged = keys.sign(_code(2), TRUSTED, key_of=UNREGISTERED)
    cases = {"tampered": bytes(tampered), "touched": bytes(touched), "replayed": replayed, "forged": forged}
    for why, package in cases.items():
        with pytest.raises(ClientError) as exc:
            lam.update_function_code(FunctionName=name, ZipFile=package)
        code, message, status = _error(exc)
        assert (code, status) == ("InvalidCodeSignatureException", 400), why
        assert message.startswith("Lambda cannot deploy the function. The code signature failed the integrity check")
        assert message.endswith(f"Check the provided signature for {_arn(name)}.")
    assert invoke_json(lam, name)[1] == {"v": 1}


def test_warn_deploys_untrusted_code_with_a_warning(lam: Any, keys: Keys, gw: RunningGateway) -> None:
    csc = _csc(lam, "Warn")
    name = _name()
    created = _create(lam, name, _code(1), csc)
    assert "SigningProfileVersionArn" not in created and "SigningJobArn" not in created
    assert f"deployed an untrusted package for {_arn(name)}" in gw.log()
    updated = lam.update_function_code(FunctionName=name, ZipFile=keys.sign(_code(2)))
    assert updated["SigningProfileVersionArn"] == TRUSTED
    expired = lam.update_function_code(FunctionName=name, ZipFile=keys.sign(_code(3), valid_days=0))
    assert "SigningProfileVersionArn" not in expired  # the untrusted package shows no signer
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert invoke_json(lam, name)[1] == {"v": 3}


def test_functions_without_a_configuration_are_not_checked(lam: Any, keys: Keys) -> None:
    name = _name()
    created = _create(lam, name, keys.sign(_code(1), OTHER))
    assert "SigningProfileVersionArn" not in created
    tampered = bytearray(keys.sign(_code(1)))
    tampered[10] ^= 0x01  # a valid zip, whose signature no longer holds
    lam.update_function_code(FunctionName=name, ZipFile=bytes(tampered))  # nobody asked for a check


def test_create_function_with_a_missing_or_malformed_configuration(lam: Any, keys: Keys) -> None:
    name = _name()
    with pytest.raises(ClientError) as exc:
        _create(lam, name, keys.sign(_code(1)), MISSING_CSC)
    assert _error(exc)[0::2] == ("CodeSigningConfigNotFoundException", 404)
    with pytest.raises(ClientError) as exc:
        _create(lam, name, keys.sign(_code(1)), "arn:aws:lambda:us-east-1:123456789012:code-signing-config:nope")
    assert _error(exc)[0] == "ValidationException"
    with pytest.raises(ClientError) as exc:
        lam.get_function(FunctionName=name)
    assert _error(exc)[0] == "ResourceNotFoundException"


def test_layers_of_a_function_with_a_configuration_must_be_signed(lam: Any, keys: Keys) -> None:
    """ "When you enable code signing for a function, any layers that you add to the function must also be signed by
    an allowed signing profile" (configuration-codesigning.html)."""
    layer = make_zip({"python/helper.py": "X = 1\n"})
    unsigned = lam.publish_layer_version(LayerName="unsigned-layer", Content={"ZipFile": layer})["LayerVersionArn"]
    signed = lam.publish_layer_version(LayerName="signed-layer", Content={"ZipFile": keys.sign(layer)})
    csc = _csc(lam, "Enforce")
    with pytest.raises(ClientError) as exc:
        _create(lam, _name(), keys.sign(_code(1)), csc, Layers=[unsigned])
    assert _error(exc) == ("CodeVerificationFailedException", UNTRUSTED.format(arn=unsigned), 400)
    name = _name()
    _create(lam, name, keys.sign(_code(1)), csc, Layers=[signed["LayerVersionArn"]])
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    with pytest.raises(ClientError) as exc:
        lam.update_function_configuration(FunctionName=name, Layers=[signed["LayerVersionArn"], unsigned])
    assert _error(exc)[0] == "CodeVerificationFailedException"


def test_configurations_survive_a_restart(lam: Any, gw: RunningGateway, keys: Keys) -> None:
    csc = _csc(lam, "Enforce")
    name = _name()
    _create(lam, name, keys.sign(_code(1)), csc)
    gw.restart()
    client = gw.client()
    assert client.get_code_signing_config(CodeSigningConfigArn=csc)["CodeSigningConfig"]["CodeSigningPolicies"] == {
        "UntrustedArtifactOnDeployment": "Enforce"
    }
    assert client.get_function_code_signing_config(FunctionName=name)["CodeSigningConfigArn"] == csc
    assert client.get_function_configuration(FunctionName=name)["SigningProfileVersionArn"] == TRUSTED
    with pytest.raises(ClientError) as exc:
        client.update_function_code(FunctionName=name, ZipFile=_code(2))
    assert _error(exc)[0] == "CodeVerificationFailedException"


# -- `gateway sign` ---------------------------------------------------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "sign", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


def test_gateway_sign_round_trip(tmp_path: Path, gw: RunningGateway, lam: Any) -> None:
    """A key pair from `gateway sign --generate-key`, registered; a package signed by `gateway sign` deploys under
    Enforce. The gateway reads its profiles at start-up: this one gets its own."""
    done = _cli("--generate-key", "team", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "team.key").stat().st_mode & 0o777 == 0o600
    assert _cli("--generate-key", "team", cwd=tmp_path).returncode != 0  # never overwrites a key
    profile = f"arn:aws:signer:us-east-1:{ACCOUNT}:/signing-profiles/Cli/cli0000001"
    (tmp_path / "profiles.json").write_bytes(orjson.dumps({profile: {"public_key_file": "team.pub"}}))
    (tmp_path / "fn.zip").write_bytes(_code(7))
    done = _cli("fn.zip", "--key", "team.key", "--profile", profile, "-o", "signed.zip", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _cli("fn.zip", cwd=tmp_path).returncode == 2
    assert "not a signing-profile-version ARN" in _cli("fn.zip", "--key", "team.key", "--profile", "x",
                                                       cwd=tmp_path).stderr  # fmt: skip

    own = RunningGateway(tmp_path / "data", _gateway_env(GATEWAY_SIGNING_PROFILES=str(tmp_path / "profiles.json")))
    own.start()
    try:
        client = own.client()
        csc = _csc(client, "Enforce", profile)
        name = _name()
        created = _create(client, name, (tmp_path / "signed.zip").read_bytes(), csc)
        assert created["SigningProfileVersionArn"] == profile
        client.get_waiter("function_active_v2").wait(FunctionName=name)
        assert invoke_json(client, name)[1] == {"v": 7}
        with pytest.raises(ClientError) as exc:
            client.update_function_code(FunctionName=name, ZipFile=(tmp_path / "fn.zip").read_bytes())
        assert _error(exc)[0] == "CodeVerificationFailedException"
    finally:
        own.stop()


def test_a_malformed_profiles_file_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "profiles.json").write_text('{"arn:aws:signer:us-east-1:123456789012:/signing-profiles/A/b": "x"}')
    env = _gateway_env(GATEWAY_SIGNING_PROFILES=str(tmp_path / "profiles.json"))
    done = subprocess.run([sys.executable, "-m", "gateway", "serve", "--port", "1", "--data-dir", str(tmp_path / "d")],
                          env=env, capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode != 0
    assert "GATEWAY_SIGNING_PROFILES" in done.stderr


# -- a function against code signing ------------------------------------------------------------------------------

ESCAPER = r"""
import boto3
from botocore.exceptions import ClientError

def lambda_handler(event, context):
    lam = boto3.client("lambda")
    me, csc = context.function_name, event["csc"]
    attempts = {
        "drop its configuration": lambda: lam.delete_function_code_signing_config(FunctionName=me),
        "point at a lax one": lambda: lam.put_function_code_signing_config(FunctionName=me, CodeSigningConfigArn=csc),
        "relax the policy": lambda: lam.update_code_signing_config(
            CodeSigningConfigArn=csc, CodeSigningPolicies={"UntrustedArtifactOnDeployment": "Warn"}),
        "trust another profile": lambda: lam.create_code_signing_config(
            AllowedPublishers={"SigningProfileVersionArns": [event["profile"]]}),
        "delete it": lambda: lam.delete_code_signing_config(CodeSigningConfigArn=csc),
        "list them": lambda: lam.list_code_signing_configs(),
    }
    out = {}
    for what, attempt in attempts.items():
        try:
            attempt()
            out[what] = "done"
        except ClientError as exc:
            out[what] = exc.response["Error"]["Code"]
    return out
"""


def test_a_function_cannot_loosen_its_own_code_signing(tmp_path: Path, keys: Keys) -> None:
    """Functions are other people's code: with its own session credentials a handler may not drop, replace or relax
    the configuration that checks its deployments (gateway.api.auth: 403 for everything but invoking and reading
    itself). The environments' listener of the rlimits mode stands in for the jail's bridge."""
    from tests.conftest import free_port

    port = free_port()
    env = _gateway_env(GATEWAY_SIGNING_PROFILES=str(keys.path), GATEWAY_SANDBOX="rlimits",
                       GATEWAY_ENVIRONMENT_LISTEN=f"127.0.0.2:{port}")  # fmt: skip
    own = RunningGateway(tmp_path / "data", env)
    own.start()
    try:
        op = own.client()
        strict, lax = _csc(op, "Enforce"), _csc(op, "Warn")
        package = make_zip({"lambda_function.py": ESCAPER})
        op.create_function(FunctionName="escaper", Runtime=RUNTIME, Role=ROLE, Handler=HANDLER, Timeout=30,
                           Code={"ZipFile": keys.sign(package)}, CodeSigningConfigArn=strict)  # fmt: skip
        op.get_waiter("function_active_v2").wait(FunctionName="escaper")
        _, got = invoke_json(op, "escaper", {"csc": lax, "profile": OTHER})
        assert got == dict.fromkeys(got, "AccessDeniedException") and len(got) == 6, got
        assert op.get_function_code_signing_config(FunctionName="escaper")["CodeSigningConfigArn"] == strict
        assert op.get_code_signing_config(CodeSigningConfigArn=lax)["CodeSigningConfig"]["CodeSigningPolicies"] == {
            "UntrustedArtifactOnDeployment": "Warn"
        }
        assert len(op.list_code_signing_configs()["CodeSigningConfigs"]) == 2
    finally:
        own.stop()
