"""STAND-IN (branch urlserve only; the coordinator removes this module and its lines in gateway/app.py at merge):
a minimal router for the path form `/lambda-url/<url-id>/<path>` over an in-memory table, so that serving.py's
end-to-end tests run before helper C's store and router (branch urlconfig) land. `PUT /_standin/function-urls/<id>`
with {"function", "qualifier", "auth_type", "invoke_mode", "cors"} adds a URL. No authorisation: not for use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.api.http import read_json_object
from gateway.api.sigv4 import Identity
from gateway.api.urls import responses
from gateway.api.urls.serving import serve

_PREFIX = "/lambda-url/"


@dataclass(frozen=True, slots=True)
class StandinUrl:
    url_id: str
    function: str
    qualifier: str = "$LATEST"
    auth_type: str = "NONE"
    invoke_mode: str = "BUFFERED"
    cors: Mapping[str, Any] | None = None


STANDIN_URLS: web.AppKey[dict[str, StandinUrl]] = web.AppKey("standin_urls")


@web.middleware
async def standin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    raw = request.raw_path
    if not raw.startswith(_PREFIX):
        return await handler(request)
    url_id, _, rest = raw[len(_PREFIX) :].partition("/")
    url = request.app[STANDIN_URLS].get(url_id)
    if url is None:
        return responses.unknown_url()
    request["url_caller"] = None
    if url.auth_type == "AWS_IAM":  # as helper C's router does: the signature covers the body, read before `serve`
        await request.read()
        request["url_caller"] = Identity("AKIASTANDIN")
    return await serve(request, url, "/" + rest.partition("?")[0])


async def _put(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    url = StandinUrl(request.match_info["id"], **body)
    request.app[STANDIN_URLS][url.url_id] = url
    return web.json_response({"ok": True})


def install(app: web.Application) -> None:
    app[STANDIN_URLS] = {}
    app.router.add_put("/_standin/function-urls/{id}", _put)
