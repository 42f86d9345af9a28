"""One synchronous invocation: admission -> pool -> environment -> outcome.

`Invoker.invoke()` either returns an `Outcome` (a result, or a function error answered with status 200 and
`X-Amz-Function-Error: Unhandled`, as Lambda does) or raises a `LambdaError` for the caller (runtime
unavailable, no room on the node). Whatever happens, the environment goes back to its pool or is discarded;
a crash or timeout of user code never escapes as a gateway error. Admission (the concurrency slot) is the
caller's: see gateway.execution.admission.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson

from gateway.contracts.environment import Result
from gateway.errors import ServiceException
from gateway.execution.environment import EnvironmentDied, InvocationTimeout
from gateway.execution.pools import PoolManager
from gateway.execution.zygote import ZygoteUnavailable, describe_wait_status
from gateway.store.records import FunctionConfig

log = logging.getLogger("gateway.invoker")

UNHANDLED = "Unhandled"
#: how an invocation failed, for metrics: the function raised, ran out of time, its process died, it ran out
#: of memory (reported by the isolation layer when it can tell), or Init failed
ERROR_KINDS = ("function", "timeout", "crash", "out_of_memory", "init")
#: Lambda's error type for an environment the kernel's OOM killer ended (its memory limit is MemorySize)
OUT_OF_MEMORY = "Runtime.OutOfMemory"
INIT_ERROR_TYPES = frozenset(
    {
        "Runtime.ImportModuleError",
        "Runtime.HandlerNotFound",
        "Runtime.UserCodeSyntaxError",
        "Runtime.MalformedHandlerName",
    }
)
Observer = Callable[["FunctionConfig", "Outcome"], None]
#: how long a crashed invocation waits for the zygote to report the exit status, for the error message
EXIT_STATUS_WAIT = 0.2
#: the answer to an invocation cut by the gateway's stop (GATEWAY_DRAIN_TIMEOUT)
STOPPED = "The gateway stopped before the invocation completed; its environment was stopped. Retry."
#: the tail of the log returned for LogType=Tail
LOG_TAIL_BYTES = 4096


@dataclass(slots=True)
class Outcome:
    """What the caller gets for a synchronous invoke that reached the function."""

    request_id: str
    executed_version: str
    payload: bytes
    function_error: str | None = None
    error_type: str | None = None
    log: bytes = b""
    #: what observers (metrics, log storage) need besides
    error_kind: str | None = None  # None, or one of ERROR_KINDS
    duration_ms: float = 0.0
    init_ms: float | None = None  # set on the invocation that caused a cold start
    max_rss_kb: int = 0
    provisioned: bool = False  # served by a provisioned environment
    resource: str = ""  # how it was invoked: "function" or "function:qualifier"
    written_at: float = 0.0  # time.perf_counter() when the payload went to the environment (0: never)
    replied_at: float = 0.0  # time.perf_counter() when its reply arrived (0: none)

    def log_result(self) -> str:
        """`X-Amz-Log-Result`: base64 of the last 4 KB of the invocation's log."""
        return base64.b64encode(self.log[-LOG_TAIL_BYTES:]).decode()


_getrandbits = random.Random().getrandbits
_V4_CLEAR = ~((0xF << 76) | (0x3 << 62))
_V4_SET = (0x4 << 76) | (0x2 << 62)


_ERROR_KIND = {"Sandbox.Timedout": "timeout", "Runtime.ExitError": "crash", OUT_OF_MEMORY: "out_of_memory"}


def new_request_id() -> str:
    """A random (version 4) UUID string, without uuid4()'s syscall: ids must be unique, not secret."""
    h = f"{(_getrandbits(128) & _V4_CLEAR) | _V4_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _error_body(error_type: str, message: str, request_id: str | None = None) -> bytes:
    body: dict[str, object] = {"errorMessage": message, "errorType": error_type}
    if request_id is not None:
        body["requestId"] = request_id
    return orjson.dumps(body)


