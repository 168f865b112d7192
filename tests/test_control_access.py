"""Who may drive a director (engine/control.py): root only, and only from inside the
director's network namespace -- checked on the director's side, with raw clients
that bypass pyvsadm's own root check."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys

import pytest

from pyvs.engine.lab import netns as nx
from pyvs.engine.runner import DirectorProcess

pytestmark = pytest.mark.lab

# connects to the director's control socket, optionally with a socket made inside the
# namespace named in argv[1] while the process itself lives elsewhere; prints the reply
RAW_CLIENT = r"""
import ctypes, json, os, socket, sys
CLONE_NEWNET = 0x40000000
libc = ctypes.CDLL(None, use_errno=True)
def setns(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        os.close(fd)
home = f"/proc/self/fd/{os.open('/proc/self/ns/net', os.O_RDONLY)}"
if len(sys.argv) > 1:
    setns(f"/run/netns/{sys.argv[1]}")  # the socket is made in the director's namespace
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
if len(sys.argv) > 1:
    setns(home)  # ... and the process goes back home before connecting
try:
    s.connect("\0pyvs-control")
except OSError as err:
    print(json.dumps({"connect_error": type(err).__name__}))
    sys.exit(0)
s.sendall(json.dumps({"op": "ipvsadm", "argv": ["-Ln"]}).encode())
s.shutdown(socket.SHUT_WR)
print(b"".join(iter(lambda: s.recv(65536), b"")).decode())
"""


@pytest.fixture
def two_namespaces(lab_env):
    tag = secrets.token_hex(3)
    names = [f"pyvs-acc{tag}-{role}" for role in ("director", "other")]
    for name in names:
        nx.create_ns(name)
    d = DirectorProcess(names[0])
    try:
        d.start()
        yield d, names[0], names[1]
    finally:
        d.stop()
        for name in names:
            nx.delete_ns(name)


def raw(ns: str, *args: str, user: str | None = None) -> dict:
    argv = [sys.executable, "-c", RAW_CLIENT, *args]
    if user:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    proc = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          timeout=20)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_root_in_the_namespace_is_served(two_namespaces):
    _, ns, _ = two_namespaces
    reply = raw(ns)
    assert reply["rc"] == 0 and reply["out"].startswith("IP Virtual Server")


def test_other_users_are_refused(two_namespaces):
    _, ns, _ = two_namespaces
    reply = raw(ns, user="65534")
    assert reply["rc"] == 1
    assert reply["err"] == "Permission denied (you must be root)\n"
    assert reply["out"] == ""


def test_other_namespaces_cannot_reach_or_use_it(two_namespaces):
    director, ns, other = two_namespaces
    # by name: the abstract socket does not exist in another namespace
    assert raw(other) == {"connect_error": "ConnectionRefusedError"}
    # with a socket made in the director's namespace, from a process living elsewhere
    reply = raw(other, ns)
    assert reply["rc"] == 1 and "only processes in this network namespace" in reply["err"]
    assert reply["out"] == ""
    assert director.adm("-Ln").returncode == 0  # the director is unharmed
