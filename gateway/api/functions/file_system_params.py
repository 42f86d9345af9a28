"""`FileSystemConfigs` of CreateFunction and UpdateFunctionConfiguration: the model's constraints, then the service's
rules (gateway/file_systems.py says which access points exist here, and what a mount gives a function). Pure.

Kept as Lambda echoes it, in FunctionConfiguration's `FileSystemConfigs` ([{"Arn", "LocalMountPath"}]); an empty
list removes it. Lambda also wants the function in a VPC (VpcConfig); this gateway has no VPCs and does not ask for one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.api.params import Violations, check_members, opt, shape_error
from gateway.errors import InvalidParameterValueException
from gateway.file_systems import (
    ACCESS_POINT_ARN_PATTERN,
    LOCAL_MOUNT_PATH_PATTERN,
    MAX_ARN,
    MAX_FILE_SYSTEMS,
    MAX_LOCAL_MOUNT_PATH,
    is_access_point_arn,
    is_local_mount_path,
    mount_path_problem,
)
from gateway.isolation.sandbox import Sandbox
from gateway.settings import Settings

KEY = "FileSystemConfigs"
_MEMBERS = frozenset({"Arn", "LocalMountPath", "S3FilesConfig"})


def file_system_configs(body: Mapping[str, Any], v: Violations) -> list[dict[str, str]] | None:
    """The request's FileSystemConfigs checked against the model (violations go to `v`), or None when absent."""
    configs = opt(body, KEY, list)
    if configs is None:
        return None
    out: list[dict[str, str]] = []
    for i, config in enumerate(configs, start=1):
        if not isinstance(config, dict):
            raise shape_error(KEY, config, dict)
        check_members(config, _MEMBERS, "FileSystemConfig")
        where = f"fileSystemConfigs.{i}.member"
        arn, path = opt(config, "Arn", str), opt(config, "LocalMountPath", str)
        if arn is None:
            v.add(None, f"{where}.arn", "Member must not be null")
        elif len(arn) > MAX_ARN:
            v.add(arn, f"{where}.arn", f"Member must have length less than or equal to {MAX_ARN}")
        elif not is_access_point_arn(arn):
            v.add(arn, f"{where}.arn", f"Member must satisfy regular expression pattern: {ACCESS_POINT_ARN_PATTERN}")
        if path is None:
            v.add(None, f"{where}.localMountPath", "Member must not be null")
        elif len(path) > MAX_LOCAL_MOUNT_PATH:
            v.add(
                path, f"{where}.localMountPath", f"Member must have length less than or equal to {MAX_LOCAL_MOUNT_PATH}"
            )
        elif not is_local_mount_path(path):
            v.add(path, f"{where}.localMountPath",
                  f"Member must satisfy regular expression pattern: {LOCAL_MOUNT_PATH_PATTERN}")  # fmt: skip
        if config.get("S3FilesConfig") is not None:
            raise InvalidParameterValueException("S3FilesConfig is not supported by this gateway.")
        out.append({"Arn": arn or "", "LocalMountPath": path or ""})
    if len(configs) > MAX_FILE_SYSTEMS:
        shown = "[" + ", ".join(f"{c['Arn']} at {c['LocalMountPath']}" for c in out) + "]"
        v.add(shown, "fileSystemConfigs", f"Member must have length less than or equal to {MAX_FILE_SYSTEMS}")
    return out


def check_file_systems(extra: Mapping[str, Any], settings: Settings) -> None:
    """The service's rules for the FileSystemConfigs a request sets (in `extra`, as `_config` keeps it): a mount
    path in /mnt (`mount_path_problem`), an access point this gateway maps (GATEWAY_FILE_SYSTEMS), and a gateway
    that jails its environments (only a jail can mount it: without one, an environment runs as the gateway's user
    and would see the host as that user does)."""
    configs = extra.get(KEY)
    if not configs:
        return
    for config in configs:
        if problem := mount_path_problem(config["LocalMountPath"]):
            raise InvalidParameterValueException(problem)
        if config["Arn"] not in settings.file_systems:
            raise InvalidParameterValueException(
                f"EFS access point {config['Arn']} was not found. This gateway mounts only the access points that "
                "GATEWAY_FILE_SYSTEMS maps to a directory."
            )
    if not Sandbox.may_jail(settings.sandbox):
        raise InvalidParameterValueException(
            "FileSystemConfigs needs the gateway's jail (run as root, without GATEWAY_SANDBOX=rlimits): without it "
            "an environment cannot mount a file system of its own."
        )
