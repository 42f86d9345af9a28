"""A file system an environment mounts (Lambda's FileSystemConfigs), as the gateway's SPEC tells a jailed environment
(gateway/contracts/environment.py: `EnvironmentSpec.file_systems`). No I/O here; imports nothing of the gateway."""

from __future__ import annotations

from typing import Any, NamedTuple


class FileSystemMount(NamedTuple):
    """Show the host directory `source` read-write at `target` (/mnt/...), with files of `uid`:`gid` on the host
    being the environment's own (runtimes/python/jail.py: an idmapped mount)."""

    target: str
    source: str
    uid: int
    gid: int

    @classmethod
    def from_wire(cls, wire: Any) -> FileSystemMount:
        """From its wire form ([target, source, uid, gid]); raises TypeError or ValueError if malformed."""
        target, source, uid, gid = wire
        if not (type(target) is str and type(source) is str and type(uid) is int and type(gid) is int):
            raise TypeError(f"malformed file system mount: {str(wire)[:200]}")
        if not (target.startswith("/mnt/") and source.startswith("/") and uid > 0 and gid > 0):
            raise ValueError(f"file system mount out of bounds: {str(wire)[:200]}")
        return cls(target, source, uid, gid)
