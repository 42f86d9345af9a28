"""Unit tests of gateway/api/functions/packages.py: AWS's S3 endpoints, how S3's answers become Lambda's errors
("Error occurred while GetObject. S3 Error Code: NoSuchKey. S3 Error Message: The specified key does not exist.":
AWS's answer as CloudFormation and CloudTrail record it, e.g. serverless/serverless#13208), scrubbing, and the
bounded read. The live paths (moto's S3, slow and huge endpoints) are in tests/test_e2e_s3_code.py."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from typing import Any

import pytest
import urllib3.exceptions

from gateway.api.functions import functions
from gateway.api.functions.code_params import CodeSource
from gateway.api.functions.packages import FETCHES_AT_ONCE, S3Packages, aws_s3_url
from gateway.errors import AccessDeniedException, InvalidParameterValueException, ServiceException
from gateway.settings import Settings


def test_addressing_style() -> None:
    """Path-style for a compatible server; an AWS host (given or the default) is left to botocore."""
    assert S3Packages("http://127.0.0.1:9000", "us-east-1", 5.0)._addressing == "path"
    assert S3Packages("https://s3.eu-west-1.amazonaws.com", "eu-west-1", 5.0)._addressing is None
    assert S3Packages(None, "eu-west-1", 5.0)._addressing is None


def test_aws_endpoints() -> None:
    assert aws_s3_url("us-east-1") == "https://s3.us-east-1.amazonaws.com"
    assert aws_s3_url("eu-central-1") == "https://s3.eu-central-1.amazonaws.com"
    assert aws_s3_url("cn-north-1") == "https://s3.cn-north-1.amazonaws.com.cn"


def _answer(code: str, message: str, status: int) -> dict[str, Any]:
    return {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}


@pytest.fixture
def packages(monkeypatch: pytest.MonkeyPatch) -> S3Packages:
    """A fetcher whose client was made (no request is sent) with known credentials, so that they can be scrubbed."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNITTESTKEYID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit-test-secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    fetcher = S3Packages("http://127.0.0.1:1", "us-east-1", 5.0)
    fetcher._client_for_fetch()
    return fetcher


@pytest.mark.parametrize(
    ("code", "message", "status", "error"),
    [
        ("NoSuchKey", "The specified key does not exist.", 404, InvalidParameterValueException),
        ("NoSuchBucket", "The specified bucket does not exist", 404, InvalidParameterValueException),
        ("InvalidArgument", "Invalid version id specified", 400, InvalidParameterValueException),
        ("InternalError", "We encountered an internal error. Please try again.", 500, ServiceException),
        ("SlowDown", "Please reduce your request rate.", 503, ServiceException),
        # the gateway's own credentials or clock, not the caller's request: the gateway's fault
        (
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
            403,
            ServiceException,
        ),
        ("SignatureDoesNotMatch", "The request signature we calculated does not match", 403, ServiceException),
        ("ExpiredToken", "The provided token has expired.", 400, ServiceException),
        (
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
            403,
            ServiceException,
        ),
    ],
)
def test_s3_errors_in_lambdas_words(packages: S3Packages, code: str, message: str, status: int, error: type) -> None:
    got = packages._s3_error(_answer(code, message, status), "bucket", "app.zip")
    assert type(got) is error
    assert got.message == f"Error occurred while GetObject. S3 Error Code: {code}. S3 Error Message: {message}"


def test_access_denied_in_lambdas_words(packages: S3Packages) -> None:
    """AWS's answer (403 AccessDeniedException, recorded in binxio/cfn-lb-ip-address-provider#4 and
    iann0036/amazon-connect-cfn#4), naming the bucket and key."""
    got = packages._s3_error(_answer("AccessDenied", "Access Denied", 403), "my-bucket", "builds/app.zip")
    assert type(got) is AccessDeniedException and got.status == 403
    assert got.message == (
        "Your access has been denied by S3, please make sure your request credentials have permission to GetObject "
        "for my-bucket/builds/app.zip. S3 Error Code: AccessDenied. S3 Error Message: Access Denied"
    )


def test_s3_errors_are_scrubbed_and_cut(packages: S3Packages) -> None:
    secrets = "key AKIAUNITTESTKEYID secret unit-test-secret " + "x" * 999
    got = packages._s3_error(_answer("NoSuchKey", secrets, 404), "bucket", "app.zip")
    assert "AKIAUNITTESTKEYID" not in got.message and "unit-test-secret" not in got.message
    assert len(got.message) < 600


def test_an_error_without_a_body(packages: S3Packages) -> None:
    got = packages._s3_error({"Error": {}, "ResponseMetadata": {"HTTPStatusCode": 404}}, "bucket", "app.zip")
    assert got.message == "Error occurred while GetObject. S3 Error Code: 404. S3 Error Message: "


class _Raw(io.BytesIO):
    """urllib3's response as far as `_read` uses it: read1 returns what one receive would."""

    def read1(self, size: int = -1) -> bytes:
        return super().read1(min(size, 3) if size > 0 else 3)


