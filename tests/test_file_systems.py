"""gateway/file_systems.py (GATEWAY_FILE_SYSTEMS, the model's patterns), the spec's file systems
(gateway/execution/spec.py) and their wire form (gateway/contracts/file_systems.py)."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import sys
from pathlib import Path

import pytest

from gateway import file_systems
from gateway.contracts.environment import EnvironmentSpec
from gateway.contracts.file_systems import FileSystemMount
from gateway.contracts.zygote import MOUNT_FAILED_LINE, ExitCode
from gateway.errors import EFSMountFailureException
from gateway.execution.failures import mount_failure
from gateway.execution.spec import environment_spec
from gateway.file_systems import AccessPoint
from gateway.nodes import PROJECT
from gateway.runtime_packages import PACKAGES_DIR
from gateway.settings import Settings
from runtimes.python.file_systems import open_source
from runtimes.python.sandbox import Prepared
from tests.test_spec import CONFIG

ARN = "arn:aws:elasticfilesystem:us-east-1:123456789012:access-point/fsap-0123456789abcdef0"


def test_parse_inline_or_from_a_file(tmp_path: Path) -> None:
    text = json.dumps({ARN: {"path": str(tmp_path), "uid": 1000, "gid": 1000}})
    st = tmp_path.stat()
    assert file_systems.parse(text) == {ARN: AccessPoint(str(tmp_path), 1000, 1000, st.st_dev, st.st_ino)}
    (tmp_path / "fs.json").write_text(text)
    assert file_systems.parse(str(tmp_path / "fs.json")) == file_systems.parse(text)
    assert file_systems.parse("  ") == {}


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ({"path": "relative", "uid": 1, "gid": 1}, "existing directory"),
        ({"path": "/nonexistent/dir", "uid": 1, "gid": 1}, "existing directory"),
        ({"path": "/", "uid": 0, "gid": 1}, "0 is refused"),
        ({"path": "/", "uid": 1, "gid": 0}, "0 is refused"),
        ({"path": "/", "uid": "1", "gid": 1}, "integer"),
        ({"path": "/", "uid": 1}, "exactly"),
    ],
)
def test_parse_refuses_what_would_not_mount_or_would_be_unsafe(value: object, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        file_systems.parse(json.dumps({ARN: value}))


def test_parse_refuses_other_arns_and_bad_json() -> None:
    with pytest.raises(ValueError, match="not an access point ARN"):
        file_systems.parse(json.dumps({ARN.replace("access-point", "file-system"): {}}))
    with pytest.raises(ValueError, match="not JSON"):
        file_systems.parse("{nope")


def test_the_models_patterns() -> None:
    assert file_systems.is_access_point_arn(ARN)
    s3files = (
        "arn:aws:s3files:us-east-1:123456789012:file-system/fs-0123456789abcdef0/access-point/fsap-0123456789abcdef0"
    )
    assert file_systems.is_access_point_arn(s3files)
    assert not file_systems.is_access_point_arn(ARN + "0" * 300)
    assert file_systems.is_local_mount_path("/mnt/data-1.x_y")
    for bad in ("/mnt/", "/mnt/a/b", "/tmp/a", "/mnt/" + "a" * 160):
        assert not file_systems.is_local_mount_path(bad)
    for dots in ("/mnt/..", "/mnt/."):  # the pattern's, but not a directory in /mnt: refused with words of its own
        assert file_systems.is_local_mount_path(dots)
        assert "not a directory in /mnt" in (file_systems.mount_path_problem(dots) or "")
    assert file_systems.mount_path_problem("/mnt/...") is None


def test_the_spec_names_the_mapped_directory_and_user_only_in_a_jail(tmp_path: Path) -> None:
    settings = Settings(data_dir=Path("/data"), file_systems={ARN: AccessPoint(str(tmp_path), 1000, 1001, 5, 7)})
    config = dataclasses.replace(CONFIG, extra={"FileSystemConfigs": [{"Arn": ARN, "LocalMountPath": "/mnt/d"}]})
    spec = environment_spec(config, settings, "on-demand", jailed=True)
    assert spec.file_systems == [FileSystemMount("/mnt/d", str(tmp_path), 1000, 1001, 5, 7)]
    assert EnvironmentSpec.from_wire(spec.to_wire()) == spec
    with pytest.raises(EFSMountFailureException, match="does not jail"):
        environment_spec(config, settings, "on-demand", jailed=False)
    with pytest.raises(EFSMountFailureException, match="not mapped here"):
        environment_spec(config, Settings(data_dir=Path("/data")), "on-demand", jailed=True)
    assert environment_spec(CONFIG, settings, "on-demand", jailed=True).file_systems == []


@pytest.mark.parametrize(
    "wire",
    [
        ["/tmp/x", "/d", 1, 1, 1, 1],
        ["/mnt/x", "d", 1, 1, 1, 1],
        ["/mnt/x", "/d", 0, 1, 1, 1],
        [1, "/d", 1, 1, 1, 1],
        ["/mnt/x", "/d", 1, 1, 1, 0],
        ["/mnt/x", "/d", 1, 1],
        ["/mnt/..", "/d", 1, 1, 1, 1],
        ["/mnt/.", "/d", 1, 1, 1, 1],
        ["/mnt/a/../..", "/d", 1, 1, 1, 1],
    ],
)
def test_a_mount_out_of_bounds_is_not_a_spec(wire: list[object]) -> None:
    with pytest.raises((TypeError, ValueError)):
        FileSystemMount.from_wire(wire)


def test_an_access_point_must_not_reach_the_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "code").mkdir(parents=True)
    private = file_systems.private_paths(data, {}, {})
    for path in (tmp_path, data, data / "code"):
        with pytest.raises(ValueError, match="data directory"):
            file_systems.check_outside({ARN: AccessPoint(str(path), 1000, 1000, 0, 1)}, private)
    file_systems.check_outside({ARN: AccessPoint(str(tmp_path / "datab"), 1000, 1000, 0, 1)}, private)


def test_an_access_point_must_not_reach_the_runtime_the_interpreters_or_the_system(tmp_path: Path) -> None:
    """What every jail shows (the project's runtimes and runtime packages, the interpreters, /usr ...) must not be
    writable through an access point: a function would change what other functions run."""
    node = tmp_path / "node" / "bin" / "node"
    node.parent.mkdir(parents=True)
    (tmp_path / "node" / "include" / "node").mkdir(parents=True)
    node.write_text("")
    python = tmp_path / "py" / "bin" / "python3.12"
    python.parent.mkdir(parents=True)
    python.write_text("")
    runtimes = {"nodejs22.x": str(node), "python3.12": str(python)}
    settings = Settings(data_dir=tmp_path / "data", runtimes=runtimes)
    private = file_systems.private_paths(settings.data_dir, runtimes, {})
    project = Path(PROJECT)
    for path in (
        project,
        project / "runtimes",
        PACKAGES_DIR,
        Path(sys.base_prefix),
        Path(sys.prefix) / "lib",
        Path("/usr/local"),
        Path("/etc"),
        tmp_path / "node",
        tmp_path / "py" / "lib",
        tmp_path,
    ):
        with pytest.raises(ValueError, match="must not hold, nor be in"):
            file_systems.check_outside({ARN: AccessPoint(str(path), 1000, 1000, 0, 1)}, private)
        with pytest.raises(ValueError, match="must not hold, nor be in"):
            dataclasses.replace(settings, file_systems={ARN: AccessPoint(str(path), 1000, 1000, 0, 1)}).validate()
    fine = {ARN: AccessPoint(str(tmp_path / "efs"), 1000, 1000, 0, 1)}
    file_systems.check_outside(fine, private)
    dataclasses.replace(settings, file_systems=fine).validate()


def test_the_environment_opens_only_the_directory_the_gateway_found(tmp_path: Path) -> None:
    """runtimes/python/file_systems.py `open_source`: no symlink followed (anywhere on the path), nothing outside
    the root, and the same directory (st_dev, st_ino) as at the gateway's start."""
    inner = tmp_path / "outer" / "inner"
    inner.mkdir(parents=True)
    st = inner.stat()
    fs = FileSystemMount("/mnt/b", "/outer/inner", 1000, 1000, st.st_dev, st.st_ino)
    fd = open_source(fs, str(tmp_path))
    assert os.path.samestat(os.fstat(fd), st)
    os.close(fd)
    (tmp_path / "elsewhere").mkdir()
    inner.rename(tmp_path / "inner.old")
    inner.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError) as exc:
        open_source(fs, str(tmp_path))
    assert exc.value.errno == errno.ELOOP
    inner.unlink()
    (tmp_path / "outer").rename(tmp_path / "outer.old")
    (tmp_path / "outer").symlink_to(tmp_path / "outer.old")  # a symlink higher up
    (tmp_path / "inner.old").rename(tmp_path / "outer.old" / "inner")
    with pytest.raises(OSError) as exc:
        open_source(fs, str(tmp_path))
    assert exc.value.errno == errno.ELOOP
    (tmp_path / "outer").unlink()
    (tmp_path / "outer.old").rename(tmp_path / "outer")
    os.close(open_source(fs, str(tmp_path)))  # back where it was: the same directory
    inner.rename(tmp_path / "inner.old")
    inner.mkdir()  # another directory by the same name (the old one kept: its inode number is not reused)
    with pytest.raises(OSError) as exc:
        open_source(fs, str(tmp_path))
    assert exc.value.errno == errno.ESTALE
    with pytest.raises(OSError):  # nothing beneath the root reaches outside it
        open_source(fs._replace(source="/../" + tmp_path.name + "/outer/inner"), str(tmp_path))


