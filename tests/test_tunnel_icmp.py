"""Errors from routers beyond the director about its tunnel packets (ip_vs_in_icmp's
tunnel case, ipvs_udp_decap, ipvs_gre_decap): for IPIP, GUE and GRE real servers the
director learns the path MTU and relays frag-needed to the client with the MTU minus 20;
an error that is not about a known tunnel of that type, or that was not addressed to
the director, is left to the kernel.  The tunnel packets are built by the director
itself (the forwarder's own encapsulation), the errors by scapy."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, IPerror, TCPerror
from scapy.packet import Raw

from pyvs.engine.clock import VirtualClock
from pyvs.engine.director import Director
from pyvs.engine.model import (
    FWD_TUNNEL,
    TUN_TYPE_GRE,
    TUN_TYPE_GUE,
    TUN_TYPE_IPIP,
    DestSpec,
    ServiceSpec,
    pack_addr,
)
from pyvs.engine.neigh import Route
from pyvs.engine.verdict import ACCEPT, DROP

VIP, RS, CLIENT, DIRECTOR = "198.18.1.1", "198.18.3.11", "198.18.0.10", "198.18.2.1"
ROUTER = "198.18.2.254"


class Routes:
    """One route per address; the director's own address is local."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self):
        return self.now

    def route(self, addr):
        local = addr == pack_addr(DIRECTOR)
        return Route(addr, local, 7, "eth1", pack_addr(DIRECTOR), None, 1500,
                     b"\x02\0\0\0\0\x01", 1e9)

    def mac(self, route, addr):
        return b"\x02\0\0\0\0\x11"

    def poll(self):
        return set()


def director(tun_type: int, tun_port: int = 0, tun_flags: int = 0) -> Director:
    d = Director(clock=VirtualClock(), routes=Routes())
    key = d.services.add_service(ServiceSpec(2, 6, pack_addr(VIP), 80, scheduler="rr")).key
    d.services.add_dest(key, DestSpec(pack_addr(RS), 80, fwd=FWD_TUNNEL, weight=1,
                                      tun_type=tun_type, tun_port=tun_port,
                                      tun_flags=tun_flags))
    return d


def tunnel_packet(d: Director) -> bytes:
    """The director's own tunnel packet for a client's SYN (its outbox)."""
    syn = IP(src=CLIENT, dst=VIP, flags="DF") / TCP(sport=40000, dport=80, flags="S")
    d.process([bytearray(bytes(syn))])
    (outer,) = d.outbox
    d.outbox.clear()
    return outer


def frag_needed(outer: bytes, to: str = DIRECTOR, mtu: int = 1400) -> bytearray:
    err = IP(src=ROUTER, dst=to) / ICMP(type=3, code=4, nexthopmtu=mtu) / Raw(outer[:96])
    return bytearray(bytes(err))


@pytest.mark.parametrize("tun", [(TUN_TYPE_IPIP, 0, 0), (TUN_TYPE_GUE, 6080, 0),
                                 (TUN_TYPE_GUE, 6080, 1), (TUN_TYPE_GRE, 0, 0),
                                 (TUN_TYPE_GRE, 0, 1)])
def test_frag_needed_about_a_tunnel_packet_reaches_the_client(tun):
    d = director(*tun)
    outer = tunnel_packet(d)
    assert d.process([frag_needed(outer)]) == [DROP]
    (relayed,) = d.outbox
    r = IP(relayed)
    assert (r.src, r.dst) == (VIP, CLIENT)  # from the VIP, to the client
    assert (r[ICMP].type, r[ICMP].code, r[ICMP].nexthopmtu) == (3, 4, 1380)
    quoted = r[IPerror]
    assert (quoted.src, quoted.dst, quoted[TCPerror].sport) == (CLIENT, VIP, 40000)
    # and the tunnel's path MTU is learned: the next full-size packet gets it
    assert d.ctx.pmtu.get(pack_addr(RS), 1500, d.clock.now()) == 1400


@pytest.mark.parametrize("tun", [(TUN_TYPE_GUE, 6080, 0), (TUN_TYPE_GRE, 0, 0)])
def test_errors_not_addressed_to_the_director_are_not_relayed(tun):
    d = director(*tun)
    outer = tunnel_packet(d)
    assert d.process([frag_needed(outer, to="198.18.0.99")]) == [ACCEPT]
    assert d.outbox == []


def test_an_error_about_another_tunnel_type_is_not_ours():
    """A GUE packet quoted where the real server is IPIP (or the port differs): the
    kernel's decap finds no tunnel of that type and leaves the error alone."""
    gue = director(TUN_TYPE_GUE, 6080)
    outer = tunnel_packet(gue)
    ipip = director(TUN_TYPE_IPIP)
    tunnel_packet(ipip)
    assert ipip.process([frag_needed(outer)]) == [ACCEPT]
    other_port = director(TUN_TYPE_GUE, 6081)
    tunnel_packet(other_port)
    assert other_port.process([frag_needed(outer)]) == [ACCEPT]
    assert ipip.outbox == [] and other_port.outbox == []
