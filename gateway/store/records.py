"""The immutable records the registry keeps: function version configurations, aliases, layer references, and
the `Change` it tells its observers of after each write.

Pure data with their Lambda wire shapes; no I/O. Every change produces a new object (with a new revision
id where Lambda has one), so whoever holds a snapshot holds a consistent one.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson

LATEST = "$LATEST"

#: FunctionConfiguration.State and LastUpdateStatus values (botocore's model: State, LastUpdateStatus)
PENDING, ACTIVE = "Pending", "Active"
IN_PROGRESS, SUCCESSFUL = "InProgress", "Successful"
#: what AWS says of a function being created and of an update being applied: StateReason and
#: LastUpdateStatusReason alike (recorded CreateFunction and UpdateFunctionCode/Configuration answers)
BEING_CREATED = "The function is being created."
CREATING = "Creating"


@dataclass(frozen=True, slots=True)
class LayerRef:
    """A layer version a function uses: its ARN, zip size and the digest its extracted code is stored under; and
    who signed its package, when it carried a signature that held on publishing (gateway.store.signatures)."""

    arn: str
    code_size: int
    code_sha256: str  # hex
    signing_profile_version_arn: str | None = None
    signing_job_arn: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """A Layer of FunctionConfiguration.Layers (the signing members only for a signed package)."""
        wire: dict[str, Any] = {"Arn": self.arn, "CodeSize": self.code_size}
        if self.signing_profile_version_arn is not None:
            wire["SigningProfileVersionArn"] = self.signing_profile_version_arn
            wire["SigningJobArn"] = self.signing_job_arn
        return wire


def new_revision_id() -> str:
    return str(uuid.uuid4())


def now_last_modified() -> str:
    """The current time as Lambda writes LastModified: `2026-11-23T14:38:00.000+0000`."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}+0000"


