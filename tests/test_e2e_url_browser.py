"""A page served by a function, opened in a real browser: Debian's Chromium, headless, renders the page of a function
URL whose content JavaScript makes (it fetches a JSON route of the same URL, with the cookie the page set, and writes
the answer into the DOM); the test reads the rendered DOM.

Why `chromium --headless --dump-dom` and not a driver (Selenium, Playwright): the browser is the client under test,
and one command line is all it needs; a driver would bring a second package and a chromedriver (or a browser
download, which this project's machines cannot make) to wait for what `--virtual-time-budget` already waits for:
Chromium's virtual time does not advance while a network request is pending, so the dump comes after the fetch and
the script that writes its answer, not after the page's load event alone.

Chromium resolves `*.localhost` to loopback itself, so the Host form of the URL opens as it is; the path form
(`http://127.0.0.1:<port>/lambda-url/<id>/`) works with the page's relative fetch too. Skips without a Chromium on
PATH (fails with CI=true: .ci/run installs Debian's `chromium`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import RunningGateway, create_function, wait_for
from tests.url_client import add_url

PAGE_FUNCTION = r'''
import json, os

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>function URL page</title></head>
<body>
<h1 id="title">loading...</h1>
<ul id="items"></ul>
<p id="visitor"></p>
<p id="agent"></p>
<ol id="others"></ol>
<script>
for (const url of __OTHERS__) {  // other functions' URLs: a browser reads them only if they allow this origin
  const li = document.getElementById("others").appendChild(document.createElement("li"));
  fetch(url).then((r) => r.text()).then((t) => { li.textContent = "read " + t; })
    .catch((e) => { li.textContent = "blocked " + e.name; });
}
fetch("api/greeting?who=chromium", {credentials: "same-origin"})
  .then((r) => r.json())
  .then((data) => {
    document.getElementById("title").textContent = data.message;
    for (const item of data.items) {
      const li = document.createElement("li");
      li.textContent = item;
      document.getElementById("items").appendChild(li);
    }
    document.getElementById("visitor").textContent = "visitor " + data.visitor;
    document.getElementById("agent").textContent = data.agent;
  })
  .catch((e) => { document.getElementById("title").textContent = "failed: " + e; });
</script>
</body></html>
"""


def lambda_handler(event, context):
    path = event["rawPath"]
    if path == "/":
        return {"statusCode": 200, "headers": {"content-type": "text/html; charset=utf-8"},
                "cookies": ["visitor=v-42; Path=/; SameSite=Lax"],
                "body": PAGE.replace("__OTHERS__", os.environ.get("OTHER_URLS", "[]"))}
    if path == "/api/greeting":
        cookies = dict(c.split("=", 1) for c in event.get("cookies", []))
        who = (event.get("queryStringParameters") or {}).get("who", "nobody")
        return {"message": f"Hello, {who}!", "items": ["rendered", "by", "JavaScript"],
                "visitor": cookies.get("visitor"), "agent": event["requestContext"]["http"]["userAgent"]}
    return {"statusCode": 404, "body": "not found"}
'''

SECRET = """
def lambda_handler(event, context):
    return {"secret": "s3"}
"""

#: how long Chromium may run the page (virtual time: network waits do not count) and the whole command (s)
VIRTUAL_MS = 10_000
TIMEOUT = 60


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI") == "true":  # .ci/run installs Debian's chromium: there, its absence is a failure
        pytest.fail("no chromium on PATH (.ci/run installs it)")
    pytest.skip("no chromium on PATH (apt-get install chromium)")


def rendered_dom(url: str, profile: Path) -> str:
    """The DOM of `url` once its scripts and their fetches are done, as headless Chromium serialises it. Chromium runs
    in a session of its own, killed as a group at the end (its zygote and renderers included)."""
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",  # as root, Chromium's own sandbox will not start; the page is ours
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--virtual-time-budget={VIRTUAL_MS}",
        "--dump-dom",
        url,
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, text=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 0 and out, f"chromium exited {proc.returncode}: {err[-2000:]}"
    return out


def _text(dom: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</', dom, re.S)
    assert match, f"no #{element_id} in {dom}"
    return match.group(1)


@pytest.mark.parametrize("form", ["host", "path"])
def test_chromium_renders_what_the_pages_script_fetched(
    gateway: RunningGateway, fname: str, form: str, tmp_path: Path
) -> None:
    client = gateway.client()
    create_function(client, fname, PAGE_FUNCTION)
    url = add_url(client, fname)
    if url is None:
        pytest.skip("this gateway has no function URLs yet (CreateFunctionUrlConfig answered 501)")
    url_id = url.split("//", 1)[1].split(".", 1)[0]
    page = url if form == "host" else f"{gateway.url}/lambda-url/{url_id}/"
    dom = rendered_dom(page, tmp_path / "profile")
    assert _text(dom, "title") == "Hello, chromium!", dom
    assert re.findall(r"<li>(.*?)</li>", dom) == ["rendered", "by", "JavaScript"]
    assert _text(dom, "visitor") == "visitor v-42"  # the page's cookie went back with the fetch
    assert "HeadlessChrome" in _text(dom, "agent")


def test_a_page_reads_another_functions_url_only_when_that_url_allows_its_origin(
    gateway: RunningGateway, fname: str, tmp_path: Path
) -> None:
    """Host-form URLs are origins of their own, as on AWS: a page one function serves cannot read what another
    function's URL answers (the browser's same-origin policy), unless that URL's Cors allows the page's origin (the
    gateway's CORS headers, seen by a real browser)."""
    client = gateway.client()
    create_function(client, fname, PAGE_FUNCTION)
    page = add_url(client, fname)
    if page is None:
        pytest.skip("this gateway has no function URLs yet (CreateFunctionUrlConfig answered 501)")
    origin = page.rstrip("/")
    others = []
    for suffix, cors in (("closed", None), ("open", {"AllowOrigins": [origin], "AllowMethods": ["GET"]})):
        create_function(client, f"{fname}-{suffix}", SECRET)
        others.append(add_url(client, f"{fname}-{suffix}", **({"Cors": cors} if cors else {})))
    variables = {"OTHER_URLS": json.dumps(others)}
    client.update_function_configuration(FunctionName=fname, Environment={"Variables": variables})
    wait_for(lambda: client.get_function(FunctionName=fname)["Configuration"]["LastUpdateStatus"] == "Successful")
    dom = rendered_dom(page, tmp_path / "profile")
    assert _text(dom, "title") == "Hello, chromium!", dom
    listed = re.search(r'id="others">(.*?)</ol>', dom, re.S)
    closed, opened = re.findall(r"<li>(.*?)</li>", listed.group(1) if listed else "")
    assert closed == "blocked TypeError", dom  # the answer came, the browser withheld it from the page
    assert opened.startswith("read ") and json.loads(opened[5:]) == {"secret": "s3"}, dom
