"""The gateway <-> zygote contract: control messages round-trip, keep their wire bytes, and anything malformed is a
MessageError (never an IndexError inside a reader); the sandbox plan and the environment spec as they travel."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.contracts import zygote as control
from gateway.contracts.environment import EnvironmentSpec, Mount, SpecError
from gateway.contracts.file_systems import FileSystemMount
from tests.conftest import sample_spec

ids = st.integers(min_value=0, max_value=2**63 - 1)
text = st.text(max_size=40)
names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
specs = st.builds(
    EnvironmentSpec,
    env=st.dictionaries(names, names, max_size=5),
    code_dir=text,
    handler=text,
    extra_paths=st.lists(text, max_size=3),
    max_concurrency=st.integers(1, 64),
    mounts=st.lists(st.builds(Mount, text, st.lists(text, min_size=1, max_size=3)), max_size=2),
    memory_size=st.integers(128, 10240),
    ephemeral_storage=st.integers(512, 10240),
    network=st.booleans(),
    file_systems=st.lists(
        st.builds(
            FileSystemMount,
            st.from_regex(r"/mnt/[a-z][a-z0-9._-]{0,20}", fullmatch=True),
            text.map(lambda t: "/" + t),
            st.integers(1, 2**32 - 2),
            st.integers(1, 2**32 - 2),
            st.integers(0, 2**64 - 1),
            st.integers(1, 2**64 - 1),
        ),
        max_size=1,
    ),
)
features = st.builds(control.Features, st.booleans(), st.booleans(), st.booleans())
requests = st.one_of(st.builds(control.Fork, ids, specs), st.builds(control.Taken, ids), st.builds(control.Stop))
reports = st.one_of(
    st.builds(control.Hello, ids, features),
    st.builds(control.Spare, ids, text),
    st.builds(control.Forked, ids, ids, text),
    st.builds(control.ForkFailed, ids, text),
    st.builds(control.Exited, ids, st.integers(0, 2**16)),
)
#: descriptors each kind comes with
FDS = {control.Fork: 2, control.Spare: 2}


@given(requests)
def test_requests_round_trip(message: control.Message) -> None:
    fds = FDS.get(type(message), 0)
    assert control.decode(message.encode(), fds, control.FROM_GATEWAY) == message


@given(reports)
def test_reports_round_trip(message: control.Message) -> None:
    fds = FDS.get(type(message), 0)
    assert control.decode(message.encode(), fds, control.FROM_ZYGOTE) == message


def test_wire_bytes_are_the_arrays_the_docstring_shows() -> None:
    """What the zygote and the gateway sent before the records: msgpack arrays, the kind first."""
    spec = sample_spec()

    def packed(value: list[Any]) -> bytes:
        result: bytes = msgpack.packb(value, use_bin_type=True)
        return result

    assert control.Fork(7, spec).encode() == packed([control.FORK, 7, spec.to_wire()])
    assert control.Taken(42).encode() == packed([control.TAKEN, 42])
    assert control.Stop().encode() == packed([control.STOP])
    hello = {"private_tmp": True, "jail": False, "seccomp": True}
    assert control.Hello(3, control.Features(True, False, True)).encode() == packed([control.HELLO, 3, hello])
    assert control.Spare(5, "/envs/a").encode() == packed([control.SPARE, 5, "/envs/a"])
    assert control.Forked(7, 5, "/envs/a").encode() == packed([control.FORKED, 7, 5, "/envs/a"])
    assert control.ForkFailed(7, "no").encode() == packed([control.FORK_FAILED, 7, "no"])
    assert control.Exited(5, 256).encode() == packed([control.EXITED, 5, 256])


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\xc1",  # not msgpack
        msgpack.packb({"kind": 1}),  # not an array
        msgpack.packb([]),
        msgpack.packb(["1", 2]),  # a kind that is not an int
        msgpack.packb([99, 1]),  # no such kind
        msgpack.packb([control.EXITED, 1]),  # too short
        msgpack.packb([control.EXITED, 1, 2, 3]),  # too long
        msgpack.packb([control.EXITED, "1", 0]),  # a field of the wrong type
        msgpack.packb([control.EXITED, True, 0]),  # a bool is not a pid
        msgpack.packb([control.FORKED, 1, 2, None]),
        msgpack.packb([control.HELLO, 1, [True]]),
        msgpack.packb([control.FORK, 1, {}]),  # a request, which a zygote sends never
        msgpack.packb([1, 2, 3]) + b"\x00",  # trailing bytes
    ],
)
def test_malformed_reports_are_message_errors(packet: bytes) -> None:
    with pytest.raises(control.MessageError):
        control.decode(packet, 0, control.FROM_ZYGOTE)


@given(st.binary(max_size=64))
def test_garbage_is_a_message_error_or_a_valid_message(packet: bytes) -> None:
    try:
        message = control.decode(packet, 0, control.FROM_ZYGOTE)
    except control.MessageError:
        return
    assert control.decode(message.encode(), 0, control.FROM_ZYGOTE) == message


def test_descriptors_must_match_the_kind() -> None:
    spare = control.Spare(5, "/envs/a").encode()
    for fds in (0, 1, 3):
        with pytest.raises(control.MessageError, match="descriptors"):
            control.decode(spare, fds, control.FROM_ZYGOTE)
    with pytest.raises(control.MessageError, match="descriptors"):
        control.decode(control.Exited(5, 0).encode(), 1, control.FROM_ZYGOTE)


def test_a_bad_fork_request_still_names_its_request() -> None:
    """So that the zygote can answer FORK_FAILED and the gateway's fork does not wait for ever."""
    good = control.Fork(9, sample_spec()).encode()
    with pytest.raises(control.MessageError) as wrong_fds:
        control.decode(good, 1, control.FROM_GATEWAY)
    assert wrong_fds.value.req_id == 9
    bad_spec = msgpack.packb([control.FORK, 9, {"env": {}}], use_bin_type=True)
    with pytest.raises(control.MessageError) as malformed:
        control.decode(bad_spec, 2, control.FROM_GATEWAY)
    assert malformed.value.req_id == 9
    with pytest.raises(control.MessageError) as unreadable:
        control.decode(msgpack.packb([control.FORK, "9", {}]), 2, control.FROM_GATEWAY)
    assert unreadable.value.req_id is None


