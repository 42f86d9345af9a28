"""Request bodies of the function-management calls: shape, constraints and Lambda's error messages. Pure.

Checks run in Lambda's order: the JSON shape first (wrong types and unknown fields →
InvalidRequestContentException), then the model's constraints, all reported together in one
ValidationException (`1 validation error detected: Value '1200' at 'timeout' failed to satisfy
constraint: ...`), then the service's own rules (InvalidParameterValueException).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway import architectures
from gateway.api.functions.code_params import (
    CODE_MEMBERS,
    CodeSource,
    check_s3_members,
    code_source,
    parse_architectures,
)
from gateway.api.functions.file_system_params import file_system_configs
from gateway.api.functions.tags import validate_tags
from gateway.api.params import Violations, bounded, check_members, opt, shape_error, str_map
from gateway.catalog import Catalog, UnsupportedRuntime
from gateway.errors import InvalidParameterValueException
from gateway.events.targets import check_dead_letter as check_dead_letter_arn
from gateway.isolation.network import NETWORK_MODES, NETWORK_VARIABLE
from gateway.settings import Settings
from gateway.store.layers import LAYER_VERSION_ARN_PATTERN, MAX_LAYERS
from gateway.store.names import check_create_name, parse_function_name

log = logging.getLogger("gateway.api.functions.functions")

ROLE_PATTERN = r"arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+"
DLQ_ARN_PATTERN = r"(arn:(aws[a-zA-Z-]*)?:[a-z0-9-.]+:.*)|()"
HANDLER_PATTERN = r"[^\s]+"
ENV_KEY_PATTERN = r"[a-zA-Z]([a-zA-Z0-9_])+"
ENV_LIMIT = 4096
#: keys Lambda sets itself and refuses in a function's configuration
RESERVED_ENV_KEYS = frozenset(
    {
        "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR",
    }
)  # fmt: skip
CAPACITY_PROVIDER_ARN_PATTERN = (
    r"arn:aws[a-zA-Z-]*:lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:\d{12}:capacity-provider:"
    r"[a-zA-Z0-9-_]+"
)
#: the model's bounds of PerExecutionEnvironmentMaxConcurrency
MAX_CONCURRENCY_PER_ENVIRONMENT = 1600

_ROLE_RE = re.compile(ROLE_PATTERN)
_HANDLER_RE = re.compile(HANDLER_PATTERN)
_ENV_KEY_RE = re.compile(ENV_KEY_PATTERN)
_LAYER_ARN_RE = re.compile(LAYER_VERSION_ARN_PATTERN)
_CAPACITY_PROVIDER_ARN_RE = re.compile(CAPACITY_PROVIDER_ARN_PATTERN)
#: every constraint of a LayerList member, all named in the message whichever one failed (as Lambda does)
_LAYER_CONSTRAINTS = (
    "Member must satisfy constraint: [Member must have length less than or equal to 140, Member must have "
    f"length greater than or equal to 1, Member must satisfy regular expression pattern: {LAYER_VERSION_ARN_PATTERN}, "
    "Member must not be null]"
)

# Members of the botocore model. Those in _UNSUPPORTED are refused when set; those in _IGNORED are accepted
# and have no effect; DeadLetterConfig, KMSKeyArn, TracingConfig, LoggingConfig, SnapStart, CapacityProviderConfig are
# kept and echoed (of the last, PerExecutionEnvironmentMaxConcurrency takes effect: see _capacity_provider).
_CONFIG_MEMBERS = frozenset({
    "Role", "Handler", "Description", "Timeout", "MemorySize", "VpcConfig", "Environment", "Runtime",
    "DeadLetterConfig", "KMSKeyArn", "TracingConfig", "Layers", "FileSystemConfigs", "ImageConfig",
    "EphemeralStorage", "SnapStart", "LoggingConfig", "CapacityProviderConfig", "DurableConfig",
})  # fmt: skip
CREATE_MEMBERS = _CONFIG_MEMBERS | {
    "FunctionName", "Code", "Publish", "PackageType", "Tags", "CodeSigningConfigArn", "Architectures",
    "PublishTo", "TenancyConfig",
}  # fmt: skip
UPDATE_CONFIG_MEMBERS = _CONFIG_MEMBERS | {"FunctionName", "RevisionId"}
_UNSUPPORTED = (
    "ImageConfig", "DurableConfig", "TenancyConfig",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ConfigChanges:
    """Validated settings from a request: FunctionConfig field name -> value, plus echoed extras."""

    fields: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    revision_id: str | None = None


@dataclass(frozen=True, slots=True)
class CreateSpec:
    name: str
    code: CodeSource
    config: ConfigChanges
    tags: dict[str, str]
    publish: bool


def _config(body: Mapping[str, Any], v: Violations, name: str) -> ConfigChanges:
    """The configuration members common to CreateFunction and UpdateFunctionConfiguration."""
    out: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if (runtime := opt(body, "Runtime", str)) is not None:
        out["runtime"] = runtime
    if (handler := opt(body, "Handler", str)) is not None:
        if len(handler) > 128:
            v.add(handler, "handler", "Member must have length less than or equal to 128")
        elif not _HANDLER_RE.fullmatch(handler):
            v.add(handler, "handler", f"Member must satisfy regular expression pattern: {HANDLER_PATTERN}")
        out["handler"] = handler
    if (role := opt(body, "Role", str)) is not None:
        if not _ROLE_RE.fullmatch(role):
            v.add(role, "role", f"Member must satisfy regular expression pattern: {ROLE_PATTERN}")
        out["role"] = role
    if (description := opt(body, "Description", str)) is not None:
        if len(description) > 256:
            v.add(description, "description", "Member must have length less than or equal to 256")
        out["description"] = description
    if (timeout := opt(body, "Timeout", int)) is not None:
        bounded(v, timeout, "timeout", 1, 900)
        out["timeout"] = timeout
    if (memory := opt(body, "MemorySize", int)) is not None:
        bounded(v, memory, "memorySize", 128, 10240)
        out["memory_size"] = memory
    if (env := opt(body, "Environment", dict)) is not None:
        check_members(env, frozenset({"Variables"}), "Environment")
        variables = str_map(env, "Variables") or {}
        if not all(_ENV_KEY_RE.fullmatch(k) for k in variables):
            v.add(None, "environment.variables", "Map keys must satisfy constraint: [Member must satisfy "
                  f"regular expression pattern: {ENV_KEY_PATTERN}]", sensitive=True)  # fmt: skip
        out["environment"], out["environment_given"] = variables, True
    if (storage := opt(body, "EphemeralStorage", dict)) is not None:
        check_members(storage, frozenset({"Size"}), "EphemeralStorage")
        size = opt(storage, "Size", int)
        if size is None:
            v.add(None, "ephemeralStorage.size", "Member must not be null")
        bounded(v, size, "ephemeralStorage.size", 512, 10240)
        out["ephemeral_storage"] = size
    if (layers := _layers(body, v)) is not None:
        out["layer_arns"] = layers
    if kms := opt(body, "KMSKeyArn", str):
        extra["KMSKeyArn"] = kms
    if (dlq := _struct(body, "DeadLetterConfig", {"TargetArn": str})) is not None:
        arn = dlq.get("TargetArn", "")
        if len(arn) > 10000 or not re.fullmatch(DLQ_ARN_PATTERN, arn):
            v.add(arn[:256], "deadLetterConfig.targetArn", f"Member must satisfy regular expression pattern: "
                  f"{DLQ_ARN_PATTERN}")  # fmt: skip
        extra["DeadLetterConfig"] = dlq if arn else None  # an empty TargetArn removes it, as on Lambda
    if (tracing := _struct(body, "TracingConfig", {"Mode": str})) is not None:
        mode = tracing.get("Mode", "PassThrough")
        if mode not in ("Active", "PassThrough"):
            v.add(mode, "tracingConfig.mode", "Member must satisfy enum value set: [Active, PassThrough]")
        extra["TracingConfig"] = {"Mode": mode}
    logging_members = {"LogFormat": str, "ApplicationLogLevel": str, "SystemLogLevel": str, "LogGroup": str}
    if (logging_config := _struct(body, "LoggingConfig", logging_members)) is not None:
        extra["LoggingConfig"] = _logging_config(logging_config, v, name)
    if (file_systems := file_system_configs(body, v)) is not None:
        extra["FileSystemConfigs"] = file_systems or None  # an empty list removes it
    if (capacity := _capacity_provider(body, v)) is not None:
        extra["CapacityProviderConfig"], out["max_concurrency"] = capacity
    opt(body, "VpcConfig", dict)  # ignored, but not if malformed
    if (snap := _struct(body, "SnapStart", {"ApplyOn": str})) is not None:  # echoed as AWS does; no effect here
        if (apply_on := snap.get("ApplyOn", "None")) not in ("PublishedVersions", "None"):
            v.add(apply_on, "snapStart.applyOn", "Member must satisfy enum value set: [PublishedVersions, None]")
        extra["SnapStart"] = {"ApplyOn": apply_on, "OptimizationStatus": "Off"}
    return ConfigChanges(out, extra)


_MANAGED = "LambdaManagedInstancesCapacityProviderConfig"
_MANAGED_MEMBERS = {
    "CapacityProviderArn": str,
    "PerExecutionEnvironmentMaxConcurrency": int,
    "ExecutionEnvironmentMemoryGiBPerVCpu": float,
}


def _capacity_provider(body: Mapping[str, Any], v: Violations) -> tuple[dict[str, Any], int] | None:
    """`CapacityProviderConfig`: (the structure to echo, invocations one environment may run at once), or None.

    Only PerExecutionEnvironmentMaxConcurrency has an effect here (absent: 1); more than 1 takes effect for
    `async def` handlers only. There are no capacity providers on this gateway, so CapacityProviderArn (required
    by the model, optional here) and the memory ratio are checked and echoed, nothing more.
    """
    outer = _struct(body, "CapacityProviderConfig", {_MANAGED: dict})
    if outer is None:
        return None
    where = "capacityProviderConfig.lambdaManagedInstancesCapacityProviderConfig"
    inner = _struct(outer, _MANAGED, _MANAGED_MEMBERS)
    if inner is None:
        v.add(None, where, "Member must not be null")
        return {}, 1
    arn = inner.get("CapacityProviderArn")
    if arn is not None:
        if not 1 <= len(arn) <= 140:
            bound = "less than or equal to 140" if arn else "greater than or equal to 1"
            v.add(arn, f"{where}.capacityProviderArn", f"Member must have length {bound}")
        elif not _CAPACITY_PROVIDER_ARN_RE.fullmatch(arn):
            v.add(arn, f"{where}.capacityProviderArn",
                  f"Member must satisfy regular expression pattern: {CAPACITY_PROVIDER_ARN_PATTERN}")  # fmt: skip
    max_concurrency = inner.get("PerExecutionEnvironmentMaxConcurrency")
    bounded(v, max_concurrency, f"{where}.perExecutionEnvironmentMaxConcurrency", 1, MAX_CONCURRENCY_PER_ENVIRONMENT)
    bounded(v, inner.get("ExecutionEnvironmentMemoryGiBPerVCpu"), f"{where}.executionEnvironmentMemoryGiBPerVCpu", 2, 8)
    return {_MANAGED: inner}, max_concurrency or 1


def _layers(body: Mapping[str, Any], v: Violations) -> tuple[str, ...] | None:
    """`Layers`: layer version ARNs in the function's order; the store resolves them (they may not exist)."""
    arns = opt(body, "Layers", list)
    if arns is None:
        return None
    for arn in arns:
        if arn is not None and not isinstance(arn, str):
            raise shape_error("Layers", arn, str)
    if not all(arn is not None and len(arn) <= 140 and _LAYER_ARN_RE.fullmatch(arn) for arn in arns):
        v.add("[" + ", ".join(str(arn) for arn in arns) + "]", "layers", _LAYER_CONSTRAINTS)
    return tuple(arns)


