"""The bytes of a package a request names (`CodeSource`): an inline `ZipFile` decoded, or an S3 object fetched.

Functions (`Code.S3Bucket`/`S3Key`/`S3ObjectVersion`, UpdateFunctionCode's `S3*`) and layers (`Content.S3*`) name
S3 objects; they are read with GetObject from `Settings.s3_endpoint` (a compatible server, addressed path-style: the
bucket never becomes part of the host name) or, unset, from AWS S3 of the gateway's region, signed by botocore's
credentials chain (placeholders for a compatible server without credentials: `gateway.events.aws.Clients`). The key
is sent as given, percent-encoded: `../` in a key names an object of that bucket, never another path of the endpoint.

Limits: a direct upload is bounded by Lambda's 50 MB (the code store checks it); an S3 package only by the unzipped
limit (AWS: CodeSizeZipped is "the maximum size of a deployment package when it's uploaded directly to Lambda. Use
Amazon S3 for larger files."), so reading stops one byte past 262,144,000 bytes (and before reading when the object
says it is larger). A fetch takes at most about `Settings.s3_timeout` seconds: each receive is bounded by it, and the
body is read a piece at a time against the deadline, so a server that trickles bytes is cut off too.

Errors, in Lambda's words (recorded AWS answers, e.g. "Error occurred while GetObject. S3 Error Code: NoSuchKey. S3
Error Message: The specified key does not exist."): an S3 error answer (4xx: missing bucket, key or version, access
denied) is InvalidParameterValueException (400) with S3's own code and message; an S3 server error (5xx), an
unreachable or too slow endpoint, or no credentials for AWS are ServiceException (500: the gateway's side, which
boto3 retries). Credentials never appear in a message: texts pass `Clients.scrub`.

Concurrency model: `package_bytes` runs on the event loop and does the blocking part in a worker thread. S3 fetches
run in a pool of their own, `FETCHES_AT_ONCE` threads per endpoint (more wait their turn), so slow endpoints never
take the default executor's few threads, which registry writes and code extraction need, nor hold more than that
many packages in memory at once. The botocore client is made once per endpoint, in a pool thread, and shared
(thread-safe).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gateway.api.functions.code_params import CodeSource, decode_zip
from gateway.errors import InvalidParameterValueException, LambdaError, ServiceException
from gateway.events.aws import Clients, NoCredentials
from gateway.settings import Settings
from gateway.store.code import MAX_UNZIPPED

__all__ = ["FETCHES_AT_ONCE", "MAX_S3_PACKAGE", "S3Packages", "package_bytes", "s3_packages"]

log = logging.getLogger("gateway.api.functions.packages")

#: the largest S3 package read: Lambda's unzipped limit (a zip is never smaller than what it holds, stored)
MAX_S3_PACKAGE = MAX_UNZIPPED
#: S3 packages fetched at once per endpoint
FETCHES_AT_ONCE = 2
GET_OBJECT = "Error occurred while GetObject."
_PIECE = 1 << 20
#: S3's messages are cut to this many characters (a compatible server's could be anything)
_MESSAGE_MAX = 512
_CN = ("cn-north-1", "cn-northwest-1")


def aws_s3_url(region: str) -> str:
    """AWS S3's regional endpoint."""
    suffix = "amazonaws.com.cn" if region in _CN or region.startswith("cn-") else "amazonaws.com"
    return f"https://s3.{region}.{suffix}"


