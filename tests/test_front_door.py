"""gateway.api.front_door: which requests go straight to the Invoke route, and that they get what the app's path gives.

A real aiohttp server (AppRunner + TCPSite on a free loopback port) with the front door installed, an app with a
recording middleware, and the Invoke route's real path; the handler reports what it saw.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.api import front_door
from gateway.api.http import error_middleware
from gateway.api.server import GatewaySite
from gateway.app_keys import RESPONSE_COUNTER, SETTINGS
from gateway.errors import ResourceNotFoundException
from gateway.settings import Settings

INVOKE = "/2015-03-31/functions/{}/invocations"


async def _handler(request: web.Request) -> web.Response:
    name = request.match_info["FunctionName"]
    if name == "missing":
        raise ResourceNotFoundException("Function not found: missing")
    if name == "broken":
        raise RuntimeError("a bug")
    assert request.app[SETTINGS] is not None  # the app is reachable as on the app's path
    return web.Response(text=f"{name} {request.query.get('Qualifier', '-')}")


async def _serve(tmp_path: Path, credentials: dict[str, str] | None = None) -> tuple[web.AppRunner, str, list[str]]:
    seen: list[str] = []

    @web.middleware
    async def recording(request: web.Request, handler: front_door.Handler) -> web.StreamResponse:
        seen.append(request.path)
        return await handler(request)  # type: ignore[arg-type]

    app = web.Application(middlewares=[error_middleware, recording])
    app[SETTINGS] = Settings(data_dir=tmp_path, credentials=credentials or {})
    app.router.add_post(front_door.INVOKE_PATH, _handler)
    app.router.add_get(front_door.INVOKE_PATH, _handler)
    runner = web.AppRunner(app)
    await runner.setup()
    front_door.install(runner)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}", seen


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, list[str]]]:
    runner, base, seen = await _serve(tmp_path)
    yield base, seen
    await runner.cleanup()


async def test_a_plain_synchronous_invoke_skips_the_middlewares(served: tuple[str, list[str]]) -> None:
    base, seen = served
    url = base + INVOKE.format("my-fn_1") + "?Qualifier=live"
    async with aiohttp.ClientSession() as session, session.post(url, data=b"{}") as resp:
        assert (resp.status, await resp.text()) == (200, "my-fn_1 live")
        assert resp.headers["x-amzn-RequestId"]  # the error middleware's contract holds on this path too
    assert seen == []


@pytest.mark.parametrize(
    ("path", "headers", "method"),
    [
        (INVOKE.format("f%3A1"), {}, "POST"),  # a qualified name: the home checks need the decoded name
        (INVOKE.format("arn:aws:lambda:us-east-1:123456789012:function:f"), {}, "POST"),
        (INVOKE.format("f"), {"X-Amz-Invocation-Type": "Event"}, "POST"),
        (INVOKE.format("f"), {"X-Amz-Invocation-Type": "DryRun"}, "POST"),
        (INVOKE.format("f"), {"Host": "abcdefghij0123456789abcdefghij01.lambda-url.us-east-1.on.aws"}, "POST"),
        (INVOKE.format("f"), {"Expect": "100-continue"}, "POST"),
        (INVOKE.format("f"), {}, "GET"),
        (INVOKE.format("f") + "/more", {}, "POST"),
    ],
)
async def test_anything_else_takes_the_apps_path(
    served: tuple[str, list[str]], path: str, headers: dict[str, str], method: str
) -> None:
    base, seen = served
    async with aiohttp.ClientSession() as s, s.request(method, base + path, data=b"{}", headers=headers) as resp:
        await resp.read()
    assert len(seen) == 1, (path, headers, method)


async def test_errors_are_answered_as_on_the_apps_path(served: tuple[str, list[str]]) -> None:
    base, seen = served
    async with aiohttp.ClientSession() as session:
        async with session.post(base + INVOKE.format("missing"), data=b"{}") as resp:
            assert resp.status == 404
            assert resp.headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
            assert (await resp.json())["Message"] == "Function not found: missing"
        async with session.post(base + INVOKE.format("broken"), data=b"{}") as resp:
            assert resp.status == 500
            assert resp.headers["x-amzn-ErrorType"] == "ServiceException"
    assert seen == []


async def test_a_gateway_that_requires_signatures_sends_every_invoke_through_the_app(tmp_path: Path) -> None:
    runner, base, seen = await _serve(tmp_path, credentials={"AKIDEXAMPLE": "secret"})
    try:
        async with aiohttp.ClientSession() as session, session.post(base + INVOKE.format("f"), data=b"{}") as resp:
            assert resp.status == 200
        assert seen == ["/2015-03-31/functions/f/invocations"]
    finally:
        await runner.cleanup()


async def _gateway_site(tmp_path: Path, environment_facing: bool) -> tuple[web.AppRunner, str, list[str], list[int]]:
    """The app of `_serve` behind the gateway's own site (GatewayRequestHandler), counting answers."""
    seen: list[str] = []
    counted: list[int] = []

    @web.middleware
    async def recording(request: web.Request, handler: front_door.Handler) -> web.StreamResponse:
        seen.append(request.path)
        return await handler(request)  # type: ignore[arg-type]

    settings = Settings(data_dir=tmp_path)
    app = web.Application(middlewares=[error_middleware, recording])
    app[SETTINGS] = settings
    app[RESPONSE_COUNTER] = lambda request, response: counted.append(response.status)
    app.router.add_post(front_door.INVOKE_PATH, _handler)
    runner = web.AppRunner(app)
    await runner.setup()
    front_door.install(runner)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    site = GatewaySite(runner, settings, address=("127.0.0.1", port), environment_facing=environment_facing)
    await site.start()
    return runner, f"http://127.0.0.1:{port}", seen, counted


async def test_an_environments_invoke_takes_the_apps_path(tmp_path: Path) -> None:
    runner, base, seen, _ = await _gateway_site(tmp_path, environment_facing=True)
    try:
        async with aiohttp.ClientSession() as session, session.post(base + INVOKE.format("f"), data=b"{}") as resp:
            assert resp.status == 200
        assert seen == ["/2015-03-31/functions/f/invocations"]  # where the app's authentication would check it
    finally:
        await runner.cleanup()


async def test_every_answer_is_counted_once(tmp_path: Path) -> None:
    runner, base, seen, counted = await _gateway_site(tmp_path, environment_facing=False)
    try:
        async with aiohttp.ClientSession() as session:
            for name, headers in (("f", {}), ("missing", {}), ("f", {"X-Amz-Invocation-Type": "DryRun"})):
                async with session.post(base + INVOKE.format(name), data=b"{}", headers=headers) as resp:
                    await resp.read()
        assert counted == [200, 404, 200] and seen == ["/2015-03-31/functions/f/invocations"]
    finally:
        await runner.cleanup()
