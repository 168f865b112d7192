"""NAT load balancing end to end: real namespaces, `pyvs run`, `pyvsadm`, curl, UDP.

One lab (3 real servers, 3 client addresses) and one director serve the module;
every test starts from `pyvsadm -C`.  Real server rsN answers "rsN" and lives at
198.18.2.(10+N); adding rs1, rs2, rs3 makes the kernel list rs3, rs2, rs1.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from labhelp import add_service

from pyvs.engine.lab import NatLab, servers
from pyvs.engine.runner import DirectorProcess

pytestmark = pytest.mark.lab

VIP = NatLab.VIP
VIP6 = NatLab.VIP6


@pytest.fixture(scope="module")
def lab(nat_lab_3x3):
    return nat_lab_3x3


@pytest.fixture(scope="module")
def director_proc(lab):
    with DirectorProcess(lab.ns("director")) as proc:  # always stopped
        yield proc


@pytest.fixture
def director(director_proc):
    director_proc.adm("-C")
    for setting in ("conn_reuse_mode=1", "expire_nodest_conn=0"):
        director_proc.sysctl(setting)
    yield director_proc
    director_proc.adm("-C")


def get(lab, client=None, vip=VIP):
    return lab.curl(lab.url(vip), client_addr=client).strip()


def test_rr_thirty_requests_land_ten_each_in_kernel_order(lab, director):
    add_service(director, lab, "-s", "rr")
    answers = [get(lab) for _ in range(30)]
    assert answers[:3] == ["rs3", "rs2", "rs1"]  # newest destination first (ip_vs_ctl.c)
    assert {n: answers.count(n) for n in ("rs1", "rs2", "rs3")} == {
        "rs1": 10, "rs2": 10, "rs3": 10}
    stats = director.adm("-L", "-n", "--stats").stdout
    assert "198.18.1.1:80" in stats and stats.count("        10") >= 3


def test_wrr_weights_321_give_30_20_10_in_the_kernel_sequence(lab, director):
    """ip_vs_wrr.c: cw carried across the three adds starts the first pass at cw=1."""
    add_service(director, lab, "-s", "wrr", weights=(3, 2, 1))
    answers = [get(lab) for _ in range(60)]
    cycle = ["rs1", "rs2", "rs1", "rs3", "rs2", "rs1"]
    expected = ["rs3", "rs2", "rs1"] + (cycle * 10)[:57]
    assert answers == expected
    assert [answers.count(n) for n in ("rs1", "rs2", "rs3")] == [30, 20, 10]


def test_persistence_keeps_each_client_on_one_server(lab, director):
    add_service(director, lab, "-s", "rr", "-p", "300")
    a, b = lab.client_addrs[:2]
    first = {get(lab, a) for _ in range(8)}
    second = {get(lab, b) for _ in range(8)}
    assert len(first) == 1 and len(second) == 1 and first != second
    conns = director.adm("-L", "-n", "-c").stdout
    assert f"{a}:0" in conns and f"{b}:0" in conns  # the two templates


def test_udp_service_balances_datagrams_from_several_source_ports(lab, director):
    add_service(director, lab, "-s", "rr", proto="-u", port=53)
    replies = [lab.udp_query(VIP, 53, "who", sport=20000 + n).strip() for n in range(6)]
    assert sorted(replies) == ["rs1", "rs1", "rs2", "rs2", "rs3", "rs3"]
    listing = director.adm("-L", "-n").stdout
    assert "UDP  198.18.1.1:53 rr" in listing


def test_fifty_megabytes_arrive_intact_both_ways(lab, director):
    add_service(director, lab, "-s", "rr", weights=(1,))
    size = 50_000_000
    digest, n = lab.fetch_sha256(lab.url(VIP, f"/bytes/{size}"), timeout=120)
    assert n == size and digest == servers.pattern_sha256(size)
    sent, received = lab.post_pattern(lab.url(VIP, "/sha256"), size, timeout=120)
    assert received == sent


def test_no_available_destination_refuses_the_connection(lab, director):
    """ip_vs_leave(): ICMP port unreachable, so curl sees 'connection refused' at once."""
    add_service(director, lab, "-s", "rr", weights=(0, 0, 0))
    probe = ("import socket\n"
             "try:\n"
             f"    socket.create_connection(('{VIP}', 80), timeout=5)\n"
             "except ConnectionRefusedError:\n"
             "    print('refused')\n"
             "except OSError as e:\n"
             "    print(type(e).__name__)\n")
    result = lab.run("client", [sys.executable, "-c", probe], capture_output=True, text=True,
                     timeout=15)
    assert result.stdout.strip() == "refused"


def test_malformed_packets_are_counted_and_dropped_while_service_goes_on(lab, director):
    add_service(director, lab, "-s", "rr")
    add_service(director, lab, "-s", "rr", proto="-u", port=53)
    before = director.status()["drops"]
    junk = (
        "from scapy.all import IP, TCP, UDP, Raw, raw, send\n"
        f"t = raw(IP(dst='{VIP}')/TCP(dport=80, flags='S'))\n"
        "p = IP(t[:20]); p.len = 32; p.chksum = None\n"  # TCP header cut to 12 bytes
        "send(IP(raw(p) + t[20:32]), verbose=0)\n"
        f"send(IP(dst='{VIP}')/UDP(dport=53, len=200)/Raw(b'x' * 10), verbose=0)\n"
    )
    lab.run("client", [sys.executable, "-c", junk], check=True, timeout=60,
            capture_output=True)
    after = director.status()["drops"]
    assert sum(after.values()) - sum(before.values()) == 2
    assert get(lab) in {"rs1", "rs2", "rs3"}


def test_fwmark_service_uses_the_mark_set_by_the_users_own_rule(lab, director):
    ns = lab.ns("director")
    rule = ["PREROUTING", "-d", f"{VIP}/32", "-p", "tcp", "--dport",
            "8080", "-j", "MARK", "--set-mark", "7"]
    subprocess.run(["ip", "netns", "exec", ns, "iptables", "-t", "mangle", "-I", *rule],
                   check=True)
    try:
        director.adm("-A", "-f", "7", "-s", "rr")
        for rs in lab.real_server_list():
            director.adm("-a", "-f", "7", "-r", f"{rs['addr']}:80", "-m")
        answers = {lab.curl(lab.url(VIP, port=8080)).strip() for _ in range(3)}
        assert answers == {"rs1", "rs2", "rs3"}
        assert "FWM  7 rr" in director.adm("-L", "-n").stdout
    finally:
        subprocess.run(["ip", "netns", "exec", ns, "iptables", "-t", "mangle", "-D", *rule],
                       check=False)


def test_ipv6_nat_service(lab, director):
    director.adm("-A", "-t", f"[{VIP6}]:80", "-s", "rr")
    for rs in lab.real_server_list():
        director.adm("-a", "-t", f"[{VIP6}]:80", "-r", f"[{rs['addr6']}]:80", "-m")
    answers = [get(lab, lab.client_addrs6[0], vip=VIP6) for _ in range(3)]
    assert answers == ["rs3", "rs2", "rs1"]


def test_sysctl_names_and_defaults(director):
    assert director.sysctl("net.ipv4.vs.conn_reuse_mode") == "net.ipv4.vs.conn_reuse_mode = 1\n"
    director.sysctl("net.ipv4.vs.expire_nodest_conn=1")
    assert director.sysctl("expire_nodest_conn").endswith("= 1\n")


def test_failed_pyvsadm_command_changes_nothing(lab, director):
    add_service(director, lab, "-s", "rr")
    before = director.adm("-S", "-n").stdout
    bad = director.adm("-a", "-t", f"{VIP}:80", "-r", "198.18.2.11:80", "-m", check=False)
    assert bad.returncode != 0 and "exists" in bad.stderr
    assert director.adm("-S", "-n").stdout == before


def test_pyvsadm_without_a_director_fails_clearly(lab):
    result = lab.run("client", [sys.executable, "-m", "pyvs.engine.pyvsadm", "-L", "-n"],
                     capture_output=True, text=True, timeout=10,
                     env={})
    assert result.returncode == 1 and "pyvs run" in result.stderr


def test_plumbing_is_removed_on_stop_and_after_a_crash(nat_lab_factory):
    lab = nat_lab_factory(real_servers=1, clients=1)
    ns = lab.ns("director")

    def table() -> str:
        """pyvs's nftables table in the director namespace ("" when there is none)."""
        return subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "table", "inet",
                               "pyvs"], capture_output=True, text=True).stdout

    proc = DirectorProcess(ns).start()
    assert "queue num 20601 bypass" in table()
    proc.stop()
    assert table() == ""
    proc = DirectorProcess(ns).start()
    proc.adm("-A", "-t", f"{VIP}:80", "-s", "rr")
    proc.adm("-a", "-t", f"{VIP}:80", "-r", "198.18.2.11:80", "-m")
    proc.proc.kill()  # a crash: nothing is cleaned up
    proc.proc.wait(5)
    assert "goto to_queue" in table()
    # with the queue's bypass flag the kernel answers for the VIP while no director runs
    assert lab.run("client", ["curl", "-sS", "--max-time", "3", lab.url(VIP)],
                   capture_output=True, timeout=10).returncode == 7
    with DirectorProcess(ns) as again:  # the next start cleans up and works
        assert "goto to_queue" not in table()
        again.adm("-A", "-t", f"{VIP}:80", "-s", "rr")
        again.adm("-a", "-t", f"{VIP}:80", "-r", "198.18.2.11:80", "-m")
        assert lab.curl(lab.url(VIP)).strip() == "rs1"
    assert table() == ""
