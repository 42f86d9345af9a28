"""The Extensions API (2020-01-01) of the Runtime API proxy: external extensions, their events, their errors.

External extensions are the executables of /opt/extensions (their paths come in the spec, `EnvironmentSpec.extensions`,
sorted by name as Lambda starts them). Each is started before the runtime, with the function's environment and
AWS_LAMBDA_RUNTIME_API, its output relayed to the environment's (runtimes/proxy/relay.py; "extension" telemetry
records). Then, on the proxy's HTTP server:

    POST /2020-01-01/extension/register     Lambda-Extension-Name (its file name), {"events": [INVOKE, SHUTDOWN]}
                                            -> 200, Lambda-Extension-Identifier, {functionName, functionVersion,
                                               handler}
    GET  /2020-01-01/extension/event/next   long poll: the next INVOKE or SHUTDOWN event it registered for
    POST /2020-01-01/extension/init/error   Lambda-Extension-Function-Error-Type: Init fails with that type
    POST /2020-01-01/extension/exit/error   the same after Init: the environment is reset after this invocation
    PUT  /2022-07-01/telemetry              the Telemetry API (runtimes/proxy/telemetry.py)
    PUT  /2020-08-15/logs                   the Logs API it replaced

The phases, as on Lambda (the proxy's lifecycle drives them: runtimes/proxy/lifecycle.py):

- Init: every extension registers (then the runtime is started), and Init ends once the runtime and every extension
  have asked for their next event. An extension that exits first fails Init with Extension.Crash, one that cannot be
  started with Extension.LaunchError, `init/error` with the type it gives. One that never registers holds Init until
  the gateway's Init timeout ends the environment (Sandbox.Timedout).
- Invoke: extensions that registered for INVOKE get the event as the runtime gets the invocation; the invocation is
  complete when the runtime has answered (the caller has its answer then) and each of them has asked for its next
  event again. The next invocation waits for that, up to the previous one's deadline, after which the environment is
  reset (the proxy ends), as Lambda resets an environment whose extensions overran.
- Shutdown: SHUTDOWN {"shutdownReason", "deadlineMs"} to those that registered for it; they have until the deadline
  to ask for their next event or exit, then everything is killed.

Internal extensions (a library in the runtime's process registers one, under any name that is not a file of
/opt/extensions) are accepted as on Lambda: once the external ones have registered and before the runtime asks for
its first invocation, INVOKE only; Init then waits for their `next` too.

Bounds (extensions are the function author's code, or a third party's): each name registers once, and only during
Init; at most MAX_EXTENSIONS in all; one pending `next` each; request bodies of at most MAX_BODY; event bodies are
built here, never echoed from an extension. Concurrency model: callbacks of the proxy's event loop, one thread, no
task of its own.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence

from runtimes.proxy import process, relay, telemetry
from runtimes.proxy.server import Exchange, Router, error_document

PREFIX = "/2020-01-01/extension"
TELEMETRY_PATH = "/2022-07-01/telemetry"
LOGS_PATH = "/2020-08-15/logs"  # the Logs API, which the Telemetry API replaced
EVENTS = frozenset({"INVOKE", "SHUTDOWN"})
#: the largest request body of the Extensions and Telemetry APIs (their requests are small JSON documents)
MAX_BODY = 64 * 1024
#: Lambda's limit on an environment's extensions
MAX_EXTENSIONS = 10
ID_HEADER = "lambda-extension-identifier"
NAME_HEADER = "lambda-extension-name"
ERROR_TYPE_HEADER = "lambda-extension-function-error-type"
_ACCEPTED = json.dumps({"status": "OK"}).encode()

#: the Init error types Lambda reports for extensions
LAUNCH_ERROR = "Extension.LaunchError"
#: Lambda's name for more extensions than MAX_EXTENSIONS (the Extensions API's 403 on the eleventh registration)
TOO_MANY = "Extension.TooManyExtensions"
CRASH = "Extension.Crash"
INIT_ERROR = "Extension.InitError"
EXIT_ERROR = "Extension.ExitError"

Failure = tuple[str, str]  # (error type, message)


class Extension:
    """One external extension: its process, its registration, its pending `next` and undelivered events."""

    __slots__ = (
        "busy", "emulator", "events", "exit_status", "ext_id", "name", "path", "pid", "queue", "ready", "relay",
        "waiter",
    )  # fmt: skip

    def __init__(self, path: str, emulator: str = "") -> None:
        self.path = path
        self.emulator = emulator  # "" or QEMU's user mode, that runs it (EnvironmentSpec.extension_emulators)
        self.name = os.path.basename(path)
        self.ext_id = ""  # set when it registers
        self.events: frozenset[str] = frozenset()
        self.pid = 0
        self.relay: relay.Relay | None = None
        self.waiter: Exchange | None = None  # its `next`, waiting for an event
        self.queue: deque[bytes] = deque()  # events it has not asked for yet
        self.ready = False  # asked for its first event: its Init is over
        self.busy = False  # has an event it has not finished (it finishes by asking for the next)
        self.exit_status: int | None = None

    @property
    def alive(self) -> bool:
        return self.exit_status is None

    def deliver(self, event: bytes) -> None:
        self.busy = True
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.closed:
            _send_event(waiter, event)
        else:
            self.queue.append(event)


def _send_event(exchange: Exchange, event: bytes) -> None:
    exchange.respond(200, event, f"Lambda-Extension-Event-Identifier: {uuid.uuid4()}\r\n")


def spawn(path: str, env: Mapping[str, str], cwd: str, output: int, emulator: str = "") -> int:
    """Start one extension (as the runtime is started: runtimes/proxy/process.py), fds 1 and 2 on `output`; through
    `emulator` when one is named."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, output, 1),
        (os.POSIX_SPAWN_DUP2, output, 2),
    ]
    os.chdir(cwd)
    argv = [emulator, path] if emulator else [path]
    return os.posix_spawn(
        argv[0], argv, dict(env), file_actions=actions, setsigdef=process._DEFAULT_SIGNALS, setsigmask=()
    )


