"""A file system an environment mounts (Lambda's FileSystemConfigs), as the gateway's SPEC tells a jailed environment
(gateway/contracts/environment.py: `EnvironmentSpec.file_systems`). No I/O here; imports nothing of the gateway."""

from __future__ import annotations

from typing import Any, NamedTuple


class FileSystemMount(NamedTuple):
    """Show the host directory `source` read-write at `target` (/mnt/...), with files of `uid`:`gid` on the host
    being the environment's own (runtimes/python/file_systems.py: an idmapped mount). `dev` and `ino` identify the
    directory as the gateway found it at start: the environment mounts `source` only if it is still that directory
    (a function sharing a parent directory could have put another one, or a symlink, in its place)."""

    target: str
    source: str
    uid: int
    gid: int
    dev: int
    ino: int

    @classmethod
    def from_wire(cls, wire: Any) -> FileSystemMount:
        """From its wire form ([target, source, uid, gid, dev, ino]); raises TypeError or ValueError if malformed."""
        target, source, uid, gid, dev, ino = wire
        if not (type(target) is str and type(source) is str and all(type(n) is int for n in (uid, gid, dev, ino))):
            raise TypeError(f"malformed file system mount: {str(wire)[:200]}")
        name = target[5:]  # one directory in /mnt, not /mnt itself nor the root: the API refuses those too
        in_mnt = target.startswith("/mnt/") and name not in ("", ".", "..") and "/" not in name
        if not (in_mnt and source.startswith("/") and uid > 0 and gid > 0 and dev >= 0 and ino > 0):
            raise ValueError(f"file system mount out of bounds: {str(wire)[:200]}")
        return cls(target, source, uid, gid, dev, ino)
