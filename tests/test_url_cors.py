"""gateway/api/urls/cors.py: a URL's Cors configuration applied as Lambda applies it."""

from __future__ import annotations

from multidict import CIMultiDict

from gateway.api.urls.cors import Cors, apply, is_preflight, preflight

SITE = "https://www.example.com"
CONFIG = Cors.of(
    {
        "AllowOrigins": [SITE, "http://localhost:60905"],
        "AllowMethods": ["GET", "post"],
        "AllowHeaders": ["X-Custom-Header", "Content-Type"],
        "ExposeHeaders": ["X-Total"],
        "MaxAge": 300,
        "AllowCredentials": True,
    }
)


def asking(origin: str, method: str = "POST", headers: str | None = None) -> CIMultiDict[str]:
    out = CIMultiDict({"Origin": origin, "Access-Control-Request-Method": method})
    if headers is not None:
        out["Access-Control-Request-Headers"] = headers
    return out


def test_no_configuration_is_none() -> None:
    assert Cors.of(None) is None


def test_preflight_is_recognised() -> None:
    assert is_preflight("OPTIONS", asking(SITE))
    assert not is_preflight("OPTIONS", CIMultiDict({"Origin": SITE}))
    assert not is_preflight("GET", asking(SITE))


def test_a_preflight_from_an_allowed_origin() -> None:
    assert CONFIG is not None
    assert dict(preflight(CONFIG, asking("https://WWW.example.com", "post"))) == {
        "Access-Control-Allow-Origin": "https://WWW.example.com",
        "Vary": "Origin",
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Allow-Methods": "GET, POST",
        "Access-Control-Allow-Headers": "X-Custom-Header, Content-Type",
        "Access-Control-Max-Age": "300",
    }


def test_a_preflight_refused() -> None:
    assert CONFIG is not None
    assert preflight(CONFIG, asking("https://evil.example")) == []
    assert preflight(CONFIG, asking(SITE, "DELETE")) == []


def test_wildcards() -> None:
    anyone = Cors.of({"AllowOrigins": ["*"], "AllowMethods": ["*"], "AllowHeaders": ["*"]})
    assert anyone is not None
    assert dict(preflight(anyone, asking("https://x.test", "PATCH", "x-a, x-b"))) == {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Methods": "PATCH",
        "Access-Control-Allow-Headers": "x-a, x-b",
    }
    partial = Cors.of({"AllowOrigins": ["https://*.example.com"]})
    assert partial is not None and partial.origin_headers(SITE) == []  # no partial wildcards


def test_any_origin_is_never_echoed_with_credentials() -> None:
    # AWS echoes any Origin with Allow-Credentials for this combination: any site could then read a logged-in
    # user's answers. Here "*" is answered "*", which browsers refuse for a credentialed request.
    anyone = Cors.of({"AllowOrigins": ["*"], "AllowCredentials": True, "AllowMethods": ["GET"]})
    assert anyone is not None
    assert anyone.origin_headers("https://evil.example") == [("Access-Control-Allow-Origin", "*")]
    assert dict(preflight(anyone, asking("https://evil.example", "GET"))) == {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Methods": "GET",
    }
    assert ("Access-Control-Allow-Credentials", "true") not in apply(anyone, "https://evil.example", [])
    listed = Cors.of({"AllowOrigins": ["*", SITE], "AllowCredentials": True})  # an origin named: echoed, credentials
    assert listed is not None and listed.origin_headers(SITE) == [
        ("Access-Control-Allow-Origin", SITE),
        ("Vary", "Origin"),
        ("Access-Control-Allow-Credentials", "true"),
    ]
    assert listed.origin_headers("https://evil.example") == [("Access-Control-Allow-Origin", "*"), ("Vary", "Origin")]


def test_the_urls_headers_replace_the_functions() -> None:
    assert CONFIG is not None
    function = [("Access-Control-Allow-Origin", "*"), ("access-control-allow-methods", "*"), ("X-Ok", "1")]
    assert apply(CONFIG, SITE, function) == [
        ("X-Ok", "1"),
        ("Access-Control-Allow-Origin", SITE),
        ("Vary", "Origin"),
        ("Access-Control-Allow-Credentials", "true"),
        ("Access-Control-Expose-Headers", "X-Total"),
    ]
    assert apply(CONFIG, "https://evil.example", function) == [("X-Ok", "1")]  # a function cannot widen its URL's
    assert apply(CONFIG, None, function) == [("X-Ok", "1")]
