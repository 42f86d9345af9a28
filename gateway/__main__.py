"""Command line: `gateway serve`, `gateway logs FUNCTION` (also `python -m gateway ...`).

The gateway's own log goes to stderr: text lines, or with `--log-format json` / `GATEWAY_LOG_FORMAT=json` one
JSON object per line (timestamp, level, logger, message, exception, and the fields of access-log entries).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import re
import resource
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_log import AccessLogger

from gateway.api.sigv4 import sign as sign_request
from gateway.api.urls.router import looks_like_url
from gateway.settings import Settings, load_credentials
from gateway.store.signatures import (
    DEFAULT_VALID_DAYS,
    MAX_VALID_DAYS,
    SigningProfiles,
    generate_key,
    load_private_key,
    sign,
)

log = logging.getLogger("gateway")
access_log = logging.getLogger("gateway.access")

#: allocations between two young-generation collections (Python's default is 700)
GC_THRESHOLD = 10_000
#: text mode's access-log line: remote address, request line, status, bytes, seconds
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf'
#: LogRecord attributes that are not `extra=` fields
_RECORD_FIELDS = frozenset({*logging.makeLogRecord({}).__dict__, "message", "asctime", "taskName"})


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp, level, logger, message, exception (if any), extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        out: dict[str, Any] = {
            "timestamp": stamp,
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and key not in out:
                out[key] = value
        return orjson.dumps(out, default=str).decode()


def _data_plane(request: web.BaseRequest) -> bool:
    """An Invoke or a function URL request: counted by the metrics, not written to the `api` access log (a line
    per request cost a function URL request ~15 % of the gateway's CPU: BENCHMARKS.md, issue 17)."""
    return request.path.endswith("/invocations") or looks_like_url(request.headers.get("Host", ""), request.raw_path)


class ApiAccessLogger(AccessLogger):
    """aiohttp's text access log, for control-plane requests only (Invoke and function URLs: the metrics)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if not _data_plane(request):
            super().log(request, response, time)


class JsonAccessLogger(AbstractAccessLogger):
    """aiohttp access log as structured fields (method, path, status, duration, bytes) on one record."""

    invokes = True  # False: control-plane requests only

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if not self.invokes and _data_plane(request):
            return
        fields = {
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "status": response.status,
            "duration_ms": round(time * 1000.0, 3),
            "bytes": response.body_length,
            "remote": request.remote,
        }
        self.logger.info("%s %s %d", request.method, request.path, response.status, extra=fields)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def configure_logging(level: str, log_format: str) -> None:
    """The gateway's own log on stderr, as text lines or one JSON object per line."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def raise_open_files_limit(settings: Settings) -> None:
    """Lift the soft limit on open files towards the hard one, so that the connection cap, not EMFILE, is what
    refuses clients: room for every connection, a socket per environment at the account limit, and 1024 more."""
    wanted = settings.max_connections + settings.account_concurrency + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning(
            "open files are limited to %d (ulimit -n): too few for %d connections (GATEWAY_MAX_CONNECTIONS) "
            "and the environments' sockets",
            soft,
            settings.max_connections,
        )


def _bridge(app: web.Application) -> str | None:
    """The address environments reach the gateway at, when they have a network of their own (isolation.network)."""
    from gateway.app_keys import NETWORK

    network = app.get(NETWORK)
    return network.gateway_address if network is not None else None


async def _start_environment_site(runner: web.AppRunner, settings: Settings, access: dict[str, Any]) -> None:
    """The environments' listener (`environment_address`), where every request must be signed (gateway.api.auth).
    None when environments have no network, or when the main listener's wildcard address already covers the
    bridge's: its connections to that address are then marked environment-facing one by one."""
    from gateway.api.server import GatewaySite
    from gateway.app import environment_address

    address = environment_address(runner.app, settings)
    if address is None:
        return
    try:
        await GatewaySite(runner, settings, backlog=1024, address=address, environment_facing=True, **access).start()
    except OSError as exc:  # the API stays up; functions cannot call it
        log.error("cannot listen for environments on %s:%d: %s", *address, exc)
        return
    log.info("environments reach the gateway at http://%s:%d (signed requests only)", *address)


#: function URLs listed at start-up; past this many, only a count
MAX_LOGGED_URLS = 20


def _log_function_urls(app: web.Application, settings: Settings) -> None:
    """One line per function URL (`make run` shows where to open the examples), the first MAX_LOGGED_URLS."""
    from gateway.app_keys import FUNCTION_URLS

    urls = app[FUNCTION_URLS].all()
    for url in urls[:MAX_LOGGED_URLS]:
        target = url.function if url.qualifier == "$LATEST" else f"{url.function}:{url.qualifier}"
        log.info("function URL of %s: %s (%s)", target, settings.function_url(url.url_id), url.auth_type)
    if len(urls) > MAX_LOGGED_URLS:
        log.info("... and %d more function URLs (ListFunctionUrlConfigs)", len(urls) - MAX_LOGGED_URLS)


async def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT; then stop accepting, drain in-flight requests, stop every child."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    from gateway.api import front_door
    from gateway.api.server import GatewaySite
    from gateway.app import create_app

    app = create_app(settings)
    access: dict[str, Any] = {"access_log": None if settings.access_log == "off" else access_log}
    if settings.log_format == "json":
        JsonAccessLogger.invokes = settings.access_log == "all"
        access["access_log_class"] = JsonAccessLogger
    else:
        access["access_log_format"] = ACCESS_LOG_FORMAT
        if settings.access_log == "api":
            access["access_log_class"] = ApiAccessLogger
    from gateway.shutdown import RUNNER_GRACE, drain

    # the drain enforces GATEWAY_DRAIN_TIMEOUT itself; the runner only gets a short grace for what is left after it
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=RUNNER_GRACE)
    await runner.setup()
    front_door.install(runner)  # plain synchronous Invokes skip the middlewares that would pass them on
    try:
        raise_open_files_limit(settings)
        # the site makes each connection's protocol: the access log and the HTTP limits are its arguments
        site = GatewaySite(runner, settings, backlog=1024, environment_address=_bridge(runner.app), **access)
        await site.start()
        await _start_environment_site(runner, settings, access)
        # Start-up objects (routes, registry, modules) live as long as the process: keep the cyclic garbage
        # collector from walking them again and again, and let it run less often (invocations make few cycles).
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
        log.info("listening on http://%s:%d (data dir %s)", settings.host, settings.port, settings.data_dir)
        _log_function_urls(runner.app, settings)
        if settings.auth_required:
            scrape = "needs its bearer token" if settings.metrics_token else "is open"
            log.info("API requests must be SigV4-signed (%d access keys); /healthz is open, /metrics %s",
                     len(settings.credentials), scrape)  # fmt: skip
        elif not settings.loopback:
            log.warning("INSECURE: %s is reachable beyond loopback and the API that runs code is NOT authenticated "
                        "(--insecure-no-auth)", settings.host)  # fmt: skip
        else:
            log.info("API authentication off: bound to loopback and no credentials configured")
        await stop.wait()
        log.info("stopping: draining in-flight invocations (up to %.0f s)", settings.drain_timeout)
        await drain(runner, app, settings.drain_timeout)
    finally:
        await runner.cleanup()
    log.info("stopped")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="A self-hosted, Lambda-compatible gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the gateway")
    s.add_argument("--host", help="address to bind (default 127.0.0.1; env GATEWAY_HOST)")
    s.add_argument("--port", type=int, help="port (default 9000; env GATEWAY_PORT)")
    s.add_argument("--data-dir", help="registry, code and temp files (default ./.gateway-data)")
    s.add_argument("--idle-timeout", type=float, help="seconds before an idle environment is reaped (300)")
    s.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve the API without SigV4 authentication although --host is not a loopback address "
        "(env GATEWAY_INSECURE_NO_AUTH=1): anyone who reaches the port can run code on this machine",
    )
    s.add_argument(
        "--deploy",
        action="append",
        metavar="DIR",
        help="deploy each sub-directory of DIR as a function at start-up (repeatable)",
    )
    s.add_argument(
        "--log-format", choices=("text", "json"), help="the gateway's own log (text; env GATEWAY_LOG_FORMAT)"
    )
    sg = sub.add_parser("sign", help="sign a .zip package for a signing profile (or make a key pair)")
    sg.add_argument("package", nargs="?", help="the .zip to sign (signed in place unless --output)")
    sg.add_argument("--key", help="the signing profile's Ed25519 private key (PEM, PKCS#8)")
    sg.add_argument("--profile", help="the signing-profile-version ARN the key belongs to")
    sg.add_argument("--output", "-o", help="write the signed package here instead")
    sg.add_argument("--valid-days", type=int, default=DEFAULT_VALID_DAYS, help="the signature's validity (4110)")
    sg.add_argument("--generate-key", metavar="NAME", help="write a new key pair: NAME.key (private) and NAME.pub")
    lg = sub.add_parser("logs", help="print a function's stored logs")
    lg.add_argument("function", help="function name")
    lg.add_argument("--follow", "-f", action="store_true", help="keep printing new lines as they are written")
    lg.add_argument("--since", help="only lines from this time on: 30s, 10m, 2h, 1d ago, an ISO time or epoch seconds")
    lg.add_argument("--url", help="the gateway (default http://127.0.0.1:$GATEWAY_PORT, port 9000)")
    return parser


