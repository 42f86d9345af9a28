"""File systems a function can mount (Lambda's `FileSystemConfigs`): the access points the operator maps to host
directories. Pure.

Lambda mounts an Amazon EFS access point at the function's `LocalMountPath` (/mnt/...). An access point is a
directory of a file system (its root) and a POSIX user (uid, gid) every access through it acts as. Here the operator
names the access points a function may use, in GATEWAY_FILE_SYSTEMS: a JSON object (inline, or in the file it
names when it does not start with `{`) from access-point ARN to the host directory that is its root and its POSIX
user:

    {"arn:aws:elasticfilesystem:us-east-1:123456789012:access-point/fsap-0123456789abcdef0":
        {"path": "/srv/efs/shared", "uid": 1000, "gid": 1000}}

An ARN not in it is refused at CreateFunction and UpdateFunctionConfiguration. The directory must exist when the
gateway starts, and stay that directory (an environment mounts it only while its st_dev and st_ino are those found at
start: one deleted and made again needs a restart). It must not hold nor lie in what other functions run or read
(`private_paths`: the data directory, the gateway's code, the interpreters, the system's directories). uid and gid
0 are refused: files a function makes there belong to that user on the host, and a setuid program owned by root is
not something a function may leave behind. Other uids: the directory should live on a file system mounted nosuid,
or be executed by no one on the host (a function can leave setuid programs of that user, as on any shared
directory).

How the directory appears in an environment (runtimes/python/file_systems.py `mount_all`): read-write, nosuid,
nodev, through an idmapped mount that maps the access point's uid and gid to the environment's own, so that files
the function makes belong to the access point's user and it can read and write what that user can, while the
environment keeps a uid of its own (one no other process has: it can signal no one). Only in a jail.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.nodes import PROJECT, node_candidates, node_prefix
from gateway.pythons import MIN_PYTHON_MINOR, candidates

_EFS_ARN = (
    r"arn:aws[a-zA-Z-]*:elasticfilesystem:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:\d{12}:access-point/"
    r"fsap-[a-f0-9]{17}"
)
_S3FILES_ARN = r"arn:aws[-a-z]*:s3files:[0-9a-z-:]+:file-system/fs-[0-9a-f]{17,40}/access-point/fsap-[0-9a-f]{17,40}"
#: botocore's FileSystemArn (Amazon EFS and Amazon S3 Files access points), as its messages quote it
ACCESS_POINT_ARN_PATTERN = f"{_EFS_ARN}$|^{_S3FILES_ARN}"
MAX_ARN = 256
#: botocore's LocalMountPath, at most 160 characters
LOCAL_MOUNT_PATH_PATTERN = r"/mnt/[a-zA-Z0-9-_.]+"
MAX_LOCAL_MOUNT_PATH = 160
#: FileSystemConfigList's maximum
MAX_FILE_SYSTEMS = 1
_ARN_RES = (re.compile(_EFS_ARN), re.compile(_S3FILES_ARN))
_MOUNT_PATH_RE = re.compile(LOCAL_MOUNT_PATH_PATTERN)
_MAX_ID = 2**32 - 2
_VARIABLE = "GATEWAY_FILE_SYSTEMS"
#: the directories every jail shows of the host (runtimes/python/jail.py SYSTEM)
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
#: the newest Python 3 minor whose candidates are looked at (`private_paths`)
_MAX_PYTHON_MINOR = 20


@dataclass(frozen=True, slots=True)
class AccessPoint:
    """An access point as the operator maps it: its root on the host (`path`, with no symlink in it) and its POSIX
    user; `dev` and `ino` are the directory's as the gateway found it at start (an environment mounts the path only
    while it is still that directory: runtimes/python/file_systems.py)."""

    path: str
    uid: int
    gid: int
    dev: int
    ino: int


def is_access_point_arn(arn: str) -> bool:
    """Whether `arn` satisfies the model's length and pattern (either alternative, each matched whole)."""
    return len(arn) <= MAX_ARN and any(r.fullmatch(arn) for r in _ARN_RES)


def is_local_mount_path(path: str) -> bool:
    """Whether `path` satisfies the model's pattern and length (ValidationException when not)."""
    return len(path) <= MAX_LOCAL_MOUNT_PATH and _MOUNT_PATH_RE.fullmatch(path) is not None


def mount_path_problem(path: str) -> str | None:
    """Why a LocalMountPath that satisfies the model is refused (InvalidParameterValueException), or None: `/mnt/.`
    and `/mnt/..` match its pattern, but name /mnt itself and the jail's root (a mount there would hide the
    runtime)."""
    if path[5:] in (".", ".."):
        return f"The LocalMountPath {path} is not a directory in /mnt: name one (/mnt/<name>), not . or .."
    return None


