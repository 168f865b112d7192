"""`pyvs run --io xdp` in the labs: the same behaviour as NFQUEUE and the ring.

The NAT lab's director has a veth towards the clients (native XDP) and a bridge
towards the real servers (generic XDP, with pass-through programs on its veth
ports): both kinds of attachment are exercised.  Nothing outside the director is
tuned: clients and real servers keep the kernel's default offloads, so the director
sees CHECKSUM_PARTIAL frames and must complete their checksums (engine/io/xdp.py),
and the senders' segmentation offload must be kept from handing it super-frames.
"""

from __future__ import annotations

import subprocess

import pytest

from engine.lab import DrLab, NatLab, TunLab, servers
from engine.runner import DirectorError, DirectorProcess
from tests.labhelp import add_service

pytestmark = pytest.mark.lab

VIP = NatLab.VIP
def xdp_programs(ns: str) -> str:
    out = subprocess.run(["ip", "netns", "exec", ns, "ip", "-d", "link", "show"],
                         capture_output=True, text=True, check=True).stdout
    return "\n".join(line for line in out.splitlines() if "prog/xdp" in line)


@pytest.fixture(scope="module")
def lab(lab_env):
    lab = NatLab(real_servers=3, clients=3, start_servers=True)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def xdp_proc(lab):
    with DirectorProcess(lab.ns("director"), args=("--io", "xdp"),
                         log_path=lab.state_dir / "pyvs.log") as proc:
        yield proc


@pytest.fixture
def director(xdp_proc):
    xdp_proc.adm("-C")
    yield xdp_proc
    xdp_proc.adm("-C")


def test_rr_thirty_requests_land_ten_each_in_kernel_order(lab, director):
    add_service(director, lab, "-s", "rr")
    before = director.status()["ring"]
    answers = [lab.curl(lab.url(VIP)).strip() for _ in range(30)]
    assert answers[:3] == ["rs3", "rs2", "rs1"]
    assert {n: answers.count(n) for n in ("rs1", "rs2", "rs3")} == {
        "rs1": 10, "rs2": 10, "rs3": 10}
    after = director.status()["ring"]
    assert after["ring-forward"] - before["ring-forward"] >= 30 * 4  # AF_XDP carried it
    # small batches go one frame at a time through the per-packet director
    assert after["fast"] + after["slow"] - before["fast"] - before["slow"] >= 30 * 4
    assert "prog/xdp" in xdp_programs(director.ns)


def test_udp_service_balances_datagrams_from_several_source_ports(lab, director):
    add_service(director, lab, "-s", "rr", proto="-u", port=53)
    replies = [lab.udp_query(VIP, 53, "who", sport=20000 + n).strip() for n in range(6)]
    assert sorted(replies) == ["rs1", "rs1", "rs2", "rs2", "rs3", "rs3"]
    again = [lab.udp_query(VIP, 53, "who", sport=20000 + n).strip() for n in range(6)]
    assert again == replies


def test_fifty_megabytes_arrive_intact_both_ways_with_partial_checksums(lab, director):
    add_service(director, lab, "-s", "rr", weights=(1,))
    size = 50_000_000
    digest, n = lab.fetch_sha256(lab.url(VIP, f"/bytes/{size}"), timeout=120)
    assert n == size and digest == servers.pattern_sha256(size)
    sent, received = lab.post_pattern(lab.url(VIP, "/sha256"), size, timeout=120)
    assert received == sent
    st = director.status()["ring"]
    assert st["ring-truncated"] == 0
    assert st["xdp-mode"] in ("native", "generic")


def test_stats_count_what_the_xdp_port_forwarded(lab, director):
    add_service(director, lab, "-s", "rr", proto="-u", port=53)
    payload = "y" * 12
    for n in range(9):
        assert lab.udp_query(VIP, 53, payload, sport=22000 + n).strip()
    stats = director.adm("-L", "-n", "-u", f"{VIP}:53", "--stats", "--exact").stdout
    line = next(row for row in stats.splitlines() if row.startswith("UDP"))
    conns, inpkts, outpkts, inbytes, _outbytes = (int(x) for x in line.split()[2:7])
    assert (conns, inpkts, outpkts) == (9, 9, 9)
    assert inbytes == 9 * (20 + 8 + len(payload))


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


def test_xdp_programs_are_detached_on_stop_and_the_kernel_has_the_traffic_again(
        nat_lab_factory):
    lab = nat_lab_factory(real_servers=1, clients=1)
    ns = lab.ns("director")
    with DirectorProcess(ns, args=("--io", "xdp")) as proc:
        proc.adm("-A", "-t", f"{VIP}:80", "-s", "rr")
        proc.adm("-a", "-t", f"{VIP}:80", "-r", "198.18.2.11:80", "-m")
        assert xdp_programs(ns)
        assert lab.curl(lab.url(VIP)).strip() == "rs1"
    assert xdp_programs(ns) == ""
    # nothing of pyvs is left: the VIP is the director's own address again, port 80 closed
    r = lab.run("client", ["curl", "-s", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}",
                           lab.url(VIP)], capture_output=True, text=True)
    assert r.stdout.strip() == "000"


@pytest.mark.parametrize("cls,method", [(DrLab, "-g"), (TunLab, "-i")], ids=["dr", "tun"])
def test_direct_routing_and_tunnelling_balance_in_kernel_order(lab_env, cls, method):
    lab = cls(real_servers=3, clients=3, start_servers=True)
    try:
        lab.up()
        with DirectorProcess(lab.ns("director"), args=("--io", "xdp"),
                             log_path=lab.state_dir / "pyvs.log") as proc:
            proc.adm("-A", "-t", f"{lab.VIP}:80", "-s", "rr")
            for rs in lab.real_server_list():
                proc.adm("-a", "-t", f"{lab.VIP}:80", "-r", f"{rs['addr']}:80", method)
            clients = lab.client_addrs
            answers = [lab.curl(lab.url(), client_addr=clients[n % 3]).strip()
                       for n in range(9)]
            assert answers == ["rs3", "rs2", "rs1"] * 3
            assert proc.status()["ring"]["ring-mine"] >= 9
    finally:
        lab.down()


