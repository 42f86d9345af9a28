"""Resource-policy statements: built from AddPermission / AddLayerVersionPermission parameters exactly as Lambda
renders them, and evaluated for a caller of this gateway. Pure, no I/O.

Rendering (what GetPolicy returns, key order included): `{"Sid", "Effect": "Allow", "Principal", "Action",
"Resource"[, "Condition"]}`. The Principal parameter becomes `"*"`, `{"AWS": "arn:aws:iam::<acct>:root"}` for an
account id, `{"Service": p}` for a service principal (`s3.amazonaws.com`), `{"AWS": arn}` for an IAM ARN. The
conditions, in Lambda's order: `StringEquals` (AWS:SourceAccount, aws:PrincipalOrgID, lambda:EventSourceToken,
lambda:FunctionUrlAuthType), `Bool` (lambda:InvokedViaFunctionUrl = "true"), `ArnLike` (AWS:SourceArn).

Evaluation (`matches`) answers whether one Allow statement lets `principal` perform `action` on `resource` in a
`context` of condition keys: Action exact (case-insensitive, as IAM), `lambda:*` or `*`; Principal `*` or
`{"AWS": "*"}` match anyone, ANONYMOUS (None, the caller of a NONE function URL) included; an IAM ARN matches that
principal; an account id or `arn:aws:iam::<acct>:root` matches every principal of that account; `{"Service": ...}`
never matches (no AWS service calls this gateway); Resource exact or a `*`/`?` pattern; every condition's key must
be in `context` (keys case-insensitive) and its value match (StringEquals, StringLike, ArnEquals, ArnLike, Bool);
an operator this module does not know fails the statement (deny by default).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

#: the caller of a function URL whose AuthType is NONE
ANONYMOUS: str | None = None
ACCOUNT_RE = re.compile(r"\d{12}")
ROOT_RE = re.compile(r"arn:aws[a-zA-Z-]*:iam::(\d{12}):root")
_SERVICE_RE = re.compile(r"[a-z0-9][a-z0-9.-]*\.(amazonaws\.com|amazon\.com|amazonaws\.com\.cn)")
_IAM_ARN_RE = re.compile(r"arn:aws[a-zA-Z-]*:(iam|sts)::\d{12}:\S+")

#: condition key of each AddPermission parameter, in the order Lambda writes them
SOURCE_ACCOUNT = "AWS:SourceAccount"
PRINCIPAL_ORG_ID = "aws:PrincipalOrgID"
EVENT_SOURCE_TOKEN = "lambda:EventSourceToken"
FUNCTION_URL_AUTH_TYPE = "lambda:FunctionUrlAuthType"
INVOKED_VIA_FUNCTION_URL = "lambda:InvokedViaFunctionUrl"
SOURCE_ARN = "AWS:SourceArn"


def render_principal(principal: str) -> str | dict[str, str] | None:
    """The statement's Principal for AddPermission's `Principal` parameter; None if Lambda refuses it."""
    if principal == "*":
        return "*"
    if ACCOUNT_RE.fullmatch(principal):
        return {"AWS": f"arn:aws:iam::{principal}:root"}
    if _IAM_ARN_RE.fullmatch(principal):
        return {"AWS": principal}
    if _SERVICE_RE.fullmatch(principal):
        return {"Service": principal}
    return None


def render_layer_principal(principal: str) -> str | dict[str, str]:
    """A layer statement's Principal (the model only lets `*`, an account id or an account's root through)."""
    if principal == "*":
        return "*"
    if ACCOUNT_RE.fullmatch(principal):
        return {"AWS": f"arn:aws:iam::{principal}:root"}
    return {"AWS": principal}


def function_statement(
    sid: str,
    action: str,
    principal: str | dict[str, str],
    resource: str,
    *,
    source_account: str | None = None,
    principal_org_id: str | None = None,
    event_source_token: str | None = None,
    function_url_auth_type: str | None = None,
    invoked_via_function_url: bool | None = None,
    source_arn: str | None = None,
) -> dict[str, Any]:
    """The statement AddPermission adds (and answers, as a JSON string), with `principal` already rendered."""
    statement: dict[str, Any] = {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": principal,
        "Action": action,
        "Resource": resource,
    }
    equals = {
        key: value
        for key, value in (
            (SOURCE_ACCOUNT, source_account),
            (PRINCIPAL_ORG_ID, principal_org_id),
            (EVENT_SOURCE_TOKEN, event_source_token),
            (FUNCTION_URL_AUTH_TYPE, function_url_auth_type),
        )
        if value is not None
    }
    condition: dict[str, Any] = {}
    if equals:
        condition["StringEquals"] = equals
    if invoked_via_function_url:  # false adds nothing: the permission then applies to every invocation
        condition["Bool"] = {INVOKED_VIA_FUNCTION_URL: "true"}
    if source_arn is not None:
        condition["ArnLike"] = {SOURCE_ARN: source_arn}
    if condition:
        statement["Condition"] = condition
    return statement


def layer_statement(
    sid: str, action: str, principal: str, resource: str, organization_id: str | None = None
) -> dict[str, Any]:
    """The statement AddLayerVersionPermission adds; OrganizationId becomes a PrincipalOrgID condition."""
    statement: dict[str, Any] = {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": render_layer_principal(principal),
        "Action": action,
        "Resource": resource,
    }
    if organization_id is not None:
        statement["Condition"] = {"StringEquals": {PRINCIPAL_ORG_ID: organization_id}}
    return statement


# -- evaluation -------------------------------------------------------------------------------------------------


def _values(raw: Any) -> list[str]:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list):
        return [v for v in raw if isinstance(v, str)]
    return []


def account_of(principal: str) -> str | None:
    """The account of an IAM/STS ARN (`arn:aws:iam::<acct>:role/r`), or of a bare account id."""
    if ACCOUNT_RE.fullmatch(principal):
        return principal
    parts = principal.split(":", 5)
    if len(parts) == 6 and parts[0] == "arn" and ACCOUNT_RE.fullmatch(parts[4]):
        return parts[4]
    return None


def principal_matches(spec: Any, principal: str | None) -> bool:
    """Whether a statement's Principal covers `principal` (an IAM ARN, an account id, or ANONYMOUS)."""
    if spec == "*":
        return True
    if not isinstance(spec, Mapping):
        return False
    granted = _values(spec.get("AWS"))
    if "*" in granted:
        return True
    if principal is None:
        return False
    account = account_of(principal)
    for value in granted:
        if value == principal:
            return True
        root = ROOT_RE.fullmatch(value)
        owner = root[1] if root else value if ACCOUNT_RE.fullmatch(value) else None
        if owner is not None and owner == account:
            return True
    return False  # {"Service": ...}, {"Federated": ...}: never a caller of this gateway


