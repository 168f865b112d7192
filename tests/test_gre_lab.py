"""GRE tunnelling end to end: `pyvs run` encapsulates in GRE (ip_vs_tunnel_xmit with
--tun-type gre), `pyvs realserver` on each real server decapsulates, real TCP crosses
intact both ways, and the tunnel packets on the wire are GRE, not IPIP.

A TunLab with ``decap="pyvs"`` (every real server runs `pyvs realserver`, which takes
IPIP, GRE and GUE); the router between director and real servers counts the tunnel
packets by protocol with iptables rules in its own namespace.
"""

from __future__ import annotations

import pytest

from pyvs.engine.lab import TunLab, servers
from pyvs.engine.runner import DirectorProcess

pytestmark = pytest.mark.lab

SIZE = 5_000_000


@pytest.fixture(scope="module")
def gre_lab(lab_env):
    lab = TunLab(real_servers=2, clients=2, start_servers=True, decap="pyvs")
    proc = None
    try:
        lab.up()
        for tool, proto in (("iptables", "47"), ("iptables", "4"), ("ip6tables", "47"),
                            ("ip6tables", "41")):  # count what crosses the router
            lab.run("router", [tool, "-A", "FORWARD", "-p", proto, "-j", "ACCEPT"],
                    check=True)
        proc = DirectorProcess(lab.ns("director"), log_path=lab.state_dir / "pyvs.log")
        proc.start()
        yield lab, proc
    finally:
        if proc is not None:
            proc.stop()
        lab.down()


def router_packets(lab, tool: str = "iptables") -> dict[str, int]:
    """Packets the router forwarded, by protocol number ("47" GRE, "4" / "41" IPIP)."""
    out = lab.run("router", [tool, "-L", "FORWARD", "-v", "-x", "-n"],
                  capture_output=True, text=True, check=True).stdout
    counts = {}
    for line in out.splitlines()[2:]:
        fields = line.split()
        counts[fields[3]] = int(fields[0])
    return counts


@pytest.mark.parametrize("csum", [False, True], ids=["gre", "gre-csum"])
def test_gre_tunnel_carries_real_tcp_intact(gre_lab, csum):
    lab, proc = gre_lab
    flags = ["--tun-csum"] if csum else []
    proc.adm("-C")
    vip = f"{lab.VIP}:80"
    proc.adm("-A", "-t", vip, "-s", "rr")
    for rs in lab.real_server_list():
        proc.adm("-a", "-t", vip, "-r", f"{rs['addr']}:80", "-i", "--tun-type", "gre", *flags)
    listing = proc.adm("-L", "-n", "--tun-info").stdout
    assert listing.count("gre:+c" if csum else "gre:-c") == 2, listing
    before = router_packets(lab)
    answers = [lab.curl(lab.url(), client_addr=lab.client_addrs[n % 2]).strip()
               for n in range(4)]
    assert answers == ["rs2", "rs1", "rs2", "rs1"]
    digest, n = lab.fetch_sha256(lab.url(path=f"/bytes/{SIZE}"), timeout=120)
    assert n == SIZE and digest == servers.pattern_sha256(SIZE)
    # upload: full-size segments do not fit 1500 - 20 - GRE header, so the director sends
    # frag-needed with that MTU and the client's TCP adapts
    lab.run("client", ["ip", "route", "flush", "cache"], check=True)
    sent, received = lab.post_pattern(lab.url(path="/sha256"), 2_000_000,
                                      client_addr=lab.client_addrs[1], timeout=60)
    assert received == sent
    route = lab.run("client", ["ip", "route", "get", lab.VIP], capture_output=True,
                    text=True, check=True).stdout
    assert f"mtu {1472 if csum else 1476}" in route, route
    after = router_packets(lab)
    # The client's side crosses the router in GRE: every one of the 5 connections sends at
    # least SYN, ACK, request and FIN (the download's ACK count depends on GRO and delayed
    # ACKs, so it is not counted on).
    assert after["47"] - before["47"] >= 5 * 4
    assert after["4"] == before["4"]  # and nothing in IPIP
    proc.adm("-C")


def test_gre_over_ipv6(gre_lab):
    """IPv6 service, IPv6 real servers: outer IPv6 with next header 47, GRE protocol
    0x86DD, decapsulated by pyvs realserver's IPv6 GRE socket."""
    lab, proc = gre_lab
    proc.adm("-C")
    vip = f"[{lab.VIP6}]:80"
    proc.adm("-A", "-t", vip, "-s", "rr")
    for rs in lab.real_server_list():
        proc.adm("-a", "-t", vip, "-r", f"[{rs['addr6']}]:80", "-i", "--tun-type", "gre")
    before = router_packets(lab, "ip6tables")
    answers = [lab.curl(lab.url(lab.VIP6)).strip() for _ in range(4)]
    assert answers == ["rs2", "rs1", "rs2", "rs1"]
    digest, n = lab.fetch_sha256(lab.url(lab.VIP6, path=f"/bytes/{SIZE}"), timeout=120)
    assert n == SIZE and digest == servers.pattern_sha256(SIZE)
    after = router_packets(lab, "ip6tables")
    assert after["47"] - before["47"] >= 5 * 4  # SYN, ACK, request, FIN of 5 connections
    assert after["41"] == before["41"]
    proc.adm("-C")
