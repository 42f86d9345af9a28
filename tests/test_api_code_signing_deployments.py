"""Code signing and deployments against a real gateway with boto3: what a function shows of its package's signature,
integrity before trust, and a configuration attached or changed while a deployment is in flight (the deployment
commits only if the configuration it was checked against is still the function's: ResourceConflictException
otherwise). Helpers and fixtures are tests/test_api_code_signing.py's (that module is at the 500-line limit).
"""

from __future__ import annotations

from typing import Any

from tests.test_api_code_signing import Keys, _code, _create, _csc, _name
from tests.test_api_code_signing import gw as gw
from tests.test_api_code_signing import keys as keys
from tests.test_api_code_signing import lam as lam

SIGNING = ("SigningProfileVersionArn", "SigningJobArn")


def test_new_code_of_a_function_without_a_configuration_shows_no_signature(lam: Any, keys: Keys) -> None:
    name = _name()
    csc = _csc(lam, "Enforce")
    created = _create(lam, name, keys.sign(_code(1)), csc)
    assert all(k in created for k in SIGNING)
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    lam.delete_function_code_signing_config(FunctionName=name)
    dry = lam.update_function_code(FunctionName=name, ZipFile=_code(2), DryRun=True)
    assert not any(k in dry for k in SIGNING)
    out = lam.update_function_code(FunctionName=name, ZipFile=_code(2))
    assert not any(k in out for k in SIGNING)
    assert not any(k in lam.get_function_configuration(FunctionName=name) for k in SIGNING)