class S3Packages:
    """Reads S3 objects from one endpoint for one region. `fetch` blocks (worker threads only); thread-safe."""

    def __init__(self, endpoint: str | None, region: str, timeout: float) -> None:
        self.url = endpoint or aws_s3_url(region)
        self.region = region
        self.timeout = max(timeout, 0.1)
        #: path-style for compatible servers (a host like 127.0.0.1 has no bucket subdomains); AWS picks its own
        self._addressing = "path" if endpoint else None
        self._clients = Clients(log)
        self._client: Any = None
        self._lock = threading.Lock()
        #: the threads fetches run in (created on demand; like every executor's, joined at the interpreter's exit)
        self.pool = ThreadPoolExecutor(max_workers=FETCHES_AT_ONCE, thread_name_prefix="s3-packages")

    def fetch(self, bucket: str, key: str, version: str | None, limit: int = MAX_S3_PACKAGE) -> bytes:
        """The object's bytes. Raises InvalidParameterValueException (S3's 4xx answers, over `limit`) or
        ServiceException (S3's 5xx, unreachable, too slow, no credentials for AWS)."""
        from botocore.exceptions import BotoCoreError, ClientError

        deadline = time.monotonic() + self.timeout
        args = {"Bucket": bucket, "Key": key} | ({"VersionId": version} if version else {})
        try:
            answer = self._client_for_fetch().get_object(**args)
            return self._read(answer, limit, deadline)
        except ClientError as exc:
            raise self._s3_error(exc.response) from None
        except NoCredentials:
            no_keys = f"{GET_OBJECT} No AWS credentials are configured to reach S3 at {self._clients.scrub(self.url)}."
            raise ServiceException(no_keys) from None
        except BotoCoreError as exc:
            log.warning("GetObject of an S3 package failed: %s", self._clients.scrub(str(exc)))
            raise ServiceException(f"{GET_OBJECT} S3 could not be reached: {self._clients.scrub(str(exc))}") from None

    def _client_for_fetch(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._clients.create(
                    "s3",
                    self.url,
                    self.region,
                    connect_timeout=min(5.0, self.timeout),
                    read_timeout=self.timeout,
                    attempts=1,  # boto3 callers retry a ServiceException themselves
                    connections=FETCHES_AT_ONCE,
                    s3_addressing=self._addressing,
                )
            return self._client

    def _read(self, answer: dict[str, Any], limit: int, deadline: float) -> bytes:
        """The body, a piece at a time (each receive returns what has arrived), against `limit` and `deadline`."""
        body = answer["Body"]
        try:
            if int(answer.get("ContentLength") or 0) > limit:
                raise _too_large(limit)
            raw = body._raw_stream  # urllib3's response: read1 returns after one receive, however little came
            data = bytearray()
            while piece := raw.read1(_PIECE):
                data += piece
                if len(data) > limit:
                    raise _too_large(limit)
                if time.monotonic() > deadline:
                    raise ServiceException(f"{GET_OBJECT} S3 did not send the object within {self.timeout:g} seconds.")
            expected = answer.get("ContentLength")
            if expected is not None and len(data) != int(expected):
                raise ServiceException(f"{GET_OBJECT} S3 sent {len(data)} of the object's {expected} bytes.")
            return bytes(data)
        finally:
            body.close()

    def _s3_error(self, response: dict[str, Any]) -> LambdaError:
        error = response.get("Error") or {}
        status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 500)
        code = self._clients.scrub(str(error.get("Code") or status))[:_MESSAGE_MAX]
        message = self._clients.scrub(str(error.get("Message") or ""))[:_MESSAGE_MAX]
        text = f"{GET_OBJECT} S3 Error Code: {code}. S3 Error Message: {message}"
        if status >= 500:
            log.warning("GetObject of an S3 package failed: %s", text)
            return ServiceException(text)
        return InvalidParameterValueException(text)


def _too_large(limit: int) -> InvalidParameterValueException:
    return InvalidParameterValueException(f"Unzipped size must be smaller than {limit} bytes")


_PACKAGES: dict[tuple[str | None, str, float], S3Packages] = {}
_PACKAGES_LOCK = threading.Lock()


def s3_packages(settings: Settings) -> S3Packages:
    """The fetcher of `settings`' endpoint and region (one per process and endpoint: it holds a client's pool)."""
    key = (settings.s3_endpoint, settings.region, settings.s3_timeout)
    with _PACKAGES_LOCK:
        if key not in _PACKAGES:
            _PACKAGES[key] = S3Packages(*key)
        return _PACKAGES[key]


async def package_bytes(settings: Settings, source: CodeSource) -> bytes:
    """The package's bytes: the inline zip decoded, or the S3 object fetched (module docstring: limits, errors).
    The blocking part runs in a worker thread."""
    if not source.in_s3:
        assert source.zip_b64 is not None
        return await asyncio.to_thread(decode_zip, source.zip_b64)
    assert source.s3_bucket is not None and source.s3_key is not None
    packages = s3_packages(settings)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        packages.pool, packages.fetch, source.s3_bucket, source.s3_key, source.s3_object_version
    )
