"""Generated requests against a live gateway's API (hypothesis): bad input gets a Lambda-shaped 4xx, never a 500.

Asserts for every request: no 5xx but the documented ones (501 NotImplementedException for operations this gateway
does not serve), every error names its type (`x-amzn-ErrorType`) with a JSON `message`; afterwards the gateway is
healthy and its registry consistent (every listed function can be read and invoked).
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.parse
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import RunningGateway, create_function, invoke_json

NAMES = st.one_of(
    st.sampled_from(
        [
            "fuzz",
            "fuzz:1",
            "fuzz:live",
            "nope",
            "a" * 200,
            "..",
            "%2e%2e",
            "arn:aws:lambda:us-east-1:123456789012:function:fuzz",
        ]
    ),
    st.text(min_size=0, max_size=80),
)
PATHS = [
    ("GET", "/2015-03-31/functions/"),
    ("POST", "/2015-03-31/functions"),
    ("GET", "/2015-03-31/functions/{n}"),
    ("DELETE", "/2015-03-31/functions/{n}"),
    ("GET", "/2015-03-31/functions/{n}/configuration"),
    ("PUT", "/2015-03-31/functions/{n}/configuration"),
    ("PUT", "/2015-03-31/functions/{n}/code"),
    ("POST", "/2015-03-31/functions/{n}/invocations"),
    ("POST", "/2015-03-31/functions/{n}/versions"),
    ("GET", "/2015-03-31/functions/{n}/versions"),
    ("POST", "/2015-03-31/functions/{n}/aliases"),
    ("GET", "/2015-03-31/functions/{n}/aliases/{n}"),
    ("PUT", "/2017-10-31/functions/{n}/concurrency"),
    ("PUT", "/2019-09-30/functions/{n}/provisioned-concurrency"),
    ("POST", "/2017-03-31/tags/{n}"),
    ("POST", "/2018-10-31/layers/{n}/versions"),
    ("GET", "/{n}"),
]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=4),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    ["FunctionName", "Runtime", "Role", "Handler", "Code", "Timeout", "MemorySize", "Environment", "Publish",
     "Name", "FunctionVersion", "RoutingConfig", "ReservedConcurrentExecutions", "Tags", "Content", "Unknown"]
)  # fmt: skip
BODIES = st.one_of(
    st.dictionaries(FIELDS, JSON_VALUES, max_size=6).map(lambda d: json.dumps(d).encode()),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.just(b"\xff\xfe{not json"),
    st.just(b""),
)
QUERIES = st.dictionaries(
    st.sampled_from(["Qualifier", "MaxItems", "Marker", "FunctionVersion", "tagKeys", "List", "x"]),
    st.text(max_size=20),
    max_size=3,
)
HEADERS = st.dictionaries(
    st.sampled_from(["X-Amz-Invocation-Type", "X-Amz-Log-Type", "X-Amz-Client-Context", "Content-Type"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    max_size=3,
)


def _request(
    gw: RunningGateway, method: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", int(gw.url.rsplit(":", 1)[1]), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_generated_requests_get_lambda_shaped_answers_and_leave_the_registry_consistent(
    gateway: RunningGateway,
) -> None:
    lam: Any = gateway.client()
    create_function(lam, "fuzz", "def lambda_handler(e, c):\n    return e\n")
    lam.publish_version(FunctionName="fuzz")
    lam.create_alias(FunctionName="fuzz", Name="live", FunctionVersion="1")
    seen: list[tuple[str, str, int]] = []

    examples = int(os.environ.get("FUZZ_EXAMPLES", "250"))  # more for a longer hunt: FUZZ_EXAMPLES=5000

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.sampled_from(PATHS), NAMES, QUERIES, BODIES, HEADERS)
    def check(route: tuple[str, str], name: str, query: dict[str, str], body: bytes, headers: dict[str, str]) -> None:
        method, template = route
        path = template.replace("{n}", urllib.parse.quote(name, safe=""))
        if query:
            path += "?" + urllib.parse.urlencode(query)
        status, resp_headers, payload = _request(gateway, method, path, body, headers)
        seen.append((method, template, status))
        assert status < 500 or status == 501, (method, path, body[:100], headers, status, payload[:300])
        if status >= 400:
            assert resp_headers.get("x-amzn-errortype"), (method, path, status, payload[:300])
            # the message's key is the error shape's in Lambda's model: `message` or `Message` (issue 18 cause 10)
            assert {"message", "Message"} & set(json.loads(payload)), payload[:300]

    check()
    assert len(seen) >= min(examples, 200)
    statuses = {status for *_, status in seen}
    assert any(200 <= s < 300 for s in statuses) and any(400 <= s < 500 for s in statuses), statuses
    assert gateway.health()["status"] == "ok"
    for function in lam.list_functions()["Functions"]:  # whatever the fuzzer created is whole
        name = function["FunctionName"]
        assert lam.get_function(FunctionName=name)["Configuration"]["FunctionName"] == name
        if name == "fuzz":
            assert "FunctionError" not in invoke_json(lam, name, {"ok": 1})[0]