def action_matches(spec: Any, action: str) -> bool:
    wanted = action.lower()
    for value in _values(spec):
        low = value.lower()
        if low in ("*", "lambda:*", wanted):
            return True
    return False


def _glob(pattern: str, value: str) -> bool:
    """IAM's `*` / `?` wildcards, case-sensitive (ArnLike, StringLike, Resource)."""
    if "*" not in pattern and "?" not in pattern:
        return pattern == value
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def resource_matches(spec: Any, resource: str) -> bool:
    return any(_glob(value, resource) for value in _values(spec))


_OPERATORS: dict[str, Callable[[str, str], bool]] = {
    "stringequals": lambda want, got: want == got,
    "stringequalsignorecase": lambda want, got: want.lower() == got.lower(),
    "stringlike": _glob,
    "arnequals": lambda want, got: want == got,
    "arnlike": _glob,
    "bool": lambda want, got: want.lower() == got.lower(),
}


def conditions_match(spec: Any, context: Mapping[str, str]) -> bool:
    """Every condition holds: its key is in `context` (case-insensitive) and one of its values matches."""
    if spec is None:
        return True
    if not isinstance(spec, Mapping):
        return False
    lowered = {key.lower(): value for key, value in context.items()}
    for operator, keys in spec.items():
        test = _OPERATORS.get(str(operator).lower())
        if test is None or not isinstance(keys, Mapping):
            return False
        for key, wanted in keys.items():
            got = lowered.get(str(key).lower())
            if got is None or not any(test(value, got) for value in _values(wanted)):
                return False
    return True


def matches(
    statement: Mapping[str, Any], principal: str | None, action: str, resource: str, context: Mapping[str, str]
) -> bool:
    """Whether the statement (of any Effect) applies to this request."""
    return (
        action_matches(statement.get("Action"), action)
        and principal_matches(statement.get("Principal"), principal)
        and resource_matches(statement.get("Resource"), resource)
        and conditions_match(statement.get("Condition"), context)
    )


def allowed(
    statements: Iterable[Mapping[str, Any]],
    principal: str | None,
    action: str,
    resource: str,
    context: Mapping[str, str],
) -> bool:
    """IAM's rule over one document: some Allow applies and no Deny does."""
    allow = False
    for statement in statements:
        if matches(statement, principal, action, resource, context):
            if statement.get("Effect") == "Deny":
                return False
            allow = allow or statement.get("Effect") == "Allow"
    return allow
