"""The gateway <-> zygote contract: control messages, the sandbox plan, the environments' exit codes. No I/O here.

The gateway starts one zygote per interpreter (`python -m runtimes.python.zygote --control-fd N --envs-root DIR
--sandbox JSON`, JSON being a `SandboxPlan`) and talks to it over a SOCK_SEQPACKET socketpair, one msgpack array
per packet, the kind first:

    gateway -> zygote   FORK        [FORK, req_id, spec]  + two fds via SCM_RIGHTS: the environment's socket, and
                                        the write end of its output pipe (the gateway keeps the read end)
                        TAKEN       [TAKEN, pid]                 the gateway has given the spare `pid` its spec
                        STOP        [STOP]                       it is stopping (closing the socket next)
    zygote -> gateway   HELLO       [HELLO, pid, {"private_tmp": bool, "jail": bool, "seccomp": bool}]   once
                        SPARE       [SPARE, pid, env_dir]  + two fds: the gateway's end of that spare's socket,
                                        and the read end of its output pipe
                        FORKED      [FORKED, req_id, pid, env_dir]
                        FORK_FAILED [FORK_FAILED, req_id, message]
                        EXITED      [EXITED, pid, wait_status]   for every child that ended (spares too)

`spec` is an `EnvironmentSpec`'s wire form (gateway/contracts/environment.py). Each kind is a typed record with
`encode()`; `decode()` checks a packet's shape (kind, arity, field types, and how many descriptors came with it)
and raises `MessageError` for anything else, so neither side trips over a malformed message deep inside. The
process side (who forks, who reaps) is described in runtimes/python/forkserver.py and gateway/execution/zygote.py.

Imports only the standard library, msgpack and the environment contract: both sides import it.
"""

from __future__ import annotations

import enum
import json
from typing import Any, NamedTuple

import msgpack

from gateway.contracts.environment import EnvironmentSpec, SpecError

FORK = 1
HELLO = 2
FORKED = 3
FORK_FAILED = 4
EXITED = 5
SPARE = 6
TAKEN = 7
#: gateway -> zygote: it is stopping (closing the socket next); not a death, nothing to sweep
STOP = 8

#: an environment's output pipe holds this much (Linux's default is 64 KB; 1 MB is what an unprivileged process
#: may ask for by default), so that a function seldom waits for the gateway to read what it prints
OUTPUT_PIPE_SIZE = 1 << 20
#: fcntl(2)'s F_SETPIPE_SZ (Linux)
F_SETPIPE_SZ = 1031


class ExitCode(enum.IntEnum):
    """How an environment's runtime ends on its own account (a function's `sys.exit(n)`/`os._exit(n)` is its own).

    The zygote reports the wait status (EXITED); the gateway words it as Lambda does ("exit status 4").
    """

    #: the gateway closed its socket, said SHUTDOWN, or dropped a spare
    OK = 0
    #: the runtime's own code failed, or it could not start under its zygote (which died meanwhile)
    FAILED = 1
    #: the gateway sent something that is not a frame the environment expects (a bug on the gateway's side)
    BAD_FRAME = 3
    #: its sandbox could not be set up: no user code ran
    SANDBOX_FAILED = 4
    #: its function's file system (FileSystemConfigs) could not be mounted: no user code ran. Invoke answers
    #: EFSMountFailureException (gateway/execution/failures.py)
    MOUNT_FAILED = 5


#: the line an environment writes to its output before it exits with ExitCode.MOUNT_FAILED: a function's own process
#: may exit with 5 too (an aws-lambda-go handler's os.Exit(5)), so the status alone does not say a mount failed
MOUNT_FAILED_LINE = b"the function's file system could not be mounted: "
#: the line an environment writes to its output, first, before it exits with ExitCode.SANDBOX_FAILED (a pool then
#: pauses its cold starts: gateway/execution/setup_failures.py)
SANDBOX_FAILED_LINE = b"the environment's sandbox could not be set up: "


class MessageError(ValueError):
    """A control message that is not one of this contract's. `req_id` is set when it was a FORK whose request id
    could be read, so that the zygote can still answer FORK_FAILED (the gateway's fork then does not wait)."""

    def __init__(self, reason: str, req_id: int | None = None) -> None:
        super().__init__(reason)
        self.req_id = req_id


def _pack(fields: tuple[Any, ...]) -> bytes:
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


class Fork(NamedTuple):
    """Fork an environment for `spec` (with two descriptors: its socket, its output pipe's write end)."""

    req_id: int
    spec: EnvironmentSpec

    def encode(self) -> bytes:
        return _pack((FORK, self.req_id, self.spec.to_wire()))


class Taken(NamedTuple):
    """The gateway has written the spare `pid` its spec: it is an environment now, no longer the zygote's spare."""

    pid: int

    def encode(self) -> bytes:
        return _pack((TAKEN, self.pid))


class Stop(NamedTuple):
    """The gateway is stopping, and stopped its environments itself: the zygote has nothing to sweep."""

    def encode(self) -> bytes:
        return _pack((STOP,))


class Features(NamedTuple):
    """What the zygote could set up for its environments (it falls back when the host refuses the jail)."""

    private_tmp: bool
    jail: bool
    seccomp: bool

    def to_wire(self) -> dict[str, bool]:
        return {"private_tmp": self.private_tmp, "jail": self.jail, "seccomp": self.seccomp}

    @classmethod
    def from_wire(cls, wire: dict[Any, Any]) -> Features:
        return cls(bool(wire.get("private_tmp")), bool(wire.get("jail")), bool(wire.get("seccomp")))


