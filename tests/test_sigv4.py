"""SigV4 verification (gateway.api.sigv4) against botocore's own signer, and the errors AWS gives."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from gateway.api.sigv4 import (
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
    Verifier,
    sign,
)
from gateway.settings import load_credentials

VERIFIER = Verifier({"AKIDEXAMPLE": "s3cr3t"}, "us-east-1")


def _botocore_signed(
    url: str,
    body: bytes,
    method: str = "POST",
    key: str = "AKIDEXAMPLE",
    secret: str = "s3cr3t",
    region: str = "us-east-1",
) -> tuple[str, str, dict[str, str], bytes]:
    req = AWSRequest(method=method, url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(key, secret), "lambda", region).add_auth(req)
    prepared = req.prepare()
    parts = urlsplit(prepared.url)
    headers = {k.lower(): v for k, v in prepared.headers.items()}
    headers["host"] = parts.netloc
    return method, parts.path + (f"?{parts.query}" if parts.query else ""), headers, body


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000/2015-03-31/functions/my-fn/invocations",
        "http://127.0.0.1:9000/2015-03-31/functions/my-fn%3Aprod/invocations?Qualifier=prod",
        "http://127.0.0.1:9000/2015-03-31/functions/?MaxItems=5&Marker=a%2Bb%3D",
        "http://127.0.0.1:9000/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Ax",
        "http://localhost:9000/2017-03-31/tags/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Ax?tagKeys=a&tagKeys=b",
    ],
)
def test_what_botocore_signs_verifies(url: str) -> None:
    assert VERIFIER.verify(*_botocore_signed(url, b'{"k": [1, "\\u00e9"]}')) == "AKIDEXAMPLE"


def test_any_change_breaks_the_signature() -> None:
    method, path, headers, body = _botocore_signed("http://127.0.0.1:9000/2015-03-31/functions/f/invocations", b"{}")
    for tampered in (
        ("PUT", path, headers, body),
        (method, path.replace("/f/", "/g/"), headers, body),
        (method, path, headers, b'{"x": 1}'),
        (method, path, {**headers, "host": "127.0.0.1:9001"}, body),
    ):
        with pytest.raises(InvalidSignatureException, match="does not match"):
            VERIFIER.verify(*tampered)


def test_wrong_secret_unknown_key_missing_and_malformed_authorization() -> None:
    url = "http://127.0.0.1:9000/2015-03-31/functions/"
    with pytest.raises(InvalidSignatureException):
        VERIFIER.verify(*_botocore_signed(url, b"", "GET", secret="wrong"))
    with pytest.raises(UnrecognizedClientException):
        VERIFIER.verify(*_botocore_signed(url, b"", "GET", key="AKIDOTHER"))
    method, path, headers, body = _botocore_signed(url, b"", "GET")
    with pytest.raises(MissingAuthenticationTokenException):
        VERIFIER.verify(method, path, {k: v for k, v in headers.items() if k != "authorization"}, body)
    with pytest.raises(IncompleteSignatureException):
        VERIFIER.verify(method, path, {**headers, "authorization": "AWS4-HMAC-SHA256 Credential=x"}, body)
    with pytest.raises(InvalidSignatureException, match="region"):
        VERIFIER.verify(*_botocore_signed(url, b"", "GET", region="eu-west-1"))


def test_time_stamps_older_or_newer_than_15_minutes_are_refused() -> None:
    headers = {"Host": "127.0.0.1:9000"}
    now = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
    for offset, message in ((dt.timedelta(minutes=-16), "Signature expired"), (dt.timedelta(minutes=16), "not yet")):
        signed = sign(
            "GET", "/2015-03-31/functions/", dict(headers), b"", "AKIDEXAMPLE", "s3cr3t", "us-east-1", now + offset
        )
        lower = {k.lower(): v for k, v in signed.items()}
        with pytest.raises(InvalidSignatureException, match=message):
            VERIFIER.verify("GET", "/2015-03-31/functions/", lower, b"", now=now)
        assert VERIFIER.verify("GET", "/2015-03-31/functions/", lower, b"", now=now + offset) == "AKIDEXAMPLE"


def test_credentials_from_environment_and_shared_credentials_file(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    path.write_text(
        "[default]\naws_access_key_id = AK1\naws_secret_access_key = S1\n\n"
        "[ci]\naws_access_key_id=AK2\naws_secret_access_key=S2\n"
    )
    env = {"GATEWAY_ACCESS_KEY_ID": "AK0", "GATEWAY_SECRET_ACCESS_KEY": "S0", "GATEWAY_CREDENTIALS_FILE": str(path)}
    assert load_credentials(env) == {"AK0": "S0", "AK1": "S1", "AK2": "S2"}
    assert load_credentials({}) == {}
    with pytest.raises(ValueError, match="both"):
        load_credentials({"GATEWAY_ACCESS_KEY_ID": "AK0"})
    with pytest.raises(ValueError, match="cannot read"):
        load_credentials({"GATEWAY_CREDENTIALS_FILE": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("[default]\nregion = us-east-1\n")
    with pytest.raises(ValueError, match="no aws_access_key_id"):
        load_credentials({"GATEWAY_CREDENTIALS_FILE": str(tmp_path / "empty")})
