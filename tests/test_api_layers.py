"""Layer operations against a live gateway with boto3 (and raw HTTP where boto3 would refuse to send).

The tests at the end (`test_handler_*`, `test_function_*`) need the function side wired as well:
CreateFunction resolving `Layers` through the layer store and the pool putting layer directories on
`sys.path`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.request
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import RUNTIME, GatewayFactory, RunningGateway, create_function, invoke_json, make_zip

ARN = "arn:aws:lambda:us-east-1:123456789012:layer"
PY_VERSION_SITE = f"python/lib/{RUNTIME}/site-packages"  # the runtime of `create_function`'s functions


@pytest.fixture
def lname(fname: str) -> str:
    """A layer name unique to this test."""
    return "L" + fname


def publish(lam: Any, name: str, files: dict[str, str | bytes] | None = None, **kwargs: Any) -> dict[str, Any]:
    zip_bytes = make_zip(files or {"python/helper.py": "VALUE = 1\n"})
    return dict(lam.publish_layer_version(LayerName=name, Content={"ZipFile": zip_bytes}, **kwargs))


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    err = exc.value.response["Error"]
    return err["Code"], err["Message"]


def raw_json(gateway: RunningGateway, method: str, path: str, body: Any = None) -> tuple[int, str, dict[str, Any]]:
    """(status, x-amzn-ErrorType, JSON body) of a raw request."""
    data = None if body is None else json.dumps(body).encode()
    status, headers, raw = gateway.request(method, path, data, {"Content-Type": "application/json"})
    return status, headers.get("x-amzn-ErrorType", ""), json.loads(raw) if raw else {}


def test_publish_get_and_get_by_arn(gateway: RunningGateway, lam: Any, lname: str) -> None:
    zip_bytes = make_zip({"python/helper.py": "VALUE = 1\n"})
    resp = lam.publish_layer_version(
        LayerName=lname,
        Description="shared helpers",
        Content={"ZipFile": zip_bytes},
        CompatibleRuntimes=["python3.12", "python3.11"],
        LicenseInfo="MIT",
        CompatibleArchitectures=["x86_64"],
    )
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert resp["LayerArn"] == f"{ARN}:{lname}"
    assert resp["LayerVersionArn"] == f"{ARN}:{lname}:1"
    assert resp["Version"] == 1
    assert resp["Description"] == "shared helpers"
    assert resp["CompatibleRuntimes"] == ["python3.12", "python3.11"]
    assert resp["CompatibleArchitectures"] == ["x86_64"]
    assert resp["LicenseInfo"] == "MIT"
    assert resp["CreatedDate"].endswith("+0000")
    content = resp["Content"]
    assert content["CodeSize"] == len(zip_bytes)
    assert content["CodeSha256"] == base64.b64encode(hashlib.sha256(zip_bytes).digest()).decode()
    with urllib.request.urlopen(content["Location"], timeout=10) as download:
        assert download.read() == zip_bytes

    fields = [k for k in resp if k != "ResponseMetadata"]
    got = lam.get_layer_version(LayerName=lname, VersionNumber=1)
    assert {k: got[k] for k in fields} == {k: resp[k] for k in fields}
    by_arn = lam.get_layer_version_by_arn(Arn=f"{ARN}:{lname}:1")
    assert {k: by_arn[k] for k in fields} == {k: resp[k] for k in fields}
    by_layer_arn = lam.get_layer_version(LayerName=f"{ARN}:{lname}", VersionNumber=1)
    assert by_layer_arn["LayerVersionArn"] == resp["LayerVersionArn"]


def test_minimal_publish_leaves_optional_fields_out(lam: Any, lname: str) -> None:
    resp = publish(lam, lname)
    assert resp["Description"] == ""
    for key in ("CompatibleRuntimes", "CompatibleArchitectures", "LicenseInfo"):
        assert key not in resp
    assert publish(lam, lname)["Version"] == 2  # same content, still a new version


def test_missing_versions_are_not_found(lam: Any, lname: str) -> None:
    publish(lam, lname)
    for call in (
        lambda: lam.get_layer_version(LayerName=lname, VersionNumber=2),
        lambda: lam.get_layer_version(LayerName=lname + "-none", VersionNumber=1),
        lambda: lam.get_layer_version_by_arn(Arn=f"{ARN}:{lname}:9"),
        lambda: lam.get_layer_version_by_arn(Arn=f"arn:aws:lambda:us-east-1:999999999999:layer:{lname}:1"),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
        assert error_of(exc) == ("ResourceNotFoundException", "The resource you requested does not exist.")


def test_list_layer_versions_newest_first_with_filters(lam: Any, lname: str) -> None:
    publish(lam, lname, CompatibleRuntimes=["python3.11"], CompatibleArchitectures=["x86_64"])
    publish(lam, lname, CompatibleRuntimes=["python3.12"], CompatibleArchitectures=["arm64"])
    publish(lam, lname, CompatibleRuntimes=["python3.12", "python3.11"])
    versions = lam.list_layer_versions(LayerName=lname)["LayerVersions"]
    assert [v["Version"] for v in versions] == [3, 2, 1]
    assert versions[0]["LayerVersionArn"] == f"{ARN}:{lname}:3"
    assert "Content" not in versions[0] and "LayerArn" not in versions[0]
    by_runtime = lam.list_layer_versions(LayerName=lname, CompatibleRuntime="python3.11")["LayerVersions"]
    assert [v["Version"] for v in by_runtime] == [3, 1]
    by_arch = lam.list_layer_versions(LayerName=lname, CompatibleArchitecture="arm64")["LayerVersions"]
    assert [v["Version"] for v in by_arch] == [2]
    by_arn = lam.list_layer_versions(LayerName=f"{ARN}:{lname}")["LayerVersions"]
    assert [v["Version"] for v in by_arn] == [3, 2, 1]
    assert lam.list_layer_versions(LayerName=lname + "-none")["LayerVersions"] == []


def test_list_layers_shows_latest_matching_version(lam: Any, lname: str) -> None:
    publish(lam, lname, CompatibleRuntimes=["python3.11"], CompatibleArchitectures=["arm64"])
    publish(lam, lname, CompatibleRuntimes=["python3.12"], Description="newest")

    def mine(**filters: Any) -> list[dict[str, Any]]:
        layers = lam.get_paginator("list_layers").paginate(**filters).build_full_result()["Layers"]
        return [layer for layer in layers if layer["LayerName"] == lname]

    (item,) = mine()
    assert item["LayerArn"] == f"{ARN}:{lname}"
    assert item["LatestMatchingVersion"]["Version"] == 2
    assert item["LatestMatchingVersion"]["Description"] == "newest"
    assert item["LatestMatchingVersion"]["LayerVersionArn"] == f"{ARN}:{lname}:2"
    assert mine(CompatibleRuntime="python3.11")[0]["LatestMatchingVersion"]["Version"] == 1
    assert mine(CompatibleArchitecture="arm64")[0]["LatestMatchingVersion"]["Version"] == 1
    assert mine(CompatibleRuntime="python3.13") == []


def test_paginators(lam: Any, lname: str) -> None:
    for _ in range(5):
        publish(lam, lname)
    pages = list(lam.get_paginator("list_layer_versions").paginate(LayerName=lname, PaginationConfig={"PageSize": 2}))
    assert [[v["Version"] for v in page["LayerVersions"]] for page in pages] == [[5, 4], [3, 2], [1]]
    full = lam.get_paginator("list_layer_versions").paginate(LayerName=lname, PaginationConfig={"MaxItems": 3})
    assert [v["Version"] for v in full.build_full_result()["LayerVersions"]] == [5, 4, 3]

    names = [f"{lname}-{i}" for i in range(3)]
    for name in names:
        publish(lam, name)
    pages = list(lam.get_paginator("list_layers").paginate(PaginationConfig={"PageSize": 2}))
    assert all(len(page["Layers"]) <= 2 for page in pages)
    listed = [layer["LayerName"] for page in pages for layer in page["Layers"]]
    assert listed == sorted(listed) and len(listed) == len(set(listed))
    assert [n for n in listed if n.startswith(lname)] == [lname, *names]


def test_delete_layer_version(lam: Any, lname: str) -> None:
    publish(lam, lname)
    publish(lam, lname)
    resp = lam.delete_layer_version(LayerName=lname, VersionNumber=2)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as exc:
        lam.get_layer_version(LayerName=lname, VersionNumber=2)
    assert error_of(exc)[0] == "ResourceNotFoundException"
    assert [v["Version"] for v in lam.list_layer_versions(LayerName=lname)["LayerVersions"]] == [1]
    # deleting what is not there is not an error, as on AWS
    assert lam.delete_layer_version(LayerName=lname, VersionNumber=2)["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert (
        lam.delete_layer_version(LayerName=lname + "-none", VersionNumber=1)["ResponseMetadata"]["HTTPStatusCode"]
        == 204
    )
    assert publish(lam, lname)["Version"] == 3  # never reused
    lam.delete_layer_version(LayerName=f"{ARN}:{lname}", VersionNumber=1)
    lam.delete_layer_version(LayerName=lname, VersionNumber=3)
    assert lam.list_layer_versions(LayerName=lname)["LayerVersions"] == []
    assert [layer for layer in lam.list_layers()["Layers"] if layer["LayerName"] == lname] == []


@pytest.mark.parametrize(
    ("kwargs", "code", "message"),
    [
        pytest.param(
            {"LayerName": "bad name!"},
            "ValidationException",
            "1 validation error detected: Value 'bad name!' at 'layerName' failed to satisfy constraint: Member must "
            "satisfy regular expression pattern: (arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\\d{12}:layer:"
            "[a-zA-Z0-9-_]+)|[a-zA-Z0-9-_]+",
            id="name-pattern",
        ),
        pytest.param(
            {"LayerName": "x" * 141},
            "ValidationException",
            f"1 validation error detected: Value '{'x' * 141}' at 'layerName' failed to satisfy constraint: Member "
            "must have length less than or equal to 140",
            id="name-length",
        ),
        pytest.param({"CompatibleRuntimes": ["cobol"]}, "ValidationException", None, id="runtime-enum"),
        pytest.param(
            {"CompatibleRuntimes": ["python3.12"] * 16},
            "ValidationException",
            None,
            id="too-many-runtimes",
        ),
        pytest.param({"CompatibleArchitectures": ["sparc"]}, "ValidationException", None, id="arch-enum"),
        pytest.param({"Description": "d" * 257}, "ValidationException", None, id="description"),
        pytest.param({"LicenseInfo": "l" * 513}, "ValidationException", None, id="license"),
        pytest.param(
            {"Content": {"S3Key": "layer.zip"}},
            "InvalidParameterValueException",
            "S3 Bucket and Key are required for uploading with S3 parameters.",
            id="s3-without-bucket",
        ),
        pytest.param(
            {"Content": {"ZipFile": b"not a zip"}},
            "InvalidParameterValueException",
            "Could not unzip uploaded file. Please check your file, then try to upload again.",
            id="bad-zip",
        ),
        pytest.param(
            {"LayerName": "arn:aws:lambda:eu-west-1:123456789012:layer:elsewhere"},
            "InvalidParameterValueException",
            None,
            id="foreign-arn",
        ),
    ],
)
def test_publish_validation(lam: Any, lname: str, kwargs: dict[str, Any], code: str, message: str | None) -> None:
    params: dict[str, Any] = {"LayerName": lname, "Content": {"ZipFile": make_zip({"python/m.py": ""})}}
    params.update(kwargs)
    with pytest.raises(ClientError) as exc:
        lam.publish_layer_version(**params)
    got_code, got_message = error_of(exc)
    assert got_code == code
    if message is not None:
        assert got_message == message
    name = params["LayerName"]
    if len(name) <= 140 and ":" not in name and " " not in name:
        assert lam.list_layer_versions(LayerName=name)["LayerVersions"] == []


def test_publish_raw_http_errors(gateway: RunningGateway, lname: str) -> None:
    path = f"/2018-10-31/layers/{lname}/versions"
    status, kind, body = raw_json(gateway, "POST", path, {})
    assert (status, kind) == (400, "ValidationException")
    assert body["message"] == (
        "1 validation error detected: Value null at 'content' failed to satisfy constraint: Member must not be null"
    )
    status, kind, body = raw_json(gateway, "POST", path, {"Content": {}, "Bogus": 1})
    assert (status, kind) == (400, "InvalidRequestContentException")
    status, kind, body = raw_json(gateway, "POST", path, {"Content": {}})
    assert (status, kind) == (400, "InvalidParameterValueException")
    status, kind, body = raw_json(gateway, "POST", path, {"Content": {"ZipFile": "%%%"}})
    assert (status, kind) == (400, "InvalidRequestContentException")
    status, kind, body = raw_json(gateway, "POST", path, {"Content": {"ZipFile": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="}})
    assert status == 201, body  # an empty zip is a valid layer
    status, kind, body = raw_json(gateway, "GET", path + "?MaxItems=0")
    assert (status, kind) == (400, "ValidationException")
    assert (
        "at 'maxItems' failed to satisfy constraint: Member must have value greater than or equal to 1"
        in (body["message"])
    )
    status, kind, body = raw_json(gateway, "GET", "/2018-10-31/layers?MaxItems=51")
    assert (status, kind) == (400, "ValidationException")
    status, kind, body = raw_json(gateway, "GET", "/2018-10-31/layers?CompatibleRuntime=cobol")
    assert (status, kind) == (400, "ValidationException")
    status, kind, body = raw_json(gateway, "GET", f"{path}/x")
    assert (status, kind) == (400, "InvalidParameterValueException")


def test_get_by_arn_validation(gateway: RunningGateway, lam: Any) -> None:
    with pytest.raises(ClientError) as exc:
        lam.get_layer_version_by_arn(Arn=f"{ARN}:no-version")
    assert error_of(exc) == (
        "ValidationException",
        f"1 validation error detected: Value '{ARN}:no-version' at 'arn' failed to satisfy constraint: Member must "
        "satisfy regular expression pattern: arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\\d{12}:layer:[a-zA-Z0-9-_]+:"
        "[0-9]+",
    )
    status, kind, _ = raw_json(gateway, "GET", "/2018-10-31/layers?find=LayerVersion")
    assert (status, kind) == (400, "ValidationException")


def test_layers_survive_restart(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    lam = gw.client()
    first = publish(lam, "kept", Description="one", CompatibleRuntimes=["python3.12"])
    publish(lam, "kept")
    lam.delete_layer_version(LayerName="kept", VersionNumber=2)
    gw.restart()
    lam = gw.client()
    got = lam.get_layer_version(LayerName="kept", VersionNumber=1)
    for key in ("LayerVersionArn", "Description", "CreatedDate", "CompatibleRuntimes", "Version"):
        assert got[key] == first[key]
    assert got["Content"]["CodeSha256"] == first["Content"]["CodeSha256"]
    with pytest.raises(ClientError):
        lam.get_layer_version(LayerName="kept", VersionNumber=2)
    assert publish(lam, "kept")["Version"] == 3


# -- functions that use layers -----------------------------------------------------------------------

HANDLER_SOURCE = """
import helper

