"""The Grafana dashboards against the metrics contract, and against a real Prometheus scraping a loaded gateway.

`test_dashboards_*` are cheap and always run: every dashboard parses, has a fixed unique uid, the `datasource` and
`function` variables, and every panel query names only metrics (and labels) of the contract below, filtering on
`$function` wherever the metric has that label.

`test_every_panel_query_returns_series` needs a `prometheus` binary on PATH (`.ci/run` installs Debian's package):
it starts a gateway and a Prometheus on loopback scraping it every second, drives the gateway so that every panel
has something to show (Event invokes too: a function that fails them into an OnFailure destination and a dead-letter
queue at an SQS endpoint where nothing listens, and a function with a reservation of 0 whose events stay queued), and
evaluates every panel's PromQL through Prometheus' HTTP API (Grafana's variables replaced as Grafana would with "All"
selected). A query fails if Prometheus rejects it, if it returns no series, or if all it returns is NaN (a quantile
of nothing). Without the binary the test is skipped, except in CI (`CI=true`), where that is a failure.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ROOT, GatewayFactory, RunningGateway, create_function, free_port, invoke_json
from tests.test_e2e_function_urls import url_for

DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))

# The metrics gateway/observability/metrics.py exposes: name -> labels. Dashboards may use nothing else.
CONTRACT: dict[str, frozenset[str]] = {
    name: frozenset(labels.split()) if labels else frozenset()
    for name, labels in {
        "lambda_invocations_total": "function resource version",
        "lambda_errors_total": "function resource version kind",
        "lambda_throttles_total": "function reason",
        "lambda_duration_seconds": "function resource version",
        "lambda_init_duration_seconds": "function version",
        "lambda_concurrent_executions": "function",
        "lambda_unreserved_concurrent_executions": "",
        "lambda_concurrency_limit": "scope",
        "lambda_reserved_concurrency": "function",
        "lambda_provisioned_concurrent_executions": "function version",
        "lambda_provisioned_concurrency_allocated": "function version",
        "lambda_provisioned_concurrency_invocations_total": "function resource version",
        "lambda_provisioned_concurrency_spillover_invocations_total": "function resource version",
        "lambda_provisioned_concurrency_utilization": "function version",
        "gateway_environments": "function state",
        "gateway_overhead_seconds": "direction",
        "gateway_fork_seconds": "",
        "gateway_cold_starts_total": "function",
        "gateway_zygote_restarts_total": "",
        "gateway_payload_bytes_total": "direction",
        "gateway_http_requests_total": "operation status",
        "lambda_async_events_received_total": "function",
        "lambda_async_event_age_seconds": "function",
        "lambda_async_events_dropped_total": "function reason",
        "lambda_destination_delivery_failures_total": "function service",
        "lambda_dead_letter_errors_total": "function",
        "gateway_async_queue_depth": "function",
        "lambda_esm_batches_total": "uuid function source",
        "lambda_esm_records_total": "uuid function source",
        "lambda_esm_records_failed_total": "uuid function source",
        "lambda_esm_records_filtered_total": "uuid function source",
        "lambda_esm_records_discarded_total": "uuid function source",
        "lambda_esm_polling_errors_total": "uuid function source",
        "lambda_esm_iterator_age_seconds": "uuid function source",
        "lambda_url_requests_total": "function resource status_class",
        "lambda_url_request_duration_seconds": "function resource",
    }.items()
}
HISTOGRAMS = {
    "lambda_duration_seconds",
    "lambda_init_duration_seconds",
    "gateway_overhead_seconds",
    "gateway_fork_seconds",
    "lambda_async_event_age_seconds",
    "lambda_url_request_duration_seconds",
}
FUNCTION_FILTER = 'function=~"$function"'
# Panels that compare all functions' in-flight count with the account's limits: never filtered by function.
ACCOUNT_WIDE_PANELS = {"Account concurrency vs limits"}

# What Grafana would put in place of each template variable; `$function` is "All".
SUBSTITUTIONS = {"function": ".*", "__rate_interval": "30s", "__interval": "5s", "__range": "5m"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_TOKEN = re.compile(
    r'"(?:[^"\\]|\\.)*"|\[[^\]]*\]|\{[^}]*\}'  # strings, ranges, bare matchers
    r"|(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?P<matchers>\{[^}]*\})?(?P<call>\s*\()?"
    r"|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|.",
    re.S,
)
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def load_json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(panel title, target) for every query of the dashboard."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target


def selectors(expr: str) -> list[tuple[str, str]]:
    """The metric selectors of a PromQL expression: (metric name, matchers text without braces)."""
    expr = _GROUPING.sub(" ", expr)
    found = []
    for match in _TOKEN.finditer(expr):
        name = match.group("name")
        if name is None or match.group("call") or name.lower() in _KEYWORDS:
            continue
        found.append((name, (match.group("matchers") or "{}")[1:-1]))
    return found


def contract_problems(expr: str, account_wide: bool = False) -> list[str]:
    """What in `expr` does not fit the metrics contract (empty if it all does).

    `account_wide`: the query deliberately covers every function (compared with an account limit), so a metric
    with a `function` label need not filter on `$function`.
    """
    problems = []
    known_labels = {"le"}
    for name, matchers in selectors(expr):
        base = re.sub(r"_(bucket|count|sum)$", "", name) if name not in CONTRACT else name
        if base not in CONTRACT or (base != name and base not in HISTOGRAMS):
            problems.append(f"unknown metric {name}")
            continue
        labels = CONTRACT[base] | ({"le"} if name.endswith("_bucket") else set())
        known_labels |= labels
        problems += [
            f"{name} has no label {label}" for label in _MATCHER_LABEL.findall(matchers) if label not in labels
        ]
        if ("function" in labels) != (FUNCTION_FILTER in matchers) and not (account_wide and "function" in labels):
            problems.append(f"{name} must {'' if 'function' in labels else 'not '}filter on {FUNCTION_FILTER}")
    for group in _GROUPING.findall(expr):
        problems += [f"no metric has label {label}" for label in re.findall(r"\w+", group) if label not in known_labels]
    if not selectors(expr):
        problems.append("no metric")
    return problems


def substitute(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in SUBSTITUTIONS:
            raise AssertionError(f"unknown template variable ${name} in {expr}")
        return SUBSTITUTIONS[name]

    return _VARIABLE.sub(value, expr)


# ------------------------------------------------------------------------------------------------ dashboards alone


def test_dashboards_parse_with_fixed_unique_uids() -> None:
    assert len(DASHBOARDS) >= 2, DASHBOARDS
    uids = [load_json(path)["uid"] for path in DASHBOARDS]
    assert len(set(uids)) == len(uids), uids
    for uid in uids:
        assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", uid), uid
    for path in DASHBOARDS:
        dashboard = load_json(path)
        assert dashboard.get("id") is None, f"{path.name}: a provisioned dashboard must not carry an id"
        assert dashboard["title"] and dashboard["schemaVersion"] >= 36, path.name
        ids = [panel["id"] for panel in panels(dashboard)]
        assert len(set(ids)) == len(ids), f"{path.name}: duplicate panel ids"


def test_dashboards_have_datasource_and_function_variables() -> None:
    for path in DASHBOARDS:
        variables = {v["name"]: v for v in load_json(path)["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource", path.name
        assert variables["datasource"]["query"] == "prometheus", path.name
        function = variables["function"]
        query = function["query"]["query"] if isinstance(function["query"], dict) else function["query"]
        assert function["type"] == "query", path.name
        assert re.sub(r"\s", "", query) == "label_values(lambda_invocations_total,function)", path.name
        assert function["multi"] is True and function["includeAll"] is True, path.name
        assert function["allValue"] == ".*", path.name
        assert function["datasource"]["uid"] == "${datasource}", path.name


def test_every_panel_query_uses_the_datasource_variable_and_the_contract() -> None:
    problems = []
    count = 0
    for path in DASHBOARDS:
        for panel in panels(load_json(path)):
            if panel["type"] != "row" and panel.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"{path.name} / {panel['title']}: panel datasource is not $datasource")
        for title, target in targets(load_json(path)):
            count += 1
            where = f"{path.name} / {title} / {target['refId']}"
            if target.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"{where}: target datasource is not $datasource")
            problems += [
                f"{where}: {p} in {target['expr']}"
                for p in contract_problems(target["expr"], title in ACCOUNT_WIDE_PANELS)
            ]
            substitute(target["expr"])
    assert count >= 20, count
    assert not problems, "\n".join(problems)
    # every metric of the contract is on some dashboard
    used = {re.sub(r"_(bucket|count|sum)$", "", name) for p in DASHBOARDS for _, t in targets(load_json(p))
            for name, _ in selectors(t["expr"])}  # fmt: skip
    assert set(CONTRACT) - used == set()


def test_the_contract_checker_catches_mistakes() -> None:
    assert contract_problems('sum by (function) (rate(lambda_invocations_total{function=~"$function"}[5m]))') == []
    assert contract_problems("rate(lambda_invocations_total[5m])") != []  # no $function filter
    assert contract_problems('rate(lambda_invocation_total{function=~"$function"}[5m])') != []  # typo
    assert contract_problems('sum by (kind) (rate(lambda_throttles_total{function=~"$function"}[5m]))') != []
    assert contract_problems('gateway_fork_seconds_bucket{function=~"$function"}') != []
    assert contract_problems('rate(lambda_concurrency_limit_bucket{scope="account"}[1m])') != []
    assert contract_problems("histogram_quantile(0.9, sum by (le) (rate(gateway_fork_seconds_bucket[1m])))") == []


# ------------------------------------------------------------------------------------------- real Prometheus

OK = "import time\ndef lambda_handler(event, context):\n    time.sleep(event.get('sleep', 0))\n    return event\n"
RAISES = "def lambda_handler(event, context):\n    raise ValueError('nope')\n"
SLOW = "import time\ndef lambda_handler(event, context):\n    time.sleep(5)\n"
EXITS = "import os\ndef lambda_handler(event, context):\n    os._exit(3)\n"
BROKEN = "import no_such_module_anywhere\ndef lambda_handler(event, context):\n    return 1\n"


#: where failed events of `raises` go: an SQS queue at GATEWAY_SQS_ENDPOINT, a port where nothing listens
NOWHERE = "arn:aws:sqs:us-east-1:123456789012:nowhere"


class Load:
    """Drives a gateway so that every panel of every dashboard has something to show."""

    def __init__(self, gw: RunningGateway) -> None:
        self.gw = gw
        self.lam = gw.client()
        self.urls: list[str] = []
        self.callers = [gw.client() for _ in range(4)]
        self.version = ""

    def deploy(self) -> None:
        """The functions, a reservation of 0, and a published version of `prov` with one provisioned environment."""
        functions: list[tuple[str, str, dict[str, Any]]] = [
            ("ok", OK, {}),
            ("raises", RAISES, {}),
            ("slow", SLOW, {"Timeout": 1}),
            ("exits", EXITS, {}),
            ("broken", BROKEN, {}),
            ("disabled", OK, {}),
            ("prov", OK, {}),
        ]
        for name, source, extra in functions:
            create_function(self.lam, name, source, **extra)
        self.lam.put_function_concurrency(FunctionName="disabled", ReservedConcurrentExecutions=0)
        # an Event invoke of `raises` fails once, then goes to both its OnFailure destination and its dead-letter
        # queue, neither reachable: a drop (retries_exhausted), a destination delivery failure and a dead-letter error
        self.lam.put_function_event_invoke_config(
            FunctionName="raises", MaximumRetryAttempts=0, DestinationConfig={"OnFailure": {"Destination": NOWHERE}}
        )
        self.lam.update_function_configuration(FunctionName="raises", DeadLetterConfig={"TargetArn": NOWHERE})
        self.version = self.lam.publish_version(FunctionName="prov")["Version"]
        self.lam.put_provisioned_concurrency_config(
            FunctionName="prov", Qualifier=self.version, ProvisionedConcurrentExecutions=1
        )
        # function URLs: one answering 200 (`ok`), one 502 (`raises`)
        self.urls = [url_for(self.gw, self.lam, name) for name in ("ok", "raises")]
        # an event source mapping on a Kafka broker nobody runs: its series, and polling errors as it retries
        self.lam.create_event_source_mapping(
            FunctionName="ok",
            SelfManagedEventSource={"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": [f"127.0.0.1:{free_port()}"]}},
            Topics=["nowhere"],
            StartingPosition="LATEST",
        )

    def provoke(self) -> None:
        """Successes with payloads, an error of every kind that can be provoked (function, timeout, crash, init; a
        timeout or crash also means a cold start next time), and throttles."""
        for i in range(5):
            invoke_json(self.lam, "ok", {"i": i, "pad": "x" * 1000 * i})
        for name in ("raises", "slow", "exits", "broken"):
            resp, _ = invoke_json(self.lam, name)
            assert resp.get("FunctionError") == "Unhandled", (name, resp)
        for url, status in zip(self.urls, (200, 502), strict=True):
            for _ in range(3):
                assert self.gw.request("GET", url.removeprefix(self.gw.url) + "/")[0] == status
        for _ in range(3):
            with pytest.raises(ClientError) as exc:
                self.lam.invoke(FunctionName="disabled", Payload=b"{}")
            assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
        # asynchronous: received and aged (`ok`), dropped and undeliverable (`raises`), queued while paused (`disabled`)
        for name in ("ok", "ok", "raises", "disabled"):
            resp = self.lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"async": true}')
            assert resp["StatusCode"] == 202, (name, resp)

    def keep_busy(self, stop: threading.Event) -> threading.Thread:
        """Until `stop`: two concurrent callers of `prov`'s version with its one provisioned environment
        (provisioned invocations, spillover, utilization, busy environments), one of `ok`, and Event invokes of `ok`
        (event age)."""
        deadline = time.monotonic() + 20
        while self.lam.get_provisioned_concurrency_config(FunctionName="prov", Qualifier=self.version)["Status"] != (
            "READY"
        ):
            assert time.monotonic() < deadline, "provisioned concurrency not READY in 20 s"
            time.sleep(0.1)

        def call(client: Any, target: str) -> None:
            while not stop.is_set():
                if target == "ok (Event)":
                    client.invoke(FunctionName="ok", InvocationType="Event", Payload=b"{}")
                    stop.wait(0.3)
                else:
                    invoke_json(client, target, {"sleep": 0.3})

        def run() -> None:
            targets = [f"prov:{self.version}", f"prov:{self.version}", "ok", "ok (Event)"]
            with ThreadPoolExecutor(len(targets)) as pool:
                for future in [pool.submit(call, c, t) for c, t in zip(self.callers, targets, strict=True)]:
                    future.result()

        thread = threading.Thread(target=run, name="load", daemon=True)
        thread.start()
        return thread


def _get(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        with exc:
            body, status = exc.read(), exc.code
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


@contextlib.contextmanager
def _prometheus(binary: str, tmp_path: Path, scrape_port: int) -> Iterator[str]:
    """A Prometheus on a free loopback port scraping 127.0.0.1:`scrape_port` every second; killed on exit."""
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: lambda-gateway\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{scrape_port}']\n"
    )
    port = free_port()
    log_path = tmp_path / "prometheus.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"prometheus exited with {proc.returncode}:\n{log_path.read_text()}"
            with contextlib.suppress(OSError):
                if _get(url + "/-/ready", timeout=1)[0] == 200:
                    break
            assert time.monotonic() < deadline, f"prometheus not ready in 20 s:\n{log_path.read_text()}"
            time.sleep(0.1)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _query(url: str, expr: str) -> tuple[str | None, list[Any]]:
    """Evaluate `expr` at now: (error or None, result)."""
    status, body = _get(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr, 'time': time.time()})}")
    if status != 200 or not isinstance(body, dict) or body.get("status") != "success":
        return f"HTTP {status}: {body.get('error') if isinstance(body, dict) else body}", []
    return None, list(body["data"]["result"])


def _wait_for(url: str, expr: str, what: str, timeout: float = 20.0) -> None:
    """Until `expr` returns a series with a value of at least 1."""
    deadline = time.monotonic() + timeout
    while True:
        _, result = _query(url, expr)
        if any(float(r["value"][1]) >= 1 for r in result):
            return
        if time.monotonic() > deadline:
            _, scrape_targets = _get(url + "/api/v1/targets")
            raise AssertionError(f"{what}: not in {timeout}s; targets: {scrape_targets}")
        time.sleep(0.2)


def test_every_panel_query_returns_series(gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        message = "no `prometheus` on PATH (apt-get install prometheus): the dashboards' PromQL is not evaluated"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; CI must run this test")
        pytest.skip(message)
    started = time.monotonic()
    gw = gateway_factory(
        env={"GATEWAY_REAP_INTERVAL": "0.5", "GATEWAY_SQS_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    )
    status, _, body = gw.request("GET", "/metrics")
    assert status == 200, body[:500]

    load = Load(gw)
    stop = threading.Event()
    with _prometheus(binary, tmp_path, gw.port) as url:
        _wait_for(url, 'up{job="lambda-gateway"}', "gateway scraped")
        load.deploy()
        load.provoke()
        # A series whose first sample already holds everything that happened shows no increase, no rate and a NaN
        # quantile: provoke it all again once the first round is scraped, so every counter moves under watch.
        _wait_for(url, 'count(lambda_errors_total{kind="timeout"} > 0)', "first round scraped")
        for expr in (  # the asynchronous outcomes of the first round, so the second one moves them under watch
            'lambda_async_events_dropped_total{function="raises",reason="retries_exhausted"}',
            'lambda_destination_delivery_failures_total{function="raises",service="sqs"}',
            'lambda_dead_letter_errors_total{function="raises"}',
            'gateway_async_queue_depth{function="disabled"}',
        ):
            _wait_for(url, expr, expr)
        load.provoke()
        background = load.keep_busy(stop)
        try:
            _wait_for(url, 'count_over_time(up{job="lambda-gateway"}[1m]) >= 5', "five scrapes")
            time.sleep(3)  # a few scrapes of the continuous load and the second round
            assert background.is_alive(), "the background load died"
            exprs = [(f"{p.name} / {title}", t["expr"]) for p in DASHBOARDS for title, t in targets(load_json(p))]
            failures = []
            for where, expr in exprs:
                error, result = _query(url, substitute(expr))
                if error or not result:
                    failures.append(f"{where}: {error or 'no series'}\n    {substitute(expr)}")
                elif all(math.isnan(float(r["value"][1])) for r in result):
                    failures.append(f"{where}: only NaN (nothing observed in the rate window)\n    {substitute(expr)}")
        finally:
            stop.set()
            background.join(15)
    assert not failures, f"{len(failures)} of {len(exprs)} panel queries failed:\n" + "\n".join(failures)
    assert time.monotonic() - started < 60