def test_overload_is_shed_in_the_kernel_and_service_continues(lab_env):
    """Offered far more than it can forward, the XDP port loses frames at the socket
    (counted by the kernel), keeps forwarding a large share, and answers every probe
    right after.  Bench topology (client -> director -> sink), raw-frame generator."""
    from bench import tools, traffic
    from bench.__main__ import configure_pyvs
    from engine.lab.benchtopo import ECHO_PORT, FLOOD_PORT, BenchLab

    built = tools.build_all()
    with BenchLab(tools=built) as bench:
        gen = traffic.Gen(built["gen"], raw={
            "ifname": bench.CLIENT_IF, "src": bench.CLIENT,
            "dmac": bench.mac("director", bench.DIR_IN_IF)})
        with DirectorProcess(bench.ns("director"), args=("--io", "xdp")) as d:
            configure_pyvs(d, bench, "m")
            flood = traffic.flat_out(bench, gen, bench.VIP, FLOOD_PORT, duration=2.0)
            assert flood["loss"] > 0.1  # it really could not keep up
            st = d.status()["ring"]
            lost_in_kernel = sum(s["rx_dropped"] + s["rx_ring_full"]
                                 for s in st["sockets"].values())
            assert lost_in_kernel > 0
            assert st["ring-forward"] >= flood["received"]  # what arrived, pyvs forwarded
            for _ in range(3):
                probe = traffic.pingpong(bench, gen.path, bench.VIP, ECHO_PORT, count=100,
                                         duration=1.0)
                if probe["lost"] == 0:
                    break
            assert probe["lost"] == 0 and probe["p50_us"] > 0, d.status()["ring"]


def test_ipv6_nat_balances_and_carries_a_megabyte_intact(lab, director):
    vip = f"[{lab.VIP6}]:80"
    director.adm("-A", "-t", vip, "-s", "rr")
    for rs in lab.real_server_list():
        director.adm("-a", "-t", vip, "-r", f"[{rs['addr6']}]:80", "-m")
    answers = [lab.curl(lab.url(lab.VIP6)).strip() for _ in range(6)]
    assert answers == ["rs3", "rs2", "rs1"] * 2
    digest, n = lab.fetch_sha256(lab.url(lab.VIP6, "/bytes/1000000"), timeout=60)
    assert n == 1_000_000 and digest == servers.pattern_sha256(1_000_000)


def test_a_killed_xdp_director_leaves_nothing_that_outlives_the_next_start(nat_lab_factory):
    """SIGKILL leaves the XDP programs attached (they hold the services' frames for
    sockets that are gone); the next `pyvs run`, in any mode, removes them and serves."""
    lab = nat_lab_factory(real_servers=1, clients=1)
    ns = lab.ns("director")
    proc = DirectorProcess(ns, args=("--io", "xdp")).start()
    proc.adm("-A", "-t", f"{VIP}:80", "-s", "rr")
    proc.adm("-a", "-t", f"{VIP}:80", "-r", "198.18.2.11:80", "-m")
    assert lab.curl(lab.url(VIP)).strip() == "rs1"
    proc.proc.kill()  # a crash: nothing is cleaned up
    proc.proc.wait(5)
    assert "prog/xdp" in xdp_programs(ns)
    with DirectorProcess(ns) as again:  # the default NFQUEUE path
        assert xdp_programs(ns) == ""
        again.adm("-A", "-t", f"{VIP}:80", "-s", "rr")
        again.adm("-a", "-t", f"{VIP}:80", "-r", "198.18.2.11:80", "-m")
        assert lab.curl(lab.url(VIP)).strip() == "rs1"


def test_real_servers_behind_a_bridge_keep_their_default_offloads(nat_lab_factory):
    """Nothing tuned outside the director: real servers reach it through a bridge with
    TSO on (the kernel's defaults), yet the XDP port only ever sees MTU-sized frames
    (pyvs puts a pass-through XDP program on the bridge's veth ports, which makes
    their peers segment before sending) and 5 MB go through intact both ways."""
    lab = nat_lab_factory(real_servers=1, clients=1)
    with DirectorProcess(lab.ns("director"), args=("--io", "xdp")) as d:
        add_service(d, lab, "-s", "rr", weights=(1,))
        size = 5_000_000
        digest, n = lab.fetch_sha256(lab.url(VIP, f"/bytes/{size}"), timeout=60)
        assert n == size and digest == servers.pattern_sha256(size)
        sent, received = lab.post_pattern(lab.url(VIP, "/sha256"), size, timeout=60)
        assert received == sent
        dropped = sum(s["rx_dropped"] for s in d.status()["ring"]["sockets"].values())
        assert dropped == 0


def test_an_mtu_too_large_for_af_xdp_is_refused_with_a_clear_error(nat_lab_factory):
    lab = nat_lab_factory(real_servers=1, clients=1, start_servers=False)
    ns = lab.ns("director")
    subprocess.run(["ip", "-n", ns, "link", "set", lab.DIR_CLIENT_IF, "mtu", "4000"],
                   check=True)
    proc = DirectorProcess(ns, args=("--io", "xdp"))
    with pytest.raises(DirectorError, match=r"MTU 4000.*--io ring"):
        proc.start()
    proc.stop()
    assert xdp_programs(ns) == ""  # nothing left behind
