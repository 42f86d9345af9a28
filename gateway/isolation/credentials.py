"""Session credentials for functions: what an environment gets instead of the keys to the house.

Each environment is given Lambda's credential variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_SESSION_TOKEN`) for its function's execution role, minted by the gateway when it forks the environment.
The gateway verifies them statelessly, under a key that exists only in its memory:

- the access key id is `ASIA` + 16 random base-32 characters (AWS's prefix for temporary credentials);
- the secret is HMAC(key, "secret" | access key id): the gateway derives it again from the id, stores nothing;
- the session token is `<claims>.<mac>`, both base64url: the claims (a JSON object: access key id, function ARN,
  role ARN, expiry in Unix seconds) and HMAC(key, "token" | claims). A token whose MAC does not match is
  refused as AWS refuses an invalid one; a token for another access key id too.

Lifetime. A token is valid for `ttl` seconds (12 hours by default, as the credentials Lambda hands an environment).
Nothing renews it: an environment is retired (idle ones shut by the reaper, busy ones when their invocation ends)
once it is `max_environment_age(ttl)` old, which leaves at least the longest invocation (15 minutes) before its
token expires; the pool forks a fresh environment, with fresh credentials, on the next demand. The key is made
at start-up and dies with the gateway, as do the environments (they die with it): a token never outlives the
gateway that minted it, and no key is written to disk.

Pure functions and one small class; no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass

import orjson

#: the credentials Lambda gives an environment are valid for about 12 hours
DEFAULT_TTL = 12 * 3600.0
#: the longest an invocation may run (Lambda's 15-minute timeout), which must fit between retirement and expiry
MAX_INVOCATION = 900.0
ACCESS_KEY_PREFIX = "ASIA"
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


class InvalidToken(Exception):
    """A session token that was not minted by this gateway (or was changed), or does not fit its access key."""


class ExpiredToken(Exception):
    """A genuine session token past its expiry."""


@dataclass(frozen=True, slots=True)
class Session:
    """What a session token says: who the caller is. `function_arn` is unqualified."""

    access_key_id: str
    function_arn: str
    role_arn: str
    expires: float

    @property
    def function_name(self) -> str:
        return self.function_arn.rsplit(":", 1)[-1]

    @property
    def assumed_role_arn(self) -> str:
        """`arn:aws:sts::<account>:assumed-role/<role name>/<function name>`, the caller AWS names in its errors."""
        _, partition, _, _, account, *_ = self.function_arn.split(":")
        role_name = self.role_arn.rsplit("/", 1)[-1]
        return f"arn:{partition}:sts::{account}:assumed-role/{role_name}/{self.function_name}"


def max_environment_age(ttl: float) -> float:
    """Seconds after which an environment is retired so that its credentials never expire under an invocation:
    `ttl` less the longest invocation and a margin (30 minutes in all), or half of `ttl` when it is short."""
    return ttl - min(ttl / 2, 2 * MAX_INVOCATION)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionAuthority:
    """Mints and verifies session credentials under a key it makes itself (or is given, for tests)."""

    def __init__(self, ttl: float = DEFAULT_TTL, key: bytes | None = None) -> None:
        self.ttl = ttl
        self._key = key if key is not None else secrets.token_bytes(32)

    def _mac(self, purpose: bytes, data: bytes) -> bytes:
        return hmac.new(self._key, purpose + b"|" + data, hashlib.sha256).digest()

    def secret_for(self, access_key_id: str) -> str:
        """The secret access key of a session's access key id (40 characters, as AWS's)."""
        return _b64(self._mac(b"secret", access_key_id.encode()))[:40]

    def mint(self, function_arn: str, role_arn: str, now: float | None = None) -> dict[str, str]:
        """Fresh credentials for one environment: Lambda's three variables."""
        key_id = ACCESS_KEY_PREFIX + "".join(_B32[b % 32] for b in os.urandom(16))
        expires = int((time.time() if now is None else now) + self.ttl)
        claims = orjson.dumps({"k": key_id, "f": function_arn, "r": role_arn, "e": expires})
        token = _b64(claims) + "." + _b64(self._mac(b"token", claims))
        return {
            "AWS_ACCESS_KEY_ID": key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_for(key_id),
            "AWS_SESSION_TOKEN": token,
        }

    def verify(self, access_key_id: str, token: str, now: float | None = None) -> Session:
        """The session of a token presented with `access_key_id`; InvalidToken or ExpiredToken otherwise.

        The MAC is checked before anything in the claims is believed.
        """
        claims_b64, dot, mac_b64 = token.partition(".")
        try:
            claims, mac = _unb64(claims_b64), _unb64(mac_b64)
        except (ValueError, TypeError):
            raise InvalidToken("not a session token") from None
        if not dot or not hmac.compare_digest(mac, self._mac(b"token", claims)):
            raise InvalidToken("the session token's signature does not match")
        data = orjson.loads(claims)
        session = Session(data["k"], data["f"], data["r"], float(data["e"]))
        if not hmac.compare_digest(session.access_key_id, access_key_id):
            raise InvalidToken("the session token belongs to another access key")
        if session.expires <= (time.time() if now is None else now):
            raise ExpiredToken("the session token has expired")
        return session
