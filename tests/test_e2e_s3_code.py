"""Function code and layers from S3 (`Code.S3Bucket/S3Key/S3ObjectVersion`, `Content.S3*`), through a live gateway
and a real S3-compatible server: moto's server mode (tests/servers.py), with versioning and, in a second instance,
its credential checks. boto3 and the AWS CLI are the clients.

Lambda's answers pinned here, and where they come from:
- an S3 error: InvalidParameterValueException (400) "Error occurred while GetObject. S3 Error Code: <S3's code>. S3
  Error Message: <S3's message>" — AWS's answers recorded in public issues (CloudFormation and CloudTrail show
  "Error occurred while GetObject. S3 Error Code: NoSuchKey. S3 Error Message: The specified key does not exist.",
  "... NoSuchBucket. S3 Error Message: The specified bucket does not exist"; serverless/serverless#13208,
  aws-samples/aws-account-vending-machine#23, aws-cloudformation/rain#176) and moto's own Lambda (its
  test_lambda.py asserts the NoSuchBucket wording);
- the model's constraints on S3Bucket (3..63, `[0-9A-Za-z\\.\\-_]*(?<!\\.)`), S3Key and S3ObjectVersion (1..1024),
  S3ObjectStorageMode (COPY, REFERENCE): botocore's lambda/2015-03-31 service model;
- an S3 package is bounded by the unzipped limit, not the 50 MB of a direct upload (AWS's AccountLimit
  documentation: CodeSizeZipped is "the maximum size of a deployment package when it's uploaded directly to
  Lambda. Use Amazon S3 for larger files."); the refusal is Lambda's unzipped-size wording.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import shutil
import socket
import struct
import threading
import time
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import HANDLER, ROLE, RUNTIME, GatewayFactory, RunningGateway, invoke_json, make_zip
from tests.servers import MotoServer
from tests.test_api_cli import aws

KEY_ID = "AKIAGATEWAYS3TESTKEY"
SECRET = "gateway-s3-secret-that-must-never-leak"
LIMIT = 262_144_000
GET_OBJECT = "Error occurred while GetObject."
NO_SUCH_KEY = "S3 Error Code: NoSuchKey. S3 Error Message: The specified key does not exist."


def _source(tag: str) -> bytes:
    return make_zip({"lambda_function.py": f"def lambda_handler(event, context):\n    return {{'tag': {tag!r}}}\n"})


def _s3_env(url: str, **extra: str) -> dict[str, str]:
    return {
        "GATEWAY_S3_ENDPOINT": url,
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_EC2_METADATA_DISABLED": "true",
        **extra,
    }


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, moto_server: MotoServer) -> Iterator[RunningGateway]:
    """A gateway fetching packages from the session's moto server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "AWS_"))}
    env |= {"GATEWAY_LOG_LEVEL": "INFO"} | _s3_env(moto_server.url)
    gateway = RunningGateway(tmp_path_factory.mktemp("s3code") / "data", env).start()
    yield gateway
    gateway.stop()


@pytest.fixture
def lam(gw: RunningGateway) -> Any:
    return gw.client(parameter_validation=False)  # the gateway judges, not boto3


@pytest.fixture
def bucket(moto_server: MotoServer) -> str:
    name = f"code-{uuid.uuid4().hex[:12]}"
    moto_server.client("s3").create_bucket(Bucket=name)
    return name


def _fname() -> str:
    return f"s3fn-{uuid.uuid4().hex[:10]}"


def _create(lam: Any, name: str, code: dict[str, Any], **extra: Any) -> dict[str, Any]:
    answer: dict[str, Any] = lam.create_function(
        FunctionName=name, Runtime=RUNTIME, Role=ROLE, Handler=HANDLER, Code=code, **extra
    )
    return answer


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    err = exc.value.response["Error"]
    return err["Code"], err["Message"], exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


def _sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


# -- success paths -------------------------------------------------------------------------------------------------