class Hello(NamedTuple):
    """The zygote is ready (once, after its probes)."""

    pid: int
    features: Features

    def encode(self) -> bytes:
        return _pack((HELLO, self.pid, self.features.to_wire()))


class Spare(NamedTuple):
    """A spare is forked and prepared (with two descriptors: the gateway's end of its socket, its output pipe's read
    end). Its directory is the gateway's to remove from now on, taken or not."""

    pid: int
    env_dir: str

    def encode(self) -> bytes:
        return _pack((SPARE, self.pid, self.env_dir))


class Forked(NamedTuple):
    """The fork `req_id` asked for is process `pid`, in directory `env_dir`."""

    req_id: int
    pid: int
    env_dir: str

    def encode(self) -> bytes:
        return _pack((FORKED, self.req_id, self.pid, self.env_dir))


class ForkFailed(NamedTuple):
    """The fork `req_id` asked for could not be made."""

    req_id: int
    message: str

    def encode(self) -> bytes:
        return _pack((FORK_FAILED, self.req_id, self.message))


class Exited(NamedTuple):
    """A child of the zygote (an environment or a spare) ended with `wait_status` (os.waitpid's)."""

    pid: int
    wait_status: int

    def encode(self) -> bytes:
        return _pack((EXITED, self.pid, self.wait_status))


Request = Fork | Taken | Stop
Report = Hello | Spare | Forked | ForkFailed | Exited
Message = Request | Report

#: per kind: its record, the type of each field after the kind, and how many descriptors come with it
_SCHEMA: dict[int, tuple[type[Any], tuple[type, ...], int]] = {
    FORK: (Fork, (int, dict), 2),
    TAKEN: (Taken, (int,), 0),
    STOP: (Stop, (), 0),
    HELLO: (Hello, (int, dict), 0),
    SPARE: (Spare, (int, str), 2),
    FORKED: (Forked, (int, int, str), 0),
    FORK_FAILED: (ForkFailed, (int, str), 0),
    EXITED: (Exited, (int, int), 0),
}
#: what each side reads
FROM_GATEWAY = frozenset({FORK, TAKEN, STOP})
FROM_ZYGOTE = frozenset({HELLO, SPARE, FORKED, FORK_FAILED, EXITED})


def decode(packet: bytes, fds: int, kinds: frozenset[int]) -> Message:
    """The record of one packet that came with `fds` descriptors, if it is a message of `kinds` (FROM_GATEWAY: the
    zygote reads; FROM_ZYGOTE: the gateway reads) of the right shape; else MessageError. The caller owns the
    descriptors either way. The caller tells the records apart with a `match` on their classes."""
    try:
        msg = msgpack.unpackb(packet, raw=False)
    except Exception as exc:  # ExtraData, FormatError, StackError, ValueError ...
        raise MessageError(f"undecodable control message: {str(exc)[:200]}") from None
    if type(msg) is not list or not msg or type(msg[0]) is not int or msg[0] not in kinds:
        raise MessageError(f"unknown control message: {str(msg)[:200]}")
    record, fields, wanted = _SCHEMA[msg[0]]
    req_id = msg[1] if msg[0] == FORK and len(msg) > 1 and type(msg[1]) is int else None
    if len(msg) != len(fields) + 1 or any(type(v) is not t for v, t in zip(msg[1:], fields, strict=True)):
        raise MessageError(f"malformed control message: {str(msg)[:200]}", req_id)
    if fds != wanted:
        raise MessageError(f"control message with {fds} descriptors instead of {wanted}: {str(msg)[:200]}", req_id)
    if record is Fork:
        try:
            return Fork(msg[1], EnvironmentSpec.from_wire(msg[2]))
        except SpecError as exc:
            raise MessageError(str(exc), req_id) from None
    if record is Hello:
        return Hello(msg[1], Features.from_wire(msg[2]))
    message: Message = record(*msg[1:])
    return message


class SandboxPlan(NamedTuple):
    """How the gateway wants environments isolated (gateway/isolation/sandbox.py chooses it; the zygote probes what
    the host allows of it, and says in HELLO what it got). Passed as JSON on the zygote's command line.

    `uids`: a gateway.isolation.uids.UidRange's wire form; `cgroups`: a gateway.isolation.cgroups.Hierarchy's, or
    None; `network`: the slot of the environments' network (gateway/isolation/network.py), or None (only lo).
    """

    jail: bool
    uids: dict[str, Any]
    cgroups: dict[str, Any] | None
    network: int | None

    def to_json(self) -> str:
        return json.dumps(self._asdict())

    @classmethod
    def from_json(cls, text: str) -> SandboxPlan:
        """Read and check a plan; raises ValueError (json.JSONDecodeError is one)."""
        wire = json.loads(text)
        if type(wire) is not dict:
            raise ValueError(f"a sandbox plan is an object: {text[:200]}")
        uids, cgroups, network = wire.get("uids"), wire.get("cgroups"), wire.get("network")
        if type(uids) is not dict or type(cgroups) not in (dict, type(None)) or type(network) not in (int, type(None)):
            raise ValueError(f"malformed sandbox plan: {text[:200]}")
        return cls(bool(wire.get("jail")), uids, cgroups, network)
