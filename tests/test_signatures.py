"""gateway.store.signatures: the signed-package format, the four checks of AWS's "Signature validation"
(docs.aws.amazon.com/lambda/latest/dg/configuration-codesigning.html: integrity, expiry, mismatch, revocation), and
the signing profiles file. Pure: no gateway."""

from __future__ import annotations

import base64
import io
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.store import signatures
from gateway.store.signatures import DamagedSignature, SigningProfiles
from tests.conftest import make_zip

PROFILE = "arn:aws:signer:us-east-1:123456789012:/signing-profiles/Team_A/abcdef1234"
OTHER = "arn:aws:signer:us-east-1:123456789012:/signing-profiles/Team_B/0123456789"
NOW = int(time.time())


def _profiles(tmp_path: Path, **extra: object) -> tuple[signatures.Ed25519PrivateKey, SigningProfiles]:
    private, public = signatures.generate_key()
    path = tmp_path / "profiles.json"
    path.write_bytes(orjson.dumps({PROFILE: {"public_key": public.decode(), **extra}}))
    return signatures.load_private_key(private), SigningProfiles.load(path)


def _package() -> bytes:
    return make_zip({"lambda_function.py": "def lambda_handler(e, c):\n    return 1\n", "lib/data.txt": "x" * 100})


def test_a_signed_package_is_the_same_zip_with_a_comment_and_passes(tmp_path: Path) -> None:
    key, profiles = _profiles(tmp_path)
    data = _package()
    signed = signatures.sign(data, key, PROFILE, NOW)
    with zipfile.ZipFile(io.BytesIO(signed)) as zf, zipfile.ZipFile(io.BytesIO(data)) as original:
        assert [(i.filename, zf.read(i)) for i in zf.infolist()] == [
            (i.filename, original.read(i)) for i in original.infolist()
        ]
        assert zf.comment.startswith(signatures.MAGIC)
    verdict = signatures.check(signed, frozenset({PROFILE}), profiles, NOW + 1)
    assert verdict.failure is None
    assert verdict.signature is not None and verdict.signature.profile == PROFILE
    assert verdict.signature.job_arn().startswith("arn:aws:signer:us-east-1:123456789012:/signing-jobs/")
    # re-signing replaces the signature, never stacks a second one
    again = signatures.sign(signed, key, PROFILE, NOW)
    assert again.count(signatures.MAGIC) == 1
    assert signatures.check(again, frozenset({PROFILE}), profiles, NOW).failure is None


def test_every_byte_of_the_code_is_covered(tmp_path: Path) -> None:
    """Integrity: a change anywhere but in the signature itself fails, whatever the policy."""
    key, profiles = _profiles(tmp_path)
    signed = signatures.sign(_package(), key, PROFILE, NOW)
    end = signed.rfind(b"PK\x05\x06") + 20  # the signed bytes end before the comment's length
    for offset in [*range(0, end, 7), end - 1]:
        tampered = bytearray(signed)
        tampered[offset] ^= 0x01
        if end - 20 <= offset < end - 16:  # the record's own magic: no zip any more, and no signature either
            assert signatures.read(bytes(tampered)) is None
            with pytest.raises(zipfile.BadZipFile):
                zipfile.ZipFile(io.BytesIO(bytes(tampered)))
            continue
        with pytest.raises(DamagedSignature):
            signatures.check(bytes(tampered), frozenset({PROFILE}), profiles, NOW)


def test_the_comment_length_and_a_second_signature_are_damage(tmp_path: Path) -> None:
    key, _ = _profiles(tmp_path)
    signed = signatures.sign(_package(), key, PROFILE, NOW)
    eocd = signed.rfind(b"PK\x05\x06")
    (length,) = struct.unpack("<H", signed[eocd + 20 : eocd + 22])
    shorter = signed[: eocd + 20] + struct.pack("<H", length - 1) + signed[eocd + 22 :]
    with pytest.raises(DamagedSignature, match="does not end"):
        signatures.read(shorter)
    comment = signed[eocd + 22 :]
    twice = signed[: eocd + 20] + struct.pack("<H", 2 * len(comment) + 1) + comment + b" " + comment
    with pytest.raises(DamagedSignature, match="does not parse"):
        signatures.read(twice)
    garbage = signed[: eocd + 20] + struct.pack("<H", 12) + signatures.MAGIC + b"!!!!!"
    with pytest.raises(DamagedSignature):
        signatures.read(garbage)