def test_create_from_s3_runs_and_get_function_points_at_the_gateway(
    gw: RunningGateway, lam: Any, moto_server: MotoServer, bucket: str
) -> None:
    package = _source("from-s3")
    moto_server.client("s3").put_object(Bucket=bucket, Key="builds/app.zip", Body=package)
    name = _fname()
    created = _create(lam, name, {"S3Bucket": bucket, "S3Key": "builds/app.zip"})
    assert (created["CodeSha256"], created["CodeSize"]) == (_sha(package), len(package))
    assert invoke_json(lam, name)[1] == {"tag": "from-s3"}
    code = lam.get_function(FunctionName=name)["Code"]
    assert code["RepositoryType"] == "S3"
    assert code["Location"].startswith(gw.url + "/")  # the gateway's own copy, not the bucket
    with urllib.request.urlopen(code["Location"], timeout=10) as resp:
        assert resp.read() == package


def test_versioned_objects_and_update_function_code(lam: Any, moto_server: MotoServer, bucket: str) -> None:
    s3 = moto_server.client("s3")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=bucket, Key="app.zip", Body=_source("v1"))["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="app.zip", Body=_source("v2"))["VersionId"]
    assert v1 != v2
    name = _fname()
    _create(lam, name, {"S3Bucket": bucket, "S3Key": "app.zip", "S3ObjectVersion": v1})
    assert invoke_json(lam, name)[1] == {"tag": "v1"}  # the version named, not the newest
    lam.update_function_code(FunctionName=name, S3Bucket=bucket, S3Key="app.zip")
    assert invoke_json(lam, name)[1] == {"tag": "v2"}  # no version: the newest
    published = lam.update_function_code(
        FunctionName=name, S3Bucket=bucket, S3Key="app.zip", S3ObjectVersion=v1, Publish=True
    )
    assert published["CodeSha256"] == _sha(_source("v1"))
    assert invoke_json(lam, name, Qualifier=published["Version"])[1] == {"tag": "v1"}
    dry = lam.update_function_code(FunctionName=name, S3Bucket=bucket, S3Key="app.zip", S3ObjectVersion=v2, DryRun=True)
    assert dry["CodeSha256"] == _sha(_source("v2"))
    assert invoke_json(lam, name)[1] == {"tag": "v1"}  # a dry run changes nothing


def test_layer_from_s3(lam: Any, moto_server: MotoServer, bucket: str) -> None:
    layer_zip = make_zip({"python/s3_layer_mod.py": "VALUE = 'layer-from-s3'\n"})
    s3 = moto_server.client("s3")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    version = s3.put_object(Bucket=bucket, Key="layers/l.zip", Body=layer_zip)["VersionId"]
    s3.put_object(Bucket=bucket, Key="layers/l.zip", Body=b"a later object that is not a zip")
    lname = f"s3layer-{uuid.uuid4().hex[:8]}"
    published = lam.publish_layer_version(
        LayerName=lname,
        Content={"S3Bucket": bucket, "S3Key": "layers/l.zip", "S3ObjectVersion": version},
        CompatibleRuntimes=[RUNTIME],
    )
    assert (published["Content"]["CodeSha256"], published["Content"]["CodeSize"]) == (_sha(layer_zip), len(layer_zip))
    with urllib.request.urlopen(published["Content"]["Location"], timeout=10) as resp:
        assert resp.read() == layer_zip
    name = _fname()
    source = "import s3_layer_mod\ndef lambda_handler(event, context):\n    return s3_layer_mod.VALUE\n"
    _create(lam, name, {"ZipFile": make_zip({"lambda_function.py": source})}, Layers=[published["LayerVersionArn"]])
    assert invoke_json(lam, name)[1] == "layer-from-s3"


def test_s3_package_may_exceed_the_direct_upload_limit(lam: Any, moto_server: MotoServer, bucket: str) -> None:
    """51 MiB of incompressible data: over the 50 MB a request may carry, under the unzipped limit."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("lambda_function.py", "def lambda_handler(event, context):\n    return 'big'\n")
        zf.writestr("blob.bin", os.urandom(51 * 1024 * 1024))
    package = buf.getvalue()
    assert len(package) > 52_428_800
    moto_server.client("s3").put_object(Bucket=bucket, Key="big.zip", Body=package)
    name = _fname()
    assert _create(lam, name, {"S3Bucket": bucket, "S3Key": "big.zip"})["CodeSize"] == len(package)
    assert invoke_json(lam, name)[1] == "big"


@pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI (`aws`) is not on PATH")
def test_aws_cli_create_function_from_s3(gw: RunningGateway, moto_server: MotoServer, bucket: str) -> None:
    moto_server.client("s3").put_object(Bucket=bucket, Key="cli.zip", Body=_source("cli"))
    name = _fname()
    done = aws(gw, "create-function", "--function-name", name, "--runtime", RUNTIME, "--role", ROLE, "--handler",
               HANDLER, "--code", f"S3Bucket={bucket},S3Key=cli.zip")  # fmt: skip
    assert json.loads(done.stdout)["CodeSha256"] == _sha(_source("cli"))
    assert invoke_json(gw.client(), name)[1] == {"tag": "cli"}


# -- Lambda's errors -----------------------------------------------------------------------------------------------


def test_missing_bucket_key_and_version(lam: Any, moto_server: MotoServer, bucket: str) -> None:
    s3 = moto_server.client("s3")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="app.zip", Body=_source("x"))
    cases = [
        ({"S3Bucket": f"no-such-{uuid.uuid4().hex[:8]}", "S3Key": "app.zip"},
         "S3 Error Code: NoSuchBucket. S3 Error Message: The specified bucket does not exist"),
        ({"S3Bucket": bucket, "S3Key": "missing.zip"},
         NO_SUCH_KEY),
        ({"S3Bucket": bucket, "S3Key": "app.zip", "S3ObjectVersion": "not-a-version"},
         "S3 Error Code: NoSuchVersion. S3 Error Message: The specified version does not exist."),
    ]  # fmt: skip
    for code, wording in cases:
        name = _fname()
        want = ("InvalidParameterValueException", f"{GET_OBJECT} {wording}", 400)
        with pytest.raises(ClientError) as exc:
            _create(lam, name, code)
        assert _error(exc) == want
        with pytest.raises(ClientError) as gone:
            lam.get_function(FunctionName=name)
        assert _error(gone)[0] == "ResourceNotFoundException"  # nothing was created
        with pytest.raises(ClientError) as exc:
            lam.publish_layer_version(LayerName=f"l-{uuid.uuid4().hex[:8]}", Content=code)
        assert _error(exc) == want
    name = _fname()
    _create(lam, name, {"S3Bucket": bucket, "S3Key": "app.zip"})
    with pytest.raises(ClientError) as exc:
        lam.update_function_code(FunctionName=name, S3Bucket=bucket, S3Key="missing.zip")
    assert _error(exc) == ("InvalidParameterValueException", f"{GET_OBJECT} {cases[1][1]}", 400)
    assert invoke_json(lam, name)[1] == {"tag": "x"}  # the old code stays


def test_not_a_zip_in_s3(lam: Any, moto_server: MotoServer, bucket: str) -> None:
    moto_server.client("s3").put_object(Bucket=bucket, Key="notes.txt", Body=b"plain text")
    with pytest.raises(ClientError) as exc:
        _create(lam, _fname(), {"S3Bucket": bucket, "S3Key": "notes.txt"})
    assert _error(exc) == (
        "InvalidParameterValueException",
        "Could not unzip uploaded file. Please check your file, then try to upload again.",
        400,
    )


def _validation(member: str, value: str, constraint: str) -> tuple[str, str, int]:
    return (
        "ValidationException",
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {constraint}",
        400,
    )


PATTERN = "Member must satisfy regular expression pattern: [0-9A-Za-z\\.\\-_]*(?<!\\.)"
SHAPES: list[tuple[dict[str, Any], str, str, str]] = [
    ({"S3Bucket": "ab", "S3Key": "k"}, "s3Bucket", "ab", "Member must have length greater than or equal to 3"),
    ({"S3Bucket": "b" * 64, "S3Key": "k"}, "s3Bucket", "b" * 64, "Member must have length less than or equal to 63"),
    ({"S3Bucket": "bkt/../other", "S3Key": "k"}, "s3Bucket", "bkt/../other", PATTERN),
    ({"S3Bucket": "evil.com:80@x", "S3Key": "k"}, "s3Bucket", "evil.com:80@x", PATTERN),
    ({"S3Bucket": "bucket.", "S3Key": "k"}, "s3Bucket", "bucket.", PATTERN),
    ({"S3Bucket": "bkt", "S3Key": ""}, "s3Key", "", "Member must have length greater than or equal to 1"),
    ({"S3Bucket": "bkt", "S3Key": "k" * 1025}, "s3Key", "k" * 1025,
     "Member must have length less than or equal to 1024"),
    ({"S3Bucket": "bkt", "S3Key": "k", "S3ObjectStorageMode": "MOVE"}, "s3ObjectStorageMode", "MOVE",
     "Member must satisfy enum value set: [COPY, REFERENCE]"),
]  # fmt: skip


@pytest.mark.parametrize(("code", "member", "value", "constraint"), SHAPES)
def test_model_constraints(lam: Any, code: dict[str, Any], member: str, value: str, constraint: str) -> None:
    """botocore's model: S3Bucket, S3Key, S3ObjectStorageMode; member names as CreateFunction, UpdateFunctionCode and
    PublishLayerVersion report them (code.s3Bucket, s3Bucket, content.s3Bucket)."""
    with pytest.raises(ClientError) as exc:
        _create(lam, _fname(), code)
    assert _error(exc) == _validation(f"code.{member}", value, constraint)
    name = _fname()
    _create(lam, name, {"ZipFile": _source("z")})
    with pytest.raises(ClientError) as exc:
        lam.update_function_code(FunctionName=name, **code)
    assert _error(exc) == _validation(member, value, constraint)
    with pytest.raises(ClientError) as exc:
        lam.publish_layer_version(LayerName="l", Content=code)
    assert _error(exc) == _validation(f"content.{member}", value, constraint)


def test_sources_together_or_incomplete(lam: Any, bucket: str) -> None:
    """A ZipFile with an S3 member: "Please do not provide other FunctionCode parameters when providing a ZipFile."
    (asserted against AWS by an AWS SDK for Java integration test; CloudFormation linters quote it as the create's
    failure). No source: "Please provide a source for function code." (the wording the gateway already pinned). An S3
    member without both bucket and key: another emulator's wording (not found in a recorded AWS answer)."""
    both = ("InvalidParameterValueException", "Please do not provide other FunctionCode parameters when providing a "
            "ZipFile.", 400)  # fmt: skip
    none = ("InvalidParameterValueException", "Please provide a source for function code.", 400)
    half = ("InvalidParameterValueException", "S3 Bucket and Key are required for uploading with S3 parameters.", 400)
    for code, want in [
        ({"ZipFile": _source("z"), "S3Bucket": bucket, "S3Key": "k"}, both),
        ({"ZipFile": _source("z"), "S3ObjectVersion": "1"}, both),
        ({}, none),
        ({"S3Bucket": bucket}, half),
        ({"S3Key": "app.zip"}, half),
        ({"S3ObjectVersion": "1"}, half),
    ]:
        with pytest.raises(ClientError) as exc:
            _create(lam, _fname(), code)
        assert _error(exc) == want
    layer_both = ("InvalidParameterValueException", "Please do not provide other Content parameters when providing a "
                  "ZipFile.", 400)  # fmt: skip
    layer_none = ("InvalidParameterValueException", "Please provide a source for layer content.", 400)
    for content, want in [({"ZipFile": _source("z"), "S3Bucket": bucket, "S3Key": "k"}, layer_both), ({}, layer_none)]:
        with pytest.raises(ClientError) as exc:
            lam.publish_layer_version(LayerName="l", Content=content)
        assert _error(exc) == want  # a layer has no FunctionCode: its own wording


def test_storage_mode_is_accepted(lam: Any, moto_server: MotoServer, bucket: str) -> None:
    """REFERENCE is taken as COPY: the gateway keeps its own copy either way (a later change of the object does not
    change the function)."""
    moto_server.client("s3").put_object(Bucket=bucket, Key="app.zip", Body=_source("ref"))
    name = _fname()
    _create(lam, name, {"S3Bucket": bucket, "S3Key": "app.zip", "S3ObjectStorageMode": "REFERENCE"})
    moto_server.client("s3").put_object(Bucket=bucket, Key="app.zip", Body=_source("changed"))
    assert invoke_json(lam, name)[1] == {"tag": "ref"}


# -- an attacker's view --------------------------------------------------------------------------------------------


def test_keys_are_sent_as_given_and_never_leave_the_bucket(lam: Any, moto_server: MotoServer, bucket: str) -> None:
    """A key with dot segments, a query, a fragment or a host in it names an object of the bucket, never another
    bucket or another endpoint."""
    s3 = moto_server.client("s3")
    other = f"other-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=other)
    s3.put_object(Bucket=other, Key="secret.zip", Body=_source("someone-else"))
    for key in ["../" + other + "/secret.zip", "./../" + other + "/secret.zip", "%2e%2e/" + other + "/secret.zip",
                "a/../../" + other + "/secret.zip", "?x=/" + other + "/secret.zip", "#/../" + other + "/secret.zip",
                "@127.0.0.1:1/secret.zip", "//" + other + "/secret.zip"]:  # fmt: skip
        with pytest.raises(ClientError) as exc:
            _create(lam, _fname(), {"S3Bucket": bucket, "S3Key": key})
        assert (
            _error(exc)[1]
            == f"{GET_OBJECT} S3 Error Code: NoSuchKey. S3 Error Message: The specified key does not exist."
        )
    odd = "../" + other + "/secret.zip?versionId=1#x y"
    s3.put_object(Bucket=bucket, Key=odd, Body=_source("odd-key"))  # such a key exists in this bucket: it is the one
    name = _fname()
    _create(lam, name, {"S3Bucket": bucket, "S3Key": odd})
    assert invoke_json(lam, name)[1] == {"tag": "odd-key"}


def test_access_denied_and_unknown_keys_never_show_credentials(gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    """moto checking credentials: keys without a policy get S3's AccessDenied (Lambda's AccessDeniedException), unknown
    keys InvalidAccessKeyId (the gateway's own credentials: ServiceException); the answers carry S3's words, never the
    key id nor the secret (neither does the gateway's log)."""
    server = MotoServer(tmp_path / "moto-auth.log", environ={"INITIAL_NO_AUTH_ACTION_COUNT": "3"}).start()
    try:
        iam = server.client("iam")
        iam.create_user(UserName="gateway")
        key = iam.create_access_key(UserName="gateway")["AccessKey"]
        server.client("s3").create_bucket(Bucket="guarded")  # the third and last request moto lets through
        denied = (
            "Your access has been denied by S3, please make sure your request credentials have permission to GetObject "
            "for guarded/app.zip. S3 Error Code: AccessDenied. S3 Error Message: Access Denied"
        )  # AWS's answer (binxio/cfn-lb-ip-address-provider#4, iann0036/amazon-connect-cfn#4)
        unknown = (
            f"{GET_OBJECT} S3 Error Code: InvalidAccessKeyId. S3 Error Message: The AWS Access Key Id you provided "
            "does not exist in our records."
        )
        cases = [
            ((key["AccessKeyId"], key["SecretAccessKey"]), ("AccessDeniedException", denied, 403)),
            ((KEY_ID, SECRET), ("ServiceException", unknown, 500)),  # the gateway's credentials: its fault
        ]
        for (key_id, secret), answer in cases:
            gw = gateway_factory(env=_s3_env(server.url, AWS_ACCESS_KEY_ID=key_id, AWS_SECRET_ACCESS_KEY=secret))
            lam = gw.client()
            with pytest.raises(ClientError) as exc:
                _create(lam, _fname(), {"S3Bucket": "guarded", "S3Key": "app.zip"})
            assert _error(exc) == answer
            raw = json.dumps(exc.value.response)
            assert key_id not in raw and secret not in raw
            gw.stop()
            assert key_id not in gw.log() and secret not in gw.log()
    finally:
        server.stop()


class FakeEndpoint:
    """A TCP server on a free loopback port that answers every request with `respond(sock)` (a misbehaving S3: the
    only way to have a slow or endless one), in a thread of its own; `stop` closes it and its connections."""

    def __init__(self, respond: Callable[[socket.socket], None]) -> None:
        self.respond = respond
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.sent = 0
        self.stopping = threading.Event()
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.1)  # to see `stopping`: closing a socket does not wake an accept() blocked on it
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            self.conns.append(conn)
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)  # the request head (GetObject has no body)
            self.respond(conn)
        except OSError:
            pass

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        self.sent += len(data)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.listener.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def fake() -> Iterator[Callable[[Callable[[FakeEndpoint, socket.socket], None]], FakeEndpoint]]:
    made: list[FakeEndpoint] = []

    def start(respond: Callable[[FakeEndpoint, socket.socket], None]) -> FakeEndpoint:
        endpoint: FakeEndpoint
        endpoint = FakeEndpoint(lambda conn: respond(endpoint, conn))
        made.append(endpoint)
        return endpoint

    yield start
    for endpoint in made:
        endpoint.stop()


