"""Signed packages: the detached signature a .zip carries, how `gateway sign` makes it, how it is checked, and the
signing profiles (public keys) an operator registers. Pure but for reading the profiles file; CPU-bound (SHA-256 of
the package): call `read`/`check` in a worker thread.

Format, version 1 (AWS Signer's own format is not public; this one plays its part). A signed package is an ordinary
.zip whose *archive comment* (the last field of the end-of-central-directory record) is the signature:

    LGSIG1 <standard base64 of a JSON object>

The JSON object has the members `v` (1), `profile` (the signing-profile-version ARN,
`arn:aws:signer:REGION:ACCOUNT:/signing-profiles/NAME/VERSION`), `job` (the signing job's id, a uuid4: its ARN is
`arn:aws:signer:REGION:ACCOUNT:/signing-jobs/JOB`), `signed` and `expires` (epoch seconds), `sha256` (hex digest of
the signed bytes) and `sig` (base64 of the Ed25519 signature). The *signed bytes* are the package from its first byte
up to, not including, the comment-length field of the end-of-central-directory record: every entry, name, mode and
extra field, the central directory and the record's own fields; only the comment (the signature) and its length are
left out, so the signature is detached from the code it covers and survives any transport (inline ZipFile, S3). The
Ed25519 signature is over `lambda-gateway-signature-v1\\n` followed by the canonical JSON (sorted keys, no spaces) of
every member but `sig`: the profile, job, times and digest are bound together, so a signature cannot be moved to other
code, another profile or a later expiry. Unzip tools ignore the comment; re-signing replaces it.

A comment that does not begin with `LGSIG1 ` means an unsigned package. One that does but does not parse, is not in
the one encoding `sign` writes (members in the order above and no others, compact JSON, padded standard base64), or
whose length field does not end it at the package's last byte, is a damaged signature: the integrity check fails. The
record is found as Python's zipfile finds it (the last one in the file's last 64 KiB + 22 bytes), so the code store
extracts exactly the entries the signature covers.

Signing profiles: `GATEWAY_SIGNING_PROFILES` names a JSON file mapping each signing-profile-version ARN to its
public key: a PEM string, or an object `{"public_key": PEM | "public_key_file": path (relative to the file),
"revoked": bool, "revoked_jobs": [job id, ...]}`. Ed25519 keys only. `gateway sign --generate-key` writes a pair.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MAGIC = b"LGSIG1 "
CONTEXT = b"lambda-gateway-signature-v1\n"
PROFILE_ARN_PATTERN = (
    r"arn:aws[a-zA-Z-]*:signer:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:\d{12}:/signing-profiles/"
    r"[a-zA-Z0-9_]{2,64}/[a-zA-Z0-9]{10}"
)
_PROFILE_ARN_RE = re.compile(PROFILE_ARN_PATTERN)
_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22
#: about 135 months: AWS Signer's default signature validity period
DEFAULT_VALID_DAYS = 4110
#: a signature valid longer is as good as one that never expires
MAX_VALID_DAYS = 36500


class DamagedSignature(ValueError):
    """The package claims a signature that cannot be read, or does not match its bytes: integrity fails."""


@dataclass(frozen=True, slots=True)
class Signature:
    """A package's signature as read (not yet trusted: see `SigningProfiles.check`)."""

    profile: str
    job: str
    signed: int
    expires: int
    sha256: str
    sig: bytes
    #: the digest of the package's signed bytes, as computed on reading
    actual_sha256: str

    def message(self) -> bytes:
        return signed_message(self.profile, self.job, self.signed, self.expires, self.sha256)

    def job_arn(self) -> str:
        """`arn:aws:signer:REGION:ACCOUNT:/signing-jobs/JOB` of the profile's partition, region and account."""
        partition, _, region, account = self.profile.split(":")[1:5]
        return f"arn:{partition}:signer:{region}:{account}:/signing-jobs/{self.job}"


