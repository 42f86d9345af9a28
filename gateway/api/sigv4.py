"""AWS Signature Version 4 for the gateway's API: verify what boto3 and the AWS CLI sign, and sign (for `gateway logs`).

`Verifier.verify()` checks one request's `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
Signature=...` against the known credentials, the service `lambda` (`scheduler` for the Scheduler API's paths: the
caller says which) and this gateway's region, the time stamp
(`X-Amz-Date`, within 15 minutes either way, as AWS allows) and the payload's SHA-256, and raises the error AWS
answers: 403 MissingAuthenticationTokenException (no signature), IncompleteSignatureException (a malformed one),
UnrecognizedClientException (an unknown access key, an invalid session token), ExpiredTokenException (a session
token past its expiry), InvalidSignatureException (wrong signature, wrong scope, expired or future time stamp).
`check_headers()` does every check the request head allows, so that an unknown caller is refused before its body
is read; `finish()` checks the signature over the body's SHA-256 (botocore signs the payload's hash in the canonical
request and sends no `x-amz-content-sha256` for Lambda; a client that does send it, signed, is verified from its
head alone). The canonical request is built as botocore builds it: the raw path URI-encoded once
more, the raw query pairs sorted, the signed headers lower-cased with their values trimmed.

The operator's credentials come from `Settings.credentials` (gateway.settings.load_credentials); functions'
session credentials (an access key `ASIA...` with `X-Amz-Security-Token`) are verified by an
`isolation.credentials.SessionAuthority`. Pure functions and a small class; no I/O.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from gateway.errors import LambdaError
from gateway.isolation.credentials import ACCESS_KEY_PREFIX, ExpiredToken, InvalidToken, Session, SessionAuthority

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "lambda"
#: how far a request's time stamp may be from ours, either way (AWS's figure)
MAX_SKEW = dt.timedelta(minutes=15)
_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),"
    r"\s*Signature=(?P<signature>[0-9a-f]{64})\s*$"
)
_SPACES = re.compile(r"\s+")


class MissingAuthenticationTokenException(LambdaError):
    name = "MissingAuthenticationTokenException"
    status = 403
    kind = "User"


class IncompleteSignatureException(LambdaError):
    name = "IncompleteSignatureException"
    status = 403
    kind = "User"


class UnrecognizedClientException(LambdaError):
    name = "UnrecognizedClientException"
    status = 403
    kind = "User"


class InvalidSignatureException(LambdaError):
    name = "InvalidSignatureException"
    status = 403
    kind = "User"


class ExpiredTokenException(LambdaError):
    """A function's session token past its expiry (`gateway.isolation.credentials`)."""

    name = "ExpiredTokenException"
    status = 403
    kind = "User"


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str = SERVICE) -> bytes:
    return _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode(), date), region), service), "aws4_request")


def canonical_request(
    method: str, raw_path: str, headers: Mapping[str, str], signed: list[str], payload_hash: str
) -> str:
    """SigV4's canonical request of an HTTP request as received (`raw_path` still URI-encoded, with its query)."""
    path, _, query = raw_path.partition("?")
    pairs = sorted(tuple(pair.partition("=")[::2]) for pair in query.split("&")) if query else []
    canonical_query = "&".join(f"{k}={v}" for k, v in pairs)
    canonical_headers = "".join(f"{name}:{_SPACES.sub(' ', headers.get(name, '').strip())}\n" for name in signed)
    return "\n".join(
        [method, quote(path or "/", safe="/~"), canonical_query, canonical_headers, ";".join(signed), payload_hash]
    )


def signature(secret: str, amz_date: str, scope: str, canonical: str) -> str:
    date, region, service, _ = scope.split("/")
    to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    return hmac.new(signing_key(secret, date, region, service), to_sign.encode(), hashlib.sha256).hexdigest()


def sign(
    method: str, raw_path: str, headers: dict[str, str], body: bytes, key_id: str, secret: str, region: str,
    now: dt.datetime | None = None,
) -> dict[str, str]:  # fmt: skip
    """Add `X-Amz-Date` and `Authorization` to `headers` (which must hold `Host`) for this request; return them."""
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    headers["X-Amz-Date"] = stamp
    lower = {k.lower(): v for k, v in headers.items()}
    signed = sorted(lower)
    scope = f"{stamp[:8]}/{region}/{SERVICE}/aws4_request"
    canonical = canonical_request(method, raw_path, lower, signed, hashlib.sha256(body).hexdigest())
    sig = signature(secret, stamp, scope, canonical)
    headers["Authorization"] = (
        f"{ALGORITHM} Credential={key_id}/{scope}, SignedHeaders={';'.join(signed)}, Signature={sig}"
    )
    return headers


@dataclass(frozen=True, slots=True)
class Identity:
    """Who signed a request: an operator's access key (`session` None) or a function's session credentials."""

    access_key_id: str
    session: Session | None = None


@dataclass(frozen=True, slots=True)
class Pending:
    """A request whose headers passed every check. `verified`: its signature too (it signed its payload's hash in
    `x-amz-content-sha256`); otherwise the signature covers a body that is still to be read (`Verifier.finish`)."""

    identity: Identity
    secret: str
    amz_date: str
    scope: str
    signed: list[str]
    signature: str
    payload_hash: str | None
    verified: bool


