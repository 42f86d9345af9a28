"""Issue 18, causes 4, 5, 8, 9, 10, 11: answers shaped as AWS shapes them, against a real gateway.

Each test names its source of AWS's answer:
- MODEL: botocore's Lambda model (botocore/data/lambda/2015-03-31/service-2.json.gz), read in the test itself;
- LOCALSTACK: LocalStack's Lambda provider and its `tests/aws/services/lambda_/*.snapshot.json`, responses recorded
  against AWS (localstack/localstack on GitHub);
- DOCS: AWS's Lambda documentation.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import botocore
import pytest
from botocore.exceptions import ClientError

from gateway.catalog import lambda_runtimes
from tests.conftest import HANDLER, RUNTIME, RunningGateway, create_function, make_zip

SOURCE = "def lambda_handler(event, context):\n    return {'v': 1}\n"
ACCOUNT = "123456789012"
ARN_PREFIX = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:"
MODEL = Path(botocore.__file__).parent / "data" / "lambda" / "2015-03-31" / "service-2.json.gz"


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    err = exc.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


def _raw(gw: RunningGateway, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
    data = b"" if body is None else json.dumps(body).encode()
    status, headers, raw = gw.request(method, path, data, {"Content-Type": "application/json"})
    return status, {k.lower(): v for k, v in headers.items()}, json.loads(raw) if raw else None


def _model_message_key(shape: str) -> str:
    members = json.loads(gzip.decompress(MODEL.read_bytes()))["shapes"][shape]["members"]
    (key,) = [m for m in members if m.lower() == "message"]
    return str(key)


# -- cause 10: error bodies ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "error"),
    [
        ("GET", "/2015-03-31/functions/no-such-fn-shapes", None, "ResourceNotFoundException"),
        ("PUT", "/2015-03-31/functions/no-such-fn-shapes/configuration", {"Timeout": 0}, None),
        ("DELETE", "/2015-03-31/functions/x:$LATEST", None, "InvalidParameterValueException"),
        ("POST", "/2015-03-31/functions", {"Bogus": 1}, "InvalidRequestContentException"),
    ],
)
def test_error_body_key_is_the_models(
    gateway: RunningGateway, method: str, path: str, body: Any, error: str | None
) -> None:
    """MODEL: each error shape names its message member `Message` (ResourceNotFoundException, ServiceException, ...)
    or `message` (InvalidParameterValueException, ResourceConflictException, TooManyRequestsException, ...); the
    body carries that key and `Type`. LOCALSTACK (test_function_lifecycle, delete_postdelete): a not-found answer
    is {"Type": "User", "Message": "Function not found: arn:..."}."""
    status, headers, doc = _raw(gateway, method, path, body)
    name = headers["x-amzn-errortype"]
    if error is None:  # the model's front-end check of Timeout >= 1 comes first: ValidationException
        assert name == "ValidationException"
        assert set(doc) == {"message"}  # LOCALSTACK: the front end's ValidationException has no Type
        return
    assert name == error
    key = _model_message_key(error)
    assert set(doc) == {"Type", key}, doc
    assert doc["Type"] == "User"
    if error == "ResourceNotFoundException":
        assert status == 404 and key == "Message"
        assert doc["Message"] == f"Function not found: {ARN_PREFIX}no-such-fn-shapes"


def test_boto3_reads_the_message_of_every_shape(lam: Any) -> None:
    """MODEL: botocore takes the message from either key; both kinds reach `Error.Message`."""
    with pytest.raises(ClientError) as exc:
        lam.get_function(FunctionName="no-such-fn-shapes-2")
    assert _error(exc) == ("ResourceNotFoundException", f"Function not found: {ARN_PREFIX}no-such-fn-shapes-2", 404)
    assert exc.value.response["Type"] == "User"


# -- cause 9: validation ------------------------------------------------------------------------------------------


def test_long_name_and_lowercase_latest_are_not_found(lam: Any, fname: str) -> None:
    """LOCALSTACK (validate_function_name: GetFunction accepts names up to 170; test_function_name_too_long...):
    AWS answers a 65-character name, and the qualifier `$latest` (the model's pattern `(|[a-zA-Z0-9$_-]+)`), with
    404, not a validation error."""
    long_name = "a" * 65
    with pytest.raises(ClientError) as exc:
        lam.get_function(FunctionName=long_name)
    assert _error(exc) == ("ResourceNotFoundException", f"Function not found: {ARN_PREFIX}{long_name}", 404)
    create_function(lam, fname, SOURCE)
    with pytest.raises(ClientError) as exc:
        lam.get_function(FunctionName=fname, Qualifier="$latest")
    assert _error(exc) == ("ResourceNotFoundException", f"Function not found: {ARN_PREFIX}{fname}:$latest", 404)


def test_create_name_limits(lam: Any) -> None:
    """LOCALSTACK (validate_function_name for CreateFunction): a name alone may have 64 characters, a full or
    partial ARN 140, each reported with its own figure."""
    code = {"ZipFile": make_zip({"lambda_function.py": SOURCE})}
    common = {"Runtime": RUNTIME, "Role": f"arn:aws:iam::{ACCOUNT}:role/r", "Handler": HANDLER, "Code": code}
    with pytest.raises(ClientError) as exc:
        lam.create_function(FunctionName="n" * 65, **common)
    code_, message, status = _error(exc)
    assert (code_, status) == ("ValidationException", 400)
    assert message.endswith("Member must have length less than or equal to 64")
    arn = ARN_PREFIX + "n" * (141 - len(ARN_PREFIX))
    with pytest.raises(ClientError) as exc:
        lam.create_function(FunctionName=arn, **common)
    code_, message, status = _error(exc)
    assert (code_, status) == ("ValidationException", 400)
    assert message.endswith("Member must have length less than or equal to 140")


def test_cross_account_role_is_refused(lam: Any, fname: str) -> None:
    """LOCALSTACK (recorded AWS answer): a role of another account: 403 AccessDeniedException, "Cross-account pass
    role is not allowed." On create and on update."""
    role = "arn:aws:iam::999999999999:role/other"
    with pytest.raises(ClientError) as exc:
        create_function(lam, fname, SOURCE, Role=role)
    assert _error(exc) == ("AccessDeniedException", "Cross-account pass role is not allowed.", 403)
    create_function(lam, fname, SOURCE)
    with pytest.raises(ClientError) as exc:
        lam.update_function_configuration(FunctionName=fname, Role=role)
    assert _error(exc) == ("AccessDeniedException", "Cross-account pass role is not allowed.", 403)


def test_missing_alias_wording(lam: Any, fname: str) -> None:
    """LOCALSTACK (get_alias; test_alias_lifecycle snapshot): "Cannot find alias arn: <alias ARN>"."""
    create_function(lam, fname, SOURCE)
    with pytest.raises(ClientError) as exc:
        lam.get_alias(FunctionName=fname, Name="nope")
    assert _error(exc) == ("ResourceNotFoundException", f"Cannot find alias arn: {ARN_PREFIX}{fname}:nope", 404)


@pytest.mark.parametrize("version", [-1, 0])
def test_layer_version_below_one(lam: Any, version: int) -> None:
    """LOCALSTACK (get_layer_version, delete_layer_version; test_layer_exceptions snapshot): 400
    InvalidParameterValueException "Layer Version Cannot be less than 1", before the layer is looked up."""
    for call in (lam.get_layer_version, lam.delete_layer_version):
        with pytest.raises(ClientError) as exc:
            call(LayerName="no-such-layer-shapes", VersionNumber=version)
        assert _error(exc) == ("InvalidParameterValueException", "Layer Version Cannot be less than 1", 400)


def test_empty_tag_set_is_refused(lam: Any, fname: str) -> None:
    """LOCALSTACK (tag_resource; test_tag_exceptions snapshot): TagResource with no tags is refused,
    InvalidParameterValueException "An error occurred and the request cannot be processed."."""
    arn = create_function(lam, fname, SOURCE)["FunctionArn"]
    with pytest.raises(ClientError) as exc:
        lam.tag_resource(Resource=arn, Tags={})
    assert _error(exc) == (
        "InvalidParameterValueException",
        "An error occurred and the request cannot be processed.",
        400,
    )


def test_create_body_limit_is_awss(gateway: RunningGateway) -> None:
    """LOCALSTACK (config LAMBDA_LIMITS_CREATE_FUNCTION_REQUEST_SIZE = 70_167_211, "documented upon customer
    request"): a CreateFunction body over 70167211 bytes is 413 "Request must be smaller than 70167211 bytes for the
    CreateFunction operation"; one just below is read (and refused for what it holds, not for its size)."""
    status, headers, raw = gateway.request(
        "POST", "/2015-03-31/functions", b"", {"Content-Type": "application/json", "Content-Length": "70167212"}
    )
    assert status == 413 and headers.get("x-amzn-ErrorType") == "RequestEntityTooLargeException"
    assert json.loads(raw)["message"] == "Request must be smaller than 70167211 bytes for the CreateFunction operation"


# -- cause 8: defaults in responses -------------------------------------------------------------------------------


def test_defaults_in_responses(lam: Any, fname: str) -> None:
    """LOCALSTACK (map_config_out; test_function_lifecycle snapshot): no VpcConfig without a VPC; GetFunction without
    Tags for an untagged function; an Environment given empty is echoed as {"Variables": {}}, none given: none."""
    created = create_function(lam, fname, SOURCE)
    assert "VpcConfig" not in created and "Environment" not in created
    got = lam.get_function(FunctionName=fname)
    assert "Tags" not in got and "VpcConfig" not in got["Configuration"]
    updated = lam.update_function_configuration(FunctionName=fname, Environment={"Variables": {}})
    assert updated["Environment"] == {"Variables": {}}
    assert lam.get_function_configuration(FunctionName=fname)["Environment"] == {"Variables": {}}


def test_snap_start_is_echoed(lam: Any, fname: str) -> None:
    """LOCALSTACK (create_function, publish; test_snapstart_lifecycle snapshot): SnapStart.ApplyOn echoed with
    OptimizationStatus Off on $LATEST, On on a version published with ApplyOn PublishedVersions; a value outside
    the enum is the model's ValidationException."""
    created = create_function(lam, fname, SOURCE, SnapStart={"ApplyOn": "PublishedVersions"})
    assert created["SnapStart"] == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "Off"}
    published = lam.publish_version(FunctionName=fname)
    assert published["SnapStart"] == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "On"}
    with pytest.raises(ClientError) as exc:
        lam.update_function_configuration(FunctionName=fname, SnapStart={"ApplyOn": "Always"})
    assert _error(exc) == (
        "ValidationException",
        "1 validation error detected: Value 'Always' at 'snapStart.applyOn' failed to satisfy constraint: "
        "Member must satisfy enum value set: [PublishedVersions, None]",
        400,
    )


