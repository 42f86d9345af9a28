"""Function names, ARNs and qualifiers as the Lambda API accepts them. Pure, no I/O.

`{FunctionName}` in a path may be `name`, `name:qualifier`, a full ARN
`arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]` or a partial ARN `ACCOUNT:function:NAME[:QUALIFIER]`.
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

from gateway.errors import (
    AccessDeniedException,
    InvalidParameterValueException,
    ResourceNotFoundException,
    ValidationException,
)
from gateway.settings import partition_of

NAME_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")
#: the model's Qualifier pattern, `(|[a-zA-Z0-9$_-]+)`: `$latest` passes it and is then not found (404), as on AWS
QUALIFIER_RE = re.compile(r"[a-zA-Z0-9$_-]{1,128}")
_ARN_RE = re.compile(
    r"(?:arn:(?:aws[a-zA-Z-]*):lambda:(?P<region>(?:eusc-)?[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-\d{1}):)?"
    r"(?:(?P<account>\d{12}):)?"
    r"(?:function:)?"
    r"(?P<name>[a-zA-Z0-9_.-]+)"
    r"(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9_-]+))?"
)


class FunctionRef(NamedTuple):
    name: str
    qualifier: str | None


@functools.lru_cache(maxsize=4096)  # the invoke path parses the same few names over and over
def parse_function_name(raw: str, qualifier: str | None = None) -> FunctionRef:
    """Split a path's FunctionName into (name, qualifier), merging `?Qualifier=`.

    Raises ValidationException for a malformed name, InvalidParameterValueException when the
    qualifier in the name and the one in the query string differ. A name longer than 64 characters is not refused
    here: no function has it, so the operation answers ResourceNotFoundException as AWS does (CreateFunction checks
    the length itself: `check_create_name`).
    """
    if len(raw) > 256:
        raise ValidationException(
            f"1 validation error detected: Value '{raw[:300]}' at 'functionName' failed to satisfy constraint: "
            "Member must have length less than or equal to 256"
        )
    m = _ARN_RE.fullmatch(raw)
    if m is None or (m["account"] is None and "function:" in raw):
        raise ValidationException(
            f"1 validation error detected: Value '{raw}' at 'functionName' failed to satisfy constraint: "
            "Member must satisfy regular expression pattern: "
            r"(arn:(aws[a-zA-Z-]*)?:lambda:)?((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?"
            r"(\d{12}:)?(function:)?([a-zA-Z0-9-_\.]+)(:(\$LATEST(\.PUBLISHED)?|[a-zA-Z0-9-_]+))?"
        )
    name = m["name"]  # longer than a function's 64 characters: no such function (404), as on AWS
    in_name = m["qualifier"]
    if qualifier is not None and not QUALIFIER_RE.fullmatch(qualifier):
        raise ValidationException(
            f"1 validation error detected: Value '{qualifier}' at 'qualifier' failed to satisfy constraint: "
            r"Member must satisfy regular expression pattern: (|[a-zA-Z0-9$_-]+)"
        )
    if in_name is not None and qualifier is not None and in_name != qualifier:
        raise InvalidParameterValueException(
            "The derived qualifier from the function name does not match the specified qualifier."
        )
    return FunctionRef(name, in_name if in_name is not None else qualifier)


@functools.lru_cache(maxsize=4096)
def home_of(raw: str) -> tuple[str | None, str | None]:
    """(region, account) a FunctionName's ARN names; None for what it leaves out (a plain name leaves out both, a
    partial ARN the region), and (None, None) for a malformed name (its route refuses it in its own words)."""
    m = _ARN_RE.fullmatch(raw)
    return (None, None) if m is None else (m["region"], m["account"])


def check_home(raw: str, region: str, account_id: str, caller: str, action: str) -> None:
    """Refuse a FunctionName whose ARN names another account or region than the gateway's, as Lambda does.

    Another account: 403 AccessDeniedException (no cross-account resource policy can allow it: this gateway serves
    one account), worded as AWS words a cross-account denial, with `caller` (the caller's IAM ARN) and `action`
    (`lambda:GetFunction`). Another region (checked second, as Lambda does): 404 ResourceNotFoundException
    "Functions from 'R' are not reachable in this region ('ours')". Pure; cheap for a plain name.
    """
    if ":" not in raw:
        return
    arn_region, arn_account = home_of(raw)
    if arn_account is not None and arn_account != account_id:
        m = _ARN_RE.fullmatch(raw)
        assert m is not None  # home_of matched it
        where = arn_region or region
        resource = f"arn:{partition_of(where)}:lambda:{where}:{arn_account}:function:{m['name']}"
        if m["qualifier"] is not None:
            resource += f":{m['qualifier']}"
        raise AccessDeniedException(
            f"User: {caller} is not authorized to perform: {action} on resource: {resource} "
            f"because no resource-based policy allows the {action} action"
        )
    if arn_region is not None and arn_region != region:
        raise ResourceNotFoundException(f"Functions from '{arn_region}' are not reachable in this region ('{region}')")


#: CreateFunction's limits on FunctionName (AWS's messages): a name alone, and a full or partial ARN
CREATE_NAME_MAX = 64
CREATE_ARN_MAX = 140


def check_create_name(raw: str, ref: FunctionRef) -> None:
    """CreateFunction's length rule: a name of at most 64 characters; given as an ARN, the whole ARN at most 140
    (AWS reports each limit by its own figure). ValidationException otherwise."""
    limit = CREATE_NAME_MAX if raw == ref.name else CREATE_ARN_MAX
    if len(raw) > limit or len(ref.name) > CREATE_NAME_MAX:
        limit = limit if len(raw) > limit else CREATE_NAME_MAX
        raise ValidationException(
            f"1 validation error detected: Value '{raw}' at 'functionName' failed to satisfy constraint: "
            f"Member must have length less than or equal to {limit}"
        )
