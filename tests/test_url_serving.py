"""gateway/api/urls/serving.py's pure part: who an AWS_IAM URL's caller is, as `requestContext.authorizer.iam`."""

from __future__ import annotations

import ast
from pathlib import Path

from gateway.api.sigv4 import Identity
from gateway.api.urls import serving
from gateway.api.urls.serving import BodyBudget, iam_of
from gateway.isolation.credentials import Session


def test_an_operator_is_the_accounts_root() -> None:
    iam = iam_of(Identity("AKIAOPERATOR"), "123456789012")
    assert iam == {
        "accessKey": "AKIAOPERATOR",
        "accountId": "123456789012",
        "callerId": "123456789012",
        "cognitoIdentity": None,
        "principalOrgId": None,
        "userArn": "arn:aws:iam::123456789012:root",
        "userId": "123456789012",
    }


def test_a_function_is_its_roles_session() -> None:
    session = Session(
        "ASIAFUNCTION", "arn:aws:lambda:us-east-1:123456789012:function:f", "arn:aws:iam::123456789012:role/r", 0.0
    )
    iam = iam_of(Identity("ASIAFUNCTION", session), "123456789012")
    assert iam["accessKey"] == "ASIAFUNCTION" and iam["accountId"] == "123456789012"
    assert iam["userArn"] == "arn:aws:sts::123456789012:assumed-role/r/f"
    role_id, _, name = iam["userId"].partition(":")
    assert role_id.startswith("AROA") and len(role_id) == 21 and name == "f" and iam["callerId"] == iam["userId"]
    assert iam_of(Identity("ASIAOTHER", session), "123456789012")["userId"] == iam["userId"]  # stable per role


def test_the_body_budget_reserves_what_fits_and_gets_it_back() -> None:
    budget = BodyBudget(100)
    assert budget.take(60) and not budget.take(41) and budget.used == 60  # a refusal reserves nothing
    assert budget.take(40) and budget.used == 100
    budget.give(60)
    budget.give(40)
    assert budget.used == 0 and budget.take(100)


def test_serving_uses_no_private_name_of_another_module() -> None:
    tree = ast.parse(Path(serving.__file__).read_text())
    private = [
        f"{node.module}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.name.startswith("_")
    ]
    assert private == []
    assert serving._serve.__doc__  # its contract: what it answers, who releases the slot