def parse(text: str) -> dict[str, AccessPoint]:
    """GATEWAY_FILE_SYSTEMS (see the module's docstring): "" -> {}. Raises ValueError."""
    text = text.strip()
    if not text:
        return {}
    if not text.startswith("{"):
        try:
            text = Path(text).read_text()
        except OSError as exc:
            raise ValueError(f"{_VARIABLE}: cannot read {text}: {exc.strerror}") from None
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{_VARIABLE} is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{_VARIABLE} must be a JSON object: access-point ARN -> {{path, uid, gid}}")
    return {arn: _access_point(arn, value) for arn, value in raw.items()}


def _access_point(arn: str, value: object) -> AccessPoint:
    if not is_access_point_arn(arn):
        raise ValueError(
            f"{_VARIABLE}: {arn!r} is not an access point ARN "
            "(arn:aws:elasticfilesystem:REGION:ACCOUNT:access-point/fsap-<17 hex digits>)"
        )
    if not isinstance(value, dict) or set(value) != {"path", "uid", "gid"}:
        raise ValueError(f'{_VARIABLE}: {arn} must map to exactly {{"path", "uid", "gid"}}')
    path, uid, gid = value["path"], value["uid"], value["gid"]
    if not isinstance(path, str) or not os.path.isabs(path) or not os.path.isdir(path):
        raise ValueError(f"{_VARIABLE}: the path of {arn} must be an existing directory, named absolutely")
    for name, number in (("uid", uid), ("gid", gid)):
        if type(number) is not int or not 0 < number <= _MAX_ID:
            raise ValueError(f"{_VARIABLE}: the {name} of {arn} must be an integer in [1, {_MAX_ID}] (0 is refused)")
    path = os.path.realpath(path)
    st = os.stat(path)
    return AccessPoint(path, uid, gid, st.st_dev, st.st_ino)


def private_paths(data_dir: Path, runtimes: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """What no access point may hold nor lie in, by real path -> how a refusal names it: the gateway's data directory
    (the registry, every function's code, the logs); its project's code (gateway/, runtimes/ and
    build/runtime-packages: what every jail shows at /var/runtime and /var/rapid) and virtual environment; the
    interpreters a jail shows (its own Python's prefixes, the Pythons and Node.js installations the operator names or
    the host offers: gateway/pythons.py, gateway/nodes.py, each a candidate whether in use or not); and the system's
    directories every jail shows (runtimes/python/jail.py SYSTEM). Through an access point a function writes as its
    POSIX user: it must not reach what other functions run or read. Stats only (no interpreter runs)."""
    found = {os.path.realpath(data_dir): "the data directory"}
    for part in ("gateway", "runtimes", os.path.join("build", "runtime-packages")):  # not its tests' temporary files
        found[os.path.realpath(os.path.join(PROJECT, part))] = "the gateway's project"
    for name in _SYSTEM:
        found.setdefault(os.path.realpath(name), f"the system directory {name}")
    interpreters = [sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix]
    nodes = [*node_candidates(environ), *(p for r, p in runtimes.items() if r.startswith("nodejs"))]
    interpreters += [prefix for node in nodes if (prefix := node_prefix(node))]
    pythons = [p for r, p in runtimes.items() if r.startswith("python")]
    pythons += [p for minor in range(MIN_PYTHON_MINOR, _MAX_PYTHON_MINOR + 1) for p in candidates(minor, environ)]
    # <prefix>/bin/python3.X: what a jail shows of a Python outside the system's directories
    interpreters += [os.path.dirname(os.path.dirname(os.path.realpath(p))) for p in pythons]
    for prefix in interpreters:
        found.setdefault(os.path.realpath(prefix), f"an interpreter's installation ({prefix})")
    found.pop("/", None)  # an interpreter in /bin: the root is refused anyway (it holds the data directory)
    return found


def check_outside(access_points: Mapping[str, AccessPoint], private: Mapping[str, str]) -> None:
    """Refuse (ValueError) an access point whose directory holds one of `private` (`private_paths`) or lies in it:
    a function would reach it with its access point's permissions."""
    for arn, access_point in access_points.items():
        path = access_point.path
        for other, what in private.items():
            if path == other or other.startswith(path.rstrip("/") + "/") or path.startswith(other + "/"):
                raise ValueError(f"{_VARIABLE}: the directory of {arn} must not hold, nor be in, {what} ({other})")
