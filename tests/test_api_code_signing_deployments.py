"""Code signing and deployments against a real gateway with boto3: what a function shows of its package's signature,
integrity before trust, and a configuration attached or changed while a deployment is in flight (the deployment
commits only if the configuration it was checked against is still the function's: ResourceConflictException
otherwise). Helpers and fixtures are tests/test_api_code_signing.py's (that module is at the 500-line limit).
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from typing import Any

import pytest
from botocore.exceptions import ClientError

from gateway.store import signatures
from tests.test_api_code_signing import OTHER, TRUSTED, UNREGISTERED, Keys, _code, _create, _csc, _error, _name
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


def _tampered(keys: Keys, profile: str) -> bytes:
    """A stored (uncompressed) package signed for `profile`, then edited with its CRCs fixed: a valid zip whose
    signed bytes no longer hash to the signature's digest."""
    z = io.BytesIO()
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("lambda_function.py", "def lambda_handler(e, c):\n    return {'v': 'AAAA'}\n")
    s = bytearray(keys.sign(z.getvalue(), profile, key_of=TRUSTED if profile == UNREGISTERED else None))
    j = s.find(b"AAAA")
    s[j : j + 4] = b"BBBB"
    crc = struct.pack("<I", zlib.crc32(b"def lambda_handler(e, c):\n    return {'v': 'BBBB'}\n"))
    k = s.find(b"PK\x03\x04")
    s[k + 14 : k + 18] = crc
    k = s.find(b"PK\x01\x02")
    s[k + 16 : k + 20] = crc
    return bytes(s)


@pytest.mark.parametrize("profile", [OTHER, UNREGISTERED])
def test_a_tampered_package_fails_integrity_under_warn_whatever_its_profile(lam: Any, keys: Keys, profile: str) -> None:
    tampered = _tampered(keys, profile)
    sig = signatures.read(tampered)
    assert sig is not None and sig.sha256 != sig.actual_sha256
    csc = _csc(lam, "Warn")  # allows TRUSTED only
    with pytest.raises(ClientError) as exc:
        _create(lam, _name(), tampered, csc)
    assert _error(exc)[0] == "InvalidCodeSignatureException"
