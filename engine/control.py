"""The control socket: how pyvsadm and `pyvs sysctl` reach the director.

An abstract Unix socket is private to its network namespace, so `pyvsadm` in a
namespace talks to the `pyvs run` of that namespace and no other, the way
ipvsadm talks to its namespace's kernel.  Only root (SO_PEERCRED uid 0) may use
it, and only from inside the namespace: a process of another namespace that holds
a socket made in this one (a file descriptor passed across, or a socket created
after a setns) is refused too -- the peer's own network namespace (/proc/PID/ns/net
of the SO_PEERCRED pid) must be the director's (``refusal``).  One JSON request per
connection, one JSON reply:
  {"op": "ipvsadm", "argv": [...], "stdin": "..."} -> {"rc", "out", "err"}
  {"op": "sysctl", "args": ["name" | "name=value", ...]} -> {"rc", "out", "err"}
"""

from __future__ import annotations

import json
import os
import socket
import struct

SOCKET_NAME = "\0pyvs-control"
MAX_REQUEST = 16 << 20


def client_request(request: dict, timeout: float = 30.0) -> dict:
    """Send one request to this namespace's director (raises OSError if none runs)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(SOCKET_NAME)
        sock.sendall(json.dumps(request).encode())
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    finally:
        sock.close()
    return json.loads(b"".join(chunks) or b"{}")


def listen() -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(SOCKET_NAME)  # EADDRINUSE: another director runs in this namespace
    sock.listen(64)
    sock.setblocking(False)
    return sock


def peer_creds(conn: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process that connected (SO_PEERCRED)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _ = struct.unpack("3i", creds)
    return pid, uid


def _netns_id(pid: int | str) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def refusal(conn: socket.socket) -> str | None:
    """Why this peer may not use the director (None: it may)."""
    pid, uid = peer_creds(conn)
    if uid != 0:
        return "Permission denied (you must be root)"
    mine = _netns_id("self")
    if mine is None or _netns_id(pid) != mine:
        return ("Permission denied (only processes in this network namespace may "
                "control its director)")
    return None


def read_request(conn: socket.socket, timeout: float = 2.0) -> dict:
    conn.settimeout(timeout)
    chunks = []
    size = 0
    while True:
        data = conn.recv(65536)
        if not data:
            break
        chunks.append(data)
        size += len(data)
        if size > MAX_REQUEST:
            raise ValueError("request too large")
    return json.loads(b"".join(chunks))


def send_reply(conn: socket.socket, reply: dict) -> None:
    conn.sendall(json.dumps(reply).encode())
