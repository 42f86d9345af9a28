"""The seccomp filter (runtimes/python/seccomp.py), end to end: what a handler is refused, and what still works.

As root (as sessions and CI here run), in jail mode and in rlimits mode; skipped elsewhere. The complement
arithmetic is tested without a gateway.
"""

from __future__ import annotations

import os
import random

import pytest

from runtimes.python.seccomp import PERSONALITIES, complement_blocks
from tests.conftest import GatewayFactory, create_function, invoke_json

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the jail needs root")

#: x86-64 numbers (the machines here); the handler also tries the calls through libc where Python has them
REFUSED = """
import ctypes, errno, os, signal, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWNS = 0x10000000, 0x40000000, 0x00020000
SYS = {'clone': 56, 'ptrace': 101, 'personality': 135, 'mount': 165, 'keyctl': 250, 'unshare': 272,
       'setns': 308, 'perf_event_open': 298, 'bpf': 321, 'userfaultfd': 323, 'process_vm_readv': 310,
       'io_uring_setup': 425, 'fsopen': 430, 'clone3': 435, 'init_module': 175, 'reboot': 169}

def call(name, *args):
    result = libc.syscall(ctypes.c_long(SYS[name]), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    return 0 if result >= 0 else errno.errorcode[ctypes.get_errno()]

def lambda_handler(event, context):
    other = os.fork()  # a process of its own to try ptrace and friends on
    if other == 0:
        time.sleep(30)
        os._exit(0)
    try:
        return {
            'unshare_user': call('unshare', CLONE_NEWUSER),
            'unshare_net': call('unshare', CLONE_NEWNET),
            'unshare_ns': call('unshare', CLONE_NEWNS),
            'clone_user': call('clone', CLONE_NEWUSER | signal.SIGCHLD, 0, 0, 0, 0),
            'clone3': call('clone3', 0, 0),
            'mount': call('mount', b'none', b'/tmp', b'tmpfs', 0, 0),
            'fsopen': call('fsopen', b'tmpfs', 0),
            'keyctl': call('keyctl', 0, 0, 0, 0, 0),
            'bpf': call('bpf', 0, 0, 0),
            'perf_event_open': call('perf_event_open', 0, 0, -1, -1, 0),
            'setns': call('setns', 0, 0),
            'userfaultfd': call('userfaultfd', 0),
            'io_uring_setup': call('io_uring_setup', 1, 0),
            'ptrace_attach': call('ptrace', 16, other, 0, 0),  # PTRACE_ATTACH its own child
            'process_vm_readv': call('process_vm_readv', other, 0, 0, 0, 0, 0),
            'init_module': call('init_module', 0, 0, b''),
            'reboot': call('reboot', 0, 0, 0, 0),
            'personality_no_aslr': call('personality', 0x0040000),
            'personality_query': call('personality', 0xFFFFFFFF),
        }
    finally:
        os.kill(other, signal.SIGKILL)
        os.waitpid(other, 0)
"""

#: what a handler does every day, under the filter
EVERYDAY = """
import concurrent.futures, json, os, socket, subprocess, tempfile, threading, time
def lambda_handler(event, context):
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        squares = sorted(pool.map(lambda n: n * n, range(8)))
    done = threading.Event()
    threading.Thread(target=done.set).start()
    server = socket.socket()
    server.bind(('127.0.0.1', 0))
    server.listen()
    client = socket.create_connection(server.getsockname(), timeout=5)
    peer, _ = server.accept()
    client.sendall(b'ping')
    echoed = peer.recv(4)
    for s in (client, peer, server):
        s.close()
    with tempfile.NamedTemporaryFile('w+', dir='/tmp') as f:
        json.dump({'k': [1, 2]}, f)
        f.flush()
        f.seek(0)
        read_back = json.load(f)
    child = os.fork()
    if child == 0:
        os._exit(7)
    _, status = os.waitpid(child, 0)
    started = time.monotonic()
    time.sleep(0.01)
    return {
        'threads': squares[-1], 'thread_event': done.wait(5), 'socket': echoed.decode(), 'file': read_back,
        'subprocess': subprocess.run(['sh', '-c', 'echo hi'], capture_output=True, text=True).stdout,
        'fork': os.waitstatus_to_exitcode(status), 'slept': time.monotonic() - started >= 0.01,
        'uid': os.getuid(),
    }
"""


@as_root
@pytest.mark.parametrize("mode", ["jail", "rlimits"])
def test_a_handler_is_refused_namespaces_mounts_and_the_kernels_riskier_calls(
    gateway_factory: GatewayFactory, mode: str
) -> None:
    gw = gateway_factory(env={"GATEWAY_SANDBOX": "auto" if mode == "jail" else "rlimits"})
    isolation = gw.health()["isolation"]
    assert isolation["mode"] == mode and isolation["seccomp"], isolation  # rlimits as root: root, but filtered
    lam = gw.client()
    create_function(lam, "refused", REFUSED, Timeout=30)
    resp, out = invoke_json(lam, "refused")
    assert "FunctionError" not in resp, out
    expected = {name: "EPERM" for name in out}
    expected["clone3"] = "ENOSYS"  # libc falls back to clone(2), whose flags the filter can read
    expected["personality_query"] = 0  # Docker's allowed values pass
    assert out == expected


@as_root
def test_everyday_handler_work_runs_under_the_filter(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    lam = gw.client()
    create_function(lam, "everyday", EVERYDAY, Timeout=30)
    resp, out = invoke_json(lam, "everyday")
    assert "FunctionError" not in resp, out
    assert out["threads"] == 49 and out["thread_event"] and out["socket"] == "ping"
    assert out["file"] == {"k": [1, 2]} and out["subprocess"] == "hi\n" and out["fork"] == 7 and out["slept"]
    assert out["uid"] != 0


def test_personality_blocks_cover_exactly_the_values_docker_refuses() -> None:
    blocks = list(complement_blocks(PERSONALITIES))

    def refused(value: int) -> bool:
        return any(value & mask == match for mask, match in blocks)

    assert not any(refused(v) for v in PERSONALITIES)
    samples = [1, 7, 9, 0x40000, 0x20009, 0x400000, 0xFFFFFFFE, 0x7FFFFFFF, 0x80000000, 0x10008]
    samples += [random.getrandbits(32) for _ in range(2000)]
    for value in samples:
        assert refused(value) == (value not in PERSONALITIES), hex(value)
    for i, (mask_a, value_a) in enumerate(blocks):  # disjoint: a block never holds another's values
        for mask_b, value_b in blocks[i + 1 :]:
            common = mask_a & mask_b
            assert value_a & common != value_b & common