@given(specs)
def test_spec_round_trips_through_its_wire_form(spec: EnvironmentSpec) -> None:
    wire_form = msgpack.unpackb(msgpack.packb(spec.to_wire(), use_bin_type=True), raw=False)
    assert EnvironmentSpec.from_wire(wire_form) == spec


def test_spec_defaults_and_malformed_specs() -> None:
    minimal = {"env": {}, "code_dir": "/c", "handler": "m.f", "memory_size": 128, "ephemeral_storage": 512}
    spec = EnvironmentSpec.from_wire(minimal)
    assert (spec.extra_paths, spec.max_concurrency, spec.mounts, spec.network) == ([], 1, [], True)
    for broken in (
        [],
        {**minimal, "env": {"A": 1}},
        {**minimal, "memory_size": "128"},
        {**minimal, "network": 1},
        {**minimal, "mounts": [["/t"]]},
        {**minimal, "mounts": [["/t", "/not-a-list"]]},
        {**minimal, "extension_emulators": {"/opt/extensions/a": 1}},
        {**minimal, "extension_emulators": [["/opt/extensions/a", "/usr/bin/qemu-aarch64-static"]]},
        {k: v for k, v in minimal.items() if k != "handler"},
    ):
        with pytest.raises(SpecError):
            EnvironmentSpec.from_wire(broken)


def test_sandbox_plan_as_json() -> None:
    plan = control.SandboxPlan(True, {"base": 1, "count": 2, "state_dir": "/s"}, None, 3)
    text = plan.to_json()
    assert json.loads(text) == {"jail": True, "uids": plan.uids, "cgroups": None, "network": 3}
    assert control.SandboxPlan.from_json(text) == plan
    for broken in ("[]", '{"jail": true}', '{"uids": {}, "cgroups": [1]}', '{"uids": {}, "network": "x"}', "{"):
        with pytest.raises(ValueError):
            control.SandboxPlan.from_json(broken)


def test_exit_codes_are_the_numbers_the_runtime_always_used() -> None:
    assert [int(code) for code in control.ExitCode] == [0, 1, 3, 4, 5]