class Invoker:
    """Runs synchronous invocations against the pools (admission is the caller's: gateway.execution.admission)."""

    def __init__(self, pools: PoolManager) -> None:
        self.pools = pools
        #: called with (config, outcome) after every invocation, on the event loop: must be fast, must not raise
        self.observers: list[Observer] = []
        #: build the START/END/REPORT log of every invocation (a log store listens), not only for LogType=Tail
        self.always_log = False
        #: set when the gateway stops and cuts what still runs (gateway.shutdown): no invocation starts, and one
        #: whose environment is killed under it is answered ServiceException
        self.stopping = False

    async def invoke(
        self,
        config: FunctionConfig,
        invoked_arn: str,
        payload: bytes,
        client_context: bytes | None,
        want_log: bool,
    ) -> Outcome:
        outcome = await self._run(config, invoked_arn, payload, client_context, want_log or self.always_log)
        outcome.resource = invoked_arn[invoked_arn.index(":function:") + 10 :]
        for observe in self.observers:
            observe(config, outcome)
        return outcome

    async def _run(
        self,
        config: FunctionConfig,
        invoked_arn: str,
        payload: bytes,
        client_context: bytes | None,
        want_log: bool,
    ) -> Outcome:
        request_id = new_request_id()
        if self.stopping:
            raise ServiceException(STOPPED)
        try:
            pool = self.pools.pool_for(config)
            env, cold = await pool.acquire()
        except ZygoteUnavailable as exc:
            log.warning("cannot start an environment for %s: %s", config.name, exc)
            raise ServiceException("The runtime for this function is not available; try again.") from None
        except InvocationTimeout:
            return self._failed(config, request_id, "Sandbox.Timedout", "Init timed out after 10.00 seconds", want_log)
        except EnvironmentDied as exc:
            return await self._died(config, request_id, exc, want_log)
        # Init output and Init Duration belong to the invocation that caused the cold start.
        init_log = env.init_log if cold else b""
        init_ms = env.init_ms if cold else None
        try:
            if env.init_error is not None:
                err = env.init_error
                # The stack arrives as JSON text and is passed on unparsed, as ERROR frames' bodies are.
                head = orjson.dumps(
                    {"errorMessage": err["errorMessage"], "errorType": err["errorType"], "requestId": request_id}
                )
                body = head[:-1] + b',"stackTrace":' + (err["stackTrace"] or b"[]") + b"}"
                if want_log:
                    init_log += f"[ERROR] {err['errorType']}: {err['errorMessage']}\n".encode()
                failed = self._outcome(config, request_id, body, err["errorType"], want_log, init_log, b"", init_ms)
                failed.error_kind = "init"
                return failed
            started = time.perf_counter()
            try:
                reply, written_at, replied_at = await env.invoke(
                    payload, request_id, invoked_arn, client_context, config.timeout
                )
            except InvocationTimeout:
                return self._failed(
                    config,
                    request_id,
                    "Sandbox.Timedout",
                    f"Task timed out after {config.timeout:.2f} seconds",
                    want_log,
                    init_log,
                    env.last_output,
                    init_ms,
                    duration_ms=config.timeout * 1000.0,
                )
            except EnvironmentDied as exc:
                ran_ms = max(exc.at - started, 0.0) * 1000.0  # until it died: REPORT's Duration, as on Lambda
                return await self._died(config, request_id, exc, want_log, init_log, env.last_output, init_ms, ran_ms)
            if isinstance(reply, Result):
                out, error_type = reply.payload, None
            else:
                out, error_type = reply.error_body, reply.error_type
            duration_ms, rss_kb, output = reply.duration_ms, reply.max_rss_kb, reply.log
            outcome = self._outcome(
                config, request_id, out, error_type, want_log, init_log, output, init_ms, duration_ms, rss_kb
            )
            outcome.provisioned = env.provisioned
            outcome.written_at, outcome.replied_at = written_at, replied_at
            return outcome
        finally:
            pool.release(env)

    def _outcome(
        self,
        config: FunctionConfig,
        request_id: str,
        payload: bytes,
        error_type: str | None,
        want_log: bool,
        init_log: bytes = b"",
        output: bytes = b"",
        init_ms: float | None = None,
        duration_ms: float = 0.0,
        rss_kb: int = 0,
    ) -> Outcome:
        outcome = Outcome(
            request_id, config.version, payload, duration_ms=duration_ms, init_ms=init_ms, max_rss_kb=rss_kb
        )
        if error_type is not None:
            outcome.function_error = UNHANDLED
            outcome.error_type = error_type
            outcome.error_kind = _ERROR_KIND.get(error_type, "init" if error_type in INIT_ERROR_TYPES else "function")
        if want_log:
            outcome.log = _log_text(config, request_id, init_log, output, duration_ms, rss_kb, init_ms, error_type)
        return outcome

    def _failed(
        self,
        config: FunctionConfig,
        request_id: str,
        error_type: str,
        what: str,
        want_log: bool,
        init_log: bytes = b"",
        output: bytes = b"",
        init_ms: float | None = None,
        duration_ms: float = 0.0,
        rss_kb: int = 0,
    ) -> Outcome:
        """An invocation that ended without a reply from the function (timeout, crash): Lambda's wording."""
        body = _error_body(error_type, f"RequestId: {request_id} Error: {what}")
        if want_log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
            output = output + f"{stamp} {request_id} {what}\n".encode()
        return self._outcome(
            config, request_id, body, error_type, want_log, init_log, output, init_ms, duration_ms, rss_kb
        )

    async def _died(
        self,
        config: FunctionConfig,
        request_id: str,
        exc: EnvironmentDied,
        want_log: bool,
        init_log: bytes = b"",
        output: bytes = b"",
        init_ms: float | None = None,
        duration_ms: float = 0.0,
    ) -> Outcome:
        """The environment ended without replying: Runtime.OutOfMemory if the OOM killer ended it (its REPORT
        shows the memory group's peak as Max Memory Used), else Runtime.ExitError with how it exited; while the gateway
        stops, ServiceException (the gateway killed it, not the function's fault). `duration_ms` is how long the
        invocation ran until it died (0 when it died in Init)."""
        if self.stopping:
            raise ServiceException(STOPPED)
        status = await self._exit_status(exc)
        what = f"Runtime exited with error: {status}"
        args = (config, request_id)
        if exc.oom_peak is None or status != "signal: killed":  # the OOM killer may have ended a child before
            return self._failed(*args, "Runtime.ExitError", what, want_log, init_log, output, init_ms, duration_ms)
        rss_kb = exc.oom_peak // 1024 or config.memory_size * 1024  # no peak recorded (cgroup v2 before 5.19)
        return self._failed(*args, OUT_OF_MEMORY, what, want_log, init_log, output, init_ms, duration_ms, rss_kb)

    @staticmethod
    async def _exit_status(exc: EnvironmentDied) -> str:
        status: int | None = None
        if exc.exit_status is not None:
            try:
                status = await asyncio.wait_for(asyncio.shield(exc.exit_status), EXIT_STATUS_WAIT)
            except TimeoutError:
                status = None
        return describe_wait_status(status)