def test_replaying_a_signature_onto_other_code_fails_integrity(tmp_path: Path) -> None:
    key, profiles = _profiles(tmp_path)
    signed = signatures.sign(_package(), key, PROFILE, NOW)
    comment = signed[signed.rfind(b"PK\x05\x06") + 22 :]
    other = make_zip({"lambda_function.py": "import os\ndef lambda_handler(e, c):\n    return os.environ\n"})
    eocd = other.rfind(b"PK\x05\x06")
    replayed = other[: eocd + 20] + struct.pack("<H", len(comment)) + comment
    with pytest.raises(DamagedSignature, match="modified"):
        signatures.check(replayed, frozenset({PROFILE}), profiles, NOW)


def test_a_forged_signature_fails_integrity(tmp_path: Path) -> None:
    """Signed with a key that is not the registered one, for the registered profile's ARN."""
    _, profiles = _profiles(tmp_path)
    forger = signatures.load_private_key(signatures.generate_key()[0])
    forged = signatures.sign(_package(), forger, PROFILE, NOW)
    with pytest.raises(DamagedSignature, match="does not verify"):
        signatures.check(forged, frozenset({PROFILE}), profiles, NOW)


def test_a_later_expiry_cannot_be_written_into_a_signature(tmp_path: Path) -> None:
    key, profiles = _profiles(tmp_path)
    signed = signatures.sign(_package(), key, PROFILE, NOW, valid_days=1)
    eocd = signed.rfind(b"PK\x05\x06")
    doc = orjson.loads(base64.b64decode(signed[eocd + 22 + len(signatures.MAGIC) :]))
    doc["expires"] += 10 * 86400
    comment = signatures.MAGIC + base64.b64encode(orjson.dumps(doc))
    extended = signed[: eocd + 20] + struct.pack("<H", len(comment)) + comment
    with pytest.raises(DamagedSignature, match="does not verify"):
        signatures.check(extended, frozenset({PROFILE}), profiles, NOW)


def test_unsigned_unknown_and_disallowed_profiles_are_mismatches(tmp_path: Path) -> None:
    """Mismatch: untrusted, not damaged (the policy decides)."""
    key, profiles = _profiles(tmp_path)
    assert signatures.check(_package(), frozenset({PROFILE}), profiles, NOW).failure == "the package is not signed"
    signed = signatures.sign(_package(), key, PROFILE, NOW)
    assert "not allowed" in str(signatures.check(signed, frozenset({OTHER}), profiles, NOW).failure)
    unregistered = signatures.sign(_package(), key, OTHER, NOW)
    assert "not registered" in str(signatures.check(unregistered, frozenset({OTHER}), profiles, NOW).failure)


def test_integrity_is_checked_before_trust(tmp_path: Path) -> None:
    """A package modified after signing fails integrity whatever profile it claims (allowed or not, registered or
    not: the digest needs no key), and so does a signature a registered profile's key does not verify, even when the
    configuration does not allow that profile: the policy (Warn) never decides for a tampered package."""
    key, profiles = _profiles(tmp_path)
    for claimed in (PROFILE, OTHER):  # registered but not allowed below; not registered at all
        tampered = bytearray(signatures.sign(_package(), key, claimed, NOW))
        tampered[40] ^= 1
        for allowed in (frozenset({PROFILE}), frozenset({OTHER}), frozenset()):
            with pytest.raises(DamagedSignature, match="modified after it was signed"):
                signatures.check(bytes(tampered), allowed, profiles, NOW)
    forged = signatures.sign(_package(), signatures.load_private_key(signatures.generate_key()[0]), PROFILE, NOW)
    with pytest.raises(DamagedSignature, match="does not verify"):
        signatures.check(forged, frozenset({OTHER}), profiles, NOW)


