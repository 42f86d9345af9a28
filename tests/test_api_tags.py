"""TagResource, UntagResource, ListTags and tags on CreateFunction / GetFunction, with boto3 and raw HTTP."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import pytest
from botocore.exceptions import ClientError

from tests.conftest import GatewayFactory, RunningGateway, create_function

SOURCE = "def lambda_handler(event, context):\n    return event\n"
ACCOUNT_ARN = "arn:aws:lambda:us-east-1:123456789012"


def error_of(info: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    err = info.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture
def arn(lam: Any, fname: str) -> str:
    return str(create_function(lam, fname, SOURCE, Tags={"team": "core"})["FunctionArn"])


def test_tags_on_create_show_in_get_function_and_list_tags(lam: Any, arn: str, fname: str) -> None:
    assert lam.get_function(FunctionName=fname)["Tags"] == {"team": "core"}
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "core"}


def test_tag_untag_round_trip_keeps_the_revision(lam: Any, arn: str, fname: str) -> None:
    before = lam.get_function_configuration(FunctionName=fname)
    resp = lam.tag_resource(Resource=arn, Tags={"team": "platform", "env": "dev", "empty": ""})
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "platform", "env": "dev", "empty": ""}
    resp = lam.untag_resource(Resource=arn, TagKeys=["env", "not-there"])
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "platform", "empty": ""}
    assert lam.get_function(FunctionName=fname)["Tags"] == {"team": "platform", "empty": ""}
    after = lam.get_function_configuration(FunctionName=fname)
    assert after["RevisionId"] == before["RevisionId"]
    assert after["LastModified"] == before["LastModified"]


def test_tags_survive_a_configuration_update(lam: Any, arn: str, fname: str) -> None:
    lam.tag_resource(Resource=arn, Tags={"env": "dev"})
    lam.update_function_configuration(FunctionName=fname, Timeout=5)
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "core", "env": "dev"}


@pytest.mark.parametrize("qualifier", ["$LATEST", "1", "live"])
def test_a_version_or_alias_arn_is_refused(lam: Any, arn: str, qualifier: str) -> None:
    for call in (
        lambda: lam.tag_resource(Resource=f"{arn}:{qualifier}", Tags={"a": "b"}),
        lambda: lam.list_tags(Resource=f"{arn}:{qualifier}"),
        lambda: lam.untag_resource(Resource=f"{arn}:{qualifier}", TagKeys=["a"]),
    ):
        with pytest.raises(ClientError) as info:
            call()
        assert error_of(info) == (
            "InvalidParameterValueException",
            "Tags on function aliases and versions are not supported. Please specify a function ARN.",
            400,
        )


@pytest.mark.parametrize(
    "resource",
    [
        f"{ACCOUNT_ARN}:function:no-such-function-here",
        "arn:aws:lambda:eu-west-1:123456789012:function:{fname}",
        "arn:aws:lambda:us-east-1:999999999999:function:{fname}",
        f"{ACCOUNT_ARN}:event-source-mapping:a1b2c3d4-0000-4000-8000-000000000001",
    ],
)
def test_unknown_resource_is_not_found(lam: Any, arn: str, fname: str, resource: str) -> None:
    resource = resource.replace("{fname}", fname)
    with pytest.raises(ClientError) as info:
        lam.list_tags(Resource=resource)
    code, message, status = error_of(info)
    assert (code, status) == ("ResourceNotFoundException", 404)
    assert resource in message
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        lam.tag_resource(Resource=resource, Tags={"a": "b"})


@pytest.mark.parametrize("resource", ["just-a-name", "123456789012:function:f", "arn:aws:s3:::bucket"])
def test_a_resource_that_is_no_lambda_arn_fails_validation(lam: Any, resource: str) -> None:
    with pytest.raises(ClientError) as info:
        lam.list_tags(Resource=resource)
    code, message, status = error_of(info)
    assert (code, status) == ("ValidationException", 400)
    assert f"Value '{resource}' at 'resource' failed to satisfy constraint" in message


def test_tag_limits(lam: Any, arn: str) -> None:
    with pytest.raises(ClientError) as info:
        lam.tag_resource(Resource=arn, Tags={f"k{i}": "v" for i in range(51)})
    assert error_of(info)[0] == "InvalidParameterValueException"
    # the limit is on the function's tags: 49 more next to "team" is one too many
    with pytest.raises(ClientError) as info:
        lam.tag_resource(Resource=arn, Tags={f"k{i}": "v" for i in range(50)})
    assert error_of(info)[0] == "InvalidParameterValueException"
    lam.tag_resource(Resource=arn, Tags={f"k{i}": "v" for i in range(49)})
    assert len(lam.list_tags(Resource=arn)["Tags"]) == 50
    lam.tag_resource(Resource=arn, Tags={"k0": "replaced"})  # replacing a value adds no tag
    assert lam.list_tags(Resource=arn)["Tags"]["k0"] == "replaced"


@pytest.mark.parametrize(
    ("tags", "code"),
    [
        ({"k" * 129: "v"}, "ValidationException"),
        ({"k": "v" * 257}, "ValidationException"),
        ({"aws:owner": "me"}, "InvalidParameterValueException"),
        ({"AWS:owner": "me"}, "InvalidParameterValueException"),
    ],
)
def test_invalid_tags_are_refused_and_nothing_changes(lam: Any, arn: str, tags: dict[str, str], code: str) -> None:
    with pytest.raises(ClientError) as info:
        lam.tag_resource(Resource=arn, Tags={"fine": "yes", **tags})
    assert error_of(info)[0] == code
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "core"}


def test_edge_lengths_are_accepted(lam: Any, arn: str) -> None:
    tags = {"k" * 128: "v" * 256, "x": ""}
    lam.tag_resource(Resource=arn, Tags=tags)
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "core", **tags}


def test_untagging_a_reserved_key_is_refused(lam: Any, arn: str) -> None:
    with pytest.raises(ClientError) as info:
        lam.untag_resource(Resource=arn, TagKeys=["aws:cloudformation:stack-name"])
    assert error_of(info)[:2] == (
        "InvalidParameterValueException",
        "aws: prefixed tag key names are not allowed for external use.",
    )


def test_concurrent_tagging_loses_no_tag(gateway: RunningGateway, arn: str) -> None:
    clients = [gateway.client() for _ in range(8)]

    def tag(i: int) -> None:
        clients[i % len(clients)].tag_resource(Resource=arn, Tags={f"k{i}": str(i)})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(tag, range(40)))
    tags = clients[0].list_tags(Resource=arn)["Tags"]
    assert tags == {"team": "core", **{f"k{i}": str(i) for i in range(40)}}


def test_deleted_function_has_no_tags_left(lam: Any, fname: str) -> None:
    arn = create_function(lam, fname, SOURCE, Tags={"a": "1"})["FunctionArn"]
    lam.delete_function(FunctionName=fname)
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        lam.list_tags(Resource=arn)
    arn = create_function(lam, fname, SOURCE)["FunctionArn"]
    assert lam.list_tags(Resource=arn)["Tags"] == {}


# -- raw HTTP -------------------------------------------------------------------------------------------


def _path(arn: str) -> str:
    return "/2017-03-31/tags/" + quote(arn, safe="")


def test_raw_tag_resource_body_errors(gateway: RunningGateway, arn: str) -> None:
    json_headers = {"Content-Type": "application/json"}
    status, headers, body = gateway.request("POST", _path(arn), b"{}", json_headers)
    assert (status, headers["x-amzn-ErrorType"]) == (400, "ValidationException")
    assert "Value null at 'tags'" in json.loads(body)["message"]
    status, headers, _ = gateway.request("POST", _path(arn), b"{not json", json_headers)
    assert (status, headers["x-amzn-ErrorType"]) == (400, "InvalidRequestContentException")
    status, headers, _ = gateway.request("POST", _path(arn), b'{"Tags": {"a": 1}}', json_headers)
    assert (status, headers["x-amzn-ErrorType"]) == (400, "InvalidRequestContentException")
    status, headers, _ = gateway.request("POST", _path(arn), b'{"Tags": {}, "Extra": 1}', json_headers)
    assert (status, headers["x-amzn-ErrorType"]) == (400, "InvalidRequestContentException")


def test_raw_untag_without_keys_fails_validation(gateway: RunningGateway, arn: str) -> None:
    status, headers, body = gateway.request("DELETE", _path(arn))
    assert (status, headers["x-amzn-ErrorType"]) == (400, "ValidationException")
    assert "tagKeys" in json.loads(body)["message"]


def test_raw_list_tags_accepts_an_unencoded_arn(gateway: RunningGateway, arn: str) -> None:
    status, _, body = gateway.request("GET", "/2017-03-31/tags/" + arn)
    assert status == 200
    assert json.loads(body) == {"Tags": {"team": "core"}}


# -- persistence ------------------------------------------------------------------------------------------


def test_tags_survive_a_restart(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    client = gw.client()
    arn = create_function(client, "tagged", SOURCE)["FunctionArn"]
    client.tag_resource(Resource=arn, Tags={"kept": "yes"})
    gw.restart()
    assert gw.client().list_tags(Resource=arn)["Tags"] == {"kept": "yes"}
