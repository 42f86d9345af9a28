"""The runtime catalogue: Lambda's runtime ids from botocore's model, and what this host runs each with."""

from __future__ import annotations

import sys

import pytest

from gateway.catalog import Catalog, Kind, RuntimeChoice, UnsupportedRuntime, lambda_runtimes
from gateway.settings import Settings


def test_the_runtime_ids_come_from_botocores_model() -> None:
    ids = lambda_runtimes()
    assert {"python3.14", "provided.al2023", "provided.al2", "nodejs22.x"} <= set(ids)


def test_deprecated_runtimes_are_refused_in_lambdas_words() -> None:
    with pytest.raises(UnsupportedRuntime, match=r"python3\.7 is no longer supported"):
        Catalog({}).resolve("python3.7")


def test_an_unknown_runtime_is_not_a_lambda_runtime() -> None:
    with pytest.raises(UnsupportedRuntime, match="cobol85 is not a Lambda runtime"):
        Catalog({}).resolve("cobol85")


def test_a_refusal_carries_its_reason() -> None:
    catalog = Catalog({}, {"nodejs24.x": "no Node.js 24 here"})
    with pytest.raises(UnsupportedRuntime, match=r"no Node\.js 24 here"):
        catalog.resolve("nodejs24.x")


def test_custom_runtimes_run_on_the_gateways_interpreter(tmp_path) -> None:
    catalog = Catalog.discover(Settings(data_dir=tmp_path))
    for runtime in ("provided.al2023", "provided.al2"):
        assert catalog.resolve(runtime) == RuntimeChoice(runtime, Kind.PROVIDED, sys.executable)


def test_one_zygote_serves_every_runtime_of_an_interpreter() -> None:
    a = RuntimeChoice("python3.11", Kind.PYTHON, "/py311")
    b = RuntimeChoice("provided.al2023", Kind.PROVIDED, "/py311")
    c = RuntimeChoice("python3.12", Kind.PYTHON, "/py312")
    catalog = Catalog({x.runtime: x for x in (a, b, c)})
    assert catalog.by_interpreter() == {"/py311": ["python3.11", "provided.al2023"], "/py312": ["python3.12"]}
