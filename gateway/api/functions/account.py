"""GetAccountSettings (2016-08-19): the account's limits and usage, from the gateway's real settings.

Limits are Lambda's figures for code storage and package sizes (the code store enforces the latter) and the
gateway's `account_concurrency`. Usage is counted from the registry and the layer store on each request:
no I/O, only their in-memory caches.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.api.http import json_response
from gateway.app_keys import CONCURRENCY, LAYERS, REGISTRY, SETTINGS

PATH = "/2016-08-19/account-settings"

#: Lambda's limits: code storage per region, a function's code with its layers unzipped, a zip uploaded directly
TOTAL_CODE_SIZE = 80530636800
CODE_SIZE_UNZIPPED = 262144000
CODE_SIZE_ZIPPED = 52428800


def add_routes(app: web.Application) -> None:
    """Register GetAccountSettings; `app` must hold SETTINGS, REGISTRY and LAYERS."""
    app.router.add_get(PATH, get_account_settings)


def unreserved_concurrency(app: web.Application) -> int:
    """Concurrency left for functions without reserved concurrency: the account limit less every reservation."""
    return app[CONCURRENCY].unreserved_limit


def total_code_size(app: web.Application) -> int:
    """Bytes of zipped code stored for every function version and every layer version."""
    return app[REGISTRY].total_code_size() + app[LAYERS].total_code_size()


def account_settings(app: web.Application) -> dict[str, Any]:
    """The GetAccountSettings response body."""
    return {
        "AccountLimit": {
            "TotalCodeSize": TOTAL_CODE_SIZE,
            "CodeSizeUnzipped": CODE_SIZE_UNZIPPED,
            "CodeSizeZipped": CODE_SIZE_ZIPPED,
            "ConcurrentExecutions": app[SETTINGS].account_concurrency,
            "UnreservedConcurrentExecutions": unreserved_concurrency(app),
        },
        "AccountUsage": {
            "TotalCodeSize": total_code_size(app),
            "FunctionCount": len(app[REGISTRY]),
        },
    }


async def get_account_settings(request: web.Request) -> web.Response:
    """GetAccountSettings: {AccountLimit, AccountUsage}."""
    return json_response(account_settings(request.app))