def _struct(body: Mapping[str, Any], key: str, members: Mapping[str, type]) -> dict[str, Any] | None:
    """A nested object with known members of known types (None members dropped), or None if absent."""
    value = opt(body, key, dict)
    if value is None:
        return None
    check_members(value, frozenset(members), key)
    return {k: opt(value, k, t) for k, t in members.items() if value.get(k) is not None}


_APP_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
_SYSTEM_LEVELS = ("DEBUG", "INFO", "WARN")


def _logging_config(cfg: dict[str, Any], v: Violations, name: str) -> dict[str, Any]:
    """LoggingConfig as Lambda stores it: LogFormat Text|JSON; log levels only (and by default) with JSON."""
    fmt = cfg.get("LogFormat", "Text")
    if fmt not in ("Text", "JSON"):
        v.add(fmt, "loggingConfig.logFormat", "Member must satisfy enum value set: [JSON, Text]")
    out: dict[str, Any] = {"LogFormat": fmt}
    if fmt == "JSON":
        out["ApplicationLogLevel"] = cfg.get("ApplicationLogLevel", "INFO")
        out["SystemLogLevel"] = cfg.get("SystemLogLevel", "INFO")
        if out["ApplicationLogLevel"] not in _APP_LEVELS:
            v.add(out["ApplicationLogLevel"], "loggingConfig.applicationLogLevel",
                  f"Member must satisfy enum value set: [{', '.join(_APP_LEVELS)}]")  # fmt: skip
        if out["SystemLogLevel"] not in _SYSTEM_LEVELS:
            v.add(out["SystemLogLevel"], "loggingConfig.systemLogLevel",
                  f"Member must satisfy enum value set: [{', '.join(_SYSTEM_LEVELS)}]")  # fmt: skip
    elif "ApplicationLogLevel" in cfg or "SystemLogLevel" in cfg:
        raise InvalidParameterValueException(
            'LogLevel is not supported when LogFormat is set to "Text". Remove LogLevel from your request or '
            'change the LogFormat to "JSON" and try again.'
        )
    out["LogGroup"] = cfg.get("LogGroup", f"/aws/lambda/{name}")
    return out