def test_list_items_leave_out_state(lam: Any, fname: str) -> None:
    """LOCALSTACK (map_to_list_response; test_list_functions, test_function_versions snapshots): list items carry
    neither State*, LastUpdateStatus* nor RuntimeVersionConfig."""
    create_function(lam, fname, SOURCE)
    lam.publish_version(FunctionName=fname)
    listed = [f for f in lam.list_functions()["Functions"] if f["FunctionName"] == fname]
    versions = lam.list_versions_by_function(FunctionName=fname)["Versions"]
    for item in [*listed, *versions]:
        assert not {"State", "LastUpdateStatus", "RuntimeVersionConfig", "StateReason"} & set(item), item


def test_dry_run_has_no_executed_version(gateway: RunningGateway, lam: Any, fname: str) -> None:
    """LOCALSTACK (invoke: DryRun answers StatusCode 204 alone): no X-Amz-Executed-Version."""
    create_function(lam, fname, SOURCE)
    resp = lam.invoke(FunctionName=fname, InvocationType="DryRun")
    assert resp["StatusCode"] == 204
    assert "ExecutedVersion" not in resp
    assert "x-amz-executed-version" not in resp["ResponseMetadata"]["HTTPHeaders"]


# -- cause 4: ListFunctions FunctionVersion=ALL --------------------------------------------------------------------


