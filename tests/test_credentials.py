"""Functions' session credentials (isolation.credentials) and their verification (api.sigv4)."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from gateway.api.sigv4 import (
    ExpiredTokenException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
    Verifier,
)
from gateway.isolation.credentials import ExpiredToken, InvalidToken, SessionAuthority, max_environment_age

ARN = "arn:aws:lambda:us-east-1:123456789012:function:caller"
ROLE = "arn:aws:iam::123456789012:role/service-role/lambda-role"
URL = "http://127.0.0.1:9000/2015-03-31/functions/other/invocations"


def _signed(creds: dict[str, str], body: bytes = b"{}") -> tuple[str, str, dict[str, str], bytes]:
    req = AWSRequest(method="POST", url=URL, data=body, headers={"Content-Type": "application/json"})
    credentials = Credentials(creds["AWS_ACCESS_KEY_ID"], creds["AWS_SECRET_ACCESS_KEY"], creds["AWS_SESSION_TOKEN"])
    SigV4Auth(credentials, "lambda", "us-east-1").add_auth(req)
    prepared = req.prepare()
    parts = urlsplit(prepared.url)
    headers = {k.lower(): v for k, v in prepared.headers.items()} | {"host": parts.netloc}
    return "POST", parts.path, headers, body


def test_minted_credentials_look_like_aws_and_verify_statelessly() -> None:
    authority = SessionAuthority(ttl=3600)
    creds = authority.mint(ARN, ROLE)
    key = creds["AWS_ACCESS_KEY_ID"]
    assert key.startswith("ASIA") and len(key) == 20 and key.isalnum()
    assert len(creds["AWS_SECRET_ACCESS_KEY"]) == 40
    assert authority.mint(ARN, ROLE)["AWS_ACCESS_KEY_ID"] != key  # one per environment
    session = authority.verify(key, creds["AWS_SESSION_TOKEN"])
    assert session.function_name == "caller" and session.role_arn == ROLE
    assert session.assumed_role_arn == "arn:aws:sts::123456789012:assumed-role/lambda-role/caller"
    assert 3590 < session.expires - time.time() <= 3600
    # another gateway (another key) does not accept them
    with pytest.raises(InvalidToken):
        SessionAuthority().verify(key, creds["AWS_SESSION_TOKEN"])


def test_tampered_foreign_and_expired_tokens_are_refused() -> None:
    authority = SessionAuthority(ttl=60)
    creds = authority.mint(ARN, ROLE)
    key, token = creds["AWS_ACCESS_KEY_ID"], creds["AWS_SESSION_TOKEN"]
    claims, _, mac = token.partition(".")
    forged = claims.replace(claims[5], "A" if claims[5] != "A" else "B", 1) + "." + mac
    for bad in (forged, token[:-2], "garbage", "", claims + "."):
        with pytest.raises(InvalidToken):
            authority.verify(key, bad)
    with pytest.raises(InvalidToken):  # a genuine token presented with another environment's key
        authority.verify(authority.mint(ARN, ROLE)["AWS_ACCESS_KEY_ID"], token)
    with pytest.raises(ExpiredToken):
        authority.verify(key, token, now=time.time() + 61)


def test_verifier_accepts_botocore_signed_session_requests_and_refuses_bad_tokens() -> None:
    authority = SessionAuthority(ttl=60)
    verifier = Verifier({"AKIDEXAMPLE": "s3cr3t"}, "us-east-1", authority)
    creds = authority.mint(ARN, ROLE)
    method, path, headers, body = _signed(creds)
    assert "x-amz-security-token" in headers["authorization"]  # botocore signs the token as a header
    identity = verifier.finish(verifier.check_headers(method, path, headers), method, path, headers, body)
    assert identity.session is not None and identity.session.function_name == "caller"
    with pytest.raises(InvalidSignatureException):  # the body is covered by the signature
        verifier.finish(verifier.check_headers(method, path, headers), method, path, headers, b'{"x": 1}')
    with pytest.raises(UnrecognizedClientException):
        verifier.check_headers(method, path, {**headers, "x-amz-security-token": "tampered"})
    no_token = {k: v for k, v in headers.items() if k != "x-amz-security-token"}
    with pytest.raises(UnrecognizedClientException):
        verifier.check_headers(method, path, no_token)
    with pytest.raises(UnrecognizedClientException):  # without an authority, no session is recognised
        Verifier({"AKIDEXAMPLE": "s3cr3t"}, "us-east-1").check_headers(method, path, headers)
    expired = SessionAuthority(ttl=60)
    old = expired.mint(ARN, ROLE, now=time.time() - 120)
    with pytest.raises(ExpiredTokenException) as exc:
        Verifier({}, "us-east-1", expired).check_headers(*_signed(old)[:3])
    assert exc.value.status == 403 and exc.value.message == "The security token included in the request is expired"


def test_headers_are_checked_without_the_body() -> None:
    """check_headers refuses an unknown caller with nothing but the head; a signed payload hash is verified there."""
    verifier = Verifier({"AKIDEXAMPLE": "s3cr3t"}, "us-east-1")
    with pytest.raises(MissingAuthenticationTokenException):
        verifier.check_headers("POST", "/2015-03-31/functions/x/invocations", {"host": "h"})
    req = AWSRequest(method="POST", url=URL, data=b"{}", headers={"X-Amz-Content-SHA256": "0" * 64})
    SigV4Auth(Credentials("AKIDEXAMPLE", "s3cr3t"), "lambda", "us-east-1").add_auth(req)
    prepared = req.prepare()
    headers = {k.lower(): v for k, v in prepared.headers.items()} | {"host": "127.0.0.1:9000"}
    path = urlsplit(prepared.url).path
    pending = verifier.check_headers("POST", path, headers)
    assert pending.verified  # the signature was checked from the head alone
    with pytest.raises(InvalidSignatureException, match="x-amz-content-sha256"):
        verifier.finish(pending, "POST", path, headers, b"{}")  # ... and the body must match the signed hash


def test_environments_are_retired_before_their_credentials_expire() -> None:
    assert max_environment_age(12 * 3600) == 11.5 * 3600
    assert max_environment_age(12 * 3600) + 900 < 12 * 3600  # the longest invocation still fits
    assert max_environment_age(4) == 2
