"""Where a function's code comes from in a request: `Code` of CreateFunction, the body of UpdateFunctionCode. Pure.

A package is given inline (`ZipFile`, base64) or as an S3 object (`S3Bucket`, `S3Key`, optional
`S3ObjectVersion`); `CodeSource` holds either, validated with the model's constraints and Lambda's wording.
Getting the bytes (decoding, fetching from S3) is `gateway.api.functions.packages`' job, off the event loop.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.api.params import Violations, check_members, opt
from gateway.errors import InvalidParameterValueException, InvalidRequestContentException

log = logging.getLogger("gateway.api.functions.functions")

ARCHITECTURES = ("x86_64", "arm64")
UPDATE_CODE_MEMBERS = frozenset({
    "FunctionName", "ZipFile", "S3Bucket", "S3Key", "S3ObjectVersion", "ImageUri", "Publish", "DryRun",
    "RevisionId", "Architectures", "SourceKMSKeyArn", "PublishTo", "S3ObjectStorageMode",
})  # fmt: skip
CODE_MEMBERS = frozenset({
    "ZipFile", "S3Bucket", "S3Key", "S3ObjectVersion", "S3ObjectStorageMode", "ImageUri", "SourceKMSKeyArn",
})  # fmt: skip
#: botocore's model: shapes S3Bucket (3..63), S3Key and S3ObjectVersion (1..1024, any characters)
S3_BUCKET_PATTERN = r"[0-9A-Za-z\.\-_]*(?<!\.)"
_S3_BUCKET_RE = re.compile(S3_BUCKET_PATTERN)
_S3_LENGTHS = {"S3Bucket": (3, 63), "S3Key": (1, 1024), "S3ObjectVersion": (1, 1024)}
#: the model's S3ObjectStorageMode enum; this gateway always copies the package (REFERENCE is taken as COPY: what
#: runs is the same code, and a later change of the object does not change a published version either way)
STORAGE_MODES = ("COPY", "REFERENCE")
#: Lambda's answer to a ZipFile with any S3 member: asserted by an integration test run against AWS (the AWS SDK for
#: Java's InvalidParameterValueException) and quoted by CloudFormation template linters as the create's failure
BOTH_SOURCES = "Please do not provide other FunctionCode parameters when providing a ZipFile."
NO_SOURCE = "Please provide a source for function code."
#: the same for a layer's `Content` (PublishLayerVersion): the gateway's words, in the style of the function's (no
#: recorded AWS answer found); a function's wording would name FunctionCode, which a layer request does not have
LAYER_BOTH_SOURCES = "Please do not provide other Content parameters when providing a ZipFile."
LAYER_NO_SOURCE = "Please provide a source for layer content."
#: an S3 member without both the bucket and the key: the wording of another Lambda emulator that otherwise answers
#: in AWS's words (not found in a recorded AWS answer)
INCOMPLETE_S3 = "S3 Bucket and Key are required for uploading with S3 parameters."


@dataclass(frozen=True, slots=True)
class CodeSource:
    """A package as a request names it: inline (`zip_b64`) or an S3 object (`s3_bucket` and `s3_key`)."""

    zip_b64: str | None = None
    s3_bucket: str | None = None
    s3_key: str | None = None
    s3_object_version: str | None = None

    @property
    def in_s3(self) -> bool:
        return self.zip_b64 is None


@dataclass(frozen=True, slots=True)
class CodeSpec:
    """A validated UpdateFunctionCode body."""

    code: CodeSource
    revision_id: str | None
    dry_run: bool
    publish: bool
    architectures: tuple[str, ...] | None


def parse_architectures(body: Mapping[str, Any], v: Violations) -> tuple[str, ...] | None:
    """`Architectures`: one of the model's enum, or None when absent."""
    archs = opt(body, "Architectures", list)
    if archs is None:
        return None
    shown = "[" + ", ".join(str(a) for a in archs) + "]"
    if len(archs) != 1:
        bound = "greater than or equal to 1" if not archs else "less than or equal to 1"
        v.add(shown, "architectures", f"Member must have length {bound}")
    elif archs[0] not in ARCHITECTURES:
        v.add(shown, "architectures", "Member must satisfy constraint: "
              "[Member must satisfy enum value set: [x86_64, arm64]]")  # fmt: skip
    return tuple(str(a) for a in archs)


