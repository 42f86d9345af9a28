"""Recognising a function URL request, authenticating and authorising it, and handing it to `serve`.

The outermost middleware of the application (before the error and auth middlewares). A request is a URL request when

- its Host's second label is `lambda-url` (`<url-id>.lambda-url.<anything>`: `...us-east-1.localhost:9000`, a
  wildcard DNS name, ...), whatever its path: the path is the function's (`/2015-03-31/functions/...` through a URL
  host reaches the function, never the Lambda API); or
- its path is `/lambda-url/<url-id>` or starts with `/lambda-url/<url-id>/` (for clients that cannot set Host): the
  function sees what follows the id (`/lambda-url/<id>/x?y` -> `/x`, query `y`).

Anything else passes on untouched. The test costs a non-URL request a `"-" in host` and a `startswith` on the path
(about 0.1 µs; a Host with a dash adds a `find` and an 11-character compare); see `looks_like_url`.

A URL request is looked up by id (`FunctionUrls.by_id`: O(1), no I/O). An unknown or malformed id is answered as AWS
answers a URL it refuses: 403 `{"Message": "Forbidden"}`. Then the URL's auth type:

- `AWS_IAM`: a SigV4 signature for the service `lambda` (`gateway.api.sigv4.Verifier`: the head first, a large body
  never read for a caller who cannot be authenticated; then the signature over the body). Operators' keys and
  functions' session credentials are accepted; with no operator credentials configured (the gateway runs open) any
  key is taken as an operator's, but the Authorization header must still be a well-formed SigV4 one, scoped to
  `lambda` and this region, and fresh — except on the environments' listener, where only real credentials count (a
  function's session, a configured operator key), so that no function passes for an operator. The signature must
  cover the body (`UNSIGNED-PAYLOAD` is refused). Unsigned or bad: 403.
- `NONE`: no authentication.

Then the function's resource policy (`Policies.allows_url`: `lambda:InvokeFunctionUrl` with the URL's auth type and
`lambda:InvokeFunction` via a function URL), with the principal None for a NONE URL and a function's role ARN for its
session credentials. Operators are never policy-checked (the account's administrator); a function's session is
checked only when `GATEWAY_FUNCTION_INVOKE=policy` (by default a function's role may invoke any function, as a role
whose identity policy allows `lambda:InvokeFunction` on `*`). Refused: 403.

The verified caller goes into `request["url_caller"]` (`Identity | None`), and the request to
`gateway.api.urls.serving.serve(request, url, path)`.

Everything here runs on the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.api.http import Handler, read_body, refuse_unread
from gateway.api.sigv4 import SERVICE, Identity, InvalidSignatureException, Verifier
from gateway.api.urls.cors import is_preflight
from gateway.api.urls.responses import forbidden, too_large, unknown_url, url_error
from gateway.api.urls.serving import serve
from gateway.app_keys import FUNCTION_URLS, POLICIES
from gateway.errors import LambdaError
from gateway.execution.invoker import MAX_SYNC_PAYLOAD
from gateway.isolation.credentials import ACCESS_KEY_PREFIX, SessionAuthority
from gateway.settings import Settings
from gateway.store.function_urls import is_url_id

log = logging.getLogger("gateway.api.urls")

#: the Host's second label that marks a URL request, with the dot after it
HOST_LABEL = "lambda-url."
#: the path form's prefix
PATH_PREFIX = "/lambda-url/"
#: the payload hash that leaves a body unsigned (S3's; refused here)
UNSIGNED = "UNSIGNED-PAYLOAD"
#: the key of the verified caller in a URL request (`Identity | None`)
CALLER = "url_caller"


def _host_is_url(host: str) -> bool:
    """Whether the Host's second label is `lambda-url` (any case)."""
    dot = host.find(".")  # -1 without one: then the slice holds no dot and cannot match
    return host[dot + 1 : dot + 12].lower() == HOST_LABEL


def looks_like_url(host: str, raw_path: str) -> bool:
    """Whether a request is a URL request (by Host or by path): the whole cost on the non-URL hot path, which the
    middleware inlines. A Host without a "-" (`127.0.0.1:9000`, `localhost:9000`) cannot name a URL."""
    return ("-" in host and _host_is_url(host)) or raw_path.startswith(PATH_PREFIX)


def _bare_root(raw_path: str, url_id: str) -> bool:
    """Whether a path-form request names the URL's root without its slash (`/lambda-url/<id>` or `...<id>?q`)."""
    end = len(PATH_PREFIX) + len(url_id)
    return len(raw_path) == end or raw_path[end] == "?"


def url_target(host: str, raw_path: str) -> tuple[str, str]:
    """(url id, the function's path and query) of a request `looks_like_url` accepted. The id is lower-cased (host
    names are case-insensitive) and may be malformed: `by_id` then finds nothing."""
    if _host_is_url(host):
        return host[: host.find(".")].lower(), raw_path
    rest = raw_path[len(PATH_PREFIX) :]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    tail = rest[cut:]
    return rest[:cut].lower(), tail if tail.startswith("/") else "/" + tail


# -- the middleware --------------------------------------------------------------------------------------------------


