"""The region and account this gateway serves: a request that names a function elsewhere is refused as Lambda
refuses it.

A Lambda endpoint serves one region of one account. A FunctionName given as an ARN (full, or partial
`ACCOUNT:function:NAME`) of another account is answered 403 AccessDeniedException, of another region 404
ResourceNotFoundException "Functions from 'eu-west-1' are not reachable in this region ('us-east-1')"
(`gateway.store.names.check_home` words both), before the operation runs: never does an ARN of elsewhere reach a
local function of the same name.

`home_middleware` checks the `{FunctionName}` of every route's path (Invoke and every function, version, alias,
concurrency, policy, URL and event-invoke-config operation); the operations that take a FunctionName in their body
or query (CreateFunction, Create/Update/ListEventSourceMappings) call `check_request` themselves. It runs innermost,
after the signature is checked (AWS authenticates first), so a refusal is Lambda-shaped by the error middleware.
Cost on the invoke path: one dictionary look-up and one substring test for a plain name; for `name:alias` or an
ARN, a cached parse and two comparisons (who is refused, and how, is worked out only for a refusal).
"""

from __future__ import annotations

from aiohttp import web

from gateway.api.auth import SESSION, iam_action, operation_of
from gateway.api.http import Handler
from gateway.settings import Settings
from gateway.store.names import check_home, home_of


def caller_arn(request: web.Request, settings: Settings) -> str:
    """Who AWS's AccessDenied message names: a function's assumed-role session, else the account's root user (an
    operator is the account's administrator)."""
    if SESSION in request:
        return request[SESSION].assumed_role_arn
    return f"arn:{settings.partition}:iam::{settings.account_id}:root"


def check_request(request: web.Request, settings: Settings, raw: str, operation: str | None = None) -> None:
    """`check_home` for a FunctionName a request carries (path, body or query); `operation` defaults to the route's."""
    if ":" in raw:
        action = iam_action(operation or operation_of(request))
        check_home(raw, settings.region, settings.account_id, caller_arn(request, settings), action)


def home_middleware(settings: Settings) -> web.middleware:  # type: ignore[valid-type]
    """The middleware checking a route's `{FunctionName}` (see the module's docstring)."""

    region, account = settings.region, settings.account_id

    @web.middleware
    async def home(request: web.Request, handler: Handler) -> web.StreamResponse:
        raw = request.match_info.get("FunctionName")
        if raw is not None and ":" in raw:  # `name:alias` and ARNs; a plain name is home
            arn_region, arn_account = home_of(raw)  # cached: a name's ARN is parsed once
            if (arn_account is not None and arn_account != account) or (
                arn_region is not None and arn_region != region
            ):
                check_request(request, settings, raw)  # words the refusal (only now: the caller, the action)
        return await handler(request)

    return home
