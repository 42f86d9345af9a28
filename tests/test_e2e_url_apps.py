"""Web apps nobody here wrote, behind function URLs, driven with an ordinary HTTP client: a FastAPI app through
Mangum (Lambda's most common ASGI adapter) and a Powertools `LambdaFunctionUrlResolver` app, each from a layer of
the real libraries (tests/site_layer.py: pydantic-core is a C extension, loaded from the jail's read-only /opt), and a
Node.js server-sent events endpoint behind a RESPONSE_STREAM URL (`awslambda.streamifyResponse`).

Each request goes three ways (tests/url_client.py): the URL by Host header, the URL by path, and Invoke with a
hand-built payload 2.0 event (what a user had to do before URLs, and what the URL forms must agree with). The URL
forms skip on a gateway whose CreateFunctionUrlConfig answers 501.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ROLE, RunningGateway, create_function, make_zip
from tests.url_client import VIAS, App, add_url

FASTAPI_APP = """
from fastapi import Cookie, FastAPI, Header, Request, Response
from pydantic import BaseModel
from mangum import Mangum

app = FastAPI()


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


@app.get("/items/{item_id}")
def read_item(item_id: int, q: str | None = None, x_token: str | None = Header(default=None)):
    return {"item_id": item_id, "q": q, "x_token": x_token}


@app.post("/items", status_code=201)
def create_item(item: Item, response: Response):
    response.set_cookie("session", "s3cr3t", httponly=True)
    response.set_cookie("theme", "dark")
    return {"created": item.model_dump(), "total": item.price * 2}


@app.get("/me")
def me(session: str | None = Cookie(default=None), theme: str | None = Cookie(default=None)):
    return {"session": session, "theme": theme}


@app.get("/pixel.png")
def pixel():
    return Response(content=bytes(range(256)), media_type="image/png")


@app.post("/digest")
async def digest(request: Request):
    data = await request.body()
    return {"sha256": __import__("hashlib").sha256(data).hexdigest(), "size": len(data)}


handler = Mangum(app, lifespan="off")
"""

POWERTOOLS_APP = """
from aws_lambda_powertools.event_handler import CORSConfig, LambdaFunctionUrlResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError

app = LambdaFunctionUrlResolver(cors=CORSConfig(allow_origin="https://shop.example", max_age=300))
TODOS = {"1": {"id": "1", "title": "write tests"}}


@app.get("/hello/<name>")
def hello(name: str):
    return {"hello": name, "greeting": app.current_event.get_query_string_value("greeting", "hi")}


@app.get("/todos/<todo_id>")
def get_todo(todo_id: str):
    if todo_id not in TODOS:
        raise NotFoundError(f"no todo {todo_id}")
    return TODOS[todo_id]


@app.post("/todos")
def create_todo():
    todo = app.current_event.json_body
    return Response(status_code=201, content_type=content_types.APPLICATION_JSON, body={"created": todo},
                    headers={"Location": "/todos/2"})


def lambda_handler(event, context):
    return app.resolve(event, context)
"""

#: where the libraries come from and that they load in the function's environment (a jail: /opt read-only)
IMPORTS = """
import os, sys

def lambda_handler(event, context):
    import aws_lambda_powertools, fastapi, mangum, pydantic, pydantic_core
    path = pydantic_core._pydantic_core.__file__
    try:
        open(os.path.join(os.path.dirname(path), "probe"), "w").close()
        writable = True
    except OSError:
        writable = False
    return {"pydantic_core": path, "fastapi": fastapi.__version__, "validated": pydantic.TypeAdapter(int)
            .validate_python("42"), "writable": writable, "jailed": os.path.exists("/opt/python")}