def check_dead_letter(changes: ConfigChanges, settings: Settings) -> None:
    """A DeadLetterConfig's target must be an SQS queue or SNS topic this gateway delivers to (events/targets.py)."""
    if dlq := changes.extra.get("DeadLetterConfig"):
        check_dead_letter_arn(settings, dlq["TargetArn"])


def _service_checks(body: Mapping[str, Any], changes: ConfigChanges, runtimes: Catalog) -> None:
    """Lambda's own rules, checked once the model's constraints hold."""
    runtime = changes.fields.get("runtime")
    if runtime is not None:
        try:
            choice = runtimes.resolve(runtime)
        except UnsupportedRuntime as exc:
            raise InvalidParameterValueException(str(exc)) from None
        if choice.note:
            log.warning("function %s: %s", body.get("FunctionName") or "(updated)", choice.note)
    layer_arns: tuple[str, ...] = changes.fields.get("layer_arns", ())
    if len(layer_arns) > MAX_LAYERS:
        raise InvalidParameterValueException(f"Cannot reference more than {MAX_LAYERS} layers.")
    variables: dict[str, str] | None = changes.fields.get("environment")
    if variables:
        reserved = [k for k in variables if k in RESERVED_ENV_KEYS]
        if reserved:
            raise InvalidParameterValueException(
                "Lambda was unable to configure your environment variables because the environment variables "
                "you have provided contains reserved keys that are currently not supported for modification. "
                f"Reserved keys used in this request: {','.join(reserved)}"
            )
        mode = variables.get(NETWORK_VARIABLE)
        if mode is not None and mode not in NETWORK_MODES:  # never a fail-open: "NONE" must not leave it on
            raise InvalidParameterValueException(
                f"Lambda was unable to configure your environment variables because {NETWORK_VARIABLE} must be "
                f"exactly one of {', '.join(NETWORK_MODES)}; got {mode!r}"
            )
        measured = orjson.dumps(variables)
        if len(measured) > ENV_LIMIT:
            raise InvalidParameterValueException(
                "Lambda was unable to configure your environment variables because the environment variables "
                "you have provided exceeded the 4KB limit. String measured: " + measured.decode()
            )
    for key in _UNSUPPORTED:
        if body.get(key):
            raise InvalidParameterValueException(f"{key} is not supported by this gateway.")
    for key in ("VpcConfig", "PublishTo", "SourceKMSKeyArn"):
        if body.get(key):
            log.info("ignoring %s: it has no effect on this gateway", key)