def lambda_handler(event, context):
    return {"value": helper.VALUE, "file": helper.__file__}
"""


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        pytest.param(
            ["nope"],
            "1 validation error detected: Value '[nope]' at 'layers' failed to satisfy constraint: Member must "
            "satisfy constraint: [Member must have length less than or equal to 140, Member must have length "
            "greater than or equal to 1, Member must satisfy regular expression pattern: arn:[a-zA-Z0-9-]+:lambda:"
            "[a-zA-Z0-9-]+:\\d{12}:layer:[a-zA-Z0-9-_]+:[0-9]+, Member must not be null]",
            id="pattern",
        ),
        pytest.param([f"{ARN}:x:1", f"{ARN}:x"], None, id="one-bad"),
    ],
)
def test_function_layers_validation(lam: Any, fname: str, layers: list[str], message: str | None) -> None:
    with pytest.raises(ClientError) as exc:
        create_function(lam, fname, HANDLER_SOURCE, Layers=layers)
    code, got = error_of(exc)
    assert code == "ValidationException"
    if message is not None:
        assert got == message


def test_function_more_than_five_layers(lam: Any, fname: str) -> None:
    with pytest.raises(ClientError) as exc:
        create_function(lam, fname, HANDLER_SOURCE, Layers=[f"{ARN}:l{i}:1" for i in range(6)])
    assert error_of(exc) == ("InvalidParameterValueException", "Cannot reference more than 5 layers.")


def test_function_with_missing_layer_is_refused(lam: Any, fname: str, lname: str) -> None:
    """Needs the lead's wiring: CreateFunction resolves `Layers` through the layer store."""
    with pytest.raises(ClientError) as exc:
        create_function(lam, fname, HANDLER_SOURCE, Layers=[f"{ARN}:{lname}:1"])
    assert error_of(exc) == ("InvalidParameterValueException", f"Layer version {ARN}:{lname}:1 does not exist.")
    publish(lam, lname)
    publish(lam, lname)
    with pytest.raises(ClientError) as exc:
        create_function(lam, fname, HANDLER_SOURCE, Layers=[f"{ARN}:{lname}:1", f"{ARN}:{lname}:2"])
    assert error_of(exc)[1].startswith("Two different versions of the same layer are not allowed")


