"""The function URL store (gateway.store.function_urls) and the router's pure parts (gateway.api.urls.router): ids,
one URL per function or alias, updates in place, persistence, cascades, and recognising a URL request."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.api.urls.router import looks_like_url, url_target
from gateway.settings import Settings
from gateway.store.function_urls import URL_ID_LENGTH, FunctionUrls, is_url_id, new_url_id
from gateway.store.records import LATEST, AliasConfig, Change, Changed, new_revision_id
from tests.conftest import function_config, open_registry


def open_store(data_dir: Path) -> FunctionUrls:
    data_dir.mkdir(parents=True, exist_ok=True)
    return FunctionUrls(data_dir / "function-urls.sqlite3", Settings(data_dir=data_dir))


def test_ids_are_32_random_lowercase_alphanumerics() -> None:
    ids = {new_url_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(is_url_id(i) and len(i) == URL_ID_LENGTH for i in ids)
    for bad in ("", "a" * 31, "a" * 33, "A" * 32, "a" * 31 + "_", "é" * 32, "a" * 31 + "."):
        assert not is_url_id(bad)


def test_one_url_per_function_or_alias_updated_in_place(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    try:
        url, created = store.create("f", LATEST, "NONE", "BUFFERED", None, 10.0)
        assert created and store.by_id(url.url_id) == url == store.get("f", LATEST)
        again, created = store.create("f", LATEST, "AWS_IAM", "BUFFERED", None, 11.0)
        assert not created and again == url  # the existing one, untouched
        alias, _ = store.create("f", "live", "AWS_IAM", "RESPONSE_STREAM", {"MaxAge": 5}, 12.0)
        assert alias.url_id != url.url_id
        assert [u.qualifier for u in store.configs("f")] == [LATEST, "live"]
        changed = store.update("f", LATEST, lambda u: dataclasses.replace(u, auth_type="AWS_IAM", modified=13.0))
        assert changed is not None and changed.url_id == url.url_id and changed.auth_type == "AWS_IAM"
        assert store.by_id(url.url_id) == changed
        assert store.update("g", LATEST, lambda u: u) is None
        with pytest.raises(ValueError, match="may not change"):
            store.update("f", LATEST, lambda u: dataclasses.replace(u, url_id=new_url_id()))
        assert store.delete("f", LATEST) and not store.delete("f", LATEST)
        assert store.by_id(url.url_id) is None and store.get("f", LATEST) is None
        assert store.by_id(alias.url_id) == alias
    finally:
        store.close()


def test_urls_survive_a_reopen(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    url, _ = store.create("f", "live", "AWS_IAM", "RESPONSE_STREAM", {"AllowOrigins": ["*"], "MaxAge": 1}, 5.5)
    store.close()
    store = open_store(tmp_path)
    try:
        assert store.by_id(url.url_id) == url and store.get("f", "live") == url
        assert store.all() == [url]
    finally:
        store.close()


def test_creates_race_to_one_url(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    results: list[bool] = []
    try:
        threads = [
            threading.Thread(target=lambda: results.append(store.create("f", LATEST, "NONE", "BUFFERED", None, 1)[1]))
            for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results.count(True) == 1 and len(store.configs("f")) == 1
    finally:
        store.close()


def test_deleted_functions_and_aliases_take_their_urls(tmp_path: Path) -> None:
    registry = open_registry(tmp_path / "data")
    store = open_store(tmp_path / "data")
    try:
        registry.on_change.connect(store.follow)
        registry.create(function_config(registry.codestore, "f"))
        v1 = registry.publish("f")
        registry.create_alias(AliasConfig("f", "live", "arn:live", v1.version, revision_id=new_revision_id()))
        plain, _ = store.create("f", LATEST, "NONE", "BUFFERED", None, 1)
        aliased, _ = store.create("f", "live", "NONE", "BUFFERED", None, 1)
        store.follow(Change(Changed.VERSION_DELETED, "f", v1.version))  # a version has no URL: nothing happens
        registry.delete_alias("f", "live")
        assert store.by_id(aliased.url_id) is None and store.by_id(plain.url_id) == plain
        store.create("f", "ghost", "NONE", "BUFFERED", None, 1)  # as if a crash came between a delete and its URL's
        store.create("never", LATEST, "NONE", "BUFFERED", None, 1)
        assert store.retain_existing(registry) == 2
        assert [u.qualifier for u in store.all()] == [LATEST]
        registry.delete("f")
        assert store.all() == [] and store.by_id(plain.url_id) is None
    finally:
        store.close()
        registry.close()


# -- recognising a URL request ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        ("abc.lambda-url.us-east-1.localhost:9000", "/x?y=1", ("abc", "/x?y=1")),
        ("ABC.Lambda-Url.example", "/", ("abc", "/")),
        ("127.0.0.1:9000", "/lambda-url/abc/x/y?q", ("abc", "/x/y?q")),
        ("127.0.0.1:9000", "/lambda-url/abc", ("abc", "/")),
        ("127.0.0.1:9000", "/lambda-url/abc?q=1", ("abc", "/?q=1")),
        ("127.0.0.1:9000", "/lambda-url/", ("", "/")),
        (".lambda-url.x", "/", ("", "/")),
        ("abc.lambda-url.x", "/lambda-url/other/p", ("abc", "/lambda-url/other/p")),  # the Host wins
    ],
)
def test_url_requests_are_recognised(host: str, path: str, expected: tuple[str, str]) -> None:
    assert looks_like_url(host, path)
    assert url_target(host, path) == expected


@pytest.mark.parametrize(
    ("host", "path"),
    [
        ("127.0.0.1:9000", "/2015-03-31/functions/f/invocations"),
        ("localhost", "/lambda-url"),
        ("lambda-url.localhost", "/"),
        ("api.example.lambda-url.localhost", "/"),
        ("x.lambda-urls.localhost", "/"),
        ("lambda-url", "/healthz"),
        ("", ""),
        ("my-gateway.internal:9000", "/lambda-urlx/"),
    ],
)
def test_other_requests_are_not(host: str, path: str) -> None:
    assert not looks_like_url(host, path)


@given(st.text(max_size=80), st.text(max_size=80))
def test_recognising_never_raises(host: str, path: str) -> None:
    if looks_like_url(host, path):
        url_id, function_path = url_target(host, path)
        assert url_id == url_id.lower()
        assert function_path.startswith("/") or function_path == path
