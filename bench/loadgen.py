"""An honest HTTP/1.1 load generator for loopback targets: closed loop and open loop (wrk2-style), library + CLI.

Built to share a small machine with the server it loads, so it is cheap per request: uvloop, raw
`asyncio.Protocol` connections, pre-encoded request bytes, one clock read per request in the closed loop, no
per-request task, future or timer, and a minimal response parser (status line, `Content-Length`,
`Transfer-Encoding: chunked`, `Connection: close`, body delimited by EOF). No pipelining: a connection carries
one request at a time.

Client cost, measured on the 2-core shared development machine (load average ~4 from other work, so +-30 %):
* closed loop, 32 connections, against a trivial raw uvloop server answering a fixed 2-byte response:
  17-20 us of CPU per request (user ~6-7 us, of which ~2.6 us is this module's Python per response; system
  ~11-13 us: one recv and one send per request, plus epoll), up to ~38,000 requests/s from one core. `wrk -t1`
  on the same server: ~13 us per request (34,000 requests/s).
* closed loop, 32 connections, 5 s, against the in-process baseline (`bench/baselines/inprocess.py`), 5 rounds:
  median 5,000 requests/s (4,500-9,100) vs wrk's median 5,200 (3,300-9,700): the server is the limit, not the
  client; 35-42 us of client CPU per request (wrk: 27-35 us), higher than against the trivial server because
  each loop wake-up finds fewer responses to process. The client used ~0.2 core (wrk ~0.15).
* open loop at low rates: the cost is dominated by process wake-ups (~100-200 us each on this machine), e.g.
  200 requests/s costs ~4 % of a core (~200 us per request).

Model
-----
* Closed loop (`closed_loop`): N keep-alive connections; each sends its next request as soon as the previous
  response is complete. Latency = response complete - actual send time. The send time of a request is the
  clock read taken when the previous response on that connection was processed (so a few microseconds of the
  client's own bookkeeping are counted as latency, never hidden).
* Open loop (`open_loop`): a constant arrival rate R over a fixed pool of N connections. Request i has the
  intended send time t0 + i/R. At (or after) that time it goes out on a free connection (free connections are
  used round-robin); if none is free it waits, first in first out, and is sent as soon as a connection frees
  up. Latency = response complete - INTENDED send time, so time spent queued in the client because the server
  is slow is counted (coordinated omission corrected). The scheduler sleeps on a loop timer until the next
  intended time, rounded UP to a whole millisecond (the loop's timers have 1 ms resolution; never early, no
  spinning), and then sends everything that is due. Sends are thus 0-1 ms late by design (~0.5 ms on average)
  plus the OS's wake-up delay, which on a busy machine is often more; that lateness is part of the latency,
  and a send more than `late_threshold_ms` after its intended time is counted in `late_sends`
  (`max_lateness_ms` is the worst). Late sends are the client's or the machine's delay, not the server's.
  Requests that were due but not completed when the run ends (in flight, or still queued in the client) are
  reported in `unfinished`: a growing number there means the server cannot keep up with R.

What is counted
---------------
* The run connects all N connections first (a failure is an error, `ConnectionError`), then starts the clock
  t0. `warmup` seconds follow whose requests are not recorded, then the measured window of `duration`
  seconds. A request is *measured* if it was started (closed loop: actually sent; open loop: intended send
  time) at or after the end of the warm-up; a measured request that completes before the end of the run is
  counted in `requests`, its latency in the histogram and its status in `statuses` (non-2xx responses are
  responses: they have a latency, and are also counted in `errors["non_2xx"]`). Responses to warm-up
  requests are discarded even if they arrive inside the window, so with `warmup > 0` the closed loop
  undercounts by at most N requests. `throughput_rps` = requests / measured window.
* `max_requests` caps the number of measured requests (the run then ends when all of them have finished, or
  when the duration is up, whichever comes first; `duration_s` is the window actually measured).
* `errors["timeout"]`: a measured request still unanswered `timeout` seconds after it was sent (checked by a
  sweep every min(0.25 s, timeout/8), so detection can lag by that much); the connection is aborted and
  reopened. `errors["socket"]`: a connection reset/closed while a measured request was in flight, a protocol
  error in the response, or a failed reconnect attempt after the warm-up (retried every 50 ms).
* `reconnects`: connections reopened during the window, whether the server closed them (`Connection: close`,
  HTTP/1.0, EOF after a complete response as with gunicorn sync workers), or after an error or a timeout.
  When a reused keep-alive connection is closed by the server before any byte of the response to the request
  just sent on it (the server closed it after the previous response without saying so), that request is
  resent once on the new connection, its latency still counted from its original start; not an error.
* `client_cpu_s`: CPU time (user + system) of the whole load-generator process during the measured window,
  from `time.process_time()`: if a server runs in the same process (as in the tests) it is included.
* Hard caps: duration and warm-up <= 600 s each, connections <= 1024, rate <= 1,000,000 req/s. Targets must be
  loopback (127.0.0.0/8, ::1 or "localhost", which means 127.0.0.1); anything else raises `NotLoopbackError`.

Layout: this module holds the public names (re-exported) and the CLI; the parts are in bench/load/ (request
encoding and the loopback check, the connection protocol and response parser, a run's lifecycle, the closed and
open loops, the histogram, the result), each with a docstring saying its job.

CLI: `python bench/loadgen.py URL [--method POST] [--body '{}'] [--header 'K: V' ...] --mode closed|open
[-c CONNECTIONS] [-d SECONDS] [--rate RPS] [--warmup S] [--max-requests N] [--timeout S] [--out FILE]`
prints the JSON result (`LoadResult.to_dict()`) to stdout or FILE, and a progress line a second on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvloop

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load.client import MAX_HEAD_BYTES
from bench.load.histogram import Histogram
from bench.load.loops import MAX_RATE_RPS, closed_loop, open_loop
from bench.load.request import NotLoopbackError, check_loopback, encode_request, zipf_indices
from bench.load.result import LoadResult
from bench.load.run import MAX_CONNECTIONS, MAX_DURATION_S, MAX_WARMUP_S, RECONNECT_BACKOFF_S

__all__ = [
    "MAX_CONNECTIONS",
    "MAX_DURATION_S",
    "MAX_HEAD_BYTES",
    "MAX_RATE_RPS",
    "MAX_WARMUP_S",
    "RECONNECT_BACKOFF_S",
    "Histogram",
    "LoadResult",
    "NotLoopbackError",
    "check_loopback",
    "closed_loop",
    "encode_request",
    "main",
    "open_loop",
    "run",
    "zipf_indices",
]


def run(coro: Coroutine[Any, Any, LoadResult]) -> LoadResult:
    """Run `closed_loop(...)`/`open_loop(...)` to completion on a fresh uvloop event loop."""
    return uvloop.run(coro)


# --------------------------------------------------------------------------------------------------------------
# CLI


def _parse_url(url: str) -> tuple[str, int, str, str]:
    """(connect address, port, path?query, Host header value) of an http:// loopback URL."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"only http:// URLs are supported: {url!r}")
    if not parts.hostname:
        raise ValueError(f"no host in URL: {url!r}")
    addr = check_loopback(parts.hostname)
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return addr, port, path, parts.netloc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("url", help="http://127.0.0.1:PORT/path (loopback only)")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body", default="", help="request body (a string; @FILE reads a file)")
    parser.add_argument("--header", "-H", action="append", default=[], metavar="'K: V'")
    parser.add_argument("--mode", choices=("closed", "open"), default="closed")
    parser.add_argument("-c", "--connections", type=int, default=None, help="default 32 (closed), 64 (open)")
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="measured seconds (default 10)")
    parser.add_argument("--rate", type=float, default=None, help="requests/s (open loop, required)")
    parser.add_argument("--warmup", type=float, default=0.0, help="unrecorded seconds before the window")
    parser.add_argument("--max-requests", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, s (default 30)")
    parser.add_argument("--late-threshold-ms", type=float, default=1.0)
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress line on stderr")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here instead of stdout")
    args = parser.parse_args(argv)

    try:
        addr, port, path, host_header = _parse_url(args.url)
        headers: dict[str, str] = {}
        for h in args.header:
            name, sep, value = h.partition(":")
            if not sep:
                raise ValueError(f"--header must be 'Name: value': {h!r}")
            headers[name.strip()] = value.strip()
        body = Path(args.body[1:]).read_bytes() if args.body.startswith("@") else args.body.encode()
        req = encode_request(args.method, path, body, headers, host=host_header)
        if args.mode == "open":
            if args.rate is None:
                raise ValueError("--mode open needs --rate")
            coro = open_loop(
                addr,
                port,
                [req],
                args.rate,
                args.duration,
                connections=args.connections or 64,
                warmup=args.warmup,
                max_requests=args.max_requests,
                timeout=args.timeout,
                late_threshold_ms=args.late_threshold_ms,
                progress=args.progress,
            )
        else:
            coro = closed_loop(
                addr,
                port,
                [req],
                args.connections or 32,
                args.duration,
                warmup=args.warmup,
                max_requests=args.max_requests,
                timeout=args.timeout,
                progress=args.progress,
            )
    except (ValueError, OSError) as e:
        print(f"loadgen: error: {e}", file=sys.stderr)
        return 2
    try:
        result = run(coro)
    except (ConnectionError, ValueError) as e:
        print(f"loadgen: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("loadgen: interrupted", file=sys.stderr)
        return 130
    text = json.dumps(result.to_dict(), indent=2) + "\n"
    if args.out is not None:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
