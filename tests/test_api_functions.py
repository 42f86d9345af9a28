"""Function management API against a real gateway: boto3 as the client, raw HTTP where boto3 hides details."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import sqlite3
import stat
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from gateway.architectures import host_architecture
from gateway.catalog import successor
from tests.conftest import (
    HANDLER,
    ROLE,
    RUNTIME,
    GatewayFactory,
    RunningGateway,
    create_function,
    invoke_json,
    make_zip,
)

SOURCE = "def lambda_handler(event, context):\n    return {'v': 1}\n"
SOURCE_V2 = "def lambda_handler(event, context):\n    return {'v': 2}\n"
ARN_PREFIX = "arn:aws:lambda:us-east-1:123456789012:function:"


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    err = exc.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


def _code_dirs(gw: RunningGateway) -> set[str]:
    root = gw.data_dir / "code"
    return {p.name for p in root.iterdir()} | {f"zips/{p.name}" for p in (root / "zips").iterdir()}


def _registry_rows(gw: RunningGateway, name: str) -> int:
    db = sqlite3.connect(f"file:{gw.data_dir / 'registry.sqlite3'}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM function_versions WHERE name = ?", (name,)).fetchone()[0])
    finally:
        db.close()


def _raw_create(gw: RunningGateway, body: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    status, headers, data = gw.request("POST", "/2015-03-31/functions", body, {"Content-Type": "application/json"})
    return status, {k.lower(): v for k, v in headers.items()}, json.loads(data)


# -- create / get ------------------------------------------------------------------------------------


def test_create_and_get(gateway: RunningGateway, lam: Any, fname: str) -> None:
    zip_bytes = make_zip({"lambda_function.py": SOURCE})
    created = lam.create_function(
        FunctionName=fname, Runtime=RUNTIME, Role=ROLE, Handler=HANDLER, Code={"ZipFile": zip_bytes},
        Description="first", Timeout=30, MemorySize=256, Environment={"Variables": {"GREETING": "hi"}},
    )  # fmt: skip
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert created["FunctionName"] == fname
    assert created["FunctionArn"] == ARN_PREFIX + fname
    assert created["CodeSha256"] == base64.b64encode(hashlib.sha256(zip_bytes).digest()).decode()
    assert created["CodeSize"] == len(zip_bytes)
    assert (created["Runtime"], created["Handler"], created["Role"]) == (RUNTIME, HANDLER, ROLE)
    assert (created["Timeout"], created["MemorySize"], created["Description"]) == (30, 256, "first")
    assert created["Environment"] == {"Variables": {"GREETING": "hi"}}
    assert created["Version"] == "$LATEST"
    # AWS answers CreateFunction Pending, without LastUpdateStatus (recorded answers; gateway/store/states.py)
    assert (created["State"], created["StateReason"], created["StateReasonCode"]) == (
        "Pending", "The function is being created.", "Creating"
    )  # fmt: skip
    assert "LastUpdateStatus" not in created
    assert created["PackageType"] == "Zip" and created["Architectures"] == ["x86_64"]
    assert created["EphemeralStorage"] == {"Size": 512}
    assert created["LoggingConfig"]["LogGroup"] == f"/aws/lambda/{fname}"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000", created["LastModified"])
    assert re.fullmatch(r"[0-9a-f-]{36}", created["RevisionId"])

    got = lam.get_function(FunctionName=fname)
    # the next call sees it Active and Successful, with a new RevisionId (AWS's move to Active gives one)
    assert (got["Configuration"]["State"], got["Configuration"]["LastUpdateStatus"]) == ("Active", "Successful")
    assert got["Configuration"]["RevisionId"] != created["RevisionId"]
    config = {k: v for k, v in created.items() if k not in ("ResponseMetadata", "StateReason", "StateReasonCode")}
    config |= {"State": "Active", "LastUpdateStatus": "Successful", "RevisionId": got["Configuration"]["RevisionId"]}
    assert got["Configuration"] == config
    assert got["Code"]["RepositoryType"] == "S3"
    with urllib.request.urlopen(got["Code"]["Location"], timeout=10) as resp:
        assert resp.read() == zip_bytes
    assert "Tags" not in got  # issue 18 cause 8: AWS leaves Tags out for an untagged function
    for ident in (fname, ARN_PREFIX + fname, f"123456789012:function:{fname}", f"{fname}:$LATEST"):
        conf = lam.get_function_configuration(FunctionName=ident)
        assert conf["RevisionId"] == config["RevisionId"]
    assert lam.get_function(FunctionName=fname, Qualifier="$LATEST")["Configuration"]["FunctionName"] == fname
    assert "Environment" not in create_function(lam, fname + "-noenv", SOURCE)


def test_create_defaults_and_tags(lam: Any, fname: str) -> None:
    host = host_architecture()  # another needs an emulator, and Python has none (tests/test_e2e_architectures.py)
    created = create_function(lam, fname, SOURCE, Tags={"team": "a"}, Architectures=[host])
    assert (created["Timeout"], created["MemorySize"], created["Description"]) == (3, 128, "")
    assert created["Architectures"] == [host]
    assert lam.get_function(FunctionName=fname)["Tags"] == {"team": "a"}


def test_create_twice_conflicts(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    with pytest.raises(ClientError) as exc:
        create_function(lam, fname, SOURCE_V2)
    assert _error(exc) == ("ResourceConflictException", f"Function already exist: {fname}", 409)


def test_missing_function_and_qualifier(lam: Any, fname: str) -> None:
    with pytest.raises(ClientError) as exc:
        lam.get_function(FunctionName=fname)
    assert _error(exc) == ("ResourceNotFoundException", f"Function not found: {ARN_PREFIX}{fname}", 404)
    create_function(lam, fname, SOURCE)
    with pytest.raises(ClientError) as exc:
        lam.get_function_configuration(FunctionName=fname, Qualifier="7")
    assert _error(exc) == ("ResourceNotFoundException", f"Function not found: {ARN_PREFIX}{fname}:7", 404)


# -- list --------------------------------------------------------------------------------------------


def test_list_paging(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    lam = gw.client()
    names = [f"fn-{i:03d}" for i in range(60)]
    for name in reversed(names):
        create_function(lam, name, SOURCE)

    first = lam.list_functions()
    assert [f["FunctionName"] for f in first["Functions"]] == names[:50]
    assert first["NextMarker"]
    rest = lam.list_functions(Marker=first["NextMarker"])
    assert [f["FunctionName"] for f in rest["Functions"]] == names[50:]
    assert "NextMarker" not in rest

    seen: list[str] = []
    marker: str | None = None
    pages = 0
    while True:
        page = lam.list_functions(MaxItems=25, **({"Marker": marker} if marker else {}))
        assert len(page["Functions"]) <= 25
        seen += [f["FunctionName"] for f in page["Functions"]]
        pages += 1
        marker = page.get("NextMarker")
        if not marker:
            break
    assert (seen, pages) == (names, 3)
    assert len(lam.list_functions(MaxItems=1000)["Functions"]) == 50
    paginated = [f["FunctionName"] for p in lam.get_paginator("list_functions").paginate() for f in p["Functions"]]
    assert paginated == names
    assert lam.list_functions(FunctionVersion="ALL")["Functions"][0]["Version"] == "$LATEST"

    status, headers, _ = gw.request("GET", "/2015-03-31/functions/?MaxItems=0")
    assert (status, headers["x-amzn-ErrorType"]) == (400, "ValidationException")


# -- update ------------------------------------------------------------------------------------------


def _assert_in_progress(answer: dict[str, Any]) -> None:
    """AWS's answer to UpdateFunctionCode / UpdateFunctionConfiguration: the update InProgress, its reason and code
    "The function is being created." / Creating (recorded AWS answers, e.g. `aws lambda update-function-code`
    output; LocalStack's provider, validated against AWS, sets the same; gateway/store/states.py)."""
    assert answer["State"] == "Active" and "StateReason" not in answer
    assert (answer["LastUpdateStatus"], answer["LastUpdateStatusReason"], answer["LastUpdateStatusReasonCode"]) == (
        "InProgress", "The function is being created.", "Creating"
    )  # fmt: skip


def test_update_code(lam: Any, fname: str) -> None:
    created = create_function(lam, fname, SOURCE)
    assert invoke_json(lam, fname)[1] == {"v": 1}  # right after CreateFunction: it runs
    created = lam.get_function_configuration(FunctionName=fname)  # Active, with its RevisionId
    new_zip = make_zip({"lambda_function.py": SOURCE_V2})
    updated = lam.update_function_code(FunctionName=fname, ZipFile=new_zip, RevisionId=created["RevisionId"])
    _assert_in_progress(updated)
    assert updated["CodeSha256"] == base64.b64encode(hashlib.sha256(new_zip).digest()).decode()
    assert updated["CodeSize"] == len(new_zip)
    assert updated["RevisionId"] != created["RevisionId"]
    assert updated["Handler"] == created["Handler"] and updated["Timeout"] == created["Timeout"]
    # after the update returned, no invocation runs the old code
    assert invoke_json(lam, fname)[1] == {"v": 2}
    settled = lam.get_function(FunctionName=fname)["Configuration"]
    assert settled["LastUpdateStatus"] == "Successful" and "LastUpdateStatusReason" not in settled
    assert settled["RevisionId"] not in (updated["RevisionId"], created["RevisionId"])

    with pytest.raises(ClientError) as exc:
        lam.update_function_code(FunctionName=fname, ZipFile=new_zip, RevisionId=created["RevisionId"])
    code, message, status = _error(exc)
    assert (code, status) == ("PreconditionFailedException", 412)
    assert message.startswith("The Revision Id provided does not match the latest Revision Id.")


def test_update_code_dry_run_changes_nothing(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    created = lam.get_function_configuration(FunctionName=fname)
    before = _code_dirs(gateway)
    new_zip = make_zip({"lambda_function.py": "X = 'dry run only'\n"})
    dry = lam.update_function_code(FunctionName=fname, ZipFile=new_zip, DryRun=True)
    assert dry["CodeSha256"] == base64.b64encode(hashlib.sha256(new_zip).digest()).decode()
    assert dry["RevisionId"] == created["RevisionId"]
    assert lam.get_function_configuration(FunctionName=fname)["CodeSha256"] == created["CodeSha256"]
    assert _code_dirs(gateway) == before


def test_update_configuration(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE, Environment={"Variables": {"AA": "1"}})
    created = lam.get_function_configuration(FunctionName=fname)
    updated = lam.update_function_configuration(
        FunctionName=fname, Timeout=60, MemorySize=512, Description="d", Handler="other.handler",
        Environment={"Variables": {"BB": "2"}}, EphemeralStorage={"Size": 1024}, Runtime="python3.11",
        RevisionId=created["RevisionId"],
    )  # fmt: skip
    assert (updated["Timeout"], updated["MemorySize"], updated["Description"]) == (60, 512, "d")
    assert (updated["Handler"], updated["Runtime"]) == ("other.handler", "python3.11")
    assert updated["Environment"] == {"Variables": {"BB": "2"}}
    assert updated["EphemeralStorage"] == {"Size": 1024}
    assert updated["CodeSha256"] == created["CodeSha256"]
    assert updated["RevisionId"] != created["RevisionId"]
    _assert_in_progress(updated)

    with pytest.raises(ClientError) as exc:
        lam.update_function_configuration(FunctionName=fname, Timeout=5, RevisionId=updated["RevisionId"])
    assert _error(exc)[0::2] == ("PreconditionFailedException", 412)
    assert lam.get_function_configuration(FunctionName=fname)["Timeout"] == 60

    cleared = lam.update_function_configuration(FunctionName=fname, Environment={"Variables": {}})
    assert cleared["Environment"] == {"Variables": {}}  # issue 18 cause 8: AWS echoes an emptied Environment
    assert cleared["Timeout"] == 60  # members not sent keep their values


def test_update_configuration_takes_effect_on_invoke(lam: Any, fname: str) -> None:
    source = "import os\ndef lambda_handler(event, context):\n    return os.environ.get('COLOR')\n"
    create_function(lam, fname, source, Environment={"Variables": {"COLOR": "red"}})
    assert invoke_json(lam, fname)[1] == "red"
    lam.update_function_configuration(FunctionName=fname, Environment={"Variables": {"COLOR": "blue"}})
    assert invoke_json(lam, fname)[1] == "blue"


def test_update_missing_function(lam: Any, fname: str) -> None:
    with pytest.raises(ClientError) as exc:
        lam.update_function_configuration(FunctionName=fname, Timeout=5)
    assert _error(exc)[0::2] == ("ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as exc:
        lam.update_function_code(FunctionName=fname, ZipFile=make_zip({"a.py": "1"}))
    assert _error(exc)[0::2] == ("ResourceNotFoundException", 404)


# -- delete ------------------------------------------------------------------------------------------


def test_delete(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    with pytest.raises(ClientError) as exc:
        lam.delete_function(FunctionName=fname, Qualifier="$LATEST")
    assert _error(exc)[0::2] == ("InvalidParameterValueException", 400)
    resp = lam.delete_function(FunctionName=fname)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert _registry_rows(gateway, fname) == 0
    for operation in ("get_function", "delete_function"):
        with pytest.raises(ClientError) as exc:
            getattr(lam, operation)(FunctionName=fname)
        assert _error(exc) == ("ResourceNotFoundException", f"Function not found: {ARN_PREFIX}{fname}", 404)
    with pytest.raises(ClientError) as exc:
        invoke_json(lam, fname)
    assert _error(exc)[0] == "ResourceNotFoundException"
    create_function(lam, fname, SOURCE_V2)  # the name is free again
    assert invoke_json(lam, fname)[1] == {"v": 2}


# -- validation --------------------------------------------------------------------------------------

_RESERVED = "Lambda was unable to configure your environment variables because the environment variables you have "
INVALID_CREATE = [
    pytest.param({"Timeout": 1200}, "ValidationException", "1 validation error detected: Value '1200' at "
                 "'timeout' failed to satisfy constraint: Member must have value less than or equal to 900",
                 id="timeout-high"),
    pytest.param({"Timeout": 0}, "ValidationException", "1 validation error detected: Value '0' at 'timeout' "
                 "failed to satisfy constraint: Member must have value greater than or equal to 1",
                 id="timeout-low"),
    pytest.param({"MemorySize": 64}, "ValidationException", "1 validation error detected: Value '64' at "
                 "'memorySize' failed to satisfy constraint: Member must have value greater than or equal to "
                 "128", id="memory-low"),
    pytest.param({"MemorySize": 10241}, "ValidationException", "1 validation error detected: Value "
                 "'10241' at 'memorySize' failed to satisfy constraint: Member must have value less than or "
                 "equal to 10240", id="memory-high"),
    pytest.param({"Timeout": 901, "MemorySize": 1}, "ValidationException", "2 validation errors detected: "
                 "Value '901' at 'timeout' failed to satisfy constraint: Member must have value less than or "
                 "equal to 900; Value '1' at 'memorySize' failed to satisfy constraint: Member must have "
                 "value greater than or equal to 128", id="two-errors"),
    pytest.param({"Handler": "has space"}, "ValidationException", "1 validation error detected: Value 'has "
                 "space' at 'handler' failed to satisfy constraint: Member must satisfy regular expression "
                 r"pattern: [^\s]+", id="handler-pattern"),
    pytest.param({"Handler": "h" * 129}, "ValidationException", None, id="handler-long"),
    pytest.param({"Role": "admin"}, "ValidationException", "1 validation error detected: Value 'admin' at "
                 "'role' failed to satisfy constraint: Member must satisfy regular expression pattern: "
                 r"arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+", id="role-pattern"),
    pytest.param({"Description": "d" * 257}, "ValidationException", None, id="description-long"),
    pytest.param({"EphemeralStorage": {"Size": 100}}, "ValidationException", "1 validation error detected: "
                 "Value '100' at 'ephemeralStorage.size' failed to satisfy constraint: Member must have "
                 "value greater than or equal to 512", id="storage-low"),
    pytest.param({"Architectures": ["sparc"]}, "ValidationException", None, id="architecture"),
    pytest.param({"Environment": {"Variables": {"1BAD": "x"}}}, "ValidationException", "1 validation error "
                 "detected: Value at 'environment.variables' failed to satisfy constraint: Map keys must "
                 "satisfy constraint: [Member must satisfy regular expression pattern: "
                 "[a-zA-Z]([a-zA-Z0-9_])+]", id="env-key"),
    pytest.param({"Environment": {"Variables": {"AWS_REGION": "x", "OK": "1", "LAMBDA_TASK_ROOT": "y"}}},
                 "InvalidParameterValueException", _RESERVED + "provided contains reserved keys that are "
                 "currently not supported for modification. Reserved keys used in this request: "
                 "AWS_REGION,LAMBDA_TASK_ROOT", id="env-reserved"),
    pytest.param({"Environment": {"Variables": {"BIG": "x" * 4096}}}, "InvalidParameterValueException",
                 _RESERVED + "provided exceeded the 4KB limit. String measured: {\"BIG\":\"" + "x" * 4096
                 + "\"}", id="env-too-big"),
    pytest.param({"Runtime": "python2.7"}, "InvalidParameterValueException", "The runtime parameter of "
                 "python2.7 is no longer supported for creating or updating AWS Lambda functions. We "
                 f"recommend you use the new runtime ({successor('python2.7')}) while creating or updating "
                 "functions.",
                 id="runtime-deprecated"),
    pytest.param({"Runtime": "nodejs22.x"}, "InvalidParameterValueException", None, id="runtime-unsupported"),
    pytest.param({"Code": {"S3Bucket": "b", "S3Key": "k"}}, "ValidationException",
                 "1 validation error detected: Value 'b' at 'code.s3Bucket' failed to satisfy constraint: Member must "
                 "have length greater than or equal to 3", id="s3-bucket-length"),
    pytest.param({"Code": {"S3Bucket": "bucket"}}, "InvalidParameterValueException",
                 "S3 Bucket and Key are required for uploading with S3 parameters.", id="s3-without-key"),
    pytest.param({"Code": {"ImageUri": "x.dkr.ecr/y:1"}, "PackageType": "Image"},
                 "InvalidParameterValueException", None, id="image"),
    pytest.param({"Code": {}}, "InvalidParameterValueException", "Please provide a source for function code.",
                 id="no-zipfile"),
    pytest.param({"Layers": ["arn:aws:lambda:us-east-1:123456789012:layer:l:1"]},
                 "InvalidParameterValueException", None, id="layers"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "code", "message"), INVALID_CREATE)
def test_create_validation(
    gateway: RunningGateway, fname: str, overrides: dict[str, Any], code: str, message: str | None
) -> None:
    lam = gateway.client(parameter_validation=False)  # let the gateway judge, not boto3
    params: dict[str, Any] = {
        "FunctionName": fname, "Runtime": RUNTIME, "Role": ROLE, "Handler": HANDLER,
        "Code": {"ZipFile": make_zip({"lambda_function.py": SOURCE})},
    }  # fmt: skip
    params.update(overrides)
    with pytest.raises(ClientError) as exc:
        lam.create_function(**params)
    got_code, got_message, status = _error(exc)
    assert (got_code, status) == (code, 400)
    if message is not None:
        assert got_message == message
    assert _registry_rows(gateway, fname) == 0


def test_update_configuration_validation(gateway: RunningGateway, fname: str) -> None:
    lam = gateway.client(parameter_validation=False)
    create_function(lam, fname, SOURCE)
    created = lam.get_function_configuration(FunctionName=fname)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"Timeout": 1200}, "ValidationException"),
        ({"MemorySize": 100000}, "ValidationException"),
        ({"Role": "nope"}, "ValidationException"),
        ({"Runtime": "python3.7"}, "InvalidParameterValueException"),
        ({"Environment": {"Variables": {"AWS_SESSION_TOKEN": "x"}}}, "InvalidParameterValueException"),
    ]
    for overrides, code in cases:
        with pytest.raises(ClientError) as exc:
            lam.update_function_configuration(FunctionName=fname, **overrides)
        assert _error(exc)[0::2] == (code, 400), overrides
    assert lam.get_function_configuration(FunctionName=fname)["RevisionId"] == created["RevisionId"]


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        pytest.param(b"{not json", "InvalidRequestContentException", None, id="not-json"),
        pytest.param(b"[1, 2]", "InvalidRequestContentException", None, id="not-an-object"),
        pytest.param({"Role": None}, "ValidationException", "1 validation error detected: Value null at "
                     "'role' failed to satisfy constraint: Member must not be null", id="no-role"),
        pytest.param({"Code": None}, "ValidationException", None, id="no-code"),
        pytest.param({"FunctionName": None}, "ValidationException", None, id="no-name"),
        pytest.param({"FunctionName": "bad name!"}, "ValidationException", None, id="bad-name"),
        pytest.param({"Timeout": "abc"}, "InvalidRequestContentException", None, id="timeout-type"),
        pytest.param({"Timeout": True}, "InvalidRequestContentException", None, id="timeout-bool"),
        pytest.param({"Environment": {"Variables": {"AA": 1}}}, "InvalidRequestContentException", None,
                     id="env-value-type"),
        pytest.param({"Code": "zip"}, "InvalidRequestContentException", None, id="code-type"),
        pytest.param({"Code": {"ZipFile": "***"}}, "InvalidRequestContentException", None, id="bad-base64"),
        pytest.param({"Timout": 5}, "InvalidRequestContentException", None, id="unknown-field"),
        pytest.param({"Runtime": None}, "InvalidParameterValueException", "Runtime and Handler are mandatory "
                     "parameters for functions created with deployment packages.", id="no-runtime"),
    ],
)  # fmt: skip
def test_create_raw_http_errors(
    gateway: RunningGateway, fname: str, body: bytes | dict[str, Any], code: str, message: str | None
) -> None:
    if isinstance(body, dict):
        params: dict[str, Any] = {
            "FunctionName": fname, "Runtime": RUNTIME, "Role": ROLE, "Handler": HANDLER,
            "Code": {"ZipFile": base64.b64encode(make_zip({"lambda_function.py": SOURCE})).decode()},
        }  # fmt: skip
        params.update(body)
        body = json.dumps({k: v for k, v in params.items() if v is not None}).encode()
    status, headers, data = _raw_create(gateway, body)
    assert (status, headers["x-amzn-errortype"]) == (400, code)
    # issue 18 cause 10: AWS's front-end ValidationException is {"message": ...} alone; Lambda's own errors add Type
    assert data.get("Type") == (None if code == "ValidationException" else "User")
    if message is not None:
        assert data["message"] == message
    assert _registry_rows(gateway, fname) == 0