def _log_text(
    config: FunctionConfig,
    request_id: str,
    init_log: bytes,
    output: bytes,
    duration_ms: float,
    rss_kb: int,
    init_ms: float | None,
    error_type: str | None,
) -> bytes:
    """Init output, START, the invocation's output, END, REPORT: as Lambda writes them to CloudWatch."""
    billed = math.ceil(duration_ms + (init_ms or 0.0))
    logging_config = config.extra.get("LoggingConfig")
    if logging_config is not None and logging_config.get("LogFormat") == "JSON":
        return _log_json(config, logging_config, request_id, init_log, output, duration_ms, rss_kb, init_ms, error_type)
    report = (
        f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\tBilled Duration: {billed} ms\t"
        f"Memory Size: {config.memory_size} MB\tMax Memory Used: {math.ceil(rss_kb / 1024)} MB\t"
    )
    if init_ms is not None:
        report += f"Init Duration: {init_ms:.2f} ms\t"
    if error_type == "Sandbox.Timedout":
        report += "Status: timeout\t"
    elif error_type in ("Runtime.ExitError", OUT_OF_MEMORY):
        report += f"Status: error\tError Type: {error_type}\t"
    return (
        init_log
        + f"START RequestId: {request_id} Version: {config.version}\n".encode()
        + output
        + f"END RequestId: {request_id}\n{report}\n".encode()
    )


def _platform_line(event_type: str, record: Mapping[str, object]) -> bytes:
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    return orjson.dumps({"time": stamp, "type": event_type, "record": record}) + b"\n"


def _log_json(
    config: FunctionConfig,
    logging_config: dict[str, str],
    request_id: str,
    init_log: bytes,
    output: bytes,
    duration_ms: float,
    rss_kb: int,
    init_ms: float | None,
    error_type: str | None,
) -> bytes:
    """LogFormat JSON: Lambda's platform events (platform.initStart, .start, .report) as JSON lines.

    SystemLogLevel WARN leaves them out; DEBUG adds platform.runtimeDone.
    """
    system_level = logging_config.get("SystemLogLevel", "INFO")
    if system_level == "WARN":
        return init_log + output
    status = "success" if error_type is None else "timeout" if error_type == "Sandbox.Timedout" else "error"
    metrics: dict[str, object] = {
        "durationMs": round(duration_ms, 2),
        "billedDurationMs": math.ceil(duration_ms + (init_ms or 0.0)),
        "memorySizeMB": config.memory_size,
        "maxMemoryUsedMB": math.ceil(rss_kb / 1024),
    }
    head = b""
    if init_ms is not None:
        metrics["initDurationMs"] = round(init_ms, 2)
        init_record = {
            "initializationType": "on-demand",
            "phase": "init",
            "functionName": config.name,
            "functionVersion": config.version,
        }
        head = _platform_line("platform.initStart", init_record)
    parts = [head, init_log, _platform_line("platform.start", {"requestId": request_id, "version": config.version})]
    parts.append(output)
    if system_level == "DEBUG":
        done: dict[str, object] = {"requestId": request_id, "status": status}
        parts.append(_platform_line("platform.runtimeDone", done))
    report: dict[str, object] = {"requestId": request_id, "metrics": metrics, "status": status}
    if error_type is not None:
        report["errorType"] = error_type
    parts.append(_platform_line("platform.report", report))
    return b"".join(parts)
