"""The sandbox, end to end: what a function can see, touch and exhaust, as root (a jail with cgroups) and without.

Run as root, as sessions and CI here do; the jail tests are skipped elsewhere. The rlimits tests force that mode
with GATEWAY_SANDBOX=rlimits.
"""

from __future__ import annotations

import base64
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DAEMON, GatewayFactory, RunningGateway, create_function, gone, invoke_json, make_zip

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the jail needs root")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
ZYGOTE_ENVIRONMENT = {"PYTHONPATH", "PATH", "LANG", "PYTHONDONTWRITEBYTECODE", "GATEWAY_PID"}
SYSTEM = {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "opt", "proc", "sbin", "tmp", "usr", "var"}

PROBE = """
import grp, importlib, json, os, pwd, resource, socket, sys
def lambda_handler(event, context):
    def readable(path):
        try:
            os.listdir(path) if os.path.isdir(path) else open(path, 'rb').read(1)
            return True
        except OSError:
            return False
    def writable(path):
        try:
            with open(path, 'w') as f:
                f.write('x')
            return True
        except OSError:
            return False
    importlib.import_module('xml.dom.minidom')  # not imported by the zygote: the interpreter's files are visible
    tmp = os.statvfs('/tmp')
    return {
        'uid': os.getuid(), 'gid': os.getgid(), 'groups': os.getgroups(),
        'user': pwd.getpwuid(os.getuid()).pw_name, 'group': grp.getgrgid(os.getgid()).gr_name,
        'task_root': os.environ['LAMBDA_TASK_ROOT'],
        'data_dir_visible': [os.path.join(d, n) for d, ds, fs in os.walk(event['data_dir']) for n in ds + fs],
        'gateway_visible': os.path.exists('/proc/%d' % event['gateway_pid']),
        'pid': os.getpid(),
        'pids_visible': [int(p) for p in os.listdir('/proc') if p.isdigit()],
        'fds': [int(fd) for fd in os.listdir('/proc/self/fd')],
        'code_writable': writable(os.path.join(os.environ['LAMBDA_TASK_ROOT'], 'new.txt')),
        'handler_writable': writable(__file__),
        'tmp_writable': writable('/tmp/x'),
        'tmp_mb': tmp.f_blocks * tmp.f_frsize // (1024 * 1024),
        'root_entries': sorted(os.listdir('/')),
        'environ': open('/proc/self/environ', 'rb').read().decode(errors='replace'),
        'interfaces': [name for _, name in socket.if_nameindex()],
        'rlimit_as': resource.getrlimit(resource.RLIMIT_AS)[0],
    }
"""


def _probe(gw: RunningGateway, name: str, **config: Any) -> dict[str, Any]:
    lam = gw.client()
    create_function(lam, name, PROBE, **config)
    resp, out = invoke_json(lam, name, {"data_dir": str(gw.data_dir), "gateway_pid": gw.proc.pid})  # type: ignore[union-attr]
    assert "FunctionError" not in resp, out
    return dict(out)