# -- unsafe packages ---------------------------------------------------------------------------------


def _zip_with(name: str, mode: int, data: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("lambda_function.py", SOURCE)
        info = zipfile.ZipInfo(name)
        info.create_system = 3
        info.external_attr = mode << 16
        zf.writestr(info, data)
    return buf.getvalue()


UNSAFE_ZIPS = [
    pytest.param(_zip_with("../../escape.py", stat.S_IFREG | 0o644), id="traversal"),
    pytest.param(_zip_with("/tmp/absolute.py", stat.S_IFREG | 0o644), id="absolute"),
    pytest.param(_zip_with("link", stat.S_IFLNK | 0o777, b"/etc/passwd"), id="symlink"),
    pytest.param(b"PK\x03\x04 definitely not a zip", id="garbage"),
]


@pytest.mark.parametrize("zip_bytes", UNSAFE_ZIPS)
def test_unsafe_zip_is_refused_and_nothing_stored(
    gateway: RunningGateway, lam: Any, fname: str, zip_bytes: bytes
) -> None:
    before = _code_dirs(gateway)
    with pytest.raises(ClientError) as exc:
        lam.create_function(
            FunctionName=fname, Runtime=RUNTIME, Role=ROLE, Handler=HANDLER, Code={"ZipFile": zip_bytes}
        )
    assert _error(exc)[0::2] == ("InvalidParameterValueException", 400)
    assert _code_dirs(gateway) == before
    assert _registry_rows(gateway, fname) == 0
    assert not (gateway.data_dir / "escape.py").exists() and not Path("/tmp/absolute.py").exists()

    create_function(lam, fname, SOURCE)
    created = lam.get_function_configuration(FunctionName=fname)
    before = _code_dirs(gateway)
    with pytest.raises(ClientError) as exc:
        lam.update_function_code(FunctionName=fname, ZipFile=zip_bytes)
    assert _error(exc)[0::2] == ("InvalidParameterValueException", 400)
    assert _code_dirs(gateway) == before
    assert lam.get_function_configuration(FunctionName=fname)["RevisionId"] == created["RevisionId"]


def test_invalid_zip_message(lam: Any, fname: str) -> None:
    with pytest.raises(ClientError) as exc:
        lam.create_function(FunctionName=fname, Runtime=RUNTIME, Role=ROLE, Handler=HANDLER, Code={"ZipFile": b"nope"})
    assert _error(exc)[1] == "Could not unzip uploaded file. Please check your file, then try to upload again."


def test_same_code_is_stored_once(gateway: RunningGateway, lam: Any, fname: str) -> None:
    source = f"# {fname}\n" + SOURCE
    a = create_function(lam, fname + "-a", source)
    before = _code_dirs(gateway)
    b = create_function(lam, fname + "-b", source)
    assert a["CodeSha256"] == b["CodeSha256"]
    assert _code_dirs(gateway) == before


# -- persistence -------------------------------------------------------------------------------------


def test_functions_survive_restart(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    lam = gw.client()
    keep = create_function(lam, "keep", SOURCE, Environment={"Variables": {"KK": "v"}}, Tags={"t": "1"})
    changed = lam.update_function_code(FunctionName="keep", ZipFile=make_zip({"lambda_function.py": SOURCE_V2}))
    lam.update_function_configuration(FunctionName="keep", Timeout=42)
    changed = lam.get_function_configuration(FunctionName="keep")
    create_function(lam, "gone", SOURCE)
    lam.delete_function(FunctionName="gone")
    assert changed["RevisionId"] != keep["RevisionId"]

    gw.restart()
    lam = gw.client()
    after = lam.get_function(FunctionName="keep")
    assert after["Configuration"] == {k: v for k, v in changed.items() if k != "ResponseMetadata"}
    assert after["Tags"] == {"t": "1"}
    assert [f["FunctionName"] for f in lam.list_functions()["Functions"]] == ["keep"]
    assert invoke_json(lam, "keep")[1] == {"v": 2}
    with pytest.raises(ClientError) as exc:
        lam.get_function(FunctionName="gone")
    assert _error(exc)[0] == "ResourceNotFoundException"


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"DeadLetterConfig": {"TargetArn": 5}}, "InvalidRequestContentException"),
        ({"DeadLetterConfig": {"Evil": [1]}}, "InvalidRequestContentException"),
        ({"LoggingConfig": {"LogFormat": "XML"}}, "ValidationException"),
        ({"LoggingConfig": {"LogFormat": "Text", "ApplicationLogLevel": "INFO"}}, "InvalidParameterValueException"),
        ({"TracingConfig": {"Mode": "Sometimes"}}, "ValidationException"),
        ({"VpcConfig": "x"}, "InvalidRequestContentException"),
    ],
)
def test_nested_members_are_validated(gateway: RunningGateway, fname: str, extra: dict[str, Any], code: str) -> None:
    body = {
        "FunctionName": fname,
        "Runtime": RUNTIME,
        "Role": ROLE,
        "Handler": "lambda_function.h",
        "Code": {"ZipFile": base64.b64encode(make_zip({"lambda_function.py": "def h(e, c): return 1\n"})).decode()},
        **extra,
    }
    status, headers, _ = gateway.request("POST", "/2015-03-31/functions", json.dumps(body).encode())
    assert (status, headers["x-amzn-ErrorType"]) == (400, code)


def test_logging_config_round_trip(lam: Any, fname: str) -> None:
    created = create_function(lam, fname, "def h(e, c): return 1\n", LoggingConfig={"LogFormat": "JSON"})
    assert created["LoggingConfig"] == {
        "LogFormat": "JSON",
        "ApplicationLogLevel": "INFO",
        "SystemLogLevel": "INFO",
        "LogGroup": f"/aws/lambda/{fname}",
    }
    assert "KMSKeyArn" not in created