_AGO = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since_param(value: str, now: float | None = None) -> str:
    """`--since` for the endpoint: `10m` (ago) becomes epoch seconds; ISO times and numbers go as they are."""
    m = _AGO.fullmatch(value.strip())
    if m is None:
        return value
    return f"{(time.time() if now is None else now) - float(m[1]) * _UNITS[m[2]]:.3f}"


def logs_command(args: argparse.Namespace) -> int:
    """`gateway logs`: stream the endpoint's answer to stdout; exit status 1 on an error answer."""
    url = args.url or f"http://127.0.0.1:{os.environ.get('GATEWAY_PORT', '9000')}"
    query: dict[str, str] = {}
    if args.since:
        query["since"] = since_param(args.since)
    if args.follow:
        query["follow"] = "true"
    name = urllib.parse.quote(args.function, safe="")
    target = f"{url.rstrip('/')}/gateway/v1/functions/{name}/logs"
    if query:
        target += "?" + urllib.parse.urlencode(query)
    out = sys.stdout.buffer
    request = urllib.request.Request(target)
    try:
        credentials = load_credentials(os.environ)
    except ValueError as exc:
        print(f"gateway logs: {exc}", file=sys.stderr)
        return 2
    if credentials:  # sign as the gateway expects when it has credentials; harmless when it has none
        key_id, secret = next(iter(credentials.items()))
        parts = urllib.parse.urlsplit(target)
        headers = {"Host": parts.netloc}
        raw_path = parts.path + (f"?{parts.query}" if parts.query else "")
        region = os.environ.get("GATEWAY_REGION", "us-east-1")
        for name, value in sign_request("GET", raw_path, headers, b"", key_id, secret, region).items():
            request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=None if args.follow else 60) as resp:
            while chunk := resp.read1(65536):
                out.write(chunk)
                out.flush()
    except urllib.error.HTTPError as exc:
        with exc:
            body = exc.read()
        try:
            doc = orjson.loads(body)  # the key is `message` or `Message`, as the error's shape in Lambda's model
            message = doc.get("message") or doc.get("Message") or body.decode(errors="replace")
        except (orjson.JSONDecodeError, AttributeError):
            message = body.decode(errors="replace")
        print(f"gateway logs: {exc.code}: {message}", file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"gateway logs: cannot reach {url}: {exc.reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `gateway logs f | head`
        return 0
    return 0


def policy_unenforceable(settings: Settings) -> str | None:
    """Why `GATEWAY_FUNCTION_INVOKE=policy` could not hold with these settings, or None: without operator credentials
    the main listener is open, and environments that are not jailed (no network of their own) reach it unsigned."""
    from gateway.isolation.sandbox import Sandbox

    if settings.function_invoke != "policy" or settings.auth_required or Sandbox.may_jail(settings.sandbox):
        return None
    return (
        "GATEWAY_FUNCTION_INVOKE=policy cannot be enforced: functions that are not jailed (GATEWAY_SANDBOX=rlimits, "
        "or not root) reach the open API on loopback unsigned; configure operator credentials "
        "(GATEWAY_ACCESS_KEY_ID / GATEWAY_SECRET_ACCESS_KEY) or run as root"
    )


def signing_bypassable(settings: Settings) -> str | None:
    """Why code signing could not bind what functions themselves deploy with these settings, or None: as for
    `policy_unenforceable`, functions that are not jailed reach an API without operator credentials unsigned, and
    can detach or loosen their own configuration. Only said when signing profiles are registered (code signing in
    use); a warning, not a refusal: the gateway's own operator may be the only one deploying."""
    from gateway.isolation.sandbox import Sandbox

    if settings.signing_profiles is None or settings.auth_required or Sandbox.may_jail(settings.sandbox):
        return None
    return (
        "code signing (GATEWAY_SIGNING_PROFILES) does not bind functions: functions that are not jailed "
        "(GATEWAY_SANDBOX=rlimits, or not root) reach the open API on loopback unsigned and can change code signing "
        "configurations and deploy code; configure operator credentials (GATEWAY_ACCESS_KEY_ID / "
        "GATEWAY_SECRET_ACCESS_KEY) or run as root"
    )


def _generate_key_pair(name: str) -> int:
    """`gateway sign --generate-key NAME`: NAME.key (0600) and NAME.pub, neither overwritten."""
    private, public = generate_key()
    key_path, pub_path = Path(name + ".key"), Path(name + ".pub")
    written: list[Path] = []
    try:
        for path, data, mode in ((key_path, private, 0o600), (pub_path, public, 0o644)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)  # never overwrite a key
            written.append(path)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
    except OSError as exc:
        for path in written:  # a half-written pair is no pair
            path.unlink(missing_ok=True)
        print(f"gateway sign: {exc.strerror}: {exc.filename} (a key pair is never overwritten)", file=sys.stderr)
        return 1
    print(f"wrote {key_path} (private: keep it secret) and {pub_path} (register it in GATEWAY_SIGNING_PROFILES)")
    return 0


def _write_atomically(out: Path, data: bytes) -> None:
    """`out` replaced by `data` in one step (a temporary file of a unique name beside it), keeping its mode."""
    import tempfile

    mode = out.stat().st_mode & 0o777 if out.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sign_command(args: argparse.Namespace) -> int:
    """`gateway sign`: sign a package (gateway.store.signatures documents the format), or make a key pair."""
    if args.generate_key:
        return _generate_key_pair(args.generate_key)
    if not (args.package and args.key and args.profile):
        print("gateway sign: PACKAGE, --key and --profile are required (or --generate-key NAME)", file=sys.stderr)
        return 2
    if not 1 <= args.valid_days <= MAX_VALID_DAYS:  # (the library signs with any: tests make expired signatures)
        print(f"gateway sign: the validity must be 1 to {MAX_VALID_DAYS} days, not {args.valid_days}", file=sys.stderr)
        return 1
    try:
        if os.stat(args.key).st_mode & 0o077:
            print(f"gateway sign: warning: {args.key} is readable by others than its owner (chmod 600 it)",
                  file=sys.stderr)  # fmt: skip
        key = load_private_key(Path(args.key).read_bytes())
        signed = sign(Path(args.package).read_bytes(), key, args.profile, int(time.time()), args.valid_days)
        out = Path(args.output or args.package)
        _write_atomically(out, signed)
    except (OSError, ValueError) as exc:
        print(f"gateway sign: {exc}", file=sys.stderr)
        return 1
    print(f"signed {args.package} for {args.profile}: {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "logs":
        sys.exit(logs_command(args))
    if args.command == "sign":
        sys.exit(sign_command(args))
    try:
        settings = Settings.from_args(args, os.environ)
        SigningProfiles.load(settings.signing_profiles)  # a malformed file stops the start with its culprit named
    except ValueError as exc:
        sys.exit(f"gateway: {exc}")
    unenforceable = policy_unenforceable(settings)
    if unenforceable:
        sys.exit(f"gateway: {unenforceable}")
    configure_logging(settings.log_level, settings.log_format)
    if bypassable := signing_bypassable(settings):
        log.warning("%s", bypassable)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay usable without it
        runner = asyncio.run
    else:
        runner = uvloop.run
    from gateway.app import DataDirInUse  # here, not at the top: `gateway logs` needs none of the server

    try:
        runner(serve(settings))
    except DataDirInUse as exc:
        sys.exit(f"gateway: {exc}")


if __name__ == "__main__":
    main()