def test_list_all_versions(lam: Any, fname: str) -> None:
    """LOCALSTACK (list_functions: FunctionVersion=ALL lists every version of every function, each with its qualified
    ARN); DOCS (ListFunctions: "Set to ALL to include entries for all published versions of each function")."""
    create_function(lam, fname, SOURCE)
    lam.publish_version(FunctionName=fname)
    lam.update_function_configuration(FunctionName=fname, Description="two")
    lam.publish_version(FunctionName=fname)
    pages = lam.get_paginator("list_functions").paginate(FunctionVersion="ALL", PaginationConfig={"PageSize": 2})
    listed = [f for page in pages for f in page["Functions"] if f["FunctionName"] == fname]
    assert [f["Version"] for f in listed] == ["$LATEST", "1", "2"]
    assert [f["FunctionArn"] for f in listed] == [f"{ARN_PREFIX}{fname}:{v}" for v in ("$LATEST", "1", "2")]
    plain = [f for f in lam.list_functions()["Functions"] if f["FunctionName"] == fname]
    assert [f["FunctionArn"] for f in plain] == [ARN_PREFIX + fname]


# -- cause 5: what makes a new version -----------------------------------------------------------------------------


def test_publish_after_description_change(lam: Any, fname: str) -> None:
    """DOCS (PublishVersion: "Lambda doesn't publish a version if the function's configuration and code haven't
    changed since the last version"): a changed Description is a configuration change; identical code is not a
    change; a version's own Description (PublishVersion's) does not count as a change of $LATEST."""
    create_function(lam, fname, SOURCE)
    assert lam.publish_version(FunctionName=fname, Description="first")["Version"] == "1"
    assert lam.publish_version(FunctionName=fname)["Version"] == "1"  # nothing changed
    lam.update_function_configuration(FunctionName=fname, Description="changed")
    assert lam.publish_version(FunctionName=fname)["Version"] == "2"
    lam.update_function_code(FunctionName=fname, ZipFile=make_zip({"lambda_function.py": SOURCE}))
    assert lam.publish_version(FunctionName=fname)["Version"] == "2"  # the same code again
    lam.update_function_configuration(FunctionName=fname, Timeout=9)
    assert lam.publish_version(FunctionName=fname)["Version"] == "3"