@dataclass(frozen=True, slots=True)
class FunctionConfig:
    """An immutable snapshot of one function version's configuration.

    Every update produces a new object with a new `revision_id`; the pools key environments by
    (name, version, revision_id), so an invocation never runs code or settings older than the
    snapshot it resolved.
    """

    name: str
    arn: str  # unqualified function ARN
    runtime: str
    handler: str
    role: str
    code_sha256: str  # hex digest of the zip
    code_size: int  # bytes of the zip
    code_dir: Path  # extracted, read-only code directory (LAMBDA_TASK_ROOT)
    last_modified: str  # ISO-8601 with +0000, e.g. 2026-11-23T14:38:00.000+0000
    revision_id: str  # uuid4 string, new on every change
    version: str = LATEST
    description: str = ""
    timeout: int = 3  # seconds
    memory_size: int = 128  # MB
    environment: dict[str, str] = field(default_factory=dict)
    ephemeral_storage: int = 512  # MB
    architectures: tuple[str, ...] = ("x86_64",)
    extra: dict[str, Any] = field(default_factory=dict)  # other FunctionConfiguration fields kept verbatim
    tags: dict[str, str] = field(default_factory=dict)  # function-level; not part of FunctionConfiguration
    #: invocations one environment may run at once (Lambda's PerExecutionEnvironmentMaxConcurrency);
    #: more than 1 only for `async def` handlers, by opt-in
    max_concurrency: int = 1
    layers: tuple[LayerRef, ...] = ()  # in the function's order
    layer_dirs: tuple[Path, ...] = ()  # their extracted code, same order; derived, not stored
    #: the function was given an `Environment` (perhaps empty): AWS then shows `{"Variables": {}}`, else no
    #: Environment at all
    environment_given: bool = False
    #: of a published version: `$LATEST`'s Description when it was published (its own may be PublishVersion's);
    #: None for `$LATEST` and for versions stored before this was kept
    published_from_description: str | None = None
    #: Lambda's State (Pending while created, then Active) and LastUpdateStatus (InProgress while an update is
    #: applied, then Successful); see gateway.store.states for the transitions and what each state refuses
    state: str = ACTIVE
    last_update: str = SUCCESSFUL

    @property
    def code_sha256_b64(self) -> str:
        """Lambda's CodeSha256: base64 of the raw digest."""
        return base64.b64encode(bytes.fromhex(self.code_sha256)).decode("ascii")

    @property
    def runtime_version_arn(self) -> str:
        """A stable, Lambda-shaped id of the runtime build that runs this function (its runtime id here)."""
        _, partition, _, region, *_ = self.arn.split(":")
        digest = hashlib.sha256(self.runtime.encode()).hexdigest()
        return f"arn:{partition}:lambda:{region}::runtime:{digest}"

    @property
    def qualified_arn(self) -> str:
        return f"{self.arn}:{self.version}"

    def to_wire(self, runtime_note: str = "") -> dict[str, Any]:
        """The FunctionConfiguration JSON object as Lambda returns it.

        `$LATEST` is shown with the unqualified ARN, a published version with its qualified one. `runtime_note`, when
        set, is the catalogue's word on the runtime today (it runs on a stand-in, or cannot run here): StateReason and
        LastUpdateStatusReason say it (it is not stored: it follows the host). As on AWS, `Layers` is left out when
        empty, `Environment` when none was ever given (an empty one given is shown), `VpcConfig` always (no VPC
        here); `SnapStart` echoes ApplyOn, with OptimizationStatus On for a published version when it applies.
        """
        wire: dict[str, Any] = {
            "FunctionName": self.name,
            "FunctionArn": self.arn if self.version == LATEST else self.qualified_arn,
            "Runtime": self.runtime,
            "Role": self.role,
            "Handler": self.handler,
            "CodeSize": self.code_size,
            "Description": self.description,
            "Timeout": self.timeout,
            "MemorySize": self.memory_size,
            "LastModified": self.last_modified,
            "CodeSha256": self.code_sha256_b64,
            "Version": self.version,
            "TracingConfig": {"Mode": "PassThrough"},
            "RevisionId": self.revision_id,
            **self._state_wire(),
            "PackageType": "Zip",
            "Architectures": list(self.architectures),
            "EphemeralStorage": {"Size": self.ephemeral_storage},
            "SnapStart": {"ApplyOn": "None", "OptimizationStatus": "Off"},
            "LoggingConfig": {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{self.name}"},
            "RuntimeVersionConfig": {"RuntimeVersionArn": self.runtime_version_arn},
        }
        if self.environment or self.environment_given:
            wire["Environment"] = {"Variables": dict(self.environment)}
        if self.layers:
            wire["Layers"] = [layer.to_wire() for layer in self.layers]
        if runtime_note and self.state == ACTIVE and self.last_update == SUCCESSFUL:
            # the runtime runs on a stand-in here, or cannot run here now (gateway/catalog.py)
            wire["StateReason"] = wire["LastUpdateStatusReason"] = runtime_note
        wire.update(self.extra)
        if self.version != LATEST and wire["SnapStart"]["ApplyOn"] == "PublishedVersions":
            wire["SnapStart"] = {"ApplyOn": "PublishedVersions", "OptimizationStatus": "On"}
        return wire

    def _state_wire(self) -> dict[str, str]:
        """State and LastUpdateStatus with their reasons, as AWS sends each phase.

        Pending (CreateFunction's answer): State, StateReason, StateReasonCode and no LastUpdateStatus; an update
        in progress: State Active, LastUpdateStatus InProgress with LastUpdateStatusReason and ...ReasonCode;
        afterwards only State Active and LastUpdateStatus Successful.
        """
        if self.state == PENDING:
            return {"State": PENDING, "StateReason": BEING_CREATED, "StateReasonCode": CREATING}
        if self.last_update == IN_PROGRESS:
            return {
                "State": self.state,
                "LastUpdateStatus": IN_PROGRESS,
                "LastUpdateStatusReason": BEING_CREATED,
                "LastUpdateStatusReasonCode": CREATING,
            }
        return {"State": self.state, "LastUpdateStatus": self.last_update}

    def to_record(self) -> bytes:
        """JSON for the `config` column. Code directories are not stored: they follow from the digests."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _DERIVED}
        data["layers"] = [dataclasses.asdict(layer) for layer in self.layers]
        return orjson.dumps(data)

    @classmethod
    def from_record(cls, raw: str | bytes, path_for: Callable[[str], Path]) -> FunctionConfig:
        """Rebuild from `to_record()`; `path_for(sha256_hex)` gives the extracted directory of a digest."""
        data = orjson.loads(raw)
        data["architectures"] = tuple(data.get("architectures", ("x86_64",)))
        data["layers"] = tuple(LayerRef(**layer) for layer in data.get("layers", ()))
        known = {f.name for f in dataclasses.fields(cls)} - _DERIVED
        return cls(
            code_dir=path_for(data["code_sha256"]),
            layer_dirs=tuple(path_for(layer.code_sha256) for layer in data["layers"]),
            **{k: v for k, v in data.items() if k in known},
        )


_DERIVED = frozenset({"code_dir", "layer_dirs"})


@dataclass(frozen=True, slots=True)
class AliasConfig:
    """An alias: a name for one published version (or $LATEST), optionally routing a share to a second."""

    function: str
    name: str
    arn: str  # the alias ARN, arn:...:function:f:alias
    function_version: str
    revision_id: str
    description: str = ""
    #: {version: weight}: at most one other published version, weight in [0, 1]
    additional_weights: dict[str, float] = field(default_factory=dict)

    @property
    def versions(self) -> tuple[str, ...]:
        """Every version the alias can run."""
        return (self.function_version, *self.additional_weights)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "AliasArn": self.arn,
            "Name": self.name,
            "FunctionVersion": self.function_version,
            "Description": self.description,
            "RevisionId": self.revision_id,
        }
        if self.additional_weights:
            wire["RoutingConfig"] = {"AdditionalVersionWeights": dict(self.additional_weights)}
        return wire

    def to_record(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_record(cls, raw: str | bytes) -> AliasConfig:
        return cls(**orjson.loads(raw))


@dataclass(frozen=True, slots=True)
class ProvisionedConfig:
    """Provisioned concurrency requested for one published version or alias (`qualifier`) of a function."""

    function: str
    qualifier: str
    requested: int
    last_modified: str

    def to_record(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_record(cls, raw: str | bytes) -> ProvisionedConfig:
        return cls(**orjson.loads(raw))


class Changed(enum.Enum):
    """What one write to the registry did (`Change.what`); `Change.qualifier` names the version or alias."""

    FUNCTION_CREATED = "function created"  # qualifier: $LATEST
    LATEST_UPDATED = "$LATEST updated"  # its configuration or code (not its tags)
    VERSION_PUBLISHED = "version published"  # qualifier: the new version
    VERSION_DELETED = "version deleted"
    FUNCTION_DELETED = "function deleted"  # qualifier: None, every version, alias and config went with it
    ALIAS_PUT = "alias created or updated"
    ALIAS_DELETED = "alias deleted"
    PROVISIONED_PUT = "provisioned concurrency config put"  # qualifier: the config's version or alias
    PROVISIONED_DELETED = "provisioned concurrency config deleted"


class Change(NamedTuple):
    """One write to the registry, as `Registry.on_change` tells it, once it is persisted and cached."""

    what: Changed
    function: str
    #: the version or alias written; None when the whole function went
    qualifier: str | None