def signed_message(profile: str, job: str, signed: int, expires: int, sha256: str) -> bytes:
    body = {"expires": expires, "job": job, "profile": profile, "sha256": sha256, "signed": signed, "v": 1}
    return CONTEXT + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def _split(data: bytes) -> tuple[memoryview, bytes]:
    """(signed bytes, a view: no copy; comment) of a .zip; DamagedSignature if no end-of-central-directory record
    ends it."""
    eocd = data.rfind(_EOCD, max(0, len(data) - _EOCD_SIZE - (1 << 16)))
    if eocd < 0 or len(data) - eocd < _EOCD_SIZE:
        raise DamagedSignature("no end-of-central-directory record")
    (length,) = struct.unpack("<H", data[eocd + 20 : eocd + 22])
    if eocd + _EOCD_SIZE + length != len(data):
        raise DamagedSignature("the end-of-central-directory record does not end the package")
    return memoryview(data)[: eocd + 20], data[eocd + _EOCD_SIZE :]


def _comment(profile: str, job: str, signed: int, expires: int, sha256: str, sig: bytes) -> bytes:
    """The one encoding of a signature: members in this order, compact JSON, standard base64 with padding. `read`
    accepts no other, so one signature is one comment and one package (a signature cannot be re-encoded, or carry
    members of its own, to make packages of other digests that pass with it)."""
    doc = {"v": 1, "profile": profile, "job": job, "signed": signed, "expires": expires, "sha256": sha256,
           "sig": base64.b64encode(sig).decode()}  # fmt: skip
    return MAGIC + base64.b64encode(orjson.dumps(doc))


def read(data: bytes) -> Signature | None:
    """The signature `data` carries, None if it is unsigned; DamagedSignature if it claims one that cannot be read.

    The digest of the signed bytes is computed here (`Signature.actual_sha256`): CPU-bound, call it in a thread.
    """
    eocd = data.rfind(_EOCD, max(0, len(data) - _EOCD_SIZE - (1 << 16)))
    if eocd < 0 or not data[eocd + _EOCD_SIZE :].startswith(MAGIC):
        return None  # an unsigned package, or not a zip at all (the code store says so)
    # the record zipfile reads too (it looks for the last one in the same window): the signature is that record's
    # comment, and its length field must say so
    signed, comment = _split(data)
    try:
        doc = orjson.loads(base64.b64decode(comment[len(MAGIC) :], validate=True))
        if not isinstance(doc, dict) or doc.get("v") != 1:
            raise DamagedSignature("unknown signature version")
        sig = Signature(
            profile=_str(doc, "profile"),
            job=_str(doc, "job"),
            signed=_int(doc, "signed"),
            expires=_int(doc, "expires"),
            sha256=_str(doc, "sha256"),
            sig=base64.b64decode(_str(doc, "sig"), validate=True),
            actual_sha256=hashlib.sha256(signed).hexdigest(),
        )
        if comment != _comment(sig.profile, sig.job, sig.signed, sig.expires, sig.sha256, sig.sig):
            raise DamagedSignature("the signature is not in its canonical encoding")
    except (binascii.Error, orjson.JSONDecodeError, ValueError) as exc:
        if isinstance(exc, DamagedSignature):
            raise
        raise DamagedSignature(f"the signature does not parse: {exc}") from None
    return sig


