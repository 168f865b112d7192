"""`pyvs run --io ring` and `--io xdp` in the NAT lab: the same behaviour as NFQUEUE.

Every test here runs once per fast port.  Nothing outside the director is tuned:
clients and real servers keep the kernel's default offloads, so the director sees
CHECKSUM_PARTIAL frames (completed by the port) and must keep local senders'
segmentation-offload super-frames away (engine/io/steer.py).  The director's
client side is a veth (native XDP), its real-server side a bridge (generic XDP with
pass-through programs on the ports), so both kinds of attachment are exercised.
What is particular to one port is in test_ring_lab.py / test_xdp_lab.py.
"""

from __future__ import annotations

import subprocess

import pytest
from labhelp import add_service

from pyvs.engine.lab import NatLab, servers
from pyvs.engine.runner import DirectorProcess

pytestmark = pytest.mark.lab

VIP = NatLab.VIP
PORTS = ["ring", "xdp"]


def fast_plumbing(ns: str, io: str) -> str:
    """What the port installed in the director namespace ("" when nothing): the
    nftables netdev table of the ring, the XDP programs of the XDP port."""
    if io == "ring":
        out = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "tables"],
                             capture_output=True, text=True, check=True).stdout
        return "\n".join(line for line in out.splitlines() if line == "table netdev pyvs")
    out = subprocess.run(["ip", "netns", "exec", ns, "ip", "-d", "link", "show"],
                         capture_output=True, text=True, check=True).stdout
    return "\n".join(line for line in out.splitlines() if "prog/xdp" in line)


@pytest.fixture(scope="module")
def lab(nat_lab_3x3):
    return nat_lab_3x3


@pytest.fixture(scope="module", params=PORTS)
def port_proc(request, lab):
    with DirectorProcess(lab.ns("director"), args=("--io", request.param),
                         log_path=lab.state_dir / f"pyvs-{request.param}.log") as proc:
        yield proc


@pytest.fixture
def director(port_proc):
    port_proc.adm("-C")
    yield port_proc
    port_proc.adm("-C")


def test_rr_thirty_requests_land_ten_each_in_kernel_order(lab, director):
    add_service(director, lab, "-s", "rr")
    before = director.status()["ports"][director.args[1]]
    answers = [lab.curl(lab.url(VIP)).strip() for _ in range(30)]
    assert answers[:3] == ["rs3", "rs2", "rs1"]
    assert {n: answers.count(n) for n in ("rs1", "rs2", "rs3")} == {
        "rs1": 10, "rs2": 10, "rs3": 10}
    after = director.status()["ports"][director.args[1]]
    assert after["forward"] - before["forward"] >= 30 * 4  # the port carried it
    # small batches go one frame at a time through the per-packet director
    assert after["fast"] + after["slow"] - before["fast"] - before["slow"] >= 30 * 4
    assert fast_plumbing(director.ns, director.args[1])  # args: ("--io", port)


def test_udp_service_balances_datagrams_from_several_source_ports(lab, director):
    add_service(director, lab, "-s", "rr", proto="-u", port=53)
    replies = [lab.udp_query(VIP, 53, "who", sport=20000 + n).strip() for n in range(6)]
    assert sorted(replies) == ["rs1", "rs1", "rs2", "rs2", "rs3", "rs3"]
    # the same flows again: established entries, same servers
    again = [lab.udp_query(VIP, 53, "who", sport=20000 + n).strip() for n in range(6)]
    assert again == replies


def test_stats_count_what_the_port_forwarded(lab, director):
    add_service(director, lab, "-s", "rr", proto="-u", port=53)
    payload = "y" * 12
    for n in range(9):
        assert lab.udp_query(VIP, 53, payload, sport=22000 + n).strip()
    stats = director.adm("-L", "-n", "-u", f"{VIP}:53", "--stats", "--exact").stdout
    line = next(row for row in stats.splitlines() if row.startswith("UDP"))
    conns, inpkts, outpkts, inbytes, _outbytes = (int(x) for x in line.split()[2:7])
    assert (conns, inpkts, outpkts) == (9, 9, 9)
    assert inbytes == 9 * (20 + 8 + len(payload))


