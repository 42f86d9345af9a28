"""What the load generator sends, and where: pre-encoded HTTP/1.1 requests, Zipf-distributed choices among them,
and the loopback check that keeps every target on this machine. Pure functions; no I/O."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Mapping
from itertools import accumulate


class NotLoopbackError(ValueError):
    """The target is not a loopback address; this load generator only loads the local machine."""


def encode_request(
    method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None, host: str = "127.0.0.1"
) -> bytes:
    """Encode one keep-alive HTTP/1.1 request with `Host` and `Content-Length` (always, even 0).

    `headers` may override `Host`; `Content-Length` and `Transfer-Encoding` may not be given. Raises
    `ValueError` on CR/LF in any field or a path that does not start with "/".
    """
    if not method or not method.isascii() or not method.isalpha():
        raise ValueError(f"bad method: {method!r}")
    if not path.startswith("/") or any(ch in path for ch in " \r\n"):
        raise ValueError(f"bad path (must start with '/', no spaces or CR/LF): {path!r}")
    hdrs: dict[str, str] = {"Host": host}
    for name, value in (headers or {}).items():
        if not name or any(ch in name for ch in ":\r\n ") or any(ch in value for ch in "\r\n"):
            raise ValueError(f"bad header: {name!r}: {value!r}")
        lname = name.lower()
        if lname in ("content-length", "transfer-encoding"):
            raise ValueError(f"{name} is set by encode_request")
        if lname == "host":
            hdrs["Host"] = value
        else:
            hdrs[name] = value
    head = f"{method.upper()} {path} HTTP/1.1\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode("latin-1") + bytes(body)


def zipf_indices(n_items: int, count: int, s: float = 1.0, seed: int = 1) -> list[int]:
    """`count` indices in [0, n_items), rank k drawn with probability proportional to 1/(k+1)**s.

    Pure Python and deterministic for a given (n_items, count, s, seed); index 0 is the most frequent.
    """
    if n_items < 1 or count < 0 or s < 0:
        raise ValueError("need n_items >= 1, count >= 0, s >= 0")
    cum = list(accumulate(1.0 / (k + 1) ** s for k in range(n_items)))
    return random.Random(seed).choices(range(n_items), cum_weights=cum, k=count)


def check_loopback(host: str) -> str:
    """Return the address to connect to for `host` if it is loopback, else raise `NotLoopbackError`.

    "localhost" maps to 127.0.0.1 (no name resolution is done); IPv6 may be given with or without brackets.
    """
    h = host.strip()
    if h.lower() == "localhost":
        return "127.0.0.1"
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    try:
        addr = ipaddress.ip_address(h)
    except ValueError:
        addr = None
    if addr is None or not addr.is_loopback:
        raise NotLoopbackError(
            f"refusing target {host!r}: this load generator only targets loopback (127.0.0.0/8, ::1, localhost)"
        )
    return str(addr)
