"""Resource policies: statements rendered as Lambda renders them, their evaluation (principals, actions, resources,
conditions), and the store (RevisionIds, conflicts, size, cascades, persistence), on a temporary directory."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import PolicyLengthExceededException, PreconditionFailedException, ResourceConflictException
from gateway.settings import Settings
from gateway.store.policies import ANONYMOUS, MAX_POLICY_BYTES, Policies, statement_json
from gateway.store.records import LATEST, Change, Changed
from gateway.store.statements import (
    account_of,
    allowed,
    function_statement,
    layer_statement,
    matches,
    render_layer_principal,
    render_principal,
)

ACCT = "123456789012"
FN = f"arn:aws:lambda:us-east-1:{ACCT}:function:f"
ROLE = f"arn:aws:iam::{ACCT}:role/caller"
OTHER_ROLE = "arn:aws:iam::210987654321:role/caller"


def stmt(principal: str, action: str = "lambda:InvokeFunction", resource: str = FN, **kw: Any) -> dict[str, Any]:
    rendered = render_principal(principal)
    assert rendered is not None
    return function_statement("s", action, rendered, resource, **kw)


# -- rendering ---------------------------------------------------------------------------------------------


def test_principals_render_as_lambda_renders_them() -> None:
    assert render_principal("*") == "*"
    assert render_principal(ACCT) == {"AWS": f"arn:aws:iam::{ACCT}:root"}
    assert render_principal("s3.amazonaws.com") == {"Service": "s3.amazonaws.com"}
    assert render_principal("apigateway.amazonaws.com") == {"Service": "apigateway.amazonaws.com"}
    assert render_principal(ROLE) == {"AWS": ROLE}
    assert render_principal(f"arn:aws:iam::{ACCT}:root") == {"AWS": f"arn:aws:iam::{ACCT}:root"}
    for bad in ("bob", "1234", "arn:aws:s3:::bucket", "amazonaws.com"):
        assert render_principal(bad) is None, bad
    assert render_layer_principal("*") == "*"
    assert render_layer_principal(ACCT) == {"AWS": f"arn:aws:iam::{ACCT}:root"}


def test_statement_keys_and_conditions_in_lambda_s_order() -> None:
    full = function_statement(
        "sid", "lambda:InvokeFunction", {"Service": "s3.amazonaws.com"}, FN, source_account=ACCT,
        principal_org_id="o-abcdefghij", event_source_token="t", function_url_auth_type="NONE",
        invoked_via_function_url=True, source_arn="arn:aws:s3:::b",
    )  # fmt: skip
    assert list(full) == ["Sid", "Effect", "Principal", "Action", "Resource", "Condition"]
    assert list(full["Condition"]) == ["StringEquals", "Bool", "ArnLike"]
    assert full["Condition"]["StringEquals"] == {
        "AWS:SourceAccount": ACCT,
        "aws:PrincipalOrgID": "o-abcdefghij",
        "lambda:EventSourceToken": "t",
        "lambda:FunctionUrlAuthType": "NONE",
    }
    assert full["Condition"]["Bool"] == {"lambda:InvokedViaFunctionUrl": "true"}
    assert "Condition" not in function_statement("s", "*", "*", FN, invoked_via_function_url=False)
    assert json.loads(statement_json(full)) == full
    assert layer_statement("l", "lambda:GetLayerVersion", "*", "arn:l:1", "o-abcdefghij")["Condition"] == {
        "StringEquals": {"aws:PrincipalOrgID": "o-abcdefghij"}
    }


# -- evaluation --------------------------------------------------------------------------------------------


def test_principals() -> None:
    def ok(principal_param: str, caller: str | None) -> bool:
        return matches(stmt(principal_param), caller, "lambda:InvokeFunction", FN, {})

    assert ok("*", ROLE) and ok("*", ANONYMOUS) and ok("*", OTHER_ROLE)
    assert ok(ACCT, ROLE) and not ok(ACCT, OTHER_ROLE) and not ok(ACCT, ANONYMOUS)
    assert ok(f"arn:aws:iam::{ACCT}:root", ROLE)
    assert ok(ROLE, ROLE) and not ok(ROLE, f"arn:aws:iam::{ACCT}:role/other") and not ok(ROLE, ANONYMOUS)
    assert not ok("s3.amazonaws.com", ROLE) and not ok("s3.amazonaws.com", ANONYMOUS)
    assert matches({**stmt("*"), "Principal": {"AWS": "*"}}, ANONYMOUS, "lambda:InvokeFunction", FN, {})
    assert matches({**stmt("*"), "Principal": {"AWS": [OTHER_ROLE, ACCT]}}, ROLE, "lambda:InvokeFunction", FN, {})
    assert account_of(ROLE) == ACCT and account_of(ACCT) == ACCT and account_of("bob") is None


def test_actions_are_exact_case_insensitive_or_wildcards() -> None:
    for granted, asked, expected in (
        ("lambda:InvokeFunction", "lambda:InvokeFunction", True),
        ("lambda:invokefunction", "lambda:InvokeFunction", True),
        ("lambda:InvokeFunction", "lambda:InvokeFunctionUrl", False),
        ("lambda:InvokeFunctionUrl", "lambda:InvokeFunction", False),
        ("lambda:*", "lambda:InvokeFunctionUrl", True),
        ("*", "lambda:GetFunction", True),
        ("lambda:GetFunction", "lambda:InvokeFunction", False),
    ):
        assert matches(stmt("*", granted), ROLE, asked, FN, {}) is expected, (granted, asked)


def test_resources_qualified_or_not_as_the_statement_says() -> None:
    assert matches(stmt("*"), ROLE, "lambda:InvokeFunction", FN, {})
    assert not matches(stmt("*"), ROLE, "lambda:InvokeFunction", FN + ":live", {})
    assert not matches(stmt("*", resource=FN + ":live"), ROLE, "lambda:InvokeFunction", FN, {})
    assert matches(stmt("*", resource=FN + ":*"), ROLE, "lambda:InvokeFunction", FN + ":1", {})
    assert not matches(stmt("*", resource=FN + "[x]"), ROLE, "lambda:InvokeFunction", FN + "x", {})


def test_conditions_need_their_keys_in_the_context() -> None:
    url = stmt("*", "lambda:InvokeFunctionUrl", function_url_auth_type="NONE")
    assert matches(url, ANONYMOUS, "lambda:InvokeFunctionUrl", FN, {"lambda:FunctionUrlAuthType": "NONE"})
    assert matches(url, ANONYMOUS, "lambda:InvokeFunctionUrl", FN, {"LAMBDA:functionurlauthtype": "NONE"})
    assert not matches(url, ANONYMOUS, "lambda:InvokeFunctionUrl", FN, {"lambda:FunctionUrlAuthType": "AWS_IAM"})
    assert not matches(url, ANONYMOUS, "lambda:InvokeFunctionUrl", FN, {})
    via = stmt("*", invoked_via_function_url=True)
    assert matches(via, ROLE, "lambda:InvokeFunction", FN, {"lambda:InvokedViaFunctionUrl": "true"})
    assert not matches(via, ROLE, "lambda:InvokeFunction", FN, {})
    arn_like = stmt("*", source_arn="arn:aws:s3:::bucket-*")
    assert matches(arn_like, ROLE, "lambda:InvokeFunction", FN, {"aws:SourceArn": "arn:aws:s3:::bucket-1"})
    assert not matches(arn_like, ROLE, "lambda:InvokeFunction", FN, {"aws:SourceArn": "arn:aws:s3:::other"})
    unknown = {**stmt("*"), "Condition": {"NumericLessThan": {"x": "1"}}}
    assert not matches(unknown, ROLE, "lambda:InvokeFunction", FN, {"x": "0"})


def test_a_deny_wins() -> None:
    deny = {**stmt(ROLE), "Effect": "Deny"}
    assert allowed([stmt("*")], ROLE, "lambda:InvokeFunction", FN, {})
    assert not allowed([stmt("*"), deny], ROLE, "lambda:InvokeFunction", FN, {})
    assert not allowed([deny], ROLE, "lambda:InvokeFunction", FN, {})
    assert not allowed([], ROLE, "lambda:InvokeFunction", FN, {})


_SERVICE = st.from_regex(r"[a-z]{1,10}\.amazonaws\.com", fullmatch=True)
_ACCOUNT = st.from_regex(r"\d{12}", fullmatch=True)
_ROLE = st.builds(lambda a, n: f"arn:aws:iam::{a}:role/{n}", _ACCOUNT, st.from_regex(r"[a-z]{1,8}", fullmatch=True))


@given(principal=st.one_of(_SERVICE, _ACCOUNT, _ROLE, st.just("*")), caller=st.one_of(st.none(), _ROLE))
def test_a_grant_never_reaches_past_what_its_principal_names(principal: str, caller: str | None) -> None:
    """Whatever the principal, a caller is allowed exactly when it is named, in the named account, or `*`."""
    got = matches(stmt(principal), caller, "lambda:InvokeFunction", FN, {})
    if principal == "*":
        assert got
    elif principal.endswith(".amazonaws.com") or caller is None:
        assert not got
    elif re.fullmatch(r"\d{12}", principal):
        assert got == (account_of(caller) == principal)
    else:
        assert got == (caller == principal)


# -- the store ---------------------------------------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def open_store(data_dir: Path) -> Policies:
    data_dir.mkdir(parents=True, exist_ok=True)
    return Policies(data_dir / "policies.sqlite3", Settings(data_dir=data_dir))


@pytest.fixture
def store(data_dir: Path) -> Iterator[Policies]:
    s = open_store(data_dir)
    yield s
    s.close()


def _named(sid: str, principal: str = "*", resource: str = FN, **kw: Any) -> dict[str, Any]:
    return {**stmt(principal, resource=resource, **kw), "Sid": sid}


def test_allows_per_qualifier(store: Policies) -> None:
    assert not store.allows("f", LATEST, ROLE, "lambda:InvokeFunction")
    store.add_function_statement("f", LATEST, _named("a", ROLE))
    assert store.allows("f", LATEST, ROLE, "lambda:InvokeFunction")
    assert not store.allows("f", LATEST, OTHER_ROLE, "lambda:InvokeFunction")
    assert not store.allows("f", "live", ROLE, "lambda:InvokeFunction")  # a grant on f does not reach f:live
    store.add_function_statement("f", "live", _named("a", ACCT, resource=FN + ":live"))
    assert store.allows("f", "live", ROLE, "lambda:InvokeFunction")
    # a statement whose Resource is not this document's resource grants nothing here
    store.add_function_statement("f", "1", _named("a", "*", resource=FN))
    assert not store.allows("f", "1", ROLE, "lambda:InvokeFunction")


class _Url:
    def __init__(self, auth_type: str, qualifier: str = LATEST) -> None:
        self.function, self.qualifier, self.auth_type = "f", qualifier, auth_type


def test_allows_url_needs_both_statements(store: Policies) -> None:
    url = _Url("NONE")
    store.add_function_statement("f", LATEST, _named("url", action="lambda:InvokeFunctionUrl",
                                                      function_url_auth_type="NONE"))  # fmt: skip
    assert not store.allows_url(url, ANONYMOUS)  # InvokeFunction is missing (the rule since October 2025)
    store.add_function_statement("f", LATEST, _named("via", invoked_via_function_url=True))
    assert store.allows_url(url, ANONYMOUS)
    assert not store.allows_url(_Url("AWS_IAM"), ROLE)  # the URL statement is for NONE
    assert not store.allows("f", LATEST, ROLE, "lambda:InvokeFunction")  # "via" only applies through a URL
    store.remove_function_statement("f", LATEST, "via")  # decisions are remembered per document revision
    assert not store.allows_url(url, ANONYMOUS)
    store.add_function_statement("f", LATEST, _named("via", invoked_via_function_url=True))
    assert store.allows_url(url, ANONYMOUS) and store.allows_url(url, ANONYMOUS)
    other = open_store(store.settings.data_dir / "other")
    other.add_function_statement("f", LATEST, _named("url", action="lambda:InvokeFunctionUrl",
                                                      function_url_auth_type="AWS_IAM"))  # fmt: skip
    other.add_function_statement("f", LATEST, _named("all", ACCT))  # plain InvokeFunction also does
    assert other.allows_url(_Url("AWS_IAM"), ROLE) and not other.allows_url(_Url("AWS_IAM"), ANONYMOUS)
    other.close()


def test_revisions_conflicts_size(store: Policies) -> None:
    first = store.add_function_statement("f", LATEST, _named("a"), current_revision=lambda: "fn-rev")
    with pytest.raises(ResourceConflictException, match=r"The statement id \(a\) provided already exists"):
        store.add_function_statement("f", LATEST, _named("a"))
    with pytest.raises(PreconditionFailedException):
        store.add_function_statement("f", LATEST, _named("b"), revision_id="fn-rev", current_revision=lambda: "fn-rev")
    second = store.add_function_statement("f", LATEST, _named("b"), revision_id=first.revision_id)
    assert second.revision_id != first.revision_id
    # with no document yet the function's own RevisionId is accepted
    store.add_function_statement("g", LATEST, _named("a"), revision_id="fn-rev", current_revision=lambda: "fn-rev")
    with pytest.raises(PolicyLengthExceededException, match=rf"is bigger than the limit \({MAX_POLICY_BYTES}\)"):
        for i in range(100):
            store.add_function_statement("f", LATEST, _named(f"big{i}", source_arn="arn:aws:s3:::" + "x" * 900))
    document = store.function_policy("f", LATEST)
    assert document is not None and len(document.to_json().encode()) <= MAX_POLICY_BYTES
    with pytest.raises(KeyError):
        store.remove_function_statement("nope", LATEST, "a")
    with pytest.raises(IndexError):
        store.remove_function_statement("f", LATEST, "zz")
    with pytest.raises(PreconditionFailedException):
        store.remove_function_statement("f", LATEST, "a", revision_id=first.revision_id)
    assert store.remove_function_statement("g", LATEST, "a") is None
    assert store.function_policy("g", LATEST) is None


def test_cascades_and_persistence(data_dir: Path, store: Policies) -> None:
    for qualifier in (LATEST, "1", "live"):
        store.add_function_statement("f", qualifier, _named("a"))
    store.add_function_statement("g", LATEST, _named("a"))
    store.add_layer_statement("lay", 1, layer_statement("a", "lambda:GetLayerVersion", ACCT, "arn:l:1"))
    store.add_layer_statement("lay", 2, layer_statement("a", "lambda:GetLayerVersion", "*", "arn:l:2"))
    store.follow(Change(Changed.ALIAS_DELETED, "f", "live"))
    store.follow(Change(Changed.LATEST_UPDATED, "f", LATEST))
    assert store.function_policy("f", "live") is None and store.function_policy("f", LATEST) is not None
    store.follow(Change(Changed.VERSION_DELETED, "f", "1"))
    assert store.function_policy("f", "1") is None
    store.forget_layer("lay", 2)
    kept = store.function_policy("g", LATEST)
    store.close()
    again = open_store(data_dir)
    assert again.function_policy("g", LATEST) == kept
    assert again.function_policy("f", LATEST) is not None and again.function_policy("f", "1") is None
    assert again.layer_policy("lay", 2) is None
    assert again.retain_existing(lambda f, q: f == "g", lambda name, version: False) == 2
    assert again.function_policy("f", LATEST) is None and again.layer_policy("lay", 1) is None
    again.follow(Change(Changed.FUNCTION_DELETED, "g", None))
    assert again.function_policy("g", LATEST) is None
    again.close()


def test_layer_grants_by_account(store: Policies) -> None:
    resource = f"arn:aws:lambda:us-east-1:{ACCT}:layer:lay:1"
    store.add_layer_statement("lay", 1, layer_statement("a", "lambda:GetLayerVersion", "210987654321", resource))
    assert store.allows_layer("lay", 1, "210987654321") and not store.allows_layer("lay", 1, ACCT)
    assert not store.allows_layer("lay", 2, "210987654321")
    org = layer_statement("o", "lambda:GetLayerVersion", "*", resource, "o-abcdefghij")
    store.add_layer_statement("lay", 1, org)
    assert not store.allows_layer("lay", 1, ACCT)  # no organization is known here: the condition fails
    store.add_layer_statement("lay", 1, layer_statement("all", "lambda:GetLayerVersion", "*", resource))
    assert store.allows_layer("lay", 1, ACCT)
