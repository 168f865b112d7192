"""Connection sync for real: two `pyvs run` directors in their own namespaces, the sync
daemon started with pyvsadm as with ipvsadm, messages over multicast (224.0.0.81:8848)
on the segment they share (engine/lab/ha.py, DR mode, no keepalived here)."""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import sys
import time

import pytest

from pyvs.engine.lab import netns as nx

pytestmark = pytest.mark.lab

SENDER = r"""
import socket, struct, sys
src, data = sys.argv[1], bytes.fromhex(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(src))
s.bind((src, 0))
s.sendto(data, ("224.0.0.81", 8848))
"""


def wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def conn_lines(director) -> list[str]:
    """-Lnc without the expiry column (the two directors' clocks differ)."""
    lines = director.adm("-Lnc").stdout.splitlines()[2:]
    return sorted(re.sub(r"^(\S+) \S+", r"\1", line) for line in lines)


def message(syncid: int, cport: int) -> bytes:
    rec = (bytes((0, 6)) + (36).to_bytes(2, "big") + (0).to_bytes(4, "big")
           + (1).to_bytes(2, "big") + struct.pack("!HHH", cport, 80, 80) + bytes(4)
           + (900).to_bytes(4, "big") + socket.inet_aton("198.18.0.77")
           + socket.inet_aton("198.18.1.1") + socket.inet_aton("198.18.2.11"))
    return struct.pack("!BBHBBH", 0, syncid, 8 + len(rec), 1, 1, 0) + rec


@pytest.fixture
def lab(lab_env):
    from pyvs.engine.lab.ha import HaLab

    lab = HaLab(forwarding="dr", real_servers=2, clients=1, start_servers=True)
    lab.up()
    try:
        lab.start_directors([["-A", "-t", "198.18.1.1:80", "-s", "rr"],
                             *[["-a", "-t", "198.18.1.1:80", "-r", f"{rs['addr']}:80", "-g"]
                               for rs in lab.real_server_list()]], keepalived=False)
        nx.add_addr(lab.ns("dir1"), "eth0", "198.18.1.1/32")  # dir1 is the active one
        yield lab
    finally:
        lab.down()


def test_pyvsadm_daemon_commands_and_a_backup_fed_over_multicast(lab):
    master, backup = lab.directors["dir1"], lab.directors["dir2"]
    # ipvsadm's messages and exit codes
    r = master.adm("--start-daemon", "master", "--mcast-interface", "nosuch0", check=False)
    assert (r.returncode, r.stderr) == (255, "No such device\n")
    r = backup.adm("--stop-daemon", "backup", check=False)
    assert (r.returncode, r.stderr) == (255, "No daemon is running\n")
    master.adm("--start-daemon", "master", "--mcast-interface", "eth0", "--syncid", "9")
    r = master.adm("--start-daemon", "master", "--mcast-interface", "eth0", check=False)
    assert (r.returncode, r.stderr) == (255, "Daemon has already run\n")
    backup.adm("--start-daemon", "backup", "--mcast-interface", "eth0", "--syncid", "9",
               "--sync-maxlen", "500")
    assert master.adm("-L", "--daemon").stdout == (
        "master sync daemon (mcast=eth0, syncid=9, maxlen=1472, group=224.0.0.81, "
        "port=8848, ttl=1)\n")
    assert backup.adm("-L", "--daemon").stdout == (  # a backup's maxlen is at least 1024
        "backup sync daemon (mcast=eth0, syncid=9, maxlen=1024, group=224.0.0.81, "
        "port=8848, ttl=1)\n")

    # traffic through the master; the backup's table follows
    for _ in range(4):
        assert lab.curl(lab.url()).strip().startswith("rs")
    mine = conn_lines(master)
    assert len(mine) == 4
    wait_for(lambda: conn_lines(backup) == conn_lines(master), 10,
             "the backup to list the master's connections")
    sync = backup.status()["sync"]["backup"]
    assert sync["records"] >= 4 and not [k for k in sync if "drop" in k or "malformed" in k]

    # what the backup must not take: another syncid, a stranger, garbage
    client = lab.ns("client")
    nx.add_addr(client, "eth0", "198.18.5.10/24")

    def send(src: str, data: bytes) -> None:
        subprocess.run(["ip", "netns", "exec", client, sys.executable, "-c", SENDER, src,
                        data.hex()], check=True, timeout=20)

    send("198.18.0.10", message(8, 50001))
    send("198.18.5.10", message(9, 50002))
    send("198.18.0.10", b"\x00\x09\x00\x30garbage")
    wait_for(lambda: backup.status()["sync"]["backup"].get("malformed:bad-message-size"), 10,
             "the garbage to be counted")
    counters = backup.status()["sync"]["backup"]
    assert counters["dropped:wrong-syncid"] == 1
    assert counters["dropped:unexpected-source"] == 1
    assert "198.18.0.77" not in backup.adm("-Lnc").stdout
    send("198.18.0.10", message(9, 50003))  # the right syncid from a neighbour is taken
    wait_for(lambda: "198.18.0.77:50003" in backup.adm("-Lnc").stdout, 10,
             "a valid message from a neighbour")

    # master and backup at once in one director, as the kernel allows; then stop
    master.adm("--start-daemon", "backup", "--mcast-interface", "eth0", "--syncid", "9")
    assert [line.split()[0] for line in master.adm("-L", "--daemon").stdout.splitlines()] \
        == ["master", "backup"]
    master.adm("--stop-daemon", "master")
    master.adm("--stop-daemon", "backup")
    assert master.adm("-L", "--daemon").stdout == ""