def test_an_environment_that_could_not_mount_is_efs_mount_failure() -> None:
    """gateway/execution/failures.py: ExitCode.MOUNT_FAILED (runtimes/python/sandbox.py) is Lambda's
    EFSMountFailureException (403); any other end is not."""
    extra = {"FileSystemConfigs": [{"Arn": ARN, "LocalMountPath": "/mnt/d"}]}
    said = MOUNT_FAILED_LINE + b"[Errno 116] Stale file handle\n"
    failure = mount_failure(extra, ExitCode.MOUNT_FAILED << 8, b"init output\n" + said)
    assert isinstance(failure, EFSMountFailureException) and failure.status == 403 and ARN in str(failure)
    for status in (None, ExitCode.SANDBOX_FAILED << 8, 9, 0):
        assert mount_failure(extra, status, said) is None
    # a function's own exit status 5 (aws-lambda-go's os.Exit(5)) is its own, with or without file systems
    assert mount_failure(extra, ExitCode.MOUNT_FAILED << 8, b"exiting\n") is None
    assert mount_failure({}, ExitCode.MOUNT_FAILED << 8, said) is None


def test_an_environment_without_a_jail_refuses_a_file_system(tmp_path: Path) -> None:
    """runtimes/python/sandbox.py: a spec with file systems in an environment that has no jail ends it
    (ExitCode.MOUNT_FAILED) rather than run the function without them."""
    config = dataclasses.replace(CONFIG, extra={"FileSystemConfigs": [{"Arn": ARN, "LocalMountPath": "/mnt/d"}]})
    st = tmp_path.stat()
    settings = Settings(
        data_dir=Path("/data"), file_systems={ARN: AccessPoint(str(tmp_path), 1000, 1001, st.st_dev, st.st_ino)}
    )
    spec = environment_spec(config, settings, "on-demand", jailed=True)
    pid = os.fork()
    if pid == 0:  # the child: what a forked environment does, without a jail (uid None)
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            Prepared(str(tmp_path), str(tmp_path / "tmp"), None, os.getppid(), None).seal(spec)  # type: ignore[arg-type]
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == ExitCode.MOUNT_FAILED


def test_an_access_points_user_is_none_of_the_environments(tmp_path: Path) -> None:
    """Settings.validate: an access point's uid or gid in the environments' uid range would give a function the
    files (and, as the uid of a running environment, the processes) of another environment."""
    settings = Settings(data_dir=tmp_path / "data", uid_base=100000, uid_count=1000)
    for uid, gid in ((100000, 1000), (1000, 100999), (100500, 100500)):
        point = AccessPoint(str(tmp_path / "efs"), uid, gid, 0, 1)
        with pytest.raises(ValueError, match="outside the environments' uid range"):
            dataclasses.replace(settings, file_systems={ARN: point}).validate()
    for uid in (99999, 101000):
        dataclasses.replace(settings, file_systems={ARN: AccessPoint(str(tmp_path / "efs"), uid, uid, 0, 1)}).validate()
