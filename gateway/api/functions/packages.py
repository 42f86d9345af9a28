"""The bytes of a package a request names (`CodeSource`): an inline `ZipFile` decoded, or an S3 object fetched.

Functions (`Code.S3Bucket`/`S3Key`/`S3ObjectVersion`, UpdateFunctionCode's `S3*`) and layers (`Content.S3*`) name
S3 objects; they are read with GetObject from `Settings.s3_endpoint` (a compatible server, addressed path-style: the
bucket never becomes part of the host name; an AWS host given there is addressed as botocore chooses) or, unset, from
AWS S3 of the gateway's region, signed by botocore's credentials chain (placeholders for a compatible server without
credentials: `gateway.events.aws.Clients`). The key is sent as botocore sends it: percent-encoded except `/`, and dot
segments are not removed (`GET /bucket/../x/s.zip`): S3 and compatible servers take what follows the bucket as the
key, so such a key names an object of that bucket; a proxy in front of the server that normalizes paths could make it
another bucket's, which the caller could name directly anyway (no more access than S3Bucket gives).

Limits: a direct upload is bounded by Lambda's 50 MB (the code store checks it); an S3 package only by the unzipped
limit (AWS: CodeSizeZipped is "the maximum size of a deployment package when it's uploaded directly to Lambda. Use
Amazon S3 for larger files."), so reading stops one byte past 262,144,000 bytes (and before reading when the object
says it is larger). A fetch takes at most about `Settings.s3_timeout` seconds: each receive is bounded by it, and the
body is read a piece at a time against the deadline, so a server that trickles bytes is cut off too.

Errors, in Lambda's words (recorded AWS answers, e.g. "Error occurred while GetObject. S3 Error Code: NoSuchKey. S3
Error Message: The specified key does not exist."): an S3 error answer (4xx: missing bucket, key or version) is
InvalidParameterValueException (400) with S3's own code and message, except S3's AccessDenied: AccessDeniedException
(403) "Your access has been denied by S3, please make sure your request credentials have permission to GetObject for
<bucket>/<key>. S3 Error Code: AccessDenied. S3 Error Message: Access Denied" (AWS's answer, recorded in
binxio/cfn-lb-ip-address-provider#4); a bucket of another region is not followed there (botocore would) but
answered "S3 Error Code: PermanentRedirect. S3 Error Message: The bucket is in this region: <region>. Please use this
region to retry the request", as Lambda does; an S3 server error (5xx), an error of the gateway's own credentials
(`GATEWAY_FAULTS`: unknown key, bad signature, expired token, skewed clock; logged as a warning), an unreachable or
too slow endpoint (a reset or a stall mid-body too), or no credentials for AWS are ServiceException (500: the
gateway's side, which boto3 retries).
Credentials never appear in a message: texts pass `Clients.scrub`.

Concurrency model: `with_package` runs on the event loop and calls the caller's `work` (hash, check, extract, store)
with the bytes in a worker thread. An S3 package is fetched and worked on in a thread of its own while it holds one of
`FETCHES_AT_ONCE` slots of its endpoint, from the start of the fetch until `work` returns: more requests wait their
turn (within the fetch's deadline, which starts when the request does), so at most that many S3 packages per endpoint
are in memory at once, and slow endpoints never take the default executor's few threads, which registry writes and
inline packages need. The threads are daemons, so a fetch in flight never holds up the gateway's exit; the app stops
the fetchers when it ends (`stop_fetchers`), and a fetch stopped so stores nothing. The botocore client is made once
per endpoint, in a fetch thread, and shared (thread-safe).
"""

from __future__ import annotations

import asyncio
import http.client
import io
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from aiohttp import web

from gateway.api.functions.code_params import CodeSource, decode_zip
from gateway.app_keys import SETTINGS
from gateway.errors import AccessDeniedException, InvalidParameterValueException, LambdaError, ServiceException
from gateway.events.aws import Clients, NoCredentials, is_aws_endpoint
from gateway.settings import Settings
from gateway.store.code import MAX_UNZIPPED

