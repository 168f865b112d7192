"""`pyvs run --io ring` (and `--workers 2`) in the NAT lab: the same behaviour as NFQUEUE.

Nothing outside the director is tuned: clients and real servers keep the kernel's
default offloads.  The director turns GRO off on its ring interfaces and puts
pass-through XDP programs on its veths and bridge ports so that local senders segment
before sending (a ring frame cannot hold a 64 KiB GSO super-frame), and completes the
CHECKSUM_PARTIAL frames those senders hand over.
"""

from __future__ import annotations

import subprocess

import pytest

from engine.lab import NatLab, servers
from engine.runner import DirectorProcess
from tests.labhelp import add_service

pytestmark = pytest.mark.lab

VIP = NatLab.VIP
@pytest.fixture(scope="module")
def lab(lab_env):
    lab = NatLab(real_servers=3, clients=3, start_servers=True)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def ring_proc(lab):
    with DirectorProcess(lab.ns("director"), args=("--io", "ring")) as proc:  # always stopped
        yield proc


@pytest.fixture
def director(ring_proc):
    ring_proc.adm("-C")
    yield ring_proc
    ring_proc.adm("-C")


def nft(ns) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "tables"],
                          capture_output=True, text=True, check=True).stdout


def test_rr_thirty_requests_land_ten_each_in_kernel_order(lab, director):
    add_service(director, lab, "-s", "rr")
    before = director.status()["ring"]
    answers = [lab.curl(lab.url(VIP)).strip() for _ in range(30)]
    assert answers[:3] == ["rs3", "rs2", "rs1"]
    assert {n: answers.count(n) for n in ("rs1", "rs2", "rs3")} == {
        "rs1": 10, "rs2": 10, "rs3": 10}
    after = director.status()["ring"]
    assert after["ring-forward"] - before["ring-forward"] >= 30 * 4  # the ring carried it
    # small batches go one frame at a time through the per-packet director
    assert after["fast"] + after["slow"] - before["fast"] - before["slow"] >= 30 * 4
    assert "netdev pyvs" in nft(director.ns)


def test_udp_service_balances_datagrams_from_several_source_ports(lab, director):
    add_service(director, lab, "-s", "rr", proto="-u", port=53)
    replies = [lab.udp_query(VIP, 53, "who", sport=20000 + n).strip() for n in range(6)]
    assert sorted(replies) == ["rs1", "rs1", "rs2", "rs2", "rs3", "rs3"]
    # the same flows again: established entries, fast path, same servers
    again = [lab.udp_query(VIP, 53, "who", sport=20000 + n).strip() for n in range(6)]
    assert again == replies


def test_fifty_megabytes_arrive_intact_both_ways(lab, director):
    add_service(director, lab, "-s", "rr", weights=(1,))
    size = 50_000_000
    digest, n = lab.fetch_sha256(lab.url(VIP, f"/bytes/{size}"), timeout=120)
    assert n == size and digest == servers.pattern_sha256(size)
    sent, received = lab.post_pattern(lab.url(VIP, "/sha256"), size, timeout=120)
    assert received == sent
    assert director.status()["ring"]["ring-truncated"] == 0


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


def test_ring_plumbing_is_removed_on_stop(nat_lab_factory):
    lab = nat_lab_factory(real_servers=1, clients=1)
    ns = lab.ns("director")
    with DirectorProcess(ns, args=("--io", "ring")) as proc:
        proc.adm("-A", "-t", f"{VIP}:80", "-s", "rr")
        proc.adm("-a", "-t", f"{VIP}:80", "-r", "198.18.2.11:80", "-m")
        assert "netdev pyvs" in nft(ns)
        assert lab.curl(lab.url(VIP)).strip() == "rs1"
    assert "pyvs" not in nft(ns)


def test_two_workers_balance_and_stats_show_totals(nat_lab_factory):
    lab = nat_lab_factory(real_servers=3, clients=3)
    with DirectorProcess(lab.ns("director"), args=("--io", "ring", "--workers", "2")) as d:
        add_service(d, lab, "-s", "rr", proto="-u", port=53)
        add_service(d, lab, "-s", "wlc")
        payload = "x" * 10
        replies = [lab.udp_query(VIP, 53, payload, sport=21000 + n).strip() for n in range(24)]
        assert set(replies) == {"rs1", "rs2", "rs3"}
        answers = [lab.curl(lab.url(VIP), client_addr=lab.client_addrs[n % 3]).strip()
                   for n in range(12)]
        assert set(answers) == {"rs1", "rs2", "rs3"}
        import time

        time.sleep(0.5)  # workers publish their counters every 0.1 s
        stats = d.adm("-L", "-n", "-u", f"{VIP}:53", "--stats", "--exact").stdout
        line = next(row for row in stats.splitlines() if row.startswith("UDP"))
        conns, inpkts, outpkts, inbytes, outbytes = (int(x) for x in line.split()[2:7])
        assert (conns, inpkts, outpkts) == (24, 24, 24)
        assert inbytes == 24 * (20 + 8 + len(payload))
        st = d.status()
        assert st["workers"] == 2
        ring = st["ring"]
        assert ring["ring-forward"] > 0



def test_ring_keeps_serving_after_a_flood_it_cannot_keep_up_with(lab_env):
    """Overload sheds whole blocks; afterwards the ring and the kernel must still agree on
    which blocks are whose (a desynchronised ring stops receiving for good).
    Uses the bench topology (client -> director -> sink) and its raw-frame generator."""
    from bench import tools, traffic
    from bench.__main__ import configure_pyvs
    from engine.lab.benchtopo import ECHO_PORT, FLOOD_PORT, BenchLab

    built = tools.build_all()
    with BenchLab(tools=built) as bench:
        gen = traffic.Gen(built["gen"], raw={
            "ifname": bench.CLIENT_IF, "src": bench.CLIENT,
            "dmac": bench.mac("director", bench.DIR_IN_IF)})
        with DirectorProcess(bench.ns("director"), args=("--io", "ring")) as d:
            configure_pyvs(d, bench, "m")
            # three rounds: the second flood used to leave the ring silent for good
            for _round in range(3):
                flood = traffic.flat_out(bench, gen, bench.VIP, FLOOD_PORT, duration=2.0)
                assert flood["loss"] > 0.2  # it really could not keep up
                for _ in range(3):  # serving again within a few seconds, every probe answered
                    probe = traffic.pingpong(bench, gen.path, bench.VIP, ECHO_PORT, count=100,
                                             duration=1.0)
                    if probe["lost"] == 0:
                        break
                assert probe["lost"] == 0 and probe["p50_us"] > 0, d.status()["ring"]


def test_a_killed_ring_director_leaves_no_table_behind_for_the_next_start(nat_lab_factory):
    lab = nat_lab_factory(real_servers=1, clients=1)
    ns = lab.ns("director")
    proc = DirectorProcess(ns, args=("--io", "ring")).start()
    proc.adm("-A", "-t", f"{VIP}:80", "-s", "rr")
    proc.adm("-a", "-t", f"{VIP}:80", "-r", "198.18.2.11:80", "-m")
    proc.proc.kill()  # a crash: the netdev table keeps dropping the VIP's packets
    proc.proc.wait(5)
    assert "netdev pyvs" in nft(ns)
    with DirectorProcess(ns) as again:  # the default NFQUEUE path
        assert "pyvs" not in nft(ns)
        again.adm("-A", "-t", f"{VIP}:80", "-s", "rr")
        again.adm("-a", "-t", f"{VIP}:80", "-r", "198.18.2.11:80", "-m")
        assert lab.curl(lab.url(VIP)).strip() == "rs1"