@as_root
def test_a_jailed_environment_sees_only_the_system_its_code_and_its_tmp(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(env={"GATEWAY_ACCESS_KEY_ID": "test", "GATEWAY_SECRET_ACCESS_KEY": "test", "CANARY": "x7q"})
    isolation = gw.health()["isolation"]
    assert isolation["mode"] == "jail" and isolation["uid"] == "one per environment"
    assert isolation["cgroups"] in ("cgroup v1", "cgroup v2") and isolation["no_new_privs"] is True
    assert "sandbox: {'mode': 'jail'" in gw.log()  # the start-up log says which sandbox is active

    one = _probe(gw, "one", EphemeralStorage={"Size": 700})
    two = _probe(gw, "two")
    assert one["uid"] != 0 and one["gid"] == one["uid"] and one["groups"] == []
    assert one["user"] == one["group"] == "sbx_user1051"  # named, as on Lambda
    assert one["uid"] != two["uid"]  # environments cannot signal or trace each other
    assert not one["data_dir_visible"]  # the registry, other functions' code, the logs: none of it is there
    assert one["task_root"] == "/var/task"  # its code, where Lambda puts it
    assert not one["gateway_visible"] and one["pids_visible"] == [one["pid"]]  # hidepid: only itself
    assert len(one["fds"]) <= 5  # stdin, stdout, stderr, its socket to the gateway, the listing's own
    assert not one["code_writable"] and not one["handler_writable"]
    assert one["tmp_writable"] and one["tmp_mb"] == 700 and two["tmp_mb"] == 512  # /tmp = EphemeralStorage
    exposed = {p.split("/")[1] for p in (sys.prefix, sys.base_prefix, str(PROJECT_ROOT))}
    assert set(one["root_entries"]) <= SYSTEM | exposed, one["root_entries"]  # nothing else of the host
    # /proc/self/environ shows what the zygote was started with: nothing of the gateway's environment
    assert "x7q" not in one["environ"]
    assert {kv.split("=")[0] for kv in one["environ"].split("\0") if kv} <= ZYGOTE_ENVIRONMENT
    assert "lo" in one["interfaces"]


@as_root
def test_gateway_network_none_cuts_a_function_off_the_network(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    source = f"""
import socket
def lambda_handler(event, context):
    out = {{}}
    for name, addr in (('gateway', ('127.0.0.1', {gw.port})),):
        try:
            socket.create_connection(addr, timeout=2).close()
            out[name] = 'connected'
        except OSError as exc:
            out[name] = type(exc).__name__
    server = socket.socket()
    server.bind(('127.0.0.1', 0))
    server.listen()
    socket.create_connection(server.getsockname(), timeout=2).close()  # its own loopback still works
    out['interfaces'] = [n for _, n in socket.if_nameindex()]
    return out
"""
    lam = gw.client()
    create_function(lam, "online", source)
    create_function(lam, "offline", source, Environment={"Variables": {"GATEWAY_NETWORK": "none"}})
    _, online = invoke_json(lam, "online")
    resp, offline = invoke_json(lam, "offline")
    # 127.0.0.1 is each environment's own loopback (its own network namespace): the gateway's is out of reach
    assert online["gateway"] == "ConnectionRefusedError" and sorted(online["interfaces"]) == ["eth0", "lo"]
    assert "FunctionError" not in resp and offline["gateway"] == "ConnectionRefusedError"
    assert offline["interfaces"] == ["lo"]  # more in tests/test_e2e_network.py


@as_root
def test_out_of_memory_is_reported_as_lambda_does(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    lam = gw.client()
    hog = "def lambda_handler(event, context):\n    blocks = [bytearray(1 << 20) for _ in range(event['mb'])]\n"
    hog += "    return len(blocks)\n"
    create_function(lam, "hog", hog, MemorySize=128)
    resp, out = invoke_json(lam, "hog", {"mb": 400}, LogType="Tail")
    assert resp["FunctionError"] == "Unhandled"
    assert out["errorType"] == "Runtime.OutOfMemory"
    assert out["errorMessage"].endswith("Error: Runtime exited with error: signal: killed")
    log = base64.b64decode(resp["LogResult"]).decode()
    report = log[log.index("REPORT") :]
    used = int(report.split("Max Memory Used: ")[1].split(" MB")[0])
    assert 100 <= used <= 129, report  # the memory group's peak: at the limit
    duration = float(report.split("Duration: ")[1].split(" ms")[0])
    assert duration > 1.0, report  # how long it ran until the OOM killer ended it, not 0.00
    assert "Status: error\tError Type: Runtime.OutOfMemory" in report
    resp, out = invoke_json(lam, "hog", {"mb": 10})  # a new environment serves the next invocation
    assert "FunctionError" not in resp and out == 10
    metrics = gw.request("GET", "/metrics")[2].decode().splitlines()
    assert any('"out_of_memory"' in line and '"hog"' in line and line.endswith(" 1.0") for line in metrics)
    create_function(lam, "init-hog", "BLOCKS = [bytearray(1 << 20) for _ in range(400)]\n" + hog, MemorySize=128)
    resp, out = invoke_json(lam, "init-hog", {"mb": 1})  # out of memory during Init: the same answer
    assert resp["FunctionError"] == "Unhandled" and out["errorType"] == "Runtime.OutOfMemory"


BOMB = """
import os, threading, time
def lambda_handler(event, context):
    made, stop = 0, time.time() + event['seconds']
    if event['kind'] == 'fork':
        while time.time() < stop:
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                time.sleep(600)
                os._exit(0)
            made += 1
    else:
        while time.time() < stop:
            try:
                threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
            except RuntimeError:
                break
            made += 1
    return {'made': made, 'pid': os.getpid()}
"""


@as_root
@pytest.mark.parametrize("kind", ["fork", "thread"])
def test_a_fork_or_thread_bomb_stays_inside_its_environment(gateway_factory: GatewayFactory, kind: str) -> None:
    gw = gateway_factory()
    lam = gw.client()
    create_function(lam, "bomb", BOMB, Timeout=30, MemorySize=2048)
    create_function(lam, "calm", "def lambda_handler(e, c):\n    return 'ok'\n")
    resp, out = invoke_json(lam, "bomb", {"kind": kind, "seconds": 10})
    assert "FunctionError" not in resp, out
    assert 100 < out["made"] < 1024  # stopped by its own limits, long before the host's
    assert _pids_group(out["pid"])["pids.max"] == "1024"  # the cgroup's limit, whatever RLIMIT_NPROC does first
    _, calm = invoke_json(lam, "calm")  # the rest of the gateway works on
    assert calm == "ok"
    uid = _uid_of(out["pid"])
    lam.delete_function(FunctionName="bomb")  # its environment ends, and everything in its cgroups with it
    assert gone(_pids_of_uid(uid), timeout=10.0)


def _pids_group(pid: int) -> dict[str, str]:
    """The files of `pid`'s group in the pids hierarchy (cgroup v1, as on the machines here; v2: the unified one)."""
    with open(f"/proc/{pid}/cgroup") as f:
        lines = dict(line.rstrip("\n").split(":", 2)[1:] for line in f)
    path = f"/sys/fs/cgroup/pids{lines['pids']}" if "pids" in lines else f"/sys/fs/cgroup{lines['']}"
    return {name: Path(path, name).read_text().strip() for name in ("pids.max", "pids.current")}


def _uid_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("Uid:")).split()[1])


def _pids_of_uid(uid: int) -> set[int]:
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if _uid_of(int(entry)) == uid:
                    pids.add(int(entry))
            except (OSError, StopIteration):
                continue
    return pids


@as_root
def test_a_detached_daemon_dies_with_its_environment(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    lam = gw.client()
    create_function(lam, "daemon", DAEMON)
    _, uid = invoke_json(lam, "daemon")
    assert len(_pids_of_uid(uid)) == 2  # the environment and the daemon, in another session
    lam.delete_function(FunctionName="daemon")
    assert gone(_pids_of_uid(uid), timeout=10.0)


def test_rlimits_mode_limits_what_it_can_and_says_so(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(env={"GATEWAY_SANDBOX": "rlimits"})
    isolation = gw.health()["isolation"]
    assert isolation["mode"] == "rlimits" and isolation["cgroups"] is None
    out = _probe(gw, "probe", MemorySize=256)
    assert out["rlimit_as"] == (256 + 1024) * 1024 * 1024  # MemorySize + 1 GB of headroom
    lam = gw.client()
    hog = "def lambda_handler(event, context):\n    return len(bytearray(event['mb'] << 20))\n"
    create_function(lam, "hog", hog, MemorySize=128)
    resp, out = invoke_json(lam, "hog", {"mb": 2048})
    assert resp["FunctionError"] == "Unhandled" and out["errorType"] == "MemoryError"
    resp, out = invoke_json(lam, "hog", {"mb": 16})  # the environment survived its MemoryError
    assert "FunctionError" not in resp and out == 16 << 20


def test_without_a_jail_environments_share_the_hosts_network(gateway_factory: GatewayFactory) -> None:
    """The weaker mode says so: its environments reach the host's loopback (a jail's do not: test_e2e_network.py)."""
    gw = gateway_factory(env={"GATEWAY_SANDBOX": "rlimits"})
    assert gw.health()["isolation"]["network"]["mode"] == "host"
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        lam = gw.client()
        source = (
            f"import socket\ndef lambda_handler(e, c):\n    socket.create_connection(('127.0.0.1', {port})).close()\n"
        )
        create_function(lam, "net", source)
        resp, _ = invoke_json(lam, "net")
        assert "FunctionError" not in resp
        server.settimeout(5)
        conn, _ = server.accept()
        conn.close()


@as_root
def test_a_jail_shows_the_code_at_var_task_and_the_layers_merged_at_opt(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    lam = gw.client()
    arns = [
        lam.publish_layer_version(LayerName=name, Content={"ZipFile": make_zip(files)})["LayerVersionArn"]
        for name, files in (("one", {"data/a.txt": "one", "data/b.txt": "one"}), ("two", {"data/b.txt": "two"}))
    ]
    source = """
import os
def lambda_handler(event, context):
    try:
        open('/opt/data/c.txt', 'w')
        opt_writable = True
    except OSError:
        opt_writable = False
    return {'cwd': os.getcwd(), 'file': __file__, 'a': open('/opt/data/a.txt').read(),
            'b': open('/opt/data/b.txt').read(), 'opt_writable': opt_writable}
"""
    create_function(lam, "layered", source, Layers=arns)
    resp, out = invoke_json(lam, "layered")
    assert "FunctionError" not in resp, out
    assert out["cwd"] == "/var/task" and out["file"] == "/var/task/lambda_function.py"
    assert out["a"] == "one" and out["b"] == "two"  # as Lambda extracts layers in order: the later one wins
    assert not out["opt_writable"]