__all__ = ["FETCHES_AT_ONCE", "MAX_S3_PACKAGE", "S3Packages", "s3_packages", "stop_fetchers", "with_package"]

log = logging.getLogger("gateway.api.functions.packages")

#: the largest S3 package read: Lambda's unzipped limit (a zip is never smaller than what it holds, stored)
MAX_S3_PACKAGE = MAX_UNZIPPED
#: S3 packages fetched at once per endpoint
FETCHES_AT_ONCE = 2
GET_OBJECT = "Error occurred while GetObject."
STOPPING = f"{GET_OBJECT} The gateway is stopping."
_PIECE = 1 << 20
#: a receive that timed out this close to the deadline was cut off by it
_SLACK = 0.05
#: S3's messages are cut to this many characters (a compatible server's could be anything)
_MESSAGE_MAX = 512
T = TypeVar("T")
#: S3's answers to the gateway's own credentials or clock, not to anything the caller named: ServiceException
GATEWAY_FAULTS = frozenset({
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired",
    "RequestTimeTooSkewed",
})  # fmt: skip


def aws_s3_url(region: str) -> str:
    """AWS S3's regional endpoint."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://s3.{region}.{suffix}"


class S3Packages:
    """Reads S3 objects from one endpoint for one region. `run` is called on the event loop; `fetch` blocks (its
    threads only). Thread-safe; `close` stops it (see the module docstring)."""

    def __init__(self, endpoint: str | None, region: str, timeout: float) -> None:
        self.url = endpoint or aws_s3_url(region)
        self.region = region
        self.timeout = max(timeout, 0.1)
        #: path-style for compatible servers (a host like 127.0.0.1 has no bucket subdomains); AWS picks its own
        self._addressing = None if is_aws_endpoint(self.url) else "path"
        self._clients = Clients(log)
        self._client: Any = None
        self._lock = threading.Lock()
        #: FETCHES_AT_ONCE slots per event loop (an asyncio semaphore belongs to one loop; a gateway has one)
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        #: set by `close`: fetches in flight end at their next piece and store nothing
        self.stopping = threading.Event()

    async def run(self, source: CodeSource, work: Callable[[bytes], T]) -> T:
        """Fetch `source`'s object and call `work` with its bytes, in a thread of its own, within one of the
        endpoint's FETCHES_AT_ONCE slots, held until `work` returns (so at most that many of this endpoint's
        packages are in memory, whatever the number of requests). The fetch ends within about `timeout` seconds of
        this call, waiting for a slot included. The slot is freed when the thread ends, even if the caller is
        cancelled first."""
        deadline = time.monotonic() + self.timeout
        loop = asyncio.get_running_loop()
        slots = self._slots.setdefault(loop, asyncio.Semaphore(FETCHES_AT_ONCE))
        try:
            await asyncio.wait_for(slots.acquire(), self.timeout)
        except TimeoutError:
            raise ServiceException(
                f"{GET_OBJECT} Every S3 fetch of this gateway was busy for {self.timeout:g} seconds."
            ) from None
        future: asyncio.Future[T] = loop.create_future()

        def settle(result: T | None, error: BaseException | None) -> None:
            slots.release()
            if future.done():
                return  # the caller was cancelled
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]  # T when error is None

        def target() -> None:
            result, error = None, None
            try:
                result = self._fetch_and_work(source, work, deadline)
            except BaseException as exc:  # handed to the caller, whatever it is
                error = exc
            try:
                loop.call_soon_threadsafe(settle, result, error)
            except RuntimeError:
                pass  # the loop is closed: the gateway stopped

        # A daemon thread, not a pool's: a fetch waiting for a silent server never holds up the gateway's exit.
        thread = threading.Thread(target=target, name="s3-package", daemon=True)
        try:
            thread.start()
        except BaseException:
            slots.release()
            raise
        return await future

    def _fetch_and_work(self, source: CodeSource, work: Callable[[bytes], T], deadline: float) -> T:
        assert source.s3_bucket is not None and source.s3_key is not None
        data = self.fetch(source.s3_bucket, source.s3_key, source.s3_object_version, deadline=deadline)
        if self.stopping.is_set():
            raise ServiceException(STOPPING)
        return work(data)

    def close(self) -> None:
        """Stop: fetches in flight end at their next piece and store nothing (their threads are daemons)."""
        self.stopping.set()

    def fetch(
        self, bucket: str, key: str, version: str | None, limit: int = MAX_S3_PACKAGE, deadline: float | None = None
    ) -> bytes:
        """The object's bytes, read until `deadline` (time.monotonic(); default: `timeout` from now). Blocking.
        Raises InvalidParameterValueException (S3's 4xx answers, over `limit`) or ServiceException (S3's 5xx,
        unreachable, too slow, no credentials for AWS, stopping)."""
        from botocore.exceptions import BotoCoreError, ClientError

        deadline = time.monotonic() + self.timeout if deadline is None else deadline
        if self.stopping.is_set():
            raise ServiceException(STOPPING)
        if time.monotonic() >= deadline:
            raise self._too_slow()
        args = {"Bucket": bucket, "Key": key} | ({"VersionId": version} if version else {})
        try:
            answer = self._client_for_fetch().get_object(**args)
            return self._read(answer, limit, deadline)
        except ClientError as exc:
            raise self._s3_error(exc.response, bucket, key) from None
        except NoCredentials:
            no_keys = f"{GET_OBJECT} No AWS credentials are configured to reach S3 at {self._clients.scrub(self.url)}."
            raise ServiceException(no_keys) from None
        except BotoCoreError as exc:
            log.warning("GetObject of an S3 package failed: %s", self._clients.scrub(str(exc)))
            raise ServiceException(f"{GET_OBJECT} S3 could not be reached: {self._clients.scrub(str(exc))}") from None

    def _too_slow(self) -> ServiceException:
        return ServiceException(f"{GET_OBJECT} S3 did not send the object within {self.timeout:g} seconds.")

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
                self._client.meta.events.register("before-call.s3.GetObject", _no_region_redirects)
            return self._client

    def _read(self, answer: dict[str, Any], limit: int, deadline: float) -> bytes:
        """The body (`_receive`), closed in any case. A server that resets or stalls mid-body is a ServiceException
        (unreachable, or too slow once past `deadline`): urllib3's and the socket's errors are not botocore's."""
        import urllib3.exceptions

        body = answer["Body"]
        try:
            expected = answer.get("ContentLength")
            if int(expected or 0) > limit:
                raise _too_large(limit)
            return self._receive(body._raw_stream, expected, limit, deadline)
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
            if time.monotonic() >= deadline - _SLACK:
                raise self._too_slow() from None
            text = self._clients.scrub(str(exc))[:_MESSAGE_MAX]
            log.warning("GetObject of an S3 package failed while reading: %s", text)
            raise ServiceException(f"{GET_OBJECT} S3 could not be reached: {text}") from None
        finally:
            body.close()

    def _receive(self, raw: Any, expected: Any, limit: int, deadline: float) -> bytes:
        """The body of urllib3's response `raw`, a piece at a time (read1 returns after one receive, however little
        came), against `limit`, `deadline` and `stopping`. Each receive waits at most the time left (the socket's
        timeout, set before it), so a server that stalls mid-body is cut off at the deadline."""
        data = io.BytesIO()  # its getvalue() hands over the buffer: the package is not copied at the end
        sock = getattr(getattr(raw, "_connection", None), "sock", None)  # urllib3 2: the connection being read
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._too_slow()
            if sock is not None:
                sock.settimeout(left)  # urllib3 sets it again before the connection's next request
            piece = raw.read1(_PIECE)
            if not piece:
                break
            data.write(piece)
            if data.tell() > limit:
                raise _too_large(limit)
            if self.stopping.is_set():
                raise ServiceException(STOPPING)
        if expected is not None and data.tell() != int(expected):
            raise ServiceException(f"{GET_OBJECT} S3 sent {data.tell()} of the object's {expected} bytes.")
        return data.getvalue()

    def _s3_error(self, response: dict[str, Any], bucket: str, key: str) -> LambdaError:
        """S3's error answer in Lambda's words: AccessDenied is AccessDeniedException (403, naming the object, as
        AWS's answer does); a bucket of another region PermanentRedirect naming its region; a 5xx or one of
        `GATEWAY_FAULTS` ServiceException (logged); another 4xx InvalidParameterValueException."""
        error = response.get("Error") or {}
        status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 500)
        code = self._clients.scrub(str(error.get("Code") or status))[:_MESSAGE_MAX]
        message = self._clients.scrub(str(error.get("Message") or ""))[:_MESSAGE_MAX]
        said = f"S3 Error Code: {code}. S3 Error Message: {message}"
        headers = (response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
        region = self._clients.scrub(str(headers.get("x-amz-bucket-region") or error.get("Region") or ""))[:64]
        if region and (status == 301 or code in ("PermanentRedirect", "AuthorizationHeaderMalformed")):
            return InvalidParameterValueException(  # a bucket of another region: Lambda's words
                f"{GET_OBJECT} S3 Error Code: PermanentRedirect. S3 Error Message: The bucket is in this region: "
                f"{region}. Please use this region to retry the request"
            )
        if code == "AccessDenied":
            return AccessDeniedException(
                "Your access has been denied by S3, please make sure your request credentials have permission to "
                f"GetObject for {bucket}/{key}. {said}"
            )
        text = f"{GET_OBJECT} {said}"
        if status >= 500 or code in GATEWAY_FAULTS:
            log.warning("GetObject of an S3 package failed: %s", text)
            return ServiceException(text)
        return InvalidParameterValueException(text)


def _no_region_redirects(context: dict[str, Any], **_: Any) -> None:
    """botocore follows S3's answer for a bucket of another region (it retries there); Lambda does not, it names the
    region. A request botocore believes redirected already is not redirected again (S3RegionRedirectorv2)."""
    context.setdefault("s3_redirect", {})["redirected"] = True


def _too_large(limit: int) -> InvalidParameterValueException:
    return InvalidParameterValueException(f"Unzipped size must be smaller than {limit} bytes")


_PACKAGES: dict[tuple[str | None, str, float], S3Packages] = {}
_PACKAGES_LOCK = threading.Lock()


def _key(settings: Settings) -> tuple[str | None, str, float]:
    return (settings.s3_endpoint, settings.region, settings.s3_timeout)


def s3_packages(settings: Settings) -> S3Packages:
    """The fetcher of `settings`' endpoint and region (one per process and endpoint: it holds a client's pool)."""
    key = _key(settings)
    with _PACKAGES_LOCK:
        if key not in _PACKAGES:
            _PACKAGES[key] = S3Packages(*key)
        return _PACKAGES[key]


async def stop_fetchers(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: when the app ends, its fetcher is closed and forgotten (fetches in flight end at their next
    piece and store nothing; their threads are daemons, so none holds up the process's exit)."""
    yield
    with _PACKAGES_LOCK:
        fetcher = _PACKAGES.pop(_key(app[SETTINGS]), None)
    if fetcher is not None:
        fetcher.close()


async def with_package(settings: Settings, source: CodeSource, work: Callable[[bytes], T]) -> T:
    """`work` called with the package's bytes (the inline zip decoded, or the S3 object fetched: module docstring,
    limits and errors) in a worker thread, and its result. An S3 package holds its endpoint's slot until `work`
    returns (`S3Packages.run`)."""
    if not source.in_s3:
        zip_b64 = source.zip_b64
        assert zip_b64 is not None
        return await asyncio.to_thread(lambda: work(decode_zip(zip_b64)))
    return await s3_packages(settings).run(source, work)
