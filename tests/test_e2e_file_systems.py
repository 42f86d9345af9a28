"""FileSystemConfigs through the real gateway and jail: an access point GATEWAY_FILE_SYSTEMS maps to a host directory,
mounted at LocalMountPath in every environment of the function, with the access point's POSIX user
(gateway/file_systems.py, runtimes/python/file_systems.py).

The members' constraints are botocore's model's (FileSystemConfigList at most 1, FileSystemArn's pattern,
LocalMountPath `/mnt/[a-zA-Z0-9-_.]+`); the exception an environment raises when it cannot mount is the model's
EFSMountFailureException (403). AWS's docs ("Configuring file system access for Lambda functions") give the rest:
the mount path starts with /mnt/, the access point's POSIX user owns what the function writes.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import GatewayFactory, RunningGateway, create_function, invoke_json

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the jail needs root")

ARN = "arn:aws:elasticfilesystem:us-east-1:123456789012:access-point/fsap-0123456789abcdef0"
OTHER_ARN = "arn:aws:elasticfilesystem:us-east-1:123456789012:access-point/fsap-0123456789abcdef1"
UID, GID = 1000, 1001
MOUNT = "/mnt/data"
SOURCE = """import os, time, json

def lambda_handler(event, context):
    op = event["op"]
    if op == "write":
        time.sleep(event.get("sleep", 0))
        with open(event["path"], "w") as f:
            f.write(event["text"])
        return {"pid": os.getpid(), "uid": os.getuid()}
    if op == "read":
        try:
            with open(event["path"]) as f:
                return {"text": f.read()}
        except OSError as exc:
            return {"error": type(exc).__name__}
    if op == "listdir":
        try:
            return {"names": sorted(os.listdir(event["path"]))}
        except OSError as exc:
            return {"error": type(exc).__name__}
    if op == "symlink":
        os.symlink(event["to"], event["path"])
        return {"exists": os.path.exists(event["path"])}
    if op == "exists":
        return {"exists": os.path.exists(event["path"])}
    if op == "stat":
        st = os.stat(event["path"])
        return {"uid": st.st_uid, "gid": st.st_gid, "me": os.getuid()}
    if op == "mountinfo":
        with open("/proc/self/mountinfo") as f:
            return {"lines": [line for line in f if event["path"] in line]}
"""


@pytest.fixture
def shared_dir(tmp_path: Path) -> Path:
    """The access point's root: owned by its POSIX user, as EFS makes it with CreationInfo."""
    root = tmp_path / "efs" / "shared"
    root.mkdir(parents=True)
    os.chown(root, UID, GID)
    root.chmod(0o755)
    secret = root / "root-only"
    secret.write_text("no")
    secret.chmod(0o600)  # root's: the access point's user may not read it
    mine = root / "users-own"
    mine.write_text("yes")
    mine.chmod(0o600)
    os.chown(mine, UID, GID)
    return root


@pytest.fixture
def gw(gateway_factory: GatewayFactory, shared_dir: Path) -> RunningGateway:
    mapping = {ARN: {"path": str(shared_dir), "uid": UID, "gid": GID}}
    return gateway_factory(env={"GATEWAY_FILE_SYSTEMS": json.dumps(mapping)})


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    err = exc.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


def _run(lam: Any, name: str, **event: Any) -> Any:
    resp, body = invoke_json(lam, name, event)
    assert "FunctionError" not in resp, body
    return body