class _Body:
    def __init__(self, data: bytes) -> None:
        self._raw_stream = _Raw(data)
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_bounded_read(packages: S3Packages) -> None:
    body = _Body(b"0123456789")
    assert packages._read({"Body": body, "ContentLength": 10}, 10, float("inf")) == b"0123456789"
    assert body.closed
    with pytest.raises(InvalidParameterValueException, match=r"^Unzipped size must be smaller than 9 bytes$"):
        packages._read({"Body": _Body(b"0123456789")}, 9, float("inf"))  # no length announced: read, then cut off
    with pytest.raises(InvalidParameterValueException, match=r"^Unzipped size must be smaller than 9 bytes$"):
        packages._read({"Body": _Body(b""), "ContentLength": 10}, 9, float("inf"))  # announced: refused unread
    with pytest.raises(ServiceException, match="did not send the object within 5 seconds"):
        packages._read({"Body": _Body(b"0123456789")}, 100, 0.0)
    with pytest.raises(ServiceException, match="S3 sent 4 of the object's 10 bytes"):
        packages._read({"Body": _Body(b"0123"), "ContentLength": 10}, 100, float("inf"))


def test_packages_in_memory_are_bounded_until_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many S3 creates at once: a package fetched holds its endpoint's slot until it is stored, so no more than
    FETCHES_AT_ONCE packages wait in memory for a slow extraction (not one per create)."""
    lock = threading.Lock()
    alive = peak = 0

    def fetch(self: S3Packages, *args: Any, **kwargs: Any) -> bytes:
        nonlocal alive, peak
        time.sleep(0.01)  # a fast S3
        with lock:
            alive += 1
            peak = max(peak, alive)
        return b"package"

    class SlowStore:
        def put(self, data: bytes, direct: bool = True) -> None:
            nonlocal alive
            time.sleep(0.1)  # extraction of a big package
            with lock:
                alive -= 1

        check = put

    monkeypatch.setattr(S3Packages, "fetch", fetch)
    settings = Settings(s3_endpoint="http://127.0.0.1:1", s3_timeout=30.0)
    source = CodeSource(s3_bucket="bucket", s3_key="app.zip")

    async def main() -> None:
        store: Any = SlowStore()
        await asyncio.gather(*(functions._store_code(store, source, settings) for _ in range(12)))

    asyncio.run(main())
    assert 1 <= peak <= FETCHES_AT_ONCE


class _Broken(_Raw):
    def read1(self, size: int = -1) -> bytes:
        raise urllib3.exceptions.ProtocolError("Connection broken: reset by peer near AKIAUNITTESTKEYID")


def test_errors_mid_body_are_service_exceptions(packages: S3Packages) -> None:
    """urllib3's and the socket's errors while reading the body (not botocore's): ServiceException, scrubbed."""
    body = _Body(b"")
    body._raw_stream = _Broken(b"")
    with pytest.raises(
        ServiceException, match=r"S3 could not be reached: Connection broken: reset by peer near \*\*\*"
    ):
        packages._read({"Body": body, "ContentLength": 10}, 100, float("inf"))
    assert body.closed


def test_a_closed_fetcher_stores_nothing(packages: S3Packages) -> None:
    """After `close` (the app's end), a fetch and the work after it are refused; the slot is given back."""
    packages.close()
    stored: list[bytes] = []
    source = CodeSource(s3_bucket="bucket", s3_key="app.zip")

    async def main() -> None:
        for _ in range(FETCHES_AT_ONCE + 1):
            with pytest.raises(ServiceException, match="The gateway is stopping"):
                await packages.run(source, stored.append)

    asyncio.run(main())
    assert stored == []


def test_the_deadline_counts_the_wait_for_a_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fetch's deadline starts with the request: one queued behind slow fetches fails when it passes (busy),
    instead of waiting its turn and then its own full timeout."""

    def fetch(self: S3Packages, *args: Any, **kwargs: Any) -> bytes:
        time.sleep(1.0)
        return b"package"

    monkeypatch.setattr(S3Packages, "fetch", fetch)
    fetcher = S3Packages("http://127.0.0.1:1", "us-east-1", 0.3)
    source = CodeSource(s3_bucket="bucket", s3_key="app.zip")

    async def main() -> list[Any]:
        runs = [fetcher.run(source, len) for _ in range(FETCHES_AT_ONCE + 1)]
        return await asyncio.gather(*runs, return_exceptions=True)

    started = time.monotonic()
    outcomes = asyncio.run(main())
    assert outcomes[:FETCHES_AT_ONCE] == [7] * FETCHES_AT_ONCE
    busy = outcomes[FETCHES_AT_ONCE]
    assert isinstance(busy, ServiceException)
    assert busy.message == "Error occurred while GetObject. Every S3 fetch of this gateway was busy for 0.3 seconds."
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize(
    ("code", "status", "headers", "region"),
    [
        ("PermanentRedirect", 301, {"x-amz-bucket-region": "eu-west-1"}, None),
        ("AuthorizationHeaderMalformed", 400, {}, "ap-south-1"),  # the Region S3 gives in the error
    ],
)
def test_a_bucket_of_another_region(
    packages: S3Packages, code: str, status: int, headers: dict[str, str], region: str | None
) -> None:
    """Lambda's answer for a bucket of another region (it does not follow S3 there, and neither does the gateway)."""
    answer = _answer(code, "moved", status)
    answer["ResponseMetadata"]["HTTPHeaders"] = headers
    if region:
        answer["Error"]["Region"] = region
    got = packages._s3_error(answer, "bucket", "app.zip")
    assert type(got) is InvalidParameterValueException
    where = headers.get("x-amz-bucket-region") or region
    assert got.message == (
        "Error occurred while GetObject. S3 Error Code: PermanentRedirect. S3 Error Message: The bucket is in this "
        f"region: {where}. Please use this region to retry the request"
    )
