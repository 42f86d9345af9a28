"""What a code signing configuration does to a deployment: the checks of AWS's "Signature validation"
(docs.aws.amazon.com/lambda/latest/dg/configuration-codesigning.html) and `UntrustedArtifactOnDeployment`.

- Integrity (the package changed since it was signed, or its signature is damaged or forged): always refused,
  `InvalidCodeSignatureException` (400), whatever the policy ("If the integrity check fails, then Lambda blocks
  deployment, even if the code signing policy is set to WARN": botocore's model).
- Expiry, mismatch (unsigned, or signed by a profile the configuration does not allow or this gateway has no key of),
  revocation: `Warn` deploys and logs a warning (AWS: a `SignatureValidationErrors` metric and a CloudTrail entry);
  `Enforce` refuses with `CodeVerificationFailedException` (400) and AWS's wording: "Lambda cannot deploy the
  function. The function or layer might be signed using a signature that the client is not configured to accept.
  Check the provided signature for ARN." (AWS's "Lambda code signing with AWS Signer", governance-code-signing.html).
- Layers: "When you enable code signing for a function, any layers that you add to the function must also be signed
  by an allowed signing profile": each layer's stored package is checked the same way when a function with a
  configuration is created or its layers change.

A package that passes makes the function's configuration show `SigningProfileVersionArn` and `SigningJobArn`; one
deployed under Warn without passing shows neither. Functions without a configuration are not checked (and new code of
theirs shows neither: the members describe the package deployed, not one before).

Concurrency model: the checks are CPU-bound (SHA-256 of the package) and run in the worker thread that decodes and
stores the package (`DeploymentCheck.__call__`), or in one of their own for layers. A deployment takes its
function's configuration when it starts and may take seconds (an S3 fetch); it commits only if that configuration is
still the function's, with the same rules (`still_current`, under the registry's lock): otherwise
ResourceConflictException, and nothing is deployed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.api.functions.code_signing import check_config_arn, config_not_found
from gateway.api.params import shape_error
from gateway.app_keys import CODE_SIGNING, CODESTORE, SETTINGS, SIGNING_PROFILES
from gateway.errors import (
    CodeVerificationFailedException,
    InvalidCodeSignatureException,
    ResourceConflictException,
    ServiceException,
)
from gateway.store import signatures
from gateway.store.code import CodeStore
from gateway.store.code_signing import CodeSigningConfig, CodeSigningConfigs
from gateway.store.records import FunctionConfig, LayerRef
from gateway.store.signatures import DamagedSignature, Signature, SigningProfiles

log = logging.getLogger("gateway.api.functions.code_signing")

UNTRUSTED = (
    "Lambda cannot deploy the function. The function or layer might be signed using a signature that the client is "
    "not configured to accept. Check the provided signature for {arn}."
)
DAMAGED = (
    "Lambda cannot deploy the function. The code signature failed the integrity check ({why}). Check the provided "
    "signature for {arn}."
)
#: FunctionConfiguration members a trusted signature sets (and an untrusted deployment removes)
SIGNING_MEMBERS = ("SigningProfileVersionArn", "SigningJobArn")


def verify(data: bytes, config: CodeSigningConfig, profiles: SigningProfiles, arn: str) -> Signature | None:
    """Check a package against `config`: the signature it passed with, None if it deployed untrusted under Warn.

    Raises InvalidCodeSignatureException (integrity) or, under Enforce, CodeVerificationFailedException. `arn` is the
    function's or layer version's, for messages. CPU-bound: call it in a thread.
    """
    try:
        verdict = signatures.check(data, frozenset(config.allowed), profiles, time.time())
    except DamagedSignature as exc:
        log.warning("code signing: refused a package for %s: integrity check failed: %s", arn, exc)
        raise InvalidCodeSignatureException(DAMAGED.format(why=exc, arn=arn)) from None
    if verdict.failure is None:
        return verdict.signature
    if config.enforce:
        log.warning("code signing: refused a package for %s (Enforce): %s", arn, verdict.failure)
        raise CodeVerificationFailedException(UNTRUSTED.format(arn=arn))
    log.warning("code signing: deployed an untrusted package for %s (UntrustedArtifactOnDeployment Warn): %s",
                arn, verdict.failure)  # fmt: skip
    return None


@dataclass
class DeploymentCheck:
    """Code signing's part in one deployment of a function's package: called with the package's bytes (in the worker
    thread that stores it, before it is stored), it verifies them; `signing_members()` is then what the function's
    configuration shows of it."""

    config: CodeSigningConfig
    profiles: SigningProfiles
    function_arn: str
    passed: Signature | None = None

    def __call__(self, data: bytes) -> None:
        self.passed = verify(data, self.config, self.profiles, self.function_arn)

    def signing_members(self) -> dict[str, Any]:
        """SigningProfileVersionArn and SigningJobArn of a package that passed; None for each otherwise (an update
        with an untrusted package under Warn removes those of the package before)."""
        if self.passed is None:
            return dict.fromkeys(SIGNING_MEMBERS)
        return {"SigningProfileVersionArn": self.passed.profile, "SigningJobArn": self.passed.job_arn()}


def requested_config(body: Mapping[str, Any], store: CodeSigningConfigs) -> CodeSigningConfig | None:
    """CreateFunction's `CodeSigningConfigArn`: the configuration it names (None when absent). ValidationException for
    a malformed ARN ("" included), CodeSigningConfigNotFoundException for one that does not exist."""
    arn = body.get("CodeSigningConfigArn")
    if arn is None:
        return None
    if not isinstance(arn, str):
        raise shape_error("CodeSigningConfigArn", arn, str)
    check_config_arn(arn)
    config = store.get(arn)
    if config is None:
        raise config_not_found(arn)
    return config


def deployment_check(
    config: CodeSigningConfig | None, profiles: SigningProfiles, function_arn: str
) -> DeploymentCheck | None:
    return None if config is None else DeploymentCheck(config, profiles, function_arn)


def _stored_package(codestore: CodeStore, layer: LayerRef) -> bytes:
    """The layer version's package as published: its stored zip, whose SHA-256 must be the one recorded (a zip
    missing or changed on disk is not the package that was published; it is never checked in its place)."""
    try:
        data = codestore.zip_path(layer.code_sha256).read_bytes()
    except FileNotFoundError:
        data = None
    if data is None or hashlib.sha256(data).hexdigest() != layer.code_sha256:
        log.error("code signing: the stored package of layer version %s is %s", layer.arn,
                  "missing" if data is None else "not the one published")  # fmt: skip
        raise ServiceException(
            f"The package of layer version {layer.arn} is missing from, or damaged in, the code store."
        )
    return data


async def check_layers(
    layers: tuple[LayerRef, ...], config: CodeSigningConfig | None, profiles: SigningProfiles, codestore: CodeStore
) -> None:
    """Each layer of a function with a configuration must pass as the function's code does (its stored package is
    read and checked in a worker thread). Raises as `verify`; nothing to do without a configuration."""
    if config is None or not layers:
        return

    def work() -> None:
        for layer in layers:
            verify(_stored_package(codestore, layer), config, profiles, layer.arn)

    await asyncio.to_thread(work)


def signed(config: FunctionConfig, check: DeploymentCheck | None) -> FunctionConfig:
    """`config`, whose package was just deployed, showing what `check` found of that package: a function without a
    configuration (`check` None) shows no signature, whatever its package before was signed with."""
    members = dict.fromkeys(SIGNING_MEMBERS) if check is None else check.signing_members()
    extra = {k: v for k, v in {**config.extra, **members}.items() if v is not None}
    return dataclasses.replace(config, extra=extra)


def still_current(store: CodeSigningConfigs, name: str, used: CodeSigningConfig | None) -> None:
    """The last step of a deployment checked against `used` (None: unchecked), run under the registry's lock right
    before it commits: ResourceConflictException if function `name` has since been given a configuration, or its
    configuration's rules (allowed profiles, policy) changed, so that the check no longer says what they would. A
    configuration removed meanwhile is no conflict (the check was the stricter). A Put or Update that returned before
    this step is seen by it; one that returns after it comes after the deployment, whose code keeps running (as
    when a configuration is attached to a function whose code is deployed: AWS checks deployments only)."""
    current = store.of_function(name)
    if current is not None and (used is None or current.rules() != used.rules()):
        raise ResourceConflictException(
            f"The code signing configuration of function {name} changed while its code was being deployed "
            "(the deployment was checked against the one before). Retry the request."
        )


def guard(app: web.Application, name: str, check: DeploymentCheck | None) -> Callable[[], None]:
    """`still_current` for the deployment `check` verified (a registry `guard`, or called in an `update`'s change)."""
    used = None if check is None else check.config
    return lambda: still_current(app[CODE_SIGNING], name, used)


def attach_outcome(outcome: str, name: str, config: CodeSigningConfig) -> None:
    """CreateFunction: what `CodeSigningConfigs.attach_new` answered, as the error it is (nothing for "attached")."""
    if outcome == "missing":
        raise config_not_found(config.arn)
    if outcome == "changed":
        raise ResourceConflictException(
            f"The code signing configuration {config.arn} changed while the code of function {name} was being "
            "checked against it. Retry the request."
        )
    if outcome == "taken":
        raise ResourceConflictException(f"Function already exist: {name}")


def function_check(app: web.Application, name: str) -> DeploymentCheck | None:
    """The check a new package of function `name` must pass: None when it has no code signing configuration."""
    config = app[CODE_SIGNING].of_function(name)
    return deployment_check(config, app[SIGNING_PROFILES], app[SETTINGS].function_arn(name))


async def check_added_layers(
    app: web.Application, name: str, current: FunctionConfig, new: FunctionConfig
) -> Callable[[], None]:
    """UpdateFunctionConfiguration: the layers it adds to a function with a configuration must pass (those it had
    already stay, as its code does). Returns the `still_current` guard to run when the change commits."""
    before = {layer.code_sha256 for layer in current.layers}
    added = tuple(layer for layer in new.layers if layer.code_sha256 not in before)
    config = app[CODE_SIGNING].of_function(name)
    await check_layers(added, config, app[SIGNING_PROFILES], app[CODESTORE])
    return lambda: still_current(app[CODE_SIGNING], name, config)