def test_environments_of_a_function_share_its_file_system_as_the_access_points_user(
    gw: RunningGateway, shared_dir: Path
) -> None:
    lam = gw.client()
    configs = [{"Arn": ARN, "LocalMountPath": MOUNT}]
    created = create_function(lam, "efs", SOURCE, FileSystemConfigs=configs)
    assert created["FileSystemConfigs"] == configs
    assert lam.get_function_configuration(FunctionName="efs")["FileSystemConfigs"] == configs
    results: list[Any] = []

    def write(i: int) -> None:
        results.append(_run(lam, "efs", op="write", path=f"{MOUNT}/from-{i}", text=str(i), sleep=1))

    writers = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    assert len({r["pid"] for r in results}) == 2  # two environments, both with the directory
    assert _run(lam, "efs", op="listdir", path=MOUNT)["names"] == ["from-0", "from-1", "root-only", "users-own"]
    for i in range(2):  # on the host: the access point's user and group own what the function made
        st = (shared_dir / f"from-{i}").stat()
        assert (st.st_uid, st.st_gid, (shared_dir / f"from-{i}").read_text()) == (UID, GID, str(i))
        assert _run(lam, "efs", op="read", path=f"{MOUNT}/from-{1 - i}") == {"text": str(1 - i)}
    # it can do what the access point's user can, no more; the environment keeps a uid of its own
    assert _run(lam, "efs", op="read", path=f"{MOUNT}/users-own") == {"text": "yes"}
    assert _run(lam, "efs", op="read", path=f"{MOUNT}/root-only") == {"error": "PermissionError"}
    seen = _run(lam, "efs", op="stat", path=f"{MOUNT}/from-0")
    assert seen["uid"] == seen["me"] and seen["me"] not in (0, UID)
    (mount_line,) = _run(lam, "efs", op="mountinfo", path=MOUNT)["lines"]
    options = mount_line.split()[5].split(",")
    assert "rw" in options and "nosuid" in options and "nodev" in options and "idmapped" in options


def test_a_symlink_in_the_shared_directory_leads_nowhere_outside_the_jail(gw: RunningGateway, shared_dir: Path) -> None:
    """What a function reads through a symlink it left is resolved in its own jail's root (pivot_root, not the
    idmap, makes it so: this test would pass without the idmap, except for the link's owner). The risk on the host's
    side, a symlink the environment's own mount would follow while the host's root is reachable, is
    test_nested_access_points_a_swapped_inner_directory_is_not_mounted's."""
    lam = gw.client()
    create_function(lam, "efs-links", SOURCE, FileSystemConfigs=[{"Arn": ARN, "LocalMountPath": MOUNT}])
    data_dir = str(gw.data_dir)  # the gateway's registry, code and logs, on the host
    assert _run(lam, "efs-links", op="symlink", path=f"{MOUNT}/escape", to=data_dir) == {"exists": False}
    assert _run(lam, "efs-links", op="exists", path=f"{MOUNT}/escape/") == {"exists": False}
    assert _run(lam, "efs-links", op="listdir", path=str(shared_dir))["error"] == "FileNotFoundError"
    link = shared_dir / "escape"
    assert link.is_symlink() and os.lstat(link).st_uid == UID


def test_a_function_without_the_config_sees_nothing_at_mnt(gw: RunningGateway, shared_dir: Path) -> None:
    lam = gw.client()
    create_function(lam, "efs-owner", SOURCE, FileSystemConfigs=[{"Arn": ARN, "LocalMountPath": MOUNT}])
    _run(lam, "efs-owner", op="write", path=f"{MOUNT}/private", text="x")
    create_function(lam, "no-efs", SOURCE)
    assert _run(lam, "no-efs", op="listdir", path="/mnt") == {"error": "FileNotFoundError"}
    assert _run(lam, "no-efs", op="listdir", path=str(shared_dir)) == {"error": "FileNotFoundError"}
    # removing the config (an empty list, as on Lambda) takes the mount away from new environments
    updated = lam.update_function_configuration(FunctionName="efs-owner", FileSystemConfigs=[])
    assert "FileSystemConfigs" not in updated
    assert _run(lam, "efs-owner", op="listdir", path="/mnt") == {"error": "FileNotFoundError"}