class Verifier:
    """Checks requests against operator credentials and, given a `SessionAuthority`, functions' session credentials.

    Two steps, so that no body is read for a caller who cannot be authenticated: `check_headers()` checks all that
    the request head carries (the Authorization header's form, a known access key or a genuine unexpired session
    token, service, region, time stamp, signed headers; and the whole signature when the payload's hash is in a
    header), `finish()` the signature over the body's SHA-256.
    """

    def __init__(self, credentials: Mapping[str, str], region: str, sessions: SessionAuthority | None = None) -> None:
        self.credentials = dict(credentials)
        self.region = region
        self.sessions = sessions

    def verify(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes, now: dt.datetime | None = None
    ) -> str:
        """Return the access key id of a correctly signed request; raise the error AWS gives otherwise.

        `headers` maps lower-case names to values.
        """
        pending = self.check_headers(method, raw_path, headers, now)
        return self.finish(pending, method, raw_path, headers, body).access_key_id

    def _identify(self, key_id: str, headers: Mapping[str, str], now: dt.datetime) -> tuple[Identity, str]:
        """The identity behind an access key id, and its secret; AWS's 403 for an unknown key or a bad token."""
        secret = self.credentials.get(key_id)
        if secret is not None:
            return Identity(key_id), secret
        token = headers.get("x-amz-security-token")
        if self.sessions is None or token is None or not key_id.startswith(ACCESS_KEY_PREFIX):
            raise UnrecognizedClientException("The security token included in the request is invalid.")
        try:
            session = self.sessions.verify(key_id, token, now.timestamp())
        except ExpiredToken:
            raise ExpiredTokenException("The security token included in the request is expired") from None
        except (InvalidToken, ValueError, KeyError, TypeError):
            raise UnrecognizedClientException("The security token included in the request is invalid.") from None
        return Identity(key_id, session), self.sessions.secret_for(key_id)

    def check_headers(
        self,
        method: str,
        raw_path: str,
        headers: Mapping[str, str],
        now: dt.datetime | None = None,
        service: str = SERVICE,
    ) -> Pending:
        """Every check the request head allows; raise AWS's 403 for the first that fails. Reads no body.
        `service`: the one the credential must be scoped to (`scheduler` for the Scheduler API's paths)."""
        auth = headers.get("authorization")
        if not auth:
            raise MissingAuthenticationTokenException("Missing Authentication Token")
        match = _AUTH_RE.match(auth)
        if match is None:
            raise IncompleteSignatureException(
                "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters "
                f"of the {ALGORITHM} algorithm."
            )
        parts = match["credential"].split("/")
        if len(parts) != 5 or parts[4] != "aws4_request":
            raise IncompleteSignatureException(
                f"Credential should have the form KEY/DATE/REGION/SERVICE/aws4_request, got '{match['credential']}'."
            )
        key_id, date, region, scoped, _ = parts
        now = now or dt.datetime.now(dt.UTC)
        identity, secret = self._identify(key_id, headers, now)
        if scoped != service:
            raise InvalidSignatureException(f"Credential should be scoped to correct service: '{service}'.")
        if region != self.region:
            raise InvalidSignatureException(f"Credential should be scoped to a valid region, not '{region}'.")
        amz_date = headers.get("x-amz-date", "")
        try:
            stamp = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        except ValueError:
            raise IncompleteSignatureException("Authorization requires a valid X-Amz-Date header.") from None
        if stamp.strftime("%Y%m%d") != date:
            raise InvalidSignatureException(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
                f"'{date}' != '{amz_date[:8]}'."
            )
        if stamp < now - MAX_SKEW:
            raise InvalidSignatureException(
                f"Signature expired: {amz_date} is now earlier than {(now - MAX_SKEW):%Y%m%dT%H%M%SZ} "
                f"({now:%Y%m%dT%H%M%SZ} - 15 min.)"
            )
        if stamp > now + MAX_SKEW:
            raise InvalidSignatureException(
                f"Signature not yet current: {amz_date} is still later than {(now + MAX_SKEW):%Y%m%dT%H%M%SZ} "
                f"({now:%Y%m%dT%H%M%SZ} + 15 min.)"
            )
        signed = match["signed"].split(";")
        if "host" not in signed or signed != sorted(signed):
            raise IncompleteSignatureException("SignedHeaders must include 'host', in sorted order.")
        scope = f"{date}/{region}/{scoped}/aws4_request"
        payload_hash = headers.get("x-amz-content-sha256") or None
        pending = Pending(identity, secret, amz_date, scope, signed, match["signature"], payload_hash, False)
        if payload_hash is None:
            return pending
        self._check_signature(pending, method, raw_path, headers, payload_hash)
        return Pending(identity, secret, amz_date, scope, signed, match["signature"], payload_hash, True)

    def finish(self, pending: Pending, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> Identity:
        """The identity of a request that passed `check_headers`, once its body is in; AWS's 403 otherwise."""
        claimed = pending.payload_hash
        if claimed == "UNSIGNED-PAYLOAD":
            return pending.identity
        digest = hashlib.sha256(body).hexdigest()
        if claimed is not None and claimed != digest:
            raise InvalidSignatureException(
                "The provided 'x-amz-content-sha256' header does not match what was computed."
            )
        if not pending.verified:
            self._check_signature(pending, method, raw_path, headers, digest)
        return pending.identity

    def _check_signature(
        self, pending: Pending, method: str, raw_path: str, headers: Mapping[str, str], payload_hash: str
    ) -> None:
        canonical = canonical_request(method, raw_path, headers, pending.signed, payload_hash)
        expected = signature(pending.secret, pending.amz_date, pending.scope, canonical)
        if not hmac.compare_digest(expected, pending.signature):
            raise InvalidSignatureException(
                "The request signature we calculated does not match the signature you provided. Check your AWS "
                "Secret Access Key and signing method. Consult the service documentation for details."
            )