class Extensions:
    """The extensions of one environment and the Extensions API's state. The lifecycle (runtimes/proxy/lifecycle.py)
    sets the callbacks: `on_registered` (start the runtime), `on_change` (an extension asked for its next event,
    exited, or failed: re-check whatever waits on them)."""

    def __init__(
        self,
        paths: Sequence[str],
        env: Mapping[str, str],
        tele: telemetry.Telemetry,
        writer: relay.Writer,
        emulators: Mapping[str, str] | None = None,
    ):
        emulators = emulators or {}
        # external ones (a path), then internal
        self.extensions = [Extension(p, emulators.get(p, "")) for p in paths[:MAX_EXTENSIONS]]
        self.declined = len(paths) - len(self.extensions)  # executables past the limit: Init fails, none starts
        self.env = env
        self.telemetry = tele
        self.writer = writer
        self.json_logs = env.get("AWS_LAMBDA_LOG_FORMAT") == "JSON"
        self.registration_open = True  # until every external extension has registered (then the runtime starts)
        self.runtime_ready = False  # the runtime asked for its first invocation: no internal extension may register
        self.failure: Failure | None = None  # the first error an extension caused (Init error, or reset after Init)
        self.on_registered: Callable[[], None] = lambda: None
        self.on_change: Callable[[], None] = lambda: None

    def add_routes(self, router: Router) -> None:
        router.add("POST", f"{PREFIX}/register", self.register, max_body=MAX_BODY)
        router.add("GET", f"{PREFIX}/event/next", self.next, max_body=MAX_BODY)
        router.add("POST", f"{PREFIX}/init/error", self.init_error, max_body=MAX_BODY)
        router.add("POST", f"{PREFIX}/exit/error", self.exit_error, max_body=MAX_BODY)
        router.add("PUT", TELEMETRY_PATH, self.subscribe, max_body=MAX_BODY)
        router.add("PUT", TELEMETRY_PATH + "/", self.subscribe, max_body=MAX_BODY)
        router.add("PUT", LOGS_PATH, self.subscribe_logs, max_body=MAX_BODY)

    # -- processes ----------------------------------------------------------------------------------------------
    def launch(self, runtime_api: str, cwd: str) -> None:
        """Start every extension; one that cannot be started fails Init (Extension.LaunchError)."""
        if self.declined:  # loud, not silent: the layers hold more extensions than a function may have
            total = len(self.extensions) + self.declined
            self.fail(TOO_MANY, f"Extension limit ({MAX_EXTENSIONS}) reached: /opt/extensions holds {total}")
            return
        env = dict(self.env)
        env["AWS_LAMBDA_RUNTIME_API"] = runtime_api
        for ext in self.extensions:
            read_end, write_end = relay.pipe_for_child()
            try:
                ext.pid = spawn(ext.path, env, cwd, write_end, ext.emulator)
            except OSError as exc:
                os.close(read_end)
                ext.exit_status = 127 << 8
                reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
                self.fail(LAUNCH_ERROR, f"fork/exec {ext.path}: {reason}")
                return
            finally:
                os.close(write_end)
            ext.relay = relay.Relay(read_end, self.writer, self._log_line)
        if not self.extensions:
            self._close_registration()

    def _log_line(self, line: str) -> None:
        if self.telemetry.wants("extension"):
            self.telemetry.emit("extension", telemetry.log_record(line, self.json_logs))

    def exited(self, pid: int, status: int) -> bool:
        """SIGCHLD for `pid`: whether it was an extension. One that ends fails Init, or after Init resets the
        environment (the lifecycle ignores that in the shutdown phase, where extensions are expected to end)."""
        for ext in self.extensions:
            if ext.pid == pid and ext.alive:
                ext.exit_status = status
                ext.busy = False
                if ext.relay is not None:
                    ext.relay.drain()
                if self.registration_open or not ext.ready:
                    self.fail(CRASH, f"extension {ext.name} exited before Init completed: {process.describe(status)}")
                else:  # after Init: the environment is reset (the lifecycle ignores this in Shutdown)
                    self.fail(CRASH, f"extension {ext.name} exited: {process.describe(status)}")
                return True
        return False

    def kill(self) -> None:
        for ext in self.extensions:
            if ext.pid and ext.alive:
                try:
                    os.kill(ext.pid, 9)
                except OSError:
                    pass

    def fail(self, error_type: str, message: str) -> None:
        if self.failure is None:
            self.failure = (error_type, message)
        self.on_change()

    # -- state the lifecycle asks about ---------------------------------------------------------------------------
    @property
    def all_ready(self) -> bool:
        """Every extension has asked for its first event (Init's part of extensions is over)."""
        return not self.registration_open and all(ext.ready for ext in self.extensions)

    @property
    def idle(self) -> bool:
        """No live extension is still working on an event."""
        return not any(ext.busy and ext.alive for ext in self.extensions)

    def dispatch(self, event_type: str, event: dict[str, object]) -> int:
        """Send an event to every live extension that registered for `event_type`; how many got it."""
        body = json.dumps(event).encode()
        sent = 0
        for ext in self.extensions:
            if ext.alive and event_type in ext.events:
                ext.deliver(body)
                sent += 1
        return sent

    def _close_registration(self) -> None:
        if self.registration_open:
            self.registration_open = False
            self.on_registered()

    def _by_id(self, exchange: Exchange) -> Extension | None:
        ext_id = exchange.request.headers.get(ID_HEADER, "")
        for ext in self.extensions:
            if ext.ext_id and ext.ext_id == ext_id:
                return ext
        exchange.respond(403, error_document("Extension.Unregistered", "Unregistered or invalid extension identifier"))
        return None

    # -- routes ---------------------------------------------------------------------------------------------------
    def register(self, exchange: Exchange) -> None:
        name = exchange.request.headers.get(NAME_HEADER, "")
        events = _events(exchange.body)
        if events is None:
            message = 'The body must be {"events": [...]}, with events among "INVOKE" and "SHUTDOWN"'
            exchange.respond(400, error_document("InvalidRequest", message))
            return
        ext = next((e for e in self.extensions if e.name == name), None)
        if ext is None:  # not a file of /opt/extensions: an internal extension (the runtime's process registers it)
            ext = self._internal(exchange, name, events)
            if ext is None:
                return
        elif ext.ext_id or not ext.alive:
            exchange.respond(403, error_document("Extension.AlreadyRegistered", f"Extension {name} already registered"))
            return
        ext.ext_id = str(uuid.uuid4())
        ext.events = events
        answer = {
            "functionName": self.env.get("AWS_LAMBDA_FUNCTION_NAME", ""),
            "functionVersion": self.env.get("AWS_LAMBDA_FUNCTION_VERSION", ""),
            "handler": self.env.get("_HANDLER", ""),
        }
        exchange.respond(200, json.dumps(answer).encode(), f"Lambda-Extension-Identifier: {ext.ext_id}\r\n")
        self.telemetry.emit("platform.extension", {"name": name, "state": "Ready", "events": sorted(events)})
        if all(e.ext_id for e in self.extensions if e.path):
            self._close_registration()

    def _internal(self, exchange: Exchange, name: str, events: frozenset[str]) -> Extension | None:
        """An internal extension, registered from the runtime's process during its Init (as on Lambda: before the
        runtime asks for its first invocation, and not for SHUTDOWN); None after answering why not."""
        if self.runtime_ready or self.registration_open or not name:
            message = f"Extension '{name[:256]}' is neither in /opt/extensions nor registered during the runtime's Init"
            exchange.respond(403, error_document("Extension.RegistrationClosed", message))
            return None
        if len(self.extensions) >= MAX_EXTENSIONS:
            exchange.respond(403, error_document(TOO_MANY, f"Extension limit ({MAX_EXTENSIONS}) reached"))
            return None
        if "SHUTDOWN" in events:
            message = "Internal extensions cannot register for the SHUTDOWN event"
            exchange.respond(403, error_document("ShutdownEventNotSupportedForInternalExtension", message))
            return None
        ext = Extension("")
        ext.name = name[:256]
        self.extensions.append(ext)
        return ext

    def next(self, exchange: Exchange) -> None:
        ext = self._by_id(exchange)
        if ext is None:
            return
        if ext.waiter is not None and not ext.waiter.closed:
            exchange.respond(403, error_document("InvalidStateTransition", "A next request is already pending"))
            return
        ext.ready = True
        ext.busy = False
        if ext.queue:
            ext.busy = True
            _send_event(exchange, ext.queue.popleft())
        else:
            ext.waiter = exchange
            exchange.on_close = lambda gone: _forget(ext, gone)
        self.on_change()

    def init_error(self, exchange: Exchange) -> None:
        self._error(exchange, INIT_ERROR)

    def exit_error(self, exchange: Exchange) -> None:
        self._error(exchange, EXIT_ERROR)

    def _error(self, exchange: Exchange, default: str) -> None:
        ext = self._by_id(exchange)
        if ext is None:
            return
        error_type = exchange.request.headers.get(ERROR_TYPE_HEADER, "")[:1024] or default
        exchange.respond(202, _ACCEPTED)
        ext.busy = False
        self.fail(error_type, f"extension {ext.name} reported {error_type}")

    def subscribe(self, exchange: Exchange, logs_api: bool = False) -> None:
        ext = self._by_id(exchange)
        if ext is None:
            return
        status, body = self.telemetry.subscribe(ext.name, exchange.body, logs_api)
        exchange.respond(status, body, content_type="application/json" if status != 200 else "text/plain")

    def subscribe_logs(self, exchange: Exchange) -> None:
        self.subscribe(exchange, logs_api=True)


def _forget(ext: Extension, exchange: Exchange) -> None:
    if ext.waiter is exchange:
        ext.waiter = None


def _events(body: bytes) -> frozenset[str] | None:
    try:
        doc = json.loads(body) if body else {}
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    events = doc.get("events", []) if isinstance(doc, dict) else None
    if not isinstance(events, list) or not all(isinstance(e, str) and e in EVENTS for e in events):
        return None
    return frozenset(events)


def invoke_event(request_id: str, deadline_ms: int, arn: str, trace_id: str) -> dict[str, object]:
    return {
        "eventType": "INVOKE",
        "deadlineMs": deadline_ms,
        "requestId": request_id,
        "invokedFunctionArn": arn,
        "tracing": {"type": "X-Amzn-Trace-Id", "value": trace_id},
    }


def shutdown_event(reason: str, deadline_ms: int) -> dict[str, object]:
    return {"eventType": "SHUTDOWN", "shutdownReason": reason, "deadlineMs": deadline_ms}


def now_ms() -> int:
    return int(time.time() * 1000)
