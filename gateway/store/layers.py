"""Layers: published layer versions, persisted in SQLite (`layers.sqlite3`), code in the code store.

One table, `layer_versions(name, version, record JSON, deleted)`. Rows are never removed: DeleteLayerVersion
only marks a row deleted, so version numbers stay monotonic per layer and are never reused. The code a deleted
version points at stays in the code store while a function version uses it (store/codegc.py removes it after) —
a function keeps its own `LayerRef(arn, code_size, code_sha256)` and never asks this store again.

Writes go to SQLite first (one transaction, `synchronous=FULL` under WAL), then to the in-memory cache;
reads only touch the cache. Concurrency model: `publish` and `delete` block (hashing, unzipping, fsync) and
are meant to run in a worker thread; a lock makes each write atomic. Every cache update swaps in new
objects rather than mutating shared ones, so readers on the event loop thread always see a consistent
snapshot without taking the lock.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gateway.errors import InvalidParameterValueException, ResourceNotFoundException
from gateway.settings import Settings
from gateway.store import sqlite
from gateway.store.code import CodeStore
from gateway.store.records import LayerRef, now_last_modified

log = logging.getLogger("gateway.layers")

SCHEMA_VERSION = 1
#: Lambda's limit on the layers of one function
MAX_LAYERS = 5
#: the botocore model's patterns
LAYER_NAME_PATTERN = r"(arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\d{12}:layer:[a-zA-Z0-9-_]+)|[a-zA-Z0-9-_]+"
LAYER_VERSION_ARN_PATTERN = r"arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\d{12}:layer:[a-zA-Z0-9-_]+:[0-9]+"
#: Lambda's message for a layer version that Get* cannot find
NOT_FOUND = "The resource you requested does not exist."

_LAYER_ARN_RE = re.compile(
    r"arn:(?P<partition>[a-zA-Z0-9-]+):lambda:(?P<region>[a-zA-Z0-9-]+):(?P<account>\d{12})"
    r":layer:(?P<name>[a-zA-Z0-9-_]+)(?::(?P<version>[0-9]+))?"
)


@dataclass(frozen=True, slots=True)
class LayerVersion:
    """One published layer version: what GetLayerVersion returns, and where its code is stored."""

    name: str
    version: int
    layer_arn: str  # without the version
    created_date: str  # ISO-8601 with +0000, e.g. 2018-11-14T23:03:52.894+0000
    code_sha256: str  # hex digest of the zip
    code_size: int  # bytes of the zip
    description: str = ""
    compatible_runtimes: tuple[str, ...] = ()
    compatible_architectures: tuple[str, ...] = ()
    license_info: str | None = None
    #: who signed the package, when it carried a signature that held on publishing (gateway.store.signatures)
    signing_profile_version_arn: str | None = None
    signing_job_arn: str | None = None

    @property
    def arn(self) -> str:
        return f"{self.layer_arn}:{self.version}"

    @property
    def code_sha256_b64(self) -> str:
        """Lambda's CodeSha256: base64 of the raw digest."""
        return base64.b64encode(bytes.fromhex(self.code_sha256)).decode("ascii")

    def ref(self) -> LayerRef:
        return LayerRef(
            self.arn, self.code_size, self.code_sha256, self.signing_profile_version_arn, self.signing_job_arn
        )

    def matches(self, runtime: str | None, architecture: str | None) -> bool:
        """Whether the version passes ListLayers' CompatibleRuntime / CompatibleArchitecture filters."""
        if runtime is not None and runtime not in self.compatible_runtimes:
            return False
        return architecture is None or architecture in self.compatible_architectures

    def to_list_item(self) -> dict[str, Any]:
        """A LayerVersionsListItem. As on AWS, empty lists and a missing LicenseInfo are left out."""
        item: dict[str, Any] = {
            "LayerVersionArn": self.arn,
            "Version": self.version,
            "Description": self.description,
            "CreatedDate": self.created_date,
        }
        if self.compatible_runtimes:
            item["CompatibleRuntimes"] = list(self.compatible_runtimes)
        if self.license_info is not None:
            item["LicenseInfo"] = self.license_info
        if self.compatible_architectures:
            item["CompatibleArchitectures"] = list(self.compatible_architectures)
        return item

    def to_wire(self, location: str) -> dict[str, Any]:
        """The GetLayerVersion / PublishLayerVersion response; `location` is the URL serving the zip."""
        content: dict[str, Any] = {"Location": location, "CodeSha256": self.code_sha256_b64, "CodeSize": self.code_size}
        if self.signing_profile_version_arn is not None:
            content["SigningProfileVersionArn"] = self.signing_profile_version_arn
            content["SigningJobArn"] = self.signing_job_arn
        return {"Content": content, "LayerArn": self.layer_arn, **self.to_list_item()}

    def to_record(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_record(cls, raw: str | bytes) -> LayerVersion:
        data = orjson.loads(raw)
        data["compatible_runtimes"] = tuple(data.get("compatible_runtimes", ()))
        data["compatible_architectures"] = tuple(data.get("compatible_architectures", ()))
        return cls(**data)


@dataclass(frozen=True, slots=True)
class _Layer:
    """A layer's live versions and the highest number it ever used. Replaced, never mutated."""

    last_version: int = 0
    versions: dict[int, LayerVersion] = field(default_factory=dict)


class LayerStore:
    """Layer versions by (name, version), in SQLite with an in-memory cache."""

    def __init__(self, db_path: Path, codestore: CodeStore, settings: Settings) -> None:
        self.codestore = codestore
        self.settings = settings
        self._lock = threading.Lock()
        self._layers: dict[str, _Layer] = {}
        self._names: list[str] = []  # sorted, every layer ever published (ListLayers skips empty ones)
        self._db = sqlite.connect(db_path)
        self._migrate()
        self._load()

    def _migrate(self) -> None:
        current = sqlite.schema_version(self._db, SCHEMA_VERSION, "layer store")
        if current < 1:
            with self._tx() as db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS layer_versions ("
                    " name TEXT NOT NULL, version INTEGER NOT NULL, record TEXT NOT NULL,"
                    " deleted INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (name, version)) WITHOUT ROWID"
                )
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _load(self) -> None:
        rows = self._db.execute("SELECT name, version, record, deleted FROM layer_versions ORDER BY name, version")
        for name, version, raw, deleted in rows:
            layer = self._layers.get(name, _Layer())
            versions = layer.versions
            if not deleted:
                lv = LayerVersion.from_record(raw)
                if not self.codestore.ensure_extracted(lv.code_sha256):
                    log.warning("code %s of layer version %s is missing from the code store", lv.code_sha256, lv.arn)
                versions = {**versions, version: lv}
            self._layers[name] = _Layer(max(layer.last_version, version), versions)
        self._names = sorted(self._layers)
        live = sum(len(layer.versions) for layer in self._layers.values())
        log.info("layer store loaded %d layers, %d live versions", len(self._names), live)

    def _tx(self) -> sqlite.transaction:
        return sqlite.transaction(self._db)

    def close(self) -> None:
        self._db.close()

    # -- names and ARNs ----------------------------------------------------------------------------

    def layer_arn(self, name: str) -> str:
        return f"arn:{self.settings.partition}:lambda:{self.settings.region}:{self.settings.account_id}:layer:{name}"

    def local_name(self, layer_name: str) -> str | None:
        """The layer name a LayerName parameter designates (a name or a layer ARN, already validated
        against the model's pattern); None for an ARN of another partition, region or account."""
        m = _LAYER_ARN_RE.fullmatch(layer_name)
        if m is None:
            return layer_name
        settings = self.settings
        if (m["partition"], m["region"], m["account"]) != (settings.partition, settings.region, settings.account_id):
            return None
        return m["name"]

    # -- reads (cache only) ------------------------------------------------------------------------

    def get(self, name: str, version: int) -> LayerVersion:
        """A live layer version. Raises ResourceNotFoundException."""
        layer = self._layers.get(name)
        lv = layer.versions.get(version) if layer is not None else None
        if lv is None:
            raise ResourceNotFoundException(NOT_FOUND)
        return lv

    def get_by_arn(self, arn: str) -> LayerVersion:
        """A live layer version by its ARN. Raises ResourceNotFoundException (also for foreign ARNs)."""
        m = _LAYER_ARN_RE.fullmatch(arn)
        if m is None or m["version"] is None or self.local_name(arn) is None:
            raise ResourceNotFoundException(NOT_FOUND)
        return self.get(m["name"], int(m["version"]))

    def code_digests(self) -> set[str]:
        """The packages of every live layer version (sha256 hex)."""
        return {lv.code_sha256 for layer in list(self._layers.values()) for lv in list(layer.versions.values())}

    def total_code_size(self) -> int:
        """Bytes of zipped code over every live layer version (GetAccountSettings' usage)."""
        return sum(lv.code_size for layer in list(self._layers.values()) for lv in list(layer.versions.values()))

    def list_versions(
        self, name: str, runtime: str | None = None, architecture: str | None = None
    ) -> list[LayerVersion]:
        """A layer's live versions that pass the filters, newest first (empty for an unknown layer)."""
        layer = self._layers.get(name)
        if layer is None:
            return []
        found = (lv for lv in layer.versions.values() if lv.matches(runtime, architecture))
        return sorted(found, key=lambda lv: lv.version, reverse=True)

    def list_latest(
        self, runtime: str | None = None, architecture: str | None = None, after: str | None = None
    ) -> Iterable[LayerVersion]:
        """Per layer (sorted by name, names after `after`), its newest live version that passes the filters."""
        for name in self._names:
            if after is not None and name <= after:
                continue
            versions = self.list_versions(name, runtime, architecture)
            if versions:
                yield versions[0]

    def resolve(self, arns: tuple[str, ...]) -> tuple[tuple[LayerRef, ...], tuple[Path, ...]]:
        """The LayerRefs and extracted directories of layer version ARNs, in order; no I/O.

        For CreateFunction / UpdateFunctionConfiguration. Raises InvalidParameterValueException in
        Lambda's wording: more than 5 layers, an ARN of another region, a version that does not exist
        (malformed, another account, deleted), or two versions of the same layer.
        """
        if len(arns) > MAX_LAYERS:
            raise InvalidParameterValueException(f"Cannot reference more than {MAX_LAYERS} layers.")
        refs: list[LayerRef] = []
        seen: dict[str, str] = {}  # layer ARN -> the version ARN that used it first
        for arn in arns:
            m = _LAYER_ARN_RE.fullmatch(arn)
            if m is None or m["version"] is None:
                raise InvalidParameterValueException(f"Layer version {arn} does not exist.")
            if m["account"] == self.settings.account_id and m["region"] != self.settings.region:
                raise InvalidParameterValueException(
                    "Layers are not in the same region as the function. "
                    f"Layers are expected to be in region {self.settings.region}."
                )
            try:
                lv = self.get_by_arn(arn)
            except ResourceNotFoundException:
                raise InvalidParameterValueException(f"Layer version {arn} does not exist.") from None
            if lv.layer_arn in seen:
                raise InvalidParameterValueException(
                    "Two different versions of the same layer are not allowed to be referenced in the same "
                    f"function. {seen[lv.layer_arn]} and {arn} are versions of the same layer."
                )
            seen[lv.layer_arn] = arn
            refs.append(lv.ref())
        return tuple(refs), tuple(self.codestore.path_for(ref.code_sha256) for ref in refs)

    def unzipped_size(self, refs: Iterable[LayerRef]) -> int:
        """Bytes of the layers' extracted code, together. Blocking on first sight of a layer (a tree walk)."""
        return sum(self.codestore.unzipped_size(ref.code_sha256) for ref in refs)

    def check_unzipped_size(self, code_unzipped: int, refs: Iterable[LayerRef]) -> None:
        """Enforce Lambda's limit on a function's unzipped code plus its layers; blocking like `unzipped_size`.

        Raises InvalidParameterValueException with Lambda's messages.
        """
        limit = self.codestore.max_unzipped
        layers = self.unzipped_size(refs)
        if layers > limit:
            raise InvalidParameterValueException(f"Layers consume more than the available size of {limit} bytes")
        total = code_unzipped + layers
        if total > limit:
            raise InvalidParameterValueException(
                f"Function code combined with layers exceeds the maximum allowed size of {limit} bytes. "
                f"The actual size is {total} bytes."
            )

    # -- writes (SQLite first, then the cache) -----------------------------------------------------

    def publish(
        self,
        name: str,
        zip_bytes: bytes,
        *,
        description: str = "",
        compatible_runtimes: tuple[str, ...] = (),
        compatible_architectures: tuple[str, ...] = (),
        license_info: str | None = None,
        direct: bool = True,
        signed_by: tuple[str, str] | None = None,
    ) -> LayerVersion:
        """Store the zip and add the layer's next version (one more than any it ever had). Blocking.

        Raises InvalidParameterValueException (nothing stored) for a zip the code store refuses (`direct`: see
        `CodeStore.put`). `signed_by`: the (profile version ARN, job ARN) of the package's signature that held.
        """
        info = self.codestore.put(zip_bytes, direct=direct)
        with self._lock:
            layer = self._layers.get(name, _Layer())
            lv = LayerVersion(
                name=name,
                version=layer.last_version + 1,
                layer_arn=self.layer_arn(name),
                created_date=now_last_modified(),
                code_sha256=info.sha256_hex,
                code_size=info.size,
                description=description,
                compatible_runtimes=compatible_runtimes,
                compatible_architectures=compatible_architectures,
                license_info=license_info,
                signing_profile_version_arn=signed_by[0] if signed_by else None,
                signing_job_arn=signed_by[1] if signed_by else None,
            )
            with self._tx() as db:
                db.execute(
                    "INSERT INTO layer_versions (name, version, record) VALUES (?, ?, ?)",
                    (name, lv.version, lv.to_record().decode()),
                )
            is_new = name not in self._layers
            self._layers[name] = _Layer(lv.version, {**layer.versions, lv.version: lv})
            if is_new:
                self._names = sorted([*self._names, name])
            self.codestore.adopt(info.sha256_hex)
        log.info("published layer version %s (code %s)", lv.arn, info.sha256_hex)
        return lv

    def delete(self, name: str, version: int) -> bool:
        """Mark a live layer version deleted; False (and nothing done) if there is none. Blocking.

        Its number is never used again; its code stays in the code store while a function version uses it.
        """
        with self._lock:
            layer = self._layers.get(name)
            if layer is None or version not in layer.versions:
                return False
            with self._tx() as db:
                db.execute("UPDATE layer_versions SET deleted = 1 WHERE name = ? AND version = ?", (name, version))
            versions = {v: lv for v, lv in layer.versions.items() if v != version}
            self._layers[name] = _Layer(layer.last_version, versions)
        log.info("deleted layer version %s", f"{self.layer_arn(name)}:{version}")
        return True