"""


def deploy(gateway: RunningGateway, layer: str, name: str, source: str, handler: str, **url: Any) -> App:
    client = gateway.client()
    create_function(client, name, source, handler=handler, Layers=[layer], Timeout=30, MemorySize=512)
    return App(client, gateway.port, name, add_url(client, name, **url))


@pytest.fixture(scope="module")
def layer(gateway: RunningGateway, web_layer: bytes) -> str:
    client = gateway.client()
    return str(client.publish_layer_version(LayerName="web-libs", Content={"ZipFile": web_layer})["LayerVersionArn"])


@pytest.fixture(scope="module")
def fastapi_app(gateway: RunningGateway, layer: str) -> App:
    return deploy(gateway, layer, "fastapi-mangum", FASTAPI_APP, "lambda_function.handler")


@pytest.fixture(scope="module")
def powertools_app(gateway: RunningGateway, layer: str) -> App:
    return deploy(gateway, layer, "powertools-url", POWERTOOLS_APP, "lambda_function.lambda_handler")


def test_the_libraries_load_from_the_layer_in_the_functions_environment(gateway: RunningGateway, layer: str) -> None:
    app = deploy(gateway, layer, "web-imports", IMPORTS, "lambda_function.lambda_handler")
    body = app.send("invoke", "GET", "/").json()
    assert body["pydantic_core"].endswith(".so") and "/python/pydantic_core/" in body["pydantic_core"], body
    assert body["validated"] == 42
    if os.geteuid() == 0:  # jailed: the layers merged at /opt, read-only
        assert body["pydantic_core"].startswith("/opt/python/") and not body["writable"], body


@pytest.mark.parametrize("via", VIAS)
def test_fastapi_routes_query_header_body_and_cookies(fastapi_app: App, via: str) -> None:
    got = fastapi_app.send(via, "GET", "/items/42?q=lamp", headers={"X-Token": "t0k"})
    assert got.status == 200 and got.json() == {"item_id": 42, "q": "lamp", "x_token": "t0k"}
    assert got.header("content-type") == "application/json"

    item = {"name": "lamp", "price": 9.5, "tags": ["home"]}
    got = fastapi_app.send(via, "POST", "/items", json.dumps(item).encode(), {"Content-Type": "application/json"})
    assert got.status == 201 and got.json() == {"created": item, "total": 19.0}
    cookies = sorted(c.split(";")[0] for c in got.all("set-cookie"))
    assert cookies == ["session=s3cr3t", "theme=dark"], got.headers  # two cookies, two set-cookie headers
    assert any("httponly" in c.lower() for c in got.all("set-cookie"))

    got = fastapi_app.send(via, "GET", "/me", headers={"Cookie": "session=s3cr3t; theme=dark"})
    assert got.json() == {"session": "s3cr3t", "theme": "dark"}


@pytest.mark.parametrize("via", VIAS)
def test_fastapi_errors_and_binary_bodies(fastapi_app: App, via: str) -> None:
    got = fastapi_app.send(via, "GET", "/no/such/route")
    assert got.status == 404 and got.json() == {"detail": "Not Found"}
    got = fastapi_app.send(via, "GET", "/items/not-a-number")
    assert got.status == 422 and got.json()["detail"][0]["loc"] == ["path", "item_id"]
    bad = fastapi_app.send(via, "POST", "/items", b'{"name": 1}', {"Content-Type": "application/json"})
    assert bad.status == 422

    got = fastapi_app.send(via, "GET", "/pixel.png")
    assert got.status == 200 and got.header("content-type") == "image/png" and got.body == bytes(range(256))
    upload = bytes(range(256)) * 64
    got = fastapi_app.send(via, "POST", "/digest", upload, {"Content-Type": "application/octet-stream"})
    assert got.json() == {"sha256": hashlib.sha256(upload).hexdigest(), "size": len(upload)}


def test_fastapi_builds_its_redirects_from_the_urls_host(fastapi_app: App) -> None:
    """Starlette's trailing-slash redirect is absolute, made from the Host the client sent: in the Host form it
    points at the URL itself. (In the path form it would miss the /lambda-url/<id> prefix, which the function never
    sees: the README tells browser apps to use the Host form.)"""
    got = fastapi_app.send("host", "GET", "/items/3/?q=x")
    assert got.status == 307 and got.header("location") == f"{fastapi_app.url}items/3?q=x"
    assert fastapi_app.send("host", "GET", "/items/3?q=x").json()["item_id"] == 3


@pytest.mark.parametrize("via", VIAS)
def test_powertools_resolver_routes_query_body_and_not_found(powertools_app: App, via: str) -> None:
    got = powertools_app.send(via, "GET", "/hello/ada?greeting=hey")
    assert got.status == 200 and got.json() == {"hello": "ada", "greeting": "hey"}
    got = powertools_app.send(via, "GET", "/todos/1")
    assert got.json() == {"id": "1", "title": "write tests"}
    got = powertools_app.send(via, "GET", "/todos/9")
    assert got.status == 404 and got.json()["message"] == "no todo 9"
    got = powertools_app.send(via, "POST", "/todos", b'{"title": "ship"}', {"Content-Type": "application/json"})
    assert got.status == 201 and got.json() == {"created": {"title": "ship"}} and got.header("location") == "/todos/2"


@pytest.mark.parametrize("via", VIAS)
def test_powertools_cors_answers_the_apps_origin(powertools_app: App, via: str) -> None:
    """The URL has no Cors of its own, so the app's CORS (Powertools' CORSConfig) answers, preflight included."""
    origin = {"Origin": "https://shop.example"}
    got = powertools_app.send(via, "GET", "/hello/ada", headers=origin)
    assert got.header("access-control-allow-origin") == "https://shop.example"
    preflight = {**origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    got = powertools_app.send(via, "OPTIONS", "/todos", headers=preflight)
    assert got.status == 204 and got.header("access-control-allow-origin") == "https://shop.example"
    assert "POST" in (got.header("access-control-allow-methods") or "")
    assert got.header("access-control-max-age") == "300"
    got = powertools_app.send(via, "GET", "/hello/ada", headers={"Origin": "https://evil.example"})
    assert got.header("access-control-allow-origin") is None


def test_a_urls_cors_replaces_the_apps_own(gateway: RunningGateway, layer: str) -> None:
    """With Cors on the URL, the gateway answers CORS and drops the app's Access-Control-* headers: the Powertools
    app allows https://shop.example, its URL only https://admin.example, and the URL wins (a function cannot widen
    what its URL allows)."""
    cors = {"AllowOrigins": ["https://admin.example"], "AllowMethods": ["GET", "POST"], "MaxAge": 60}
    app = deploy(gateway, layer, "powertools-cors", POWERTOOLS_APP, "lambda_function.lambda_handler", Cors=cors)
    got = app.send("host", "GET", "/hello/ada", headers={"Origin": "https://shop.example"})
    assert got.status == 200 and got.json()["hello"] == "ada"
    assert got.header("access-control-allow-origin") is None, got.headers
    got = app.send("host", "GET", "/hello/ada", headers={"Origin": "https://admin.example"})
    assert got.header("access-control-allow-origin") == "https://admin.example"
    preflight = {"Origin": "https://admin.example", "Access-Control-Request-Method": "POST"}
    got = app.send("host", "OPTIONS", "/todos", headers=preflight)
    assert got.status == 200 and got.header("access-control-max-age") == "60"  # the gateway's answer (the app's: 204)


# -- Node.js: server-sent events behind a RESPONSE_STREAM URL ------------------------------------------------------

SSE = """
export const handler = awslambda.streamifyResponse(async (event, responseStream) => {
  const stream = awslambda.HttpResponseStream.from(responseStream, {
    statusCode: 200, headers: { "content-type": "text/event-stream", "cache-control": "no-cache" },
  });
  for (let i = 1; i <= 3; i++) {
    stream.write(`id: ${i}\\ndata: ${JSON.stringify({ tick: i, path: event.rawPath })}\\n\\n`);
    await new Promise((r) => setTimeout(r, 400));
  }
  stream.end("event: done\\ndata: {}\\n\\n");
});
"""


def _node_runtime() -> str:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI") == "true":  # .ci/run installs nodejs
            pytest.fail("no `node` on PATH (.ci/run installs nodejs)")
        pytest.skip("no `node` on PATH")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    return f"nodejs{version.strip().lstrip('v').split('.')[0]}.x"


def _events(resp: http.client.HTTPResponse) -> Iterator[tuple[float, dict[str, str]]]:
    """Server-sent events as they arrive: (arrival, {field: value})."""
    fields: dict[str, str] = {}
    while line := resp.readline():
        text = line.decode().rstrip("\r\n")
        if text:
            key, _, value = text.partition(": ")
            fields[key] = value
        elif fields:
            yield time.monotonic(), fields
            fields = {}


def test_server_sent_events_stream_through_a_response_stream_url(gateway: RunningGateway, fname: str) -> None:
    client = gateway.client()
    client.create_function(FunctionName=fname, Runtime=_node_runtime(), Role=ROLE,
                           Handler="index.handler", Code={"ZipFile": make_zip({"index.mjs": SSE})},
                           Timeout=10)  # fmt: skip
    app = App(client, gateway.port, fname, add_url(client, fname, invoke_mode="RESPONSE_STREAM"))
    target, headers = app.target("host", "/ticks")
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
    try:
        conn.request("GET", target, headers={**headers, "Accept": "text/event-stream"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("content-type") == "text/event-stream"
        events = list(_events(resp))
    finally:
        conn.close()
    assert [e.get("id") for _, e in events] == ["1", "2", "3", None]
    assert json.loads(events[0][1]["data"]) == {"tick": 1, "path": "/ticks"} and events[-1][1]["event"] == "done"
    assert events[-1][0] - events[0][0] >= 0.8  # the first tick arrived while the function still wrote the others
