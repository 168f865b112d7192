"""`pyvs run --io xdp`: what is particular to the XDP port.  The behaviour it shares
with the ring port (balancing, UDP, stats, 50 MB with CHECKSUM_PARTIAL frames, IPv6,
fwmark, programs removed on stop and after a crash) is tested for both in
test_fast_ports_lab.py.
"""

from __future__ import annotations

import subprocess

import pytest
from labhelp import add_service, answers_every_probe

from pyvs.engine.lab import DrLab, NatLab, TunLab, servers
from pyvs.engine.runner import DirectorError, DirectorProcess

pytestmark = pytest.mark.lab

VIP = NatLab.VIP


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
            assert proc.status()["ports"]["xdp"]["mine"] >= 9
    finally:
        lab.down()


def test_overload_is_shed_in_the_kernel_and_service_continues(lab_env):
    """Offered far more than it can forward, the XDP port loses frames at the socket
    (counted by the kernel), keeps forwarding a large share, and answers every probe
    right after.  Bench topology (client -> director -> sink), raw-frame generator."""
    from pyvs.bench import tools, traffic
    from pyvs.bench.variants import configure_pyvs
    from pyvs.engine.lab.benchtopo import FLOOD_PORT, BenchLab

    built = tools.build_all()
    with BenchLab(tools=built) as bench:
        gen = traffic.raw_gen(bench, built["gen"])
        with DirectorProcess(bench.ns("director"), args=("--io", "xdp")) as d:
            configure_pyvs(d, bench, "m")
            flood = traffic.flat_out(bench, gen, bench.VIP, FLOOD_PORT, duration=2.0)
            # it could not keep up (how far depends on the other load on this VM; the
            # point is where the excess went: lost at the socket, counted by the kernel)
            assert flood["loss"] > 0
            st = d.status()["ports"]["xdp"]
            lost_in_kernel = sum(s["rx_dropped"] + s["rx_ring_full"]
                                 for s in st["sockets"].values())
            assert lost_in_kernel > 0
            assert st["forward"] >= flood["received"]  # what arrived, pyvs forwarded
            probe = answers_every_probe(bench, gen.path)
            assert probe["lost"] == 0 and probe["p50_us"] > 0, d.status()["ports"]["xdp"]


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
        dropped = sum(s["rx_dropped"] for s in d.status()["ports"]["xdp"]["sockets"].values())
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
    out = subprocess.run(["ip", "-n", ns, "-d", "link", "show"], capture_output=True,
                         text=True, check=True).stdout
    assert "prog/xdp" not in out  # nothing left behind