def test_expiry_and_revocation(tmp_path: Path) -> None:
    key, profiles = _profiles(tmp_path)
    signed = signatures.sign(_package(), key, PROFILE, NOW, valid_days=1)
    assert signatures.check(signed, frozenset({PROFILE}), profiles, NOW + 86400).failure == "the signature has expired"
    private, public = signatures.generate_key()
    key2 = signatures.load_private_key(private)
    path = tmp_path / "jobs.json"
    sig2 = signatures.sign(_package(), key2, PROFILE, NOW)
    job = signatures.read(sig2)
    assert job is not None
    path.write_bytes(orjson.dumps({PROFILE: {"public_key": public.decode(), "revoked_jobs": [job.job]}}))
    jobs = SigningProfiles.load(path)
    assert signatures.check(sig2, frozenset({PROFILE}), jobs, NOW).failure == "the signature has been revoked"
    path.write_bytes(orjson.dumps({PROFILE: {"public_key": public.decode(), "revoked": True}}))
    assert signatures.check(sig2, frozenset({PROFILE}), SigningProfiles.load(path), NOW).failure == (
        "the signature has been revoked"
    )


def test_sign_refuses_what_nobody_should_vouch_for(tmp_path: Path) -> None:
    key, _ = _profiles(tmp_path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr("lambda_function.py", "a = 1\n")
        zf.writestr("lambda_function.py", "a = 2\n")
    with pytest.raises(ValueError, match="two entries of the same name"):
        signatures.sign(buf.getvalue(), key, PROFILE, NOW)
    with pytest.raises(ValueError, match=r"not a \.zip"):
        signatures.sign(b"hello", key, PROFILE, NOW)
    with pytest.raises(ValueError, match="signing-profile-version ARN"):
        signatures.sign(_package(), key, "arn:aws:signer:us-east-1:123456789012:/signing-profiles/x", NOW)


def test_profiles_file_errors_name_the_culprit(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    assert SigningProfiles.load(None).profiles == {}
    with pytest.raises(ValueError, match="cannot read"):
        SigningProfiles.load(path)
    path.write_text("[]")
    with pytest.raises(ValueError, match="JSON object"):
        SigningProfiles.load(path)
    path.write_text(orjson.dumps({"arn:aws:iam::123456789012:role/x": "pem"}).decode())
    with pytest.raises(ValueError, match="not a signing-profile-version ARN"):
        SigningProfiles.load(path)
    path.write_text(orjson.dumps({PROFILE: "not a key"}).decode())
    with pytest.raises(ValueError, match="not a PEM public key"):
        SigningProfiles.load(path)
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    path.write_text(orjson.dumps({PROFILE: ec_pem.decode()}).decode())
    with pytest.raises(ValueError, match="not an Ed25519 public key"):
        SigningProfiles.load(path)
    path.write_text(orjson.dumps({PROFILE: {"public_key_file": "missing.pub"}}).decode())
    with pytest.raises(ValueError, match=r"missing\.pub"):
        SigningProfiles.load(path)
    path.write_text(orjson.dumps({PROFILE: {"public_key": "x", "trusted": True}}).decode())
    with pytest.raises(ValueError, match="unknown members"):
        SigningProfiles.load(path)
    _, public = signatures.generate_key()
    (tmp_path / "team.pub").write_bytes(public)
    path.write_text(orjson.dumps({PROFILE: {"public_key_file": "team.pub"}}).decode())
    assert PROFILE in SigningProfiles.load(path)
    path.write_text(orjson.dumps({PROFILE: {"public_key_file": "team.pub", "revoked": "false"}}).decode())
    with pytest.raises(ValueError, match="revoked must be true or false"):
        SigningProfiles.load(path)


def _recomment(signed: bytes, comment: bytes) -> bytes:
    eocd = signed.rfind(b"PK\x05\x06")
    return signed[: eocd + 20] + struct.pack("<H", len(comment)) + comment


def test_a_signature_has_one_encoding(tmp_path: Path) -> None:
    """Members of its own, another order, spaces or another base64 make a damaged signature: one signature cannot
    be re-encoded into packages of other digests (CodeSha256) that pass with it."""
    key, profiles = _profiles(tmp_path)
    signed = signatures.sign(_package(), key, PROFILE, NOW)
    comment = signed[signed.rfind(b"PK\x05\x06") + 22 :]
    doc = orjson.loads(base64.b64decode(comment[len(signatures.MAGIC) :]))
    variants = [
        orjson.dumps({**doc, "extra": "x"}),
        orjson.dumps(dict(reversed(doc.items()))),
        orjson.dumps(doc, option=orjson.OPT_INDENT_2),
    ]
    for raw in variants:
        with pytest.raises(DamagedSignature, match="canonical"):
            signatures.check(_recomment(signed, signatures.MAGIC + base64.b64encode(raw)), frozenset({PROFILE}),
                             profiles, NOW)  # fmt: skip
    unpadded = signatures.MAGIC + base64.b64encode(orjson.dumps(doc)).rstrip(b"=")
    if unpadded != comment:
        with pytest.raises(DamagedSignature):
            signatures.check(_recomment(signed, unpadded), frozenset({PROFILE}), profiles, NOW)
    assert signatures.check(_recomment(signed, comment), frozenset({PROFILE}), profiles, NOW).failure is None


def test_sign_refuses_names_the_code_store_makes_one_and_hidden_records(tmp_path: Path) -> None:
    key, _ = _profiles(tmp_path)
    for other in ("./lambda_function.py", "lib/../lambda_function.py", "lib\\..\\lambda_function.py"):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("lambda_function.py", "benign = 1\n")
            zf.writestr(other, "evil = 1\n")
        with pytest.raises(ValueError, match="two entries of the same name"):
            signatures.sign(buf.getvalue(), key, PROFILE, NOW)
    data = _package()
    fake = b"PK\x05\x06" + b"\0" * 18  # an empty archive's record, hidden in the real record's comment
    with pytest.raises(ValueError, match="comment holds an end-of-central-directory record"):
        signatures.sign(data[:-2] + struct.pack("<H", len(fake)) + fake, key, PROFILE, NOW)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "sign", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


def test_the_sign_command_fails_cleanly(tmp_path: Path) -> None:
    """`gateway sign`: a second --generate-key touches neither file; an encrypted key, a bad validity, a missing file
    are one line on stderr, no traceback; a key others can read is warned about; no temporary file is left."""
    assert _cli("--generate-key", "team", cwd=tmp_path).returncode == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    (tmp_path / "team.key").unlink()
    again = _cli("--generate-key", "team", cwd=tmp_path)  # the .pub is there: nothing written
    assert again.returncode == 1 and "Traceback" not in again.stderr and "never overwritten" in again.stderr
    assert not (tmp_path / "team.key").exists() and (tmp_path / "team.pub").read_bytes() == before["team.pub"]
    assert _cli("--generate-key", "team", cwd=tmp_path).returncode == 1
    (tmp_path / "team.key").write_bytes(before["team.key"])
    (tmp_path / "team.key").chmod(0o600)
    (tmp_path / "fn.zip").write_bytes(_package())
    args = ("fn.zip", "--key", "team.key", "--profile", PROFILE)
    for days in ("-5", "0", str(signatures.MAX_VALID_DAYS + 1)):
        bad_days = _cli(*args, "--valid-days", days, cwd=tmp_path)
        assert bad_days.returncode == 1 and "validity" in bad_days.stderr and "Traceback" not in bad_days.stderr
    encrypted = signatures.load_private_key(before["team.key"]).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    )
    (tmp_path / "enc.key").write_bytes(encrypted)
    (tmp_path / "enc.key").chmod(0o600)
    done = _cli("fn.zip", "--key", "enc.key", "--profile", PROFILE, cwd=tmp_path)
    assert done.returncode == 1 and "encrypted" in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "team.key").chmod(0o644)
    done = _cli(*args, cwd=tmp_path)
    assert done.returncode == 0 and "readable by others" in done.stderr
    assert signatures.read((tmp_path / "fn.zip").read_bytes()) is not None
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