def check_s3_members(source: Mapping[str, Any], v: Violations, prefix: str = "") -> None:
    """The model's constraints on `S3Bucket`, `S3Key`, `S3ObjectVersion` and `S3ObjectStorageMode` of `source`
    (their JSON shape first, as Jackson does), added to `v` under `prefix` + the member's name (`code.s3Bucket`)."""
    for key, (low, high) in _S3_LENGTHS.items():
        value = opt(source, key, str)
        if value is None:
            continue
        member = prefix + key[0].lower() + key[1:]
        if len(value) < low:
            v.add(value, member, f"Member must have length greater than or equal to {low}")
        elif len(value) > high:
            v.add(value, member, f"Member must have length less than or equal to {high}")
        elif key == "S3Bucket" and not _S3_BUCKET_RE.fullmatch(value):
            v.add(value, member, f"Member must satisfy regular expression pattern: {S3_BUCKET_PATTERN}")
    mode = opt(source, "S3ObjectStorageMode", str)
    if mode is not None and mode not in STORAGE_MODES:
        v.add(mode, prefix + "s3ObjectStorageMode", "Member must satisfy enum value set: [COPY, REFERENCE]")


def code_source(source: Mapping[str, Any], member: str, image: bool = False, *, layer: bool = False) -> CodeSource:
    """The package `source` names (a `Code` or `Content` structure, or an UpdateFunctionCode body), after
    `check_s3_members`: inline (`ZipFile`) or an S3 object (`S3Bucket` and `S3Key`, `S3ObjectVersion` optional).

    `member` is how the inline form is named in messages (`Code.ZipFile`, `ZipFile`); `layer`: a layer's `Content`
    (its own wording). Container images are refused; so are two sources at once and an S3 object named without its
    bucket or its key.
    """
    zip_b64 = opt(source, "ZipFile", str)
    if image or source.get("ImageUri"):
        raise InvalidParameterValueException(
            f"This gateway runs .zip file archives only ({member}); container images are not supported."
        )
    bucket, key = opt(source, "S3Bucket", str), opt(source, "S3Key", str)
    version = opt(source, "S3ObjectVersion", str)
    in_s3 = any(v is not None for v in (bucket, key, version, source.get("S3ObjectStorageMode")))
    if zip_b64 is not None and in_s3:
        raise InvalidParameterValueException(LAYER_BOTH_SOURCES if layer else BOTH_SOURCES)
    if zip_b64 is not None:
        return CodeSource(zip_b64=zip_b64)
    if not in_s3:
        raise InvalidParameterValueException(LAYER_NO_SOURCE if layer else NO_SOURCE)
    if not (bucket and key):
        raise InvalidParameterValueException(INCOMPLETE_S3)
    return CodeSource(s3_bucket=bucket, s3_key=key, s3_object_version=version)


def parse_code_update(body: Mapping[str, Any]) -> CodeSpec:
    """Validate an UpdateFunctionCode body."""
    check_members(body, UPDATE_CODE_MEMBERS, "UpdateFunctionCodeRequest")
    v = Violations()
    archs = parse_architectures(body, v)
    opt(body, "ZipFile", str)
    check_s3_members(body, v)
    revision_id = opt(body, "RevisionId", str)
    dry_run = bool(opt(body, "DryRun", bool))
    publish = bool(opt(body, "Publish", bool))
    v.raise_if_any()
    source = code_source(body, "ZipFile")
    if body.get("SourceKMSKeyArn") or body.get("PublishTo"):
        log.info("ignoring SourceKMSKeyArn/PublishTo: they have no effect on this gateway")
    return CodeSpec(source, revision_id, dry_run, publish, archs)


def decode_zip(zip_b64: str) -> bytes:
    """The ZipFile blob's bytes. CPU-heavy for big packages: call it in a worker thread."""
    try:
        return base64.b64decode(zip_b64, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestContentException(
            "Could not parse request body into json: ZipFile is not valid base64"
        ) from None
