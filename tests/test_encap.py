"""DR and TUN header work, checked against scapy (ip_vs_xmit.c: ip_vs_dr_xmit,
ip_vs_tunnel_xmit[_v6]).

* IPIP / IPv6 / GUE / GRE encapsulation, then decapsulation (scapy, and pyvs realserver's
  ``decapsulate``), restores the inner packet exactly, except TTL - 1 and the inner IPv4
  header checksum (recomputed).
* Outer fields: protocol / next header, source, destination, TTL = inner TTL after the
  decrement, TOS with the ECN rule, DF copied only with pmtu_disc=1, lengths, checksum.
* DR touches nothing but the destination MAC, the TTL and the IPv4 header checksum.
* The forwarders on the director's packet path (fake routes, no network): frag needed
  with the route MTU minus 20, time exceeded, neighbour queueing, local real servers.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, defragment
from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6
from scapy.layers.l2 import GRE, Ether
from scapy.packet import Raw

from pyvs.engine.clock import VirtualClock
from pyvs.engine.director import Director
from pyvs.engine.model import (
    AF_INET,
    AF_INET6,
    FWD_DROUTE,
    FWD_TUNNEL,
    TUN_TYPE_GRE,
    TUN_TYPE_GUE,
    DestSpec,
    ServiceSpec,
    pack_addr,
)
from pyvs.engine.neigh import Route
from pyvs.engine.packet import parse
from pyvs.engine.realserver import decapsulate, gre_payload
from pyvs.engine.verdict import ACCEPT, DROP
from pyvs.forwarders.dr import dr_rewrite, ethernet_frame
from pyvs.forwarders.encap import ecn_encapsulate, encapsulate, fragment_v4

addr4 = st.builds(lambda n: struct.pack("!I", 0xC6120000 | n), st.integers(0, 0x1FFFF))
addr6 = st.builds(lambda n: pack_addr("2001:db8::")[:8] + n.to_bytes(8, "big"),
                  st.integers(1, 2**64 - 1))
payloads = st.binary(max_size=300)


@st.composite
def inner_v4(draw):
    l4 = draw(st.sampled_from(["tcp", "udp", "icmp"]))
    pkt = IP(src=".".join(map(str, draw(addr4))), dst="198.18.1.1",
             tos=draw(st.integers(0, 255)), ttl=draw(st.integers(2, 255)),
             id=draw(st.integers(0, 0xFFFF)), flags="DF" if draw(st.booleans()) else 0)
    if l4 == "tcp":
        pkt = pkt / TCP(sport=draw(st.integers(1, 65535)), dport=80, flags="PA")
    elif l4 == "udp":
        pkt = pkt / UDP(sport=draw(st.integers(1, 65535)), dport=53)
    else:
        pkt = pkt / ICMP()
    return bytearray(bytes(pkt / Raw(draw(payloads))))


@st.composite
def inner_v6(draw):
    pkt = IPv6(src="2001:db8::10", dst="2001:db8:1::1", tc=draw(st.integers(0, 255)),
               fl=draw(st.integers(0, 0xFFFFF)), hlim=draw(st.integers(2, 255)))
    pkt = pkt / UDP(sport=draw(st.integers(1, 65535)), dport=53) / Raw(draw(payloads))
    return bytearray(bytes(pkt))


def _inner_after_ttl(inner: bytes) -> bytes:
    """What the real server must get back: TTL - 1, IPv4 checksum recomputed."""
    if inner[0] >> 4 == 4:
        p = IP(inner)
        p.ttl -= 1
        del p.chksum
        return bytes(p)
    p = IPv6(inner)
    p.hlim -= 1
    return bytes(p)


def _encap_after_decrement(inner: bytearray, saddr, daddr, **kw) -> bytearray:
    buf = bytearray(inner)
    dr_rewrite(buf, parse(buf))  # the decrement every method does first
    return encapsulate(buf, saddr, daddr, **kw)


# --------------------------------------------------------------------------- encapsulation


@settings(max_examples=150, deadline=None)
@given(inner=st.one_of(inner_v4(), inner_v6()), saddr=addr4, daddr=addr4,
       pmtu_disc=st.booleans())
def test_ipip_over_ipv4_round_trip_and_outer_fields(inner, saddr, daddr, pmtu_disc):
    outer = _encap_after_decrement(inner, saddr, daddr, pmtu_disc=pmtu_disc)
    o = IP(bytes(outer))
    v4 = inner[0] >> 4 == 4
    expected = _inner_after_ttl(bytes(inner))
    assert o.version == 4 and o.ihl == 5
    assert o.proto == (4 if v4 else 41)
    assert outer[12:16] == saddr and outer[16:20] == daddr
    assert o.len == 20 + len(expected) == len(outer)
    assert o.frag == 0 and not o.flags.MF
    if v4:
        i = IP(bytes(inner))
        assert o.ttl == i.ttl - 1
        ds = i.tos
        assert o.flags.DF == (bool(i.flags.DF) and pmtu_disc)
    else:
        i6 = IPv6(bytes(inner))
        assert o.ttl == i6.hlim - 1
        ds = i6.tc
        assert not o.flags.DF  # IPv6 inner: df = 0
    assert o.tos == ((ds & ~3) | 2 if ds & 3 == 3 else ds)
    fixed = IP(bytes(outer))
    del fixed.chksum
    assert bytes(fixed)[:20] == bytes(outer[:20])  # header checksum valid
    assert bytes(o.payload) == expected  # scapy's decapsulation
    assert decapsulate(bytes(outer), True, o.proto) == expected  # pyvs realserver's


@settings(max_examples=80, deadline=None)
@given(inner=st.one_of(inner_v4(), inner_v6()), saddr=addr6, daddr=addr6)
def test_ipv6_outer_next_header_4_or_41(inner, saddr, daddr):
    outer = _encap_after_decrement(inner, saddr, daddr)
    o = IPv6(bytes(outer))
    v4 = inner[0] >> 4 == 4
    expected = _inner_after_ttl(bytes(inner))
    assert o.nh == (4 if v4 else 41) and o.fl == 0
    assert o.plen == len(expected)
    ds = IP(bytes(inner)).tos if v4 else IPv6(bytes(inner)).tc
    assert o.tc == ecn_encapsulate(ds)
    assert o.hlim == (IP(bytes(inner)).ttl if v4 else IPv6(bytes(inner)).hlim) - 1
    assert bytes(outer[40:]) == expected
    assert decapsulate(bytes(outer[40:]), False, o.nh) == expected


@settings(max_examples=60, deadline=None)
@given(inner=inner_v4(), saddr=addr4, daddr=addr4, csum=st.booleans(),
       port=st.integers(1, 65535))
def test_gue_udp_and_header(inner, saddr, daddr, csum, port):
    outer = _encap_after_decrement(inner, saddr, daddr, tun_type=TUN_TYPE_GUE, tun_port=port,
                                   tun_flags=1 if csum else 0)
    o = IP(bytes(outer))
    u = o[UDP]
    assert o.proto == 17 and u.dport == port and 32768 <= u.sport <= 60999
    if csum:
        check = u.chksum
        del u.chksum
        assert IP(bytes(o))[UDP].chksum == check  # valid
    else:
        assert u.chksum == 0
    gue = bytes(u.payload)[:4]
    assert gue == bytes((0, 4, 0, 0))  # version 0, C 0, hlen 0, proto_ctype IPIP
    expected = _inner_after_ttl(bytes(inner))
    assert bytes(u.payload)[4:] == expected
    assert decapsulate(bytes(u.payload), False, 17) == expected


@settings(max_examples=120, deadline=None)
@given(inner=st.one_of(inner_v4(), inner_v6()), outer6=st.booleans(), csum=st.booleans(),
       data=st.data())
def test_gre_header_fields_and_round_trip(inner, outer6, csum, data):
    """gre_build_header() as ip_vs_tunnel_xmit calls it, read back by scapy's GRE layer:
    version 0, no routing/key/sequence, protocol 0x0800 / 0x86DD, the C bit and a valid
    checksum only with --tun-csum; outer protocol / next header 47."""
    saddr, daddr = (data.draw(addr6), data.draw(addr6)) if outer6 else (data.draw(addr4),
                                                                        data.draw(addr4))
    outer = _encap_after_decrement(inner, saddr, daddr, tun_type=TUN_TYPE_GRE,
                                   tun_flags=1 if csum else 0)
    v4 = inner[0] >> 4 == 4
    expected = _inner_after_ttl(bytes(inner))
    if outer6:
        o = IPv6(bytes(outer))
        assert o.nh == 47 and o.plen == len(outer) - 40
        gre_bytes = bytes(outer[40:])
    else:
        o = IP(bytes(outer))
        assert o.proto == 47 and o.len == len(outer) and o.flags.DF == (
            v4 and bool(IP(bytes(inner)).flags.DF))
        gre_bytes = bytes(outer[20:])
    g = GRE(gre_bytes)
    assert (g.chksum_present, g.routing_present, g.key_present, g.seqnum_present,
            g.strict_route_source, g.recursion_control, g.flags, g.version) == (
        int(csum), 0, 0, 0, 0, 0, 0, 0)
    assert g.proto == (0x0800 if v4 else 0x86DD)
    hlen = 8 if csum else 4
    assert gre_bytes[hlen:] == expected and len(gre_bytes) == hlen + len(expected)
    if csum:
        recomputed = GRE(gre_bytes)
        recomputed.chksum = None
        assert bytes(recomputed) == gre_bytes  # scapy computes the same checksum
        assert gre_bytes[6:8] == b"\0\0"  # reserved1
    assert decapsulate(bytes(outer) if not outer6 else gre_bytes, not outer6, 47) == expected


def test_realserver_reads_gre_as_gre_parse_header():
    inner = bytes(IP(src="198.18.0.10", dst="198.18.1.1") / TCP(sport=1, dport=80))
    inner6 = bytes(IPv6(src="2001:db8::10", dst="2001:db8:1::1") / TCP(sport=1, dport=80))
    assert gre_payload(bytes(GRE(proto=0x0800) / Raw(inner))) == (4, inner)
    assert gre_payload(bytes(GRE(proto=0x86DD) / Raw(inner6))) == (41, inner6)
    keyed = GRE(key_present=1, key=7, seqnum_present=1, sequence_number=9, proto=0x0800)
    assert gre_payload(bytes(keyed / Raw(inner))) == (4, inner)  # key and sequence skipped
    with_csum = bytearray(bytes(GRE(chksum_present=1, proto=0x0800) / Raw(inner)))
    assert gre_payload(bytes(with_csum)) == (4, inner)
    with_csum[-1] ^= 1  # one bit flipped in the payload: the checksum no longer verifies
    assert gre_payload(bytes(with_csum)) is None
    assert gre_payload(bytes(GRE(version=1, proto=0x0800) / Raw(inner))) is None
    assert gre_payload(bytes(GRE(routing_present=1, proto=0x0800) / Raw(inner))) is None
    assert gre_payload(bytes(GRE(proto=0x6558) / Raw(inner))) is None  # Ethernet: not ours
    assert gre_payload(b"\0\0\x08") is None
    # the inner packet must be the version the GRE protocol says
    assert decapsulate(bytes(GRE(proto=0x86DD) / Raw(inner)), False, 47) is None


def test_ecn_rule():
    assert [ecn_encapsulate(0xB8 | e) for e in range(4)] == [0xB8, 0xB9, 0xBA, 0xBA]


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 4000), mtu=st.integers(68, 1500))
def test_fragment_v4_reassembles(size, mtu):
    pkt = IP(src="198.18.2.1", dst="198.18.3.11", proto=4, id=0) / Raw(bytes(range(256)) * 16)
    raw = bytes(pkt)[: 20 + size]
    raw = bytes(IP(raw[:20]) / Raw(raw[20:]))
    p = IP(raw)
    p.len = len(raw)
    del p.chksum
    raw = bytes(p)
    frags = fragment_v4(raw, mtu, 4242)
    assert all(len(f) <= mtu for f in frags)
    for f in frags:
        fp = IP(f)
        assert fp.id == 4242 and not fp.flags.DF
    whole = defragment([IP(f) for f in frags])
    assert len(whole) == 1 and bytes(whole[0])[20:] == raw[20:]


# ----------------------------------------------------------------------------------- DR


@settings(max_examples=150, deadline=None)
@given(inner=st.one_of(inner_v4(), inner_v6()), dmac=st.binary(min_size=6, max_size=6),
       smac=st.binary(min_size=6, max_size=6))
def test_dr_changes_only_mac_ttl_and_ip_checksum(inner, dmac, smac):
    before = bytes(inner)
    buf = bytearray(inner)
    dr_rewrite(buf, parse(buf))
    frame = ethernet_frame(dmac, smac, buf)
    e = Ether(frame)
    assert e.dst == ":".join(f"{b:02x}" for b in dmac) and e.src == ":".join(
        f"{b:02x}" for b in smac)
    assert e.type == (0x0800 if before[0] >> 4 == 4 else 0x86DD)
    after = frame[14:]
    changed = {i for i in range(len(before)) if before[i] != after[i]}
    if before[0] >> 4 == 4:
        assert changed <= {8, 10, 11} and after[8] == before[8] - 1
        assert bytes(after) == _inner_after_ttl(before)  # checksum = full recompute
    else:
        assert changed == {7} and after[7] == before[7] - 1


# --------------------------------------------------------------- forwarders on the path


class FakeRoutes:
    """KernelRoutes stand-in: one route per real server, a neighbour table."""

    def __init__(self, mtu=1500, local=False, gateway=None, mac=b"\x02\0\0\0\0\x11"):
        self.mtu, self.local, self.gateway, self.mac_value = mtu, local, gateway, mac
        self.now = 0.0

    def clock(self):
        return self.now

    def route(self, addr):
        src = pack_addr("198.18.2.1") if len(addr) == 4 else pack_addr("2001:db8:2::1")
        return Route(addr, self.local, 7, "eth1", src, self.gateway, self.mtu,
                     b"\x02\0\0\0\0\x01", 1e9)

    def mac(self, route, addr):
        return self.mac_value

    def poll(self):
        return set()


VIP, RS = "198.18.1.1", "198.18.3.11"


def director_with(fwd, routes, rs=RS, vip=VIP, af=AF_INET):
    d = Director(clock=VirtualClock(), routes=routes)
    key = d.services.add_service(ServiceSpec(af, 6, pack_addr(vip), 80, scheduler="rr")).key
    d.services.add_dest(key, DestSpec(pack_addr(rs), 80, fwd=fwd, weight=1))
    return d


def syn(size=0, ttl=64, df=True, src="198.18.0.10", dst=VIP):
    p = IP(src=src, dst=dst, ttl=ttl, flags="DF" if df else 0) / TCP(sport=40000, dport=80,
                                                                     flags="S")
    return bytearray(bytes(p / Raw(b"x" * size)))


def test_tunnel_sends_outer_packet_and_drops_the_original():
    d = director_with(FWD_TUNNEL, FakeRoutes())
    (verdict,) = d.process([syn()])
    assert verdict == DROP and len(d.outbox) == 1
    o = IP(d.outbox[0])
    assert (o.src, o.dst, o.proto, o.ttl, o.flags.DF) == ("198.18.2.1", RS, 4, 63, True)
    assert o.payload[TCP].flags == "S"


def test_tunnel_full_size_df_packet_gets_frag_needed_with_route_mtu_minus_20():
    d = director_with(FWD_TUNNEL, FakeRoutes(mtu=1500))
    d.process([syn()])  # create the connection
    d.outbox.clear()
    big = IP(src="198.18.0.10", dst=VIP, flags="DF") / TCP(sport=40000, dport=80, flags="A")
    buf = bytearray(bytes(big / Raw(b"y" * 1460)))  # 1500 bytes
    (verdict,) = d.process([buf])
    assert verdict == DROP and len(d.outbox) == 1
    icmp = IP(d.outbox[0])
    assert (icmp.src, icmp.dst) == (VIP, "198.18.0.10")
    assert (icmp[ICMP].type, icmp[ICMP].code, icmp[ICMP].nexthopmtu) == (3, 4, 1480)
    assert d.drops["frag-needed"] == 1
    ok = bytearray(bytes(big / Raw(b"y" * 1440)))  # 1480: fits
    d.outbox.clear()
    d.process([ok])
    assert len(d.outbox) == 1 and len(d.outbox[0]) == 1500


def _gre_director(tun_flags: int) -> Director:
    d = Director(clock=VirtualClock(), routes=FakeRoutes(mtu=1500))
    key = d.services.add_service(ServiceSpec(AF_INET, 6, pack_addr(VIP), 80,
                                             scheduler="rr")).key
    d.services.add_dest(key, DestSpec(pack_addr(RS), 80, fwd=FWD_TUNNEL, weight=1,
                                      tun_type=TUN_TYPE_GRE, tun_flags=tun_flags))
    return d


def test_gre_tunnel_sends_gre_and_leaves_room_for_its_header():
    """The inner MTU is the route's minus 20 and the GRE header: 1476, or 1472 with
    --tun-csum; a DF packet one byte larger gets frag-needed with that MTU."""
    for tun_flags, room in ((0, 1476), (1, 1472)):
        d = _gre_director(tun_flags)
        d.process([syn()])
        (outer,) = d.outbox
        o = IP(outer)
        assert (o.src, o.dst, o.proto, o.ttl) == ("198.18.2.1", RS, 47, 63)
        assert o[GRE].chksum_present == tun_flags and o[GRE][TCP].flags == "S"
        for size, fits in ((room, True), (room + 1, False)):
            d.outbox.clear()
            big = IP(src="198.18.0.10", dst=VIP, flags="DF") / TCP(sport=40000, dport=80,
                                                                    flags="A")
            d.process([bytearray(bytes(big / Raw(b"y" * (size - 40))))])
            (out,) = d.outbox
            if fits:
                assert len(out) == 20 + (8 if tun_flags else 4) + size
                assert IP(out).proto == 47
            else:
                assert IP(out)[ICMP].type == 3 and IP(out)[ICMP].nexthopmtu == room


def test_tunnel_without_df_fragments_the_outer_packet():
    d = director_with(FWD_TUNNEL, FakeRoutes(mtu=1500))
    d.process([syn(df=False)])
    d.outbox.clear()
    big = IP(src="198.18.0.10", dst=VIP) / TCP(sport=40000, dport=80, flags="A")
    d.process([bytearray(bytes(big / Raw(b"y" * 1460)))])
    assert len(d.outbox) == 2 and all(len(f) <= 1500 for f in d.outbox)
    (whole,) = defragment([IP(f) for f in d.outbox])
    assert bytes(whole)[40:] == bytes(big / Raw(b"y" * 1460))[20:]  # inner L4 intact


def test_ttl_one_gets_time_exceeded_from_the_vip():
    for fwd in (FWD_TUNNEL, FWD_DROUTE):
        d = director_with(fwd, FakeRoutes())
        (verdict,) = d.process([syn(ttl=1)])
        assert verdict == DROP and not d.l2_outbox
        (icmp,) = d.outbox
        assert IP(icmp)[ICMP].type == 11 and IP(icmp).src == VIP


def test_local_real_server_is_left_to_the_local_stack():
    for fwd in (FWD_TUNNEL, FWD_DROUTE):
        d = director_with(fwd, FakeRoutes(local=True))
        buf = syn()
        before = bytes(buf)
        assert d.process([buf]) == [ACCEPT] and bytes(buf) == before


def test_dr_frame_to_the_real_servers_mac_and_not_on_link_refused():
    d = director_with(FWD_DROUTE, FakeRoutes(), rs="198.18.2.11")
    buf = syn()
    d.process([buf])
    ((ifname, frame),) = d.l2_outbox
    e = Ether(frame)
    assert ifname == "eth1" and e.dst == "02:00:00:00:00:11" and e[IP].dst == VIP
    assert e[IP].ttl == 63
    d = director_with(FWD_DROUTE, FakeRoutes(gateway=pack_addr("198.18.2.2")),
                      rs="198.18.2.11")
    assert d.process([syn()]) == [DROP] and d.drops["dr-not-on-link"] == 1


def test_dr_queues_while_the_neighbour_resolves_then_flushes_on_tick():
    routes = FakeRoutes(mac=None)
    d = director_with(FWD_DROUTE, routes, rs="198.18.2.11")
    d.process([syn()])
    d.process([syn()])  # the SYN retransmitted
    assert not d.l2_outbox
    routes.mac_value = b"\x02\0\0\0\0\x22"
    d.tick()
    assert [Ether(f).dst for _, f in d.l2_outbox] == ["02:00:00:00:00:22"] * 2
    routes.mac_value = None
    d.l2_outbox.clear()
    d.process([syn(src="198.18.0.11")])
    d.process([syn(src="198.18.0.11")])
    routes.now = 10.0  # resolution never completes
    d.tick()
    assert not d.l2_outbox and d.drops["neigh-failed"] >= 1


def test_ipv6_dr_and_packet_too_big():
    vip6, rs6 = "2001:db8:1::1", "2001:db8:2::11"
    d = director_with(FWD_DROUTE, FakeRoutes(mtu=1280), rs=rs6, vip=vip6, af=AF_INET6)
    p = IPv6(src="2001:db8::10", dst=vip6, hlim=9) / TCP(sport=4000, dport=80, flags="S")
    d.process([bytearray(bytes(p))])
    ((_, frame),) = d.l2_outbox
    assert Ether(frame).type == 0x86DD and Ether(frame)[IPv6].hlim == 8
    big = IPv6(src="2001:db8::10", dst=vip6) / TCP(sport=4000, dport=80, flags="A") / Raw(
        b"z" * 1300)
    d.process([bytearray(bytes(big))])
    (ptb,) = d.outbox
    assert IPv6(ptb)[ICMPv6PacketTooBig].mtu == 1280