def _silent(endpoint: FakeEndpoint, conn: socket.socket) -> None:
    endpoint.stopping.wait(60)


def _trickle(endpoint: FakeEndpoint, conn: socket.socket) -> None:
    endpoint.send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
    while not endpoint.stopping.wait(0.3):
        endpoint.send(conn, b"x")


def _declared_huge(endpoint: FakeEndpoint, conn: socket.socket) -> None:
    endpoint.send(conn, f"HTTP/1.1 200 OK\r\nContent-Length: {LIMIT + 1}\r\n\r\n".encode())
    endpoint.stopping.wait(60)


def _stall(endpoint: FakeEndpoint, conn: socket.socket) -> None:
    endpoint.send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")  # a few bytes, then silence
    endpoint.stopping.wait(60)


def _reset(endpoint: FakeEndpoint, conn: socket.socket) -> None:
    endpoint.send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
    conn.close()


def _moved(endpoint: FakeEndpoint, conn: socket.socket) -> None:
    body = (
        b"<Error><Code>PermanentRedirect</Code><Message>moved</Message><Endpoint>elsewhere.example</Endpoint></Error>"
    )
    head = f"HTTP/1.1 301 Moved Permanently\r\nx-amz-bucket-region: eu-west-1\r\nContent-Length: {len(body)}\r\n\r\n"
    endpoint.send(conn, head.encode() + body)
    endpoint.stopping.wait(60)


