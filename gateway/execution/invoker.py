"""One synchronous invocation: admission -> pool -> environment -> outcome.

`Invoker.invoke()` either returns an `Outcome` (a result, or a function error answered with status 200 and
`X-Amz-Function-Error: Unhandled`, as Lambda does) or raises a `LambdaError` for the caller (runtime
unavailable, no room on the node). Whatever happens, the environment goes back to its pool or is discarded;
a crash or timeout of user code never escapes as a gateway error. Admission (the concurrency slot) is the
caller's: see gateway.execution.admission.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.contracts.environment import Result
from gateway.errors import (
    INIT_ERROR_TYPES,
    RUNTIME_EXIT_ERROR,
    RUNTIME_OUT_OF_MEMORY,
    SANDBOX_TIMEDOUT,
    ServiceException,
)
from gateway.execution.environment import INIT_TIMEOUT, EnvironmentDied, InvocationTimeout
from gateway.execution.failures import mount_failure
from gateway.execution.lambda_logs import failure_line, init_error_line, log_tail, log_text
from gateway.execution.pools import PoolManager
from gateway.execution.setup_failures import ColdStartsPaused
from gateway.execution.streams import Stream
from gateway.execution.zygote import ZygoteUnavailable, describe_wait_status
from gateway.hooks import Hook
from gateway.store.records import FunctionConfig

log = logging.getLogger("gateway.invoker")

UNHANDLED = "Unhandled"
#: Lambda's payload limit for a synchronous invocation (the API checks it on Invoke; pollers on their batches)
MAX_SYNC_PAYLOAD = 6 * 1024 * 1024
#: how long a crashed invocation waits for the zygote to report the exit status, for the error message
EXIT_STATUS_WAIT = 0.2
#: the answer to an invocation cut by the gateway's stop (GATEWAY_DRAIN_TIMEOUT)
STOPPED = "The gateway stopped before the invocation completed; its environment was stopped. Retry."
#: what Lambda says when Init ran past its limit
INIT_TIMED_OUT = f"Init timed out after {INIT_TIMEOUT:.2f} seconds"


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
    error_kind: str | None = None  # None, or one of errors.ERROR_KINDS
    duration_ms: float = 0.0
    init_ms: float | None = None  # set on the invocation that caused a cold start
    max_rss_kb: int = 0
    provisioned: bool = False  # served by a provisioned environment
    resource: str = ""  # how it was invoked: "function" or "function:qualifier"
    written_at: float = 0.0  # time.perf_counter() when the payload went to the environment (0: never)
    replied_at: float = 0.0  # time.perf_counter() when its reply arrived (0: none)

    def log_result(self) -> str:
        """`X-Amz-Log-Result`: base64 of the last 4 KB of the invocation's log."""
        return log_tail(self.log)


@dataclass(slots=True)
class Invocation:
    """The facts of one invocation, filled in as it runs: what its `Outcome` and its log lines
    (gateway.execution.lambda_logs) report. One per invocation, on the event loop, never shared."""

    config: FunctionConfig
    request_id: str
    want_log: bool  # build the log (LogType=Tail, or a log store listens)
    init_log: bytes = b""  # Init's output, on the invocation that caused the cold start
    init_ms: float | None = None  # Init Duration, likewise
    output: bytes = b""  # what the invocation printed
    duration_ms: float = 0.0
    rss_kb: int = 0  # Max Memory Used
    error_type: str | None = None  # a function error's errorType


_getrandbits = random.Random().getrandbits
_V4_CLEAR = ~((0xF << 76) | (0x3 << 62))
_V4_SET = (0x4 << 76) | (0x2 << 62)


_ERROR_KIND = {SANDBOX_TIMEDOUT: "timeout", RUNTIME_EXIT_ERROR: "crash", RUNTIME_OUT_OF_MEMORY: "out_of_memory"}