def test_handler_imports_from_a_layer(lam: Any, fname: str, lname: str) -> None:
    """Needs the lead's wiring (functions.py resolves Layers; pool.py puts layer dirs on sys.path)."""
    layer = publish(lam, lname, {"python/helper.py": "VALUE = 'from layer'\n"})
    created = create_function(lam, fname, HANDLER_SOURCE, Layers=[layer["LayerVersionArn"]])
    assert created["Layers"] == [{"Arn": layer["LayerVersionArn"], "CodeSize": layer["Content"]["CodeSize"]}]
    resp, out = invoke_json(lam, fname)
    assert "FunctionError" not in resp, out
    assert out["value"] == "from layer"
    config = lam.get_function_configuration(FunctionName=fname)
    assert config["Layers"] == created["Layers"]


def test_handler_imports_from_a_layers_site_packages(lam: Any, fname: str, lname: str) -> None:
    """Needs the wiring; `python/lib/python3.X/site-packages` of the function's runtime is on sys.path too."""
    layer = publish(lam, lname, {f"{PY_VERSION_SITE}/helper.py": "VALUE = 'site-packages'\n"})
    create_function(lam, fname, HANDLER_SOURCE, Layers=[layer["LayerVersionArn"]])
    resp, out = invoke_json(lam, fname)
    assert "FunctionError" not in resp, out
    assert out["value"] == "site-packages"