def test_constraints_and_unmapped_access_points_are_refused(gw: RunningGateway) -> None:
    lam = gw.client()
    cases = [
        ([{"Arn": OTHER_ARN, "LocalMountPath": MOUNT}], "InvalidParameterValueException",
         f"EFS access point {OTHER_ARN} was not found. This gateway mounts only the access points that "
         "GATEWAY_FILE_SYSTEMS maps to a directory.", 400),
        ([{"Arn": ARN, "LocalMountPath": "/tmp/data"}], "ValidationException",
         "1 validation error detected: Value '/tmp/data' at 'fileSystemConfigs.1.member.localMountPath' failed to "
         "satisfy constraint: Member must satisfy regular expression pattern: /mnt/[a-zA-Z0-9-_.]+", 400),
        ([{"Arn": ARN, "LocalMountPath": "/mnt/.."}], "InvalidParameterValueException",
         "The LocalMountPath /mnt/.. is not a directory in /mnt: name one (/mnt/<name>), not . or ..", 400),
        ([{"Arn": OTHER_ARN, "LocalMountPath": "/mnt/."}], "InvalidParameterValueException",
         "The LocalMountPath /mnt/. is not a directory in /mnt: name one (/mnt/<name>), not . or ..", 400),
        ([{"Arn": ARN, "LocalMountPath": "/mnt/a"}, {"Arn": ARN, "LocalMountPath": "/mnt/b"}],
         "ValidationException", None, 400),
        ([{"Arn": "arn:aws:elasticfilesystem:us-east-1:123456789012:file-system/fs-0123",
           "LocalMountPath": MOUNT}], "ValidationException", None, 400),
    ]  # fmt: skip
    for configs, code, message, status in cases:
        with pytest.raises(ClientError) as exc:
            create_function(lam, "refused", SOURCE, FileSystemConfigs=configs)
        got = _error(exc)
        assert (got[0], got[2]) == (code, status), got
        if message is not None:
            assert got[1] == message
    create_function(lam, "later", SOURCE)
    with pytest.raises(ClientError) as exc:
        lam.update_function_configuration(
            FunctionName="later", FileSystemConfigs=[{"Arn": OTHER_ARN, "LocalMountPath": MOUNT}]
        )
    assert _error(exc)[0] == "InvalidParameterValueException"


def test_without_a_jail_a_file_system_is_refused(gateway_factory: GatewayFactory, shared_dir: Path) -> None:
    mapping = {ARN: {"path": str(shared_dir), "uid": UID, "gid": GID}}
    gw = gateway_factory(env={"GATEWAY_FILE_SYSTEMS": json.dumps(mapping), "GATEWAY_SANDBOX": "rlimits"})
    with pytest.raises(ClientError) as exc:
        create_function(gw.client(), "efs", SOURCE, FileSystemConfigs=[{"Arn": ARN, "LocalMountPath": MOUNT}])
    assert _error(exc)[0] == "InvalidParameterValueException" and "jail" in _error(exc)[1]


def test_an_access_point_no_longer_mapped_fails_the_invoke(gateway_factory: GatewayFactory, shared_dir: Path) -> None:
    mapping = {ARN: {"path": str(shared_dir), "uid": UID, "gid": GID}}
    gw = gateway_factory(env={"GATEWAY_FILE_SYSTEMS": json.dumps(mapping)})
    create_function(gw.client(), "efs", SOURCE, FileSystemConfigs=[{"Arn": ARN, "LocalMountPath": MOUNT}])
    gw.stop()
    gw.env.pop("GATEWAY_FILE_SYSTEMS")
    lam = gw.start().client()
    with pytest.raises(ClientError) as exc:
        lam.invoke(FunctionName="efs", Payload=b"{}")
    assert _error(exc) == (
        "EFSMountFailureException",
        f"The function couldn't mount the file system of access point {ARN}: it is not mapped here.",
        403,
    )