def _str(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise DamagedSignature(f"the signature's {key} is not a string")
    return value


def _int(doc: Mapping[str, Any], key: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise DamagedSignature(f"the signature's {key} is not an integer")
    return value


def sign(data: bytes, key: Ed25519PrivateKey, profile: str, now: int, valid_days: int = DEFAULT_VALID_DAYS) -> bytes:
    """`data` (a .zip) signed for `profile`: its comment replaced by the signature. ValueError for a profile ARN
    of the wrong form, a package that is not a zip, or one with two entries of one name (extractors disagree on
    which one wins: nobody should vouch for such a package)."""
    if not _PROFILE_ARN_RE.fullmatch(profile):
        raise ValueError(f"not a signing-profile-version ARN: {profile} (pattern {PROFILE_ARN_PATTERN})")
    _check_signable(data)
    eocd = data.rfind(_EOCD, max(0, len(data) - _EOCD_SIZE - (1 << 16)))
    signed = data[: eocd + 20]
    job = str(uuid.uuid4())
    digest = hashlib.sha256(signed).hexdigest()
    expires = now + valid_days * 86400
    comment = _comment(profile, job, now, expires, digest, key.sign(signed_message(profile, job, now, expires, digest)))
    if len(comment) > 0xFFFF:
        raise ValueError("the signature does not fit in a zip comment")
    return signed + struct.pack("<H", len(comment)) + comment


def _check_signable(data: bytes) -> None:
    """ValueError unless `data` is a .zip every reader reads alike: no two entries of one name as the code store
    extracts them (`x`, `./x` and `a\\..\\x` are one file there), and no end-of-central-directory record inside the
    comment of another (the record zipfile finds would not be the one the package's writer meant)."""
    import io
    import posixpath
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = [posixpath.normpath(info.filename.replace("\\", "/")) for info in zf.infolist()]
    except zipfile.BadZipFile as exc:
        raise ValueError(f"not a .zip file: {exc}") from None
    names = [n for n in names if n != "."]
    if len(set(names)) != len(names):
        raise ValueError("the package has two entries of the same name")
    start = max(0, len(data) - _EOCD_SIZE - (1 << 16))
    last = data.rfind(_EOCD, start)
    at = data.find(_EOCD, start)
    while 0 <= at < last:
        (length,) = struct.unpack("<H", data[at + 20 : at + 22].ljust(2, b"\xff"))
        if at + _EOCD_SIZE + length == len(data):
            raise ValueError("the package's comment holds an end-of-central-directory record")
        at = data.find(_EOCD, at + 1)


# -- keys and profiles --------------------------------------------------------------------------------------------


def generate_key() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair: (private key PEM, PKCS#8 unencrypted; public key PEM, SubjectPublicKeyInfo)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """An unencrypted Ed25519 private key (PEM); ValueError for anything else (an encrypted key included)."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:  # the key is encrypted: `password=None` cannot open it
        raise ValueError("the private key is encrypted: give an unencrypted PKCS#8 PEM key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the private key is not an Ed25519 key")
    return key


def _public_key(pem: bytes, where: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise ValueError(f"{where}: not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{where}: not an Ed25519 public key")
    return key


@dataclass(frozen=True, slots=True)
class Profile:
    """A registered signing profile version: its public key, and what of it is revoked."""

    arn: str
    key: Ed25519PublicKey
    revoked: bool = False
    revoked_jobs: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class SigningProfiles:
    """The signing profile versions this gateway trusts signatures of, by ARN (immutable; loaded at start-up)."""

    profiles: Mapping[str, Profile] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None) -> SigningProfiles:
        """Read `GATEWAY_SIGNING_PROFILES`' file (None: no profiles). ValueError, naming the culprit, if malformed."""
        if path is None:
            return cls()
        try:
            doc = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"GATEWAY_SIGNING_PROFILES: cannot read {path}: {exc}") from None
        if not isinstance(doc, dict):
            raise ValueError(f"GATEWAY_SIGNING_PROFILES: {path} must hold a JSON object of ARN -> public key")
        return cls({arn: _profile(arn, entry, path.parent) for arn, entry in doc.items()})

    def __contains__(self, arn: object) -> bool:
        return arn in self.profiles

    def get(self, arn: str) -> Profile | None:
        return self.profiles.get(arn)


def _profile(arn: str, entry: object, base: Path) -> Profile:
    where = f"GATEWAY_SIGNING_PROFILES: {arn}"
    if not _PROFILE_ARN_RE.fullmatch(arn):
        raise ValueError(f"{where}: not a signing-profile-version ARN (pattern {PROFILE_ARN_PATTERN})")
    if isinstance(entry, str):
        entry = {"public_key": entry}
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a PEM string or an object")
    unknown = set(entry) - {"public_key", "public_key_file", "revoked", "revoked_jobs"}
    if unknown:
        raise ValueError(f"{where}: unknown members {sorted(unknown)}")
    if isinstance(entry.get("public_key"), str):
        pem = entry["public_key"].encode()
    elif isinstance(entry.get("public_key_file"), str):
        try:
            pem = (base / entry["public_key_file"]).read_bytes()
        except OSError as exc:
            raise ValueError(f"{where}: {exc}") from None
    else:
        raise ValueError(f"{where}: public_key or public_key_file is required")
    jobs = entry.get("revoked_jobs", [])
    if not isinstance(jobs, list) or not all(isinstance(j, str) for j in jobs):
        raise ValueError(f"{where}: revoked_jobs must be a list of job ids")
    revoked = entry.get("revoked", False)
    if not isinstance(revoked, bool):
        raise ValueError(f"{where}: revoked must be true or false")
    return Profile(arn, _public_key(pem, where), revoked, frozenset(jobs))


def attested(data: bytes, profiles: SigningProfiles) -> Signature | None:
    """The signature `data` carries if it holds (intact, and verified with the registered key of the profile it
    names), whatever any configuration trusts; None otherwise, never an error. What a layer version shows of its
    signer (SigningProfileVersionArn, SigningJobArn). CPU-bound: call it in a thread."""
    try:
        sig = read(data)
    except DamagedSignature:
        return None
    profile = None if sig is None else profiles.get(sig.profile)
    if sig is None or profile is None or sig.sha256 != sig.actual_sha256:
        return None
    try:
        profile.key.verify(sig.sig, sig.message())
    except InvalidSignature:
        return None
    return sig


# -- checks ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the checks of AWS's "Signature validation" found of one package against one configuration.

    `failure` is None when the package passed; else why it is untrusted (mismatch, expiry or revocation: the
    policy decides). Integrity failures are not verdicts: `check` raises DamagedSignature.
    """

    signature: Signature | None
    failure: str | None


def check(data: bytes, allowed: frozenset[str], profiles: SigningProfiles, now: float) -> Verdict:
    """Lambda's four checks (configuration-codesigning.html, "Signature validation": integrity, expiry, mismatch,
    revocation). Integrity comes first and needs no trust: a package whose signed bytes do not hash to the digest its
    signature claims, or a damaged signature (`read`), fails it (DamagedSignature, whatever the policy), and so does a
    signature that does not verify with the key of the profile it names, when the gateway has that key (whether or
    not the configuration allows that profile). Then mismatch: an unsigned package, or one signed by a profile the
    configuration does not allow or the gateway has no key of, is untrusted (the policy decides). Then expiry and
    revocation (the policy decides). CPU-bound: call it in a thread."""
    sig = read(data)
    if sig is None:
        return Verdict(None, "the package is not signed")
    if sig.sha256 != sig.actual_sha256:
        raise DamagedSignature("the package was modified after it was signed")
    profile = profiles.get(sig.profile)
    if profile is not None:
        try:
            profile.key.verify(sig.sig, sig.message())
        except InvalidSignature:
            raise DamagedSignature("the signature does not verify with the signing profile's key") from None
    if sig.profile not in allowed or profile is None:
        why = "not allowed by the code signing configuration" if sig.profile not in allowed else "not registered"
        return Verdict(sig, f"the signing profile {sig.profile} is {why}")
    if sig.expires <= now:
        return Verdict(sig, "the signature has expired")
    if profile.revoked or sig.job in profile.revoked_jobs:
        return Verdict(sig, "the signature has been revoked")
    return Verdict(sig, None)