def _endless(endpoint: FakeEndpoint, conn: socket.socket) -> None:
    endpoint.send(conn, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")  # a body that ends when the server closes
    piece = b"\0" * (1 << 20)
    while not endpoint.stopping.is_set():
        endpoint.send(conn, piece)


@pytest.mark.parametrize(
    ("respond", "status", "message"),
    [
        (_silent, 500, "Error occurred while GetObject. S3 could not be reached: Read timeout on endpoint URL: "),
        (_trickle, 500, "Error occurred while GetObject. S3 did not send the object within 2 seconds."),
        (_stall, 500, "Error occurred while GetObject. S3 did not send the object within 2 seconds."),
        (_reset, 500, "Error occurred while GetObject. S3 could not be reached: "),
        (
            _moved,
            400,
            "Error occurred while GetObject. S3 Error Code: PermanentRedirect. S3 Error Message: The bucket "
            "is in this region: eu-west-1. Please use this region to retry the request",
        ),
        (_declared_huge, 400, f"Unzipped size must be smaller than {LIMIT} bytes"),
        (_endless, 400, f"Unzipped size must be smaller than {LIMIT} bytes"),
    ],
    ids=["silent", "trickle", "stall", "reset", "moved", "declared-huge", "endless"],
)
def test_slow_or_huge_endpoint(
    gateway_factory: GatewayFactory,
    fake: Callable[[Callable[[FakeEndpoint, socket.socket], None]], FakeEndpoint],
    respond: Callable[[FakeEndpoint, socket.socket], None],
    status: int,
    message: str,
) -> None:
    """A server that never answers, trickles a byte at a time, announces or sends more than the limit: the fetch
    ends within about GATEWAY_S3_TIMEOUT, reading stops one piece past the limit, and the gateway answers other
    calls meanwhile."""
    endpoint = fake(respond)
    # reading 250 MB in 2 s is too tight on a busy shared machine: the limit, not the clock, must stop `endless`
    timeout = "10" if respond is _endless else "2"
    gw = gateway_factory(env=_s3_env(endpoint.url, GATEWAY_S3_TIMEOUT=timeout))
    lam = gw.client()
    outcome: dict[str, Any] = {}

    def create() -> None:
        try:
            _create(lam, _fname(), {"S3Bucket": "bucket", "S3Key": "app.zip"})
        except ClientError as exc:
            err = exc.response["Error"]
            outcome["error"] = (err["Code"], err["Message"], exc.response["ResponseMetadata"]["HTTPStatusCode"])

    started = time.monotonic()
    worker = threading.Thread(target=create)
    worker.start()
    time.sleep(0.5)
    assert "Functions" in gw.client().list_functions()  # the loop is free while the fetch waits
    worker.join(60)
    elapsed = time.monotonic() - started
    code, got, got_status = outcome["error"]
    assert (code, got_status) == ("ServiceException" if status == 500 else "InvalidParameterValueException", status)
    assert got.startswith(message)
    assert elapsed < 15
    if respond is _moved:
        assert len(endpoint.conns) == 1  # not followed, not retried
    if respond is _endless:
        assert endpoint.sent < LIMIT + 64 * 1024 * 1024  # stopped soon after the limit (what the socket buffers held)


def test_unreachable_endpoint(gateway_factory: GatewayFactory) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    gw = gateway_factory(env=_s3_env(f"http://127.0.0.1:{port}"))
    with pytest.raises(ClientError) as exc:
        _create(gw.client(), _fname(), {"S3Bucket": "bucket", "S3Key": "app.zip"})
    code, message, status = _error(exc)
    assert (code, status) == ("ServiceException", 500)
    assert message == (
        f"{GET_OBJECT} S3 could not be reached: Could not connect to the endpoint URL: "
        f'"http://127.0.0.1:{port}/bucket/app.zip"'
    )


def test_aws_s3_without_credentials(gateway_factory: GatewayFactory) -> None:
    """No endpoint: AWS S3 of the gateway's region, which placeholders never sign for: without credentials, a
    ServiceException before any request."""
    harmless = ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CA_BUNDLE", "AWS_EC2_METADATA_DISABLED")
    found = sorted(k for k in os.environ if k.startswith("AWS_") and k not in harmless)
    if found:
        pytest.skip(f"this machine's AWS_* variables could give the gateway credentials: {found}")
    env = {
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    gw = gateway_factory(env=env)
    with pytest.raises(ClientError) as exc:
        _create(gw.client(), _fname(), {"S3Bucket": "bucket", "S3Key": "app.zip"})
    assert _error(exc) == (
        "ServiceException",
        f"{GET_OBJECT} No AWS credentials are configured to reach S3 at https://s3.us-east-1.amazonaws.com.",
        500,
    )


def test_slow_fetches_do_not_hold_up_other_deployments(
    gateway_factory: GatewayFactory,
    fake: Callable[[Callable[[FakeEndpoint, socket.socket], None]], FakeEndpoint],
) -> None:
    """Eight creates from an endpoint that never answers: two fetch, the others wait their turn, all within the
    fetch's deadline, which starts with the request (a queued create fails when it passes, never waits for turns);
    an inline create and an invoke meanwhile finish before the first of them gives up."""
    endpoint = fake(_silent)
    gw = gateway_factory(env=_s3_env(endpoint.url, GATEWAY_S3_TIMEOUT="4"))
    ended: list[float] = []
    started = time.monotonic()
    codes: list[str] = []

    def slow() -> None:
        try:
            _create(gw.client(), _fname(), {"S3Bucket": "bucket", "S3Key": "app.zip"})
        except ClientError as exc:
            codes.append(exc.response["Error"]["Code"])
        ended.append(time.monotonic())

    workers = [threading.Thread(target=slow) for _ in range(8)]
    for worker in workers:
        worker.start()
    time.sleep(0.5)
    lam = gw.client()
    name = _fname()
    _create(lam, name, {"ZipFile": _source("inline")})
    assert invoke_json(lam, name)[1] == {"tag": "inline"}
    done_inline = time.monotonic()
    for worker in workers:
        worker.join(90)
    assert codes == ["ServiceException"] * 8
    assert done_inline < min(ended)
    assert max(ended) - started < 8  # about 4 s for every one of them, not four turns of 4 s


def test_stopping_does_not_wait_for_fetches_in_flight(
    gateway_factory: GatewayFactory,
    fake: Callable[[Callable[[FakeEndpoint, socket.socket], None]], FakeEndpoint],
) -> None:
    """Creates waiting for a silent endpoint with a long GATEWAY_S3_TIMEOUT: the gateway, told to stop, exits after
    its drain, not when the fetches time out."""
    endpoint = fake(_silent)
    gw = gateway_factory(env=_s3_env(endpoint.url, GATEWAY_S3_TIMEOUT="60", GATEWAY_DRAIN_TIMEOUT="1"))
    lam = gw.client()

    def slow() -> None:
        with contextlib.suppress(Exception):  # the gateway goes away under it
            _create(lam, _fname(), {"S3Bucket": "bucket", "S3Key": "app.zip"})

    workers = [threading.Thread(target=slow, daemon=True) for _ in range(4)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 10
    while len(endpoint.conns) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(endpoint.conns) == 2  # two fetches at a time; the others wait their turn
    started = time.monotonic()
    assert gw.stop(timeout=40) == 0
    assert time.monotonic() - started < 15