def new_request_id() -> str:
    """A random (version 4) UUID string, without uuid4()'s syscall: ids must be unique, not secret."""
    h = f"{(_getrandbits(128) & _V4_CLEAR) | _V4_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _error_body(error_type: str, message: str) -> bytes:
    return orjson.dumps({"errorMessage": message, "errorType": error_type})


def _outcome(inv: Invocation, payload: bytes) -> Outcome:
    """The caller's answer: `payload` (the result or the error body) and the invocation's facts."""
    outcome = Outcome(
        inv.request_id,
        inv.config.version,
        payload,
        duration_ms=inv.duration_ms,
        init_ms=inv.init_ms,
        max_rss_kb=inv.rss_kb,
    )
    error_type = inv.error_type
    if error_type is not None:
        outcome.function_error = UNHANDLED
        outcome.error_type = error_type
        outcome.error_kind = _ERROR_KIND.get(error_type, "init" if error_type in INIT_ERROR_TYPES else "function")
    if inv.want_log:
        outcome.log = log_text(inv)
    return outcome


def _failed(inv: Invocation, error_type: str, what: str) -> Outcome:
    """An invocation that ended without a reply from the function (timeout, crash): Lambda's wording."""
    inv.error_type = error_type
    body = _error_body(error_type, f"RequestId: {inv.request_id} Error: {what}")
    if inv.want_log:
        inv.output += failure_line(inv.request_id, what)
    return _outcome(inv, body)


def _init_failed(inv: Invocation, err: dict[str, Any]) -> Outcome:
    """Init failed in the environment this invocation got: Lambda answers with the error Init reported, shaped by
    READY's `stack_trace` (gateway/contracts/environment.py): a platform's error in its "RequestId: <id> Error: ..."
    form, the Python fast path's document (its stack spliced in unparsed, "requestId" empty as Lambda's Python
    runtime leaves it for an Init error), or the document a runtime posted to init/error, unchanged."""
    error_type, message, raw = err["errorType"], err["errorMessage"], err["stackTrace"]
    if not raw:
        body = _error_body(error_type, f"RequestId: {inv.request_id} Error: {message}")
        line = failure_line(inv.request_id, message)  # as for a crash during an invocation
    elif raw[:1] == b"[":
        head = orjson.dumps({"errorMessage": message, "errorType": error_type, "requestId": ""})
        body = head[:-1] + b',"stackTrace":' + raw + b"}"
        line = init_error_line(error_type, message)  # the fast path prints no line of its own, Lambda's runtime does
    else:
        body, line = raw, b""  # the runtime wrote what it wanted in its log (Node.js: "Uncaught Exception")
    if inv.want_log:
        inv.init_log += line
    inv.error_type = error_type
    failed = _outcome(inv, body)
    failed.error_kind = "init"
    return failed