def test_a_directory_that_cannot_be_mounted_fails_the_invoke_before_any_code_runs(
    gw: RunningGateway, shared_dir: Path
) -> None:
    lam = gw.client()
    create_function(lam, "efs-gone", SOURCE, FileSystemConfigs=[{"Arn": ARN, "LocalMountPath": MOUNT}])
    moved = shared_dir.with_name("moved")
    shared_dir.rename(moved)  # the operator's directory went away after the gateway started
    with pytest.raises(ClientError) as exc:
        lam.invoke(FunctionName="efs-gone", Payload=b'{"op": "listdir", "path": "/mnt"}', LogType="Tail")
    code, message, status = _error(exc)
    assert (code, status) == ("EFSMountFailureException", 403)  # as Lambda answers, not Runtime.ExitError
    assert ARN in message and str(moved) not in message and str(shared_dir) not in message  # no host path
    # why, with the host's path, is in the operator's log
    assert "efs-gone could not mount its file system: the function's file system could not be mounted: [Errno 2] " \
        "openat2" in gw.log_path.read_text()  # fmt: skip
    moved.rename(shared_dir)
    assert _run(lam, "efs-gone", op="listdir", path="/mnt") == {"names": ["data"]}


NESTED_ARN = "arn:aws:elasticfilesystem:us-east-1:123456789012:access-point/fsap-0123456789abcdef2"
SWAP_SOURCE = """import os
def lambda_handler(event, context):
    op = event["op"]
    if op == "swap":  # the inner access point's directory, seen through the outer one's mount
        os.rename(event["path"], event["path"] + ".old")
        if event.get("to"):
            os.symlink(event["to"], event["path"])
        else:
            os.mkdir(event["path"])
        return "ok"
    if op == "restore":
        (os.unlink if os.path.islink(event["path"]) else os.rmdir)(event["path"])
        os.rename(event["path"] + ".old", event["path"])
        return "ok"
    if op == "walk":
        return sorted(dp for dp, dn, fn in os.walk(event["path"]))
"""


def test_nested_access_points_a_swapped_inner_directory_is_not_mounted(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    """The outer access point's function replaces the inner one's directory by a symlink to the gateway's data
    directory (through /.host, the host's root an environment reaches while its jail is built), or by another
    directory: the inner one's environments refuse to mount rather than show it (runtimes/python/file_systems.py)."""
    outer = tmp_path / "efs"
    inner = outer / "inner"
    inner.mkdir(parents=True)
    for d in (outer, inner):
        os.chown(d, UID, GID)
    (inner / "mine").write_text("inner's")
    mapping = {
        ARN: {"path": str(outer), "uid": UID, "gid": GID},
        NESTED_ARN: {"path": str(inner), "uid": UID, "gid": GID},
    }
    gw = gateway_factory(env={"GATEWAY_FILE_SYSTEMS": json.dumps(mapping)})
    lam = gw.client()
    create_function(lam, "outer", SWAP_SOURCE, FileSystemConfigs=[{"Arn": ARN, "LocalMountPath": "/mnt/a"}])
    create_function(lam, "other", SWAP_SOURCE)  # whose code the data directory holds
    for i, to in enumerate(("/.host" + str(gw.data_dir), None)):
        assert _run(lam, "outer", op="swap", path="/mnt/a/inner", to=to) == "ok"
        name = f"inner-{i}"  # a function whose environments all start after the swap
        create_function(lam, name, SWAP_SOURCE, FileSystemConfigs=[{"Arn": NESTED_ARN, "LocalMountPath": "/mnt/b"}])
        try:
            seen = invoke_json(lam, name, {"op": "walk", "path": "/mnt/b"})[1]
        except ClientError as exc:
            seen = exc.response["Error"]
        assert not any("/code" in str(p) for p in seen) and "/mnt/b" not in seen, seen
        assert seen["Code"] == "EFSMountFailureException", seen
        assert _run(lam, "outer", op="restore", path="/mnt/a/inner") == "ok"
        # the directory itself (moved away and back: the same one) mounts again
        assert _run(lam, name, op="walk", path="/mnt/b") == ["/mnt/b"]