def parse_create(body: Mapping[str, Any], runtimes: Catalog) -> CreateSpec:
    """Validate a CreateFunction body; `runtimes` are the runtime ids this gateway runs."""
    check_members(body, CREATE_MEMBERS, "CreateFunctionRequest")
    v = Violations()
    raw_name = opt(body, "FunctionName", str)
    if raw_name is None:
        v.add(None, "functionName", "Member must not be null")
    if body.get("Role") is None:
        v.add(None, "role", "Member must not be null")
    code = opt(body, "Code", dict)
    if code is None:
        v.add(None, "code", "Member must not be null")
    else:
        check_members(code, CODE_MEMBERS, "FunctionCode")
    name = ""
    if raw_name is not None:
        ref = parse_function_name(raw_name)
        check_create_name(raw_name, ref)
        if ref.qualifier is not None:
            raise InvalidParameterValueException(f"The function name of CreateFunction cannot be qualified: {raw_name}")
        name = ref.name
    changes = _config(body, v, name)
    archs = parse_architectures(body, v)
    package_type = opt(body, "PackageType", str)
    if package_type not in (None, "Zip", "Image"):
        v.add(package_type, "packageType", "Member must satisfy enum value set: [Zip, Image]")
    tags = str_map(body, "Tags") or {}
    validate_tags(tags)
    publish = bool(opt(body, "Publish", bool))
    if code is not None:
        opt(code, "ZipFile", str)
        check_s3_members(code, v, "code.")
    v.raise_if_any()
    assert code is not None

    source = code_source(code, "Code.ZipFile", image=package_type == "Image")
    if "runtime" not in changes.fields or "handler" not in changes.fields:
        raise InvalidParameterValueException(
            "Runtime and Handler are mandatory parameters for functions created with deployment packages."
        )
    _service_checks(body, changes, runtimes)
    archs = archs or architectures.default()
    architectures.check(changes.fields["runtime"], archs)
    changes.fields["architectures"] = archs
    return CreateSpec(name, source, changes, tags, publish)


def parse_config_update(body: Mapping[str, Any], runtimes: Catalog, name: str) -> ConfigChanges:
    """Validate an UpdateFunctionConfiguration body: only the members present change."""
    check_members(body, UPDATE_CONFIG_MEMBERS, "UpdateFunctionConfigurationRequest")
    v = Violations()
    changes = _config(body, v, name)
    revision_id = opt(body, "RevisionId", str)
    v.raise_if_any()
    _service_checks(body, changes, runtimes)
    return ConfigChanges(changes.fields, changes.extra, revision_id)