class Invoker:
    """Runs synchronous invocations against the pools (admission is the caller's: gateway.execution.admission)."""

    def __init__(self, pools: PoolManager) -> None:
        self.pools = pools
        #: called with (config, outcome) after every invocation, on the event loop: must be fast
        self.on_outcome: Hook[[FunctionConfig, Outcome]] = Hook("invocation outcome", log)
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
        stream: Stream | None = None,
        request_id: str | None = None,
    ) -> Outcome:
        """Run one invocation. With a `stream` (InvokeWithResponseStream), a function that streams its response
        hands its pieces to it as they come (the outcome's payload is then the reply's last piece, usually empty), and
        the invocation takes the stream's `request_id`; without one they are joined into the outcome's payload.
        `request_id`: the id an asynchronous invocation was accepted with (every attempt runs with it); else a new
        one."""
        if request_id is None:
            request_id = new_request_id() if stream is None else stream.request_id
        want_log = want_log or self.always_log
        outcome = await self._run(config, invoked_arn, payload, client_context, want_log, stream, request_id)
        outcome.resource = invoked_arn[invoked_arn.index(":function:") + 10 :]
        self.on_outcome(config, outcome)
        return outcome

    async def _run(
        self,
        config: FunctionConfig,
        invoked_arn: str,
        payload: bytes,
        client_context: bytes | None,
        want_log: bool,
        stream: Stream | None,
        request_id: str,
    ) -> Outcome:
        inv = Invocation(config, request_id, want_log)
        if self.stopping:
            raise ServiceException(STOPPED)
        try:
            pool = self.pools.pool_for(config)
            env = pool.take()  # warm: no coroutine to run
            cold = env is None
            if env is None:
                env, cold = await pool.acquire()
        except ZygoteUnavailable as exc:
            if not isinstance(exc, ColdStartsPaused):  # its pool says why, once a minute (a function's own words)
                log.warning("cannot start an environment for %s: %s", config.name, exc)
            raise ServiceException("The runtime for this function is not available; try again.") from None
        except InvocationTimeout:
            return _failed(inv, SANDBOX_TIMEDOUT, INIT_TIMED_OUT)
        except EnvironmentDied as exc:
            inv.output = exc.output  # it died in Init: what it printed there, then Lambda's line saying how it ended
            return await self._died(inv, exc)
        if cold:  # Init output and Init Duration belong to the invocation that caused the cold start
            inv.init_log, inv.init_ms = env.init_log, env.init_ms
        try:
            if env.init_error is not None:
                return _init_failed(inv, env.init_error)
            started = time.perf_counter()
            try:
                reply, written_at, replied_at = await env.invoke(
                    payload, inv.request_id, invoked_arn, client_context, config.timeout, stream
                )
            except InvocationTimeout:
                inv.output, inv.duration_ms = env.last_output, config.timeout * 1000.0
                return _failed(inv, SANDBOX_TIMEDOUT, f"Task timed out after {config.timeout:.2f} seconds")
            except EnvironmentDied as exc:
                inv.output = env.last_output
                inv.duration_ms = max(exc.at - started, 0.0) * 1000.0  # until it died: REPORT's Duration, as on Lambda
                return await self._died(inv, exc)
            if isinstance(reply, Result):
                out = reply.payload
            else:
                out, inv.error_type = reply.error_body, reply.error_type
            inv.duration_ms, inv.rss_kb, inv.output = reply.duration_ms, reply.max_rss_kb, reply.log
            outcome = _outcome(inv, out)
            outcome.provisioned = env.provisioned
            outcome.written_at, outcome.replied_at = written_at, replied_at
            return outcome
        finally:
            pool.release(env)

    async def _died(self, inv: Invocation, exc: EnvironmentDied) -> Outcome:
        """The environment ended without replying: Runtime.OutOfMemory if the OOM killer ended it (its REPORT
        shows the memory group's peak as Max Memory Used), else Runtime.ExitError with how it exited; while the gateway
        stops, ServiceException (the gateway killed it, not the function's fault). `inv.duration_ms` is how long the
        invocation ran until it died (0 when it died in Init)."""
        if self.stopping:
            raise ServiceException(STOPPED)
        wait_status = await self._exit_status(exc)
        if (failure := mount_failure(inv.config.extra, wait_status, exc.output)) is not None:
            log.warning(
                "%s could not mount its file system: %s",
                inv.config.name,
                exc.output[-2000:].decode("utf-8", "replace").strip(),
            )
            raise failure
        status = describe_wait_status(wait_status)
        what = f"Runtime exited with error: {status}"
        if exc.oom_peak is None or status != "signal: killed":  # the OOM killer may have ended a child before
            return _failed(inv, RUNTIME_EXIT_ERROR, what)
        inv.rss_kb = exc.oom_peak // 1024 or inv.config.memory_size * 1024  # no peak recorded (cgroup v2 before 5.19)
        return _failed(inv, RUNTIME_OUT_OF_MEMORY, what)

    @staticmethod
    async def _exit_status(exc: EnvironmentDied) -> int | None:
        status: int | None = None
        if exc.exit_status is not None:
            try:
                status = await asyncio.wait_for(asyncio.shield(exc.exit_status), EXIT_STATUS_WAIT)
            except TimeoutError:
                status = None
        return status