class _AnyOperatorKey(dict[str, str]):
    """Operator credentials of a gateway that runs open: every access key but a session's (`ASIA...`, verified by the
    SessionAuthority) is an operator's. Its secret is unknown, so such a signature is checked for form only."""

    def get(self, key: str, default: Any = None) -> Any:
        return default if key.startswith(ACCESS_KEY_PREFIX) else ""


class UrlAuthenticator:
    """SigV4 for AWS_IAM URLs: operators' keys and functions' sessions. `open`: no operator credentials are
    configured, and any key but a session's is taken as an operator's (checked for form only). Never open for
    requests that come from environments (the environments' listener): there only real credentials count, or a
    function could sign with a made-up "operator" key and pass for the account's administrator."""

    def __init__(
        self, credentials: Mapping[str, str], region: str, sessions: SessionAuthority | None, *, open_: bool
    ) -> None:
        self.open = open_
        self.verifier = Verifier(credentials, region, sessions)
        if open_:
            self.verifier.credentials = _AnyOperatorKey()  # Verifier copies what it is given into a plain dict

    async def caller(self, request: web.Request) -> Identity:
        """The verified caller of `request`; LambdaError (AWS's 403s, 408, 413) otherwise. Reads the body."""
        headers = {name.lower(): value for name, value in request.headers.items()}
        if headers.get("x-amz-content-sha256") == UNSIGNED:  # a captured request could be replayed with any body
            raise InvalidSignatureException("A function URL request's signature must cover its payload.")
        operator_unchecked = self.open and not _access_key(headers).startswith(ACCESS_KEY_PREFIX)
        if operator_unchecked:
            headers.pop("x-amz-content-sha256", None)  # an open operator's signature is not checked: no secret
        pending = self.verifier.check_headers(request.method, request.raw_path, headers, service=SERVICE)
        body = await read_body(request)
        if operator_unchecked:
            return pending.identity
        return self.verifier.finish(pending, request.method, request.raw_path, headers, body)


def _access_key(headers: Mapping[str, str]) -> str:
    """The access key id an Authorization header names ("" when it names none)."""
    _, found, rest = headers.get("authorization", "").partition("Credential=")
    return rest.partition("/")[0] if found else ""


def url_middleware(settings: Settings, sessions: SessionAuthority | None) -> web.middleware:  # type: ignore[valid-type]
    """The outermost middleware: URL requests are answered here (never by the API's routes), others pass on."""
    credentials, region = settings.credentials, settings.region
    authenticator = UrlAuthenticator(credentials, region, sessions, open_=not credentials)
    # from environments only real credentials count: a function's session, or an operator's configured key
    strict = UrlAuthenticator(credentials, region, sessions, open_=False)
    function_invoke = settings.function_invoke

    @web.middleware
    async def route_urls(request: web.Request, handler: Handler) -> web.StreamResponse:
        host, raw_path = request.headers.get("Host", ""), request.raw_path
        if not (("-" in host and _host_is_url(host)) or raw_path.startswith(PATH_PREFIX)):  # looks_like_url, inlined
            return await handler(request)
        host_form = "-" in host and _host_is_url(host)
        url_id, path = url_target(host, raw_path)
        url = request.app[FUNCTION_URLS].by_id(url_id) if is_url_id(url_id) else None
        if url is None:
            return refuse_unread(request, unknown_url())
        if not host_form and _bare_root(raw_path, url_id):  # `/lambda-url/<id>`: relative links need the slash
            end = len(PATH_PREFIX) + len(url_id)
            raise web.HTTPPermanentRedirect(raw_path[:end] + "/" + raw_path[end:])
        request = request.clone(client_max_size=MAX_SYNC_PAYLOAD)
        caller: Identity | None = None
        if url.cors is not None and is_preflight(request.method, request.headers):
            pass  # browsers never sign a preflight: the URL's CORS answers it, the function is not invoked
        elif url.auth_type == "AWS_IAM":
            try:
                facing = getattr(request.protocol, "environment_facing", False)
                caller = await (strict if facing else authenticator).caller(request)
            except LambdaError as err:
                log.debug("URL %s: %s refused: %s", url_id, request.method, err.message)
                if err.status == 403:
                    return refuse_unread(request, forbidden())
                return refuse_unread(request, url_error(err.status, err.message, err.name))
            except web.HTTPRequestEntityTooLarge:
                return refuse_unread(request, too_large(MAX_SYNC_PAYLOAD))
        principal = None if caller is None or caller.session is None else caller.session.role_arn
        checked = url.auth_type == "NONE" or (
            caller is not None and caller.session is not None and function_invoke == "policy"
        )
        if checked and not request.app[POLICIES].allows_url(url, principal):
            return refuse_unread(request, forbidden())
        request[CALLER] = caller
        try:
            return await serve(request, url, path.partition("?")[0] or "/")
        except web.HTTPException:
            raise
        except Exception:  # outside the error middleware: nothing else would answer it as a URL answers
            log.exception("URL %s: %s %s failed", url_id, request.method, path)
            return url_error(500, "Internal Server Error", "ServiceException")

    return route_urls