def test_fifty_megabytes_arrive_intact_both_ways(lab, director):
    add_service(director, lab, "-s", "rr", weights=(1,))
    size = 50_000_000
    digest, n = lab.fetch_sha256(lab.url(VIP, f"/bytes/{size}"), timeout=120)
    assert n == size and digest == servers.pattern_sha256(size)
    sent, received = lab.post_pattern(lab.url(VIP, "/sha256"), size, timeout=120)
    assert received == sent
    assert director.status()["ports"][director.args[1]]["truncated"] == 0


def test_ipv6_nat_balances_and_carries_a_megabyte_intact(lab, director):
    vip = f"[{lab.VIP6}]:80"
    director.adm("-A", "-t", vip, "-s", "rr")
    for rs in lab.real_server_list():
        director.adm("-a", "-t", vip, "-r", f"[{rs['addr6']}]:80", "-m")
    answers = [lab.curl(lab.url(lab.VIP6)).strip() for _ in range(6)]
    assert answers == ["rs3", "rs2", "rs1"] * 2
    digest, n = lab.fetch_sha256(lab.url(lab.VIP6, "/bytes/1000000"), timeout=60)
    assert n == 1_000_000 and digest == servers.pattern_sha256(1_000_000)


def test_fwmark_service_still_works_through_nfqueue(lab, director):
    ns = lab.ns("director")
    rule = ["PREROUTING", "-d", f"{VIP}/32", "-p", "tcp", "--dport", "8080", "-j", "MARK",
            "--set-mark", "7"]
    subprocess.run(["ip", "netns", "exec", ns, "iptables", "-t", "mangle", "-I", *rule],
                   check=True)
    try:
        director.adm("-A", "-f", "7", "-s", "rr")
        for rs in lab.real_server_list():
            director.adm("-a", "-f", "7", "-r", f"{rs['addr']}:80", "-m")
        answers = {lab.curl(lab.url(VIP, port=8080)).strip() for _ in range(3)}
        assert answers == {"rs1", "rs2", "rs3"}
    finally:
        subprocess.run(["ip", "netns", "exec", ns, "iptables", "-t", "mangle", "-D", *rule],
                       check=False)


@pytest.mark.parametrize("io", PORTS)
def test_plumbing_is_removed_on_stop_and_the_kernel_has_the_traffic_again(
        nat_lab_factory, io):
    lab = nat_lab_factory(real_servers=1, clients=1)
    ns = lab.ns("director")
    with DirectorProcess(ns, args=("--io", io)) as proc:
        proc.adm("-A", "-t", f"{VIP}:80", "-s", "rr")
        proc.adm("-a", "-t", f"{VIP}:80", "-r", "198.18.2.11:80", "-m")
        assert fast_plumbing(ns, io)
        assert lab.curl(lab.url(VIP)).strip() == "rs1"
    assert fast_plumbing(ns, io) == ""
    # nothing of pyvs is left: the VIP is the director's own address again, port 80 closed
    r = lab.run("client", ["curl", "-s", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}",
                           lab.url(VIP)], capture_output=True, text=True)
    assert r.stdout.strip() == "000"


@pytest.mark.parametrize("io", PORTS)
def test_a_killed_director_leaves_nothing_that_outlives_the_next_start(nat_lab_factory, io):
    """SIGKILL leaves the port's plumbing in place (it keeps taking the services'
    packets from the kernel); the next `pyvs run`, in any mode, removes it and serves."""
    lab = nat_lab_factory(real_servers=1, clients=1)
    ns = lab.ns("director")
    proc = DirectorProcess(ns, args=("--io", io)).start()
    proc.adm("-A", "-t", f"{VIP}:80", "-s", "rr")
    proc.adm("-a", "-t", f"{VIP}:80", "-r", "198.18.2.11:80", "-m")
    proc.proc.kill()  # a crash: nothing is cleaned up
    proc.proc.wait(5)
    assert fast_plumbing(ns, io)
    with DirectorProcess(ns) as again:  # the default NFQUEUE path
        assert fast_plumbing(ns, io) == ""
        again.adm("-A", "-t", f"{VIP}:80", "-s", "rr")
        again.adm("-a", "-t", f"{VIP}:80", "-r", "198.18.2.11:80", "-m")
        assert lab.curl(lab.url(VIP)).strip() == "rs1"
