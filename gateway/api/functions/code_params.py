"""Where a function's code comes from in a request: `Code` of CreateFunction, the body of UpdateFunctionCode. Pure.

A package is given inline (`ZipFile`, base64) or as an S3 object (`S3Bucket`, `S3Key`, optional
`S3ObjectVersion`); `CodeSource` holds either, validated with the model's constraints and Lambda's wording.
Getting the bytes (decoding, fetching from S3) is `gateway.api.functions.packages`' job, off the event loop.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.api.params import Violations, check_members, opt
from gateway.errors import InvalidParameterValueException, InvalidRequestContentException

log = logging.getLogger("gateway.api.functions.functions")

ARCHITECTURES = ("x86_64", "arm64")
UPDATE_CODE_MEMBERS = frozenset({
    "FunctionName", "ZipFile", "S3Bucket", "S3Key", "S3ObjectVersion", "ImageUri", "Publish", "DryRun",
    "RevisionId", "Architectures", "SourceKMSKeyArn", "PublishTo",
})  # fmt: skip
CODE_MEMBERS = frozenset({"ZipFile", "S3Bucket", "S3Key", "S3ObjectVersion", "ImageUri", "SourceKMSKeyArn"})


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


def code_source(source: Mapping[str, Any], member: str, image: bool = False) -> CodeSource:
    """The package `source` names (a `Code` or `Content` structure, or an UpdateFunctionCode body).

    `member` is how the inline form is named in messages (`Code.ZipFile`, `ZipFile`). Container images are refused.
    """
    zip_b64 = opt(source, "ZipFile", str)
    if image or source.get("ImageUri"):
        raise InvalidParameterValueException(
            f"This gateway runs .zip file archives only ({member}); container images are not supported."
        )
    if any(source.get(k) for k in ("S3Bucket", "S3Key", "S3ObjectVersion")):
        raise InvalidParameterValueException(
            f"This gateway accepts function code only as {member}; S3Bucket/S3Key are not supported."
        )
    if zip_b64 is None:
        raise InvalidParameterValueException("Please provide a source for function code.")
    return CodeSource(zip_b64=zip_b64)


def parse_code_update(body: Mapping[str, Any]) -> CodeSpec:
    """Validate an UpdateFunctionCode body."""
    check_members(body, UPDATE_CODE_MEMBERS, "UpdateFunctionCodeRequest")
    v = Violations()
    archs = parse_architectures(body, v)
    opt(body, "ZipFile", str)
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