def test_later_layer_wins_and_function_code_wins_over_layers(lam: Any, fname: str, lname: str) -> None:
    """Needs the wiring. As on Lambda: later layers overwrite earlier ones in /opt; /var/task comes first."""
    first = publish(lam, lname + "-a", {"python/helper.py": "VALUE = 'first'\n"})
    second = publish(lam, lname + "-b", {"python/helper.py": "VALUE = 'second'\n"})
    create_function(lam, fname, HANDLER_SOURCE, Layers=[first["LayerVersionArn"], second["LayerVersionArn"]])
    assert invoke_json(lam, fname)[1]["value"] == "second"
    lam.update_function_configuration(FunctionName=fname, Layers=[second["LayerVersionArn"], first["LayerVersionArn"]])
    assert invoke_json(lam, fname)[1]["value"] == "first"
    own = create_function(
        lam, fname + "-own", HANDLER_SOURCE, files={"helper.py": "VALUE = 'own'\n"}, Layers=[first["LayerVersionArn"]]
    )
    assert invoke_json(lam, own["FunctionName"])[1]["value"] == "own"


def test_deleted_layer_version_keeps_working_for_its_functions(lam: Any, fname: str, lname: str) -> None:
    """Needs the wiring. A deleted version can no longer be added, but functions that use it keep it."""
    layer = publish(lam, lname, {"python/helper.py": "VALUE = 'kept'\n"})
    arn = layer["LayerVersionArn"]
    create_function(lam, fname, HANDLER_SOURCE, Layers=[arn])
    lam.delete_layer_version(LayerName=lname, VersionNumber=1)
    assert invoke_json(lam, fname)[1]["value"] == "kept"
    # a configuration change starts new environments: they still get the layer
    lam.update_function_configuration(FunctionName=fname, Environment={"Variables": {"MARK": "1"}})
    resp, out = invoke_json(lam, fname)
    assert "FunctionError" not in resp, out
    assert out["value"] == "kept"
    assert lam.get_function_configuration(FunctionName=fname)["Layers"][0]["Arn"] == arn
    with pytest.raises(ClientError) as exc:
        create_function(lam, fname + "-new", HANDLER_SOURCE, Layers=[arn])
    assert error_of(exc) == ("InvalidParameterValueException", f"Layer version {arn} does not exist.")


def test_update_configuration_replaces_and_removes_layers(lam: Any, fname: str, lname: str) -> None:
    """Needs the wiring."""
    layer = publish(lam, lname, {"python/helper.py": "VALUE = 'layer'\n"})
    create_function(lam, fname, HANDLER_SOURCE)
    resp, out = invoke_json(lam, fname)
    assert resp.get("FunctionError") == "Unhandled" and out["errorType"] == "Runtime.ImportModuleError"
    updated = lam.update_function_configuration(FunctionName=fname, Layers=[layer["LayerVersionArn"]])
    assert [entry["Arn"] for entry in updated["Layers"]] == [layer["LayerVersionArn"]]
    assert invoke_json(lam, fname)[1]["value"] == "layer"
    cleared = lam.update_function_configuration(FunctionName=fname, Layers=[])
    assert "Layers" not in cleared
    assert invoke_json(lam, fname)[1]["errorType"] == "Runtime.ImportModuleError"