# -- cause 11: wording ---------------------------------------------------------------------------------------------


def test_concurrency_wording(lam: Any, fname: str) -> None:
    """LOCALSTACK (put_function_concurrency): a missing function is named with `:$LATEST`; a qualified name gets
    "This operation is permitted on Lambda functions only. ..."."""
    with pytest.raises(ClientError) as exc:
        lam.put_function_concurrency(FunctionName=fname, ReservedConcurrentExecutions=1)
    assert _error(exc) == ("ResourceNotFoundException", f"Function not found: {ARN_PREFIX}{fname}:$LATEST", 404)
    create_function(lam, fname, SOURCE)
    with pytest.raises(ClientError) as exc:
        lam.put_function_concurrency(FunctionName=f"{fname}:1", ReservedConcurrentExecutions=1)
    assert _error(exc) == (
        "InvalidParameterValueException",
        "This operation is permitted on Lambda functions only. Aliases and versions do not support this operation. "
        "Please specify either a function name or an unqualified function ARN.",
        400,
    )


def test_deprecated_runtime_wording(lam: Any, fname: str) -> None:
    """AWS's answer, as recorded in CloudFormation's error ("The runtime parameter of python3.7 is no longer supported
    for creating or updating AWS Lambda functions. We recommend you use the new runtime (python3.12) while creating
    or updating functions.", when python3.12 was the newest): the new runtime is the family's newest, here the
    newest id of botocore's model."""
    newest = max(
        (r for r in lambda_runtimes() if r.startswith("python3.")), key=lambda r: int(r.removeprefix("python3."))
    )
    with pytest.raises(ClientError) as exc:
        create_function(lam, fname, SOURCE, Runtime="python3.7")
    assert _error(exc) == (
        "InvalidParameterValueException",
        "The runtime parameter of python3.7 is no longer supported for creating or updating AWS Lambda functions. "
        f"We recommend you use the new runtime ({newest}) while creating or updating functions.",
        400,
    )


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b'"\xaf"', "Invalid UTF-8 start byte 0xaf"),
        (b'"\xe3-"', "Invalid UTF-8 middle byte 0x2d"),
    ],
)
def test_invalid_utf8_payload_wording(
    gateway: RunningGateway, lam: Any, fname: str, payload: bytes, words: str
) -> None:
    """AWS's answers as the AWS CLI printed them (InvalidRequestContentException): "Could not parse request body into
    json: Could not parse payload into json: Invalid UTF-8 start byte 0xaf\\n at [Source: REDACTED
    (`StreamReadFeature.INCLUDE_SOURCE_IN_LOCATION` disabled); line: 1, column: 3]", and "... Invalid UTF-8 middle
    byte 0x2d ... line: 1, column: 4]" (Jackson, AWS's parser, counts the column one past the bad byte)."""
    create_function(lam, fname, SOURCE)
    status, headers, raw = gateway.request("POST", f"/2015-03-31/functions/{fname}/invocations", payload)
    assert status == 400 and headers.get("x-amzn-ErrorType") == "InvalidRequestContentException"
    column = 3 if "start" in words else 4
    assert json.loads(raw) == {
        "Type": "User",
        "message": "Could not parse request body into json: Could not parse payload into json: "
        f"{words}\n at [Source: REDACTED (`StreamReadFeature.INCLUDE_SOURCE_IN_LOCATION` disabled); line: 1, "
        f"column: {column}]",
    }
