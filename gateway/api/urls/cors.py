"""A function URL's Cors configuration applied as Lambda applies it (pure: headers in, headers out).

With no Cors configured the gateway adds nothing: every request, an OPTIONS preflight included, goes to the function
and its headers go back as they are. With Cors configured (AllowCredentials, AllowHeaders, AllowMethods,
AllowOrigins, ExposeHeaders, MaxAge: the API's object):

- a preflight (OPTIONS with `Origin` and `Access-Control-Request-Method`) is answered by the gateway, 200 with no
  body, without invoking: `Access-Control-Allow-Origin`, `-Allow-Methods`, `-Allow-Headers`, `-Max-Age` and
  `-Allow-Credentials` when the origin and the requested method are allowed; without any of them otherwise (the
  browser then refuses the request itself);
- any other request with an allowed `Origin` gets `Access-Control-Allow-Origin`, `-Allow-Credentials` and
  `-Expose-Headers` on the function's answer;
- the configured CORS headers take precedence over the function's (Lambda's guide: "If there are conflicting
  headers, the configured CORS headers on the function URL take precedence"): every `Access-Control-*` header the
  function set is dropped, so that a function cannot widen what its URL allows.

Origins match exactly (case-insensitively), or all of them with "*" (AWS documents no partial wildcards). An origin
AllowOrigins names is echoed, with `Vary: Origin` (and `-Allow-Credentials: true` with AllowCredentials); any other
origin "*" allows is answered "*", without `-Allow-Credentials`, with or without AllowCredentials. AWS accepts
AllowOrigins ["*"] with AllowCredentials true and echoes every origin with credentials allowed, which lets any site
read what a logged-in user's browser gets; here a browser refuses a credentialed request answered "*" (and a request
without credentials works as on AWS), so credentials need the origins named. AllowMethods "*" allows every method
and AllowHeaders "*" every header: the preflight answer then names the ones asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Cors:
    """A URL's Cors object, read once (`Cors.of`)."""

    allow_credentials: bool = False
    allow_headers: tuple[str, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_origins: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: int | None = None

    @classmethod
    def of(cls, config: Mapping[str, Any] | None) -> Cors | None:
        """The configuration of a URL's `Cors` (None when the URL has none)."""
        if config is None:
            return None
        max_age = config.get("MaxAge")
        return cls(
            allow_credentials=bool(config.get("AllowCredentials", False)),
            allow_headers=tuple(config.get("AllowHeaders") or ()),
            allow_methods=tuple(m.upper() for m in config.get("AllowMethods") or ()),
            allow_origins=tuple(config.get("AllowOrigins") or ()),
            expose_headers=tuple(config.get("ExposeHeaders") or ()),
            max_age=max_age if isinstance(max_age, int) else None,
        )

    def origin_headers(self, origin: str | None) -> list[tuple[str, str]]:
        """Access-Control-Allow-Origin (and Vary, Allow-Credentials) for a request from `origin`; [] if refused."""
        if not origin:
            return []
        lowered = origin.lower()
        if all(o.lower() != lowered for o in self.allow_origins):  # not named: allowed only through "*"
            if "*" not in self.allow_origins:
                return []
            out = [("Access-Control-Allow-Origin", "*")]
            if len(self.allow_origins) > 1:  # named origins get another answer: a cache must tell them apart
                out.append(("Vary", "Origin"))
            return out
        out = [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
        if self.allow_credentials:
            out.append(("Access-Control-Allow-Credentials", "true"))
        return out


def is_preflight(method: str, headers: Mapping[str, str]) -> bool:
    """An OPTIONS request with Origin and Access-Control-Request-Method: a browser's preflight."""
    return method == "OPTIONS" and "Origin" in headers and "Access-Control-Request-Method" in headers


def preflight(cors: Cors, headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """The headers of the gateway's 200 to a preflight (see the module's docstring)."""
    allowed = cors.origin_headers(headers.get("Origin"))
    method = headers.get("Access-Control-Request-Method", "").upper()
    if not allowed or ("*" not in cors.allow_methods and method not in cors.allow_methods):
        return []
    methods = method if "*" in cors.allow_methods else ", ".join(cors.allow_methods)
    allowed.append(("Access-Control-Allow-Methods", methods))
    asked = headers.get("Access-Control-Request-Headers")
    if "*" in cors.allow_headers:
        if asked:
            allowed.append(("Access-Control-Allow-Headers", asked))
    elif cors.allow_headers:
        allowed.append(("Access-Control-Allow-Headers", ", ".join(cors.allow_headers)))
    if cors.max_age is not None:
        allowed.append(("Access-Control-Max-Age", str(cors.max_age)))
    return allowed


def apply(cors: Cors, origin: str | None, function_headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The function's header lines without its own Access-Control-* ones, then the URL's for `origin`."""
    kept = [(n, v) for n, v in function_headers if not n.lower().startswith("access-control-")]
    added = cors.origin_headers(origin)
    if added and cors.expose_headers:
        added.append(("Access-Control-Expose-Headers", ", ".join(cors.expose_headers)))
    return kept + added
