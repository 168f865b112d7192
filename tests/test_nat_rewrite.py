"""forwarders.nat: masquerading rewrites checked against scapy's checksum recomputation."""

import socket
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    in6_chksum,
)
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import checksum as scapy_checksum

from pyvs.engine import packet as P
from pyvs.forwarders import nat

HSET = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

v4addr = st.binary(min_size=4, max_size=4)
v6addr = st.binary(min_size=16, max_size=16)
port = st.integers(0, 65535)
payload = st.binary(max_size=200)
tcp_opts = st.sampled_from(
    [[], [("MSS", 1460)], [("NOP", None), ("WScale", 7)], [("Timestamp", (5, 9))]]
)


def a4(b):
    return socket.inet_ntop(socket.AF_INET, b)


def a6(b):
    return socket.inet_ntop(socket.AF_INET6, b)


@st.composite
def l4(draw):
    if draw(st.booleans()):
        return TCP(sport=draw(port), dport=draw(port), flags=draw(st.integers(0, 255)),
                   seq=draw(st.integers(0, 2**32 - 1)), ack=draw(st.integers(0, 2**32 - 1)),
                   options=draw(tcp_opts)) / Raw(draw(payload))  # fmt: skip
    return UDP(sport=draw(port), dport=draw(port)) / Raw(draw(payload))


@st.composite
def packets(draw):
    """(bytes, ipcls) for random TCP/UDP over IPv4 (with/without options, UDP csum 0) or v6."""
    seg = draw(l4())
    if draw(st.booleans()):
        ip = IP(src=a4(draw(v4addr)), dst=a4(draw(v4addr)), ttl=draw(st.integers(0, 255)),
                id=draw(port), flags=draw(st.sampled_from([0, 2])),
                options=[IPOption_NOP()] * (4 * draw(st.integers(0, 2))))  # fmt: skip
        pkt = ip / seg
        if UDP in pkt and draw(st.booleans()):
            pkt[UDP].chksum = 0  # "no checksum" must stay 0
        return bytes(pkt), IP
    ip = IPv6(src=a6(draw(v6addr)), dst=a6(draw(v6addr)), hlim=draw(st.integers(0, 255)),
              fl=draw(st.integers(0, 2**20 - 1)))  # fmt: skip
    for ext in draw(st.lists(st.sampled_from(["hbh", "dst"]), max_size=2)):
        ip = ip / (IPv6ExtHdrHopByHop() if ext == "hbh" else IPv6ExtHdrDestOpt())
    return bytes(ip / seg), IPv6


def scapy_recomputed(buf: bytes, ipcls) -> bytes:
    """Rebuild with scapy after deleting every checksum (UDP 0 = none stays 0)."""
    p = ipcls(buf)
    if ipcls is IP:
        del p[IP].chksum
    if TCP in p:
        del p[TCP].chksum
    if UDP in p and not (ipcls is IP and p[UDP].chksum == 0):
        del p[UDP].chksum
    return bytes(ipcls(bytes(p)))


def pack_addr(ipcls, b):
    return b[:4] if ipcls is IP else b


@HSET
@given(packets(), v6addr, port, st.sampled_from(["dnat", "snat"]))
def test_rewrite_checksums_and_inverse(pb, newaddr, newport, which):
    orig, ipcls = pb
    newaddr = pack_addr(ipcls, newaddr)
    buf = bytearray(orig)
    info = P.parse(buf)
    fn = nat.dnat if which == "dnat" else nat.snat
    old_addr = info.daddr if which == "dnat" else info.saddr
    old_port = info.dport if which == "dnat" else info.sport
    fn(buf, info, newaddr, newport)
    out = bytes(buf)
    assert out == scapy_recomputed(out, ipcls)
    p = ipcls(out)
    l4p = p[TCP] if TCP in p else p[UDP]
    fam = socket.AF_INET if ipcls is IP else socket.AF_INET6
    if which == "dnat":
        assert socket.inet_pton(fam, p.dst) == newaddr and l4p.dport == newport
        assert (info.daddr, info.dport) == (newaddr, newport)
    else:
        assert socket.inet_pton(fam, p.src) == newaddr and l4p.sport == newport
        assert (info.saddr, info.sport) == (newaddr, newport)
    # a UDP checksum of 0 (none) is replaced by a full one, as udp_dnat_handler /
    # udp_snat_handler compute it (their incremental update needs a non-zero checksum);
    # scapy_recomputed above checked it is the right one
    none = UDP in p and ipcls(orig)[UDP].chksum == 0
    if none:
        assert p[UDP].chksum != 0
    # TTL untouched
    assert (p.ttl if ipcls is IP else p.hlim) == (
        ipcls(orig).ttl if ipcls is IP else ipcls(orig).hlim
    )
    # the reverse rewrite restores the original bytes exactly (but the checksum a
    # datagram without one now has: valid for the original addresses)
    fn(buf, info, old_addr, old_port)
    if none:
        assert bytes(buf) == scapy_recomputed(bytes(buf), ipcls)
        co = info.csum_off
        buf[co:co + 2] = b"\0\0"
    assert bytes(buf) == orig
    # a fresh parse agrees with the kept-in-step info
    again = P.parse(buf)
    assert (again.saddr, again.daddr, again.sport, again.dport) == (
        info.saddr, info.daddr, info.sport, info.dport)  # fmt: skip


def swapped(buf: bytes, ipcls) -> bytes:
    """The answer to a packet: addresses and ports exchanged, checksums valid (an IPv4
    UDP checksum of 0 stays 0), as the real server's stack would send it."""
    p = ipcls(buf)
    p.src, p.dst = p.dst, p.src
    l4p = p[TCP] if TCP in p else p[UDP]
    l4p.sport, l4p.dport = l4p.dport, l4p.sport
    return scapy_recomputed(bytes(p), ipcls)


@HSET
@given(packets(), v6addr, port)
def test_dnat_then_snat_roundtrip_with_ethernet(pb, rip, rport):
    """A request client:cport -> VIP:vport is DNATed to RIP:rport; the real server's answer
    RIP:rport -> client:cport is SNATed back to VIP:vport, so the client sees exactly the
    answer the VIP would have sent.  Link header and trailing padding are never touched."""
    orig, ipcls = pb
    rip = pack_addr(ipcls, rip)
    eth = bytes(Ether())
    frame = bytearray(eth + orig + b"\0" * 6)  # link header and padding
    info = P.parse(frame, 14)
    vip, vport, client, cport = info.daddr, info.dport, info.saddr, info.sport
    nat.dnat(frame, info, rip, rport)
    request = bytes(frame[14:-6])
    assert request == scapy_recomputed(request, ipcls)
    assert frame[-6:] == b"\0" * 6 and frame[:14] == eth
    fam = socket.AF_INET if ipcls is IP else socket.AF_INET6
    seen = P.parse(bytearray(request))
    assert (seen.daddr, seen.dport, seen.saddr, seen.sport) == (rip, rport, client, cport)

    answer = swapped(request, ipcls)  # what the real server sends back
    reply = bytearray(eth + answer + b"\0" * 6)
    rinfo = P.parse(reply, 14)
    assert (rinfo.saddr, rinfo.sport) == (rip, rport)
    nat.snat(reply, rinfo, vip, vport)
    out = bytes(reply[14:-6])
    assert reply[-6:] == b"\0" * 6 and reply[:14] == eth
    assert out == scapy_recomputed(out, ipcls)  # every checksum valid
    got = ipcls(out)
    l4p = got[TCP] if TCP in got else got[UDP]
    assert socket.inet_pton(fam, got.src) == vip and l4p.sport == vport
    assert socket.inet_pton(fam, got.dst) == client and l4p.dport == cport
    # the client gets the VIP's answer to its own packet, byte for byte (with the
    # checksum the DNAT gave a datagram that had none, udp_dnat_handler's full one)
    want = swapped(orig, ipcls)
    if UDP in got and ipcls(orig)[UDP].chksum == 0:
        w = ipcls(want)
        del w[UDP].chksum
        want = bytes(ipcls(bytes(w)))
    assert out == want


def test_udp_zero_result_becomes_ffff():
    # find a UDP/IPv4 packet whose rewritten checksum would compute to 0
    base = IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1000, dport=53) / Raw(b"ab")
    for p in range(65536):
        buf = bytearray(bytes(base))
        info = P.parse(buf)
        nat.dnat(buf, info, socket.inet_aton("10.0.0.3"), p)
        ck = struct.unpack_from("!H", buf, info.csum_off)[0]
        ref = IP(bytes(buf))
        del ref[UDP].chksum
        assert ck == IP(bytes(ref))[UDP].chksum
        if ck == 0xFFFF:
            break
    else:
        raise AssertionError("no zero-sum case found")


def test_non_first_fragment_only_address_changes():
    later = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") /
                  IPv6ExtHdrFragment(offset=100, m=0, nh=6) / Raw(b"b" * 24))  # fmt: skip
    buf = bytearray(later)
    info = P.parse(buf)
    nat.dnat(buf, info, socket.inet_pton(socket.AF_INET6, "2001:db8::9"), 8080)
    assert bytes(buf[48:]) == later[48:]
    assert IPv6(bytes(buf)).dst == "2001:db8::9"


def test_icmpv6_echo_pseudo_header_updated():
    pkt = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6EchoRequest(id=7) / b"hi")
    buf = bytearray(pkt)
    info = P.parse(buf)
    nat.dnat(buf, info, socket.inet_pton(socket.AF_INET6, "2001:db8::77"), 0)
    assert P.l4_checksum_ok(buf, info)


# ---------------------------------------------------------------- ICMP errors


@st.composite
def icmp_errors(draw):
    """An ICMP error and its scenario: (bytes, ipcls, direction, vip, vport, rip, rport, client).

    dnat_icmp: the client reports a reply VIP:vport -> client:cport; goes to RIP:rport.
    snat_icmp: the RS reports a request client:cport -> RIP:rport; goes to client from VIP.
    """
    v6 = draw(st.booleans())
    addr = v6addr if v6 else v4addr
    vip, rip, client, router = (draw(addr) for _ in range(4))
    vport, rport, cport = draw(port), draw(port), draw(port)
    direction = draw(st.sampled_from(["dnat", "snat"]))
    udp = draw(st.booleans())
    a = a6 if v6 else a4
    if direction == "dnat":
        src, dst, sp, dp = vip, client, vport, cport
        outer_src, outer_dst = draw(st.sampled_from([client, router])), vip
    else:
        src, dst, sp, dp = client, rip, cport, rport
        outer_src, outer_dst = rip, client
    seg = (UDP(sport=sp, dport=dp) if udp else TCP(sport=sp, dport=dp, flags="PA")) / Raw(
        draw(payload)
    )
    if v6:
        quoted = bytes(IPv6(src=a(src), dst=a(dst), hlim=draw(st.integers(1, 255))) / seg)
        cut = draw(st.integers(48, max(48, len(quoted))))
        kind = draw(st.sampled_from(["unreach", "toobig"]))
        icmp = ICMPv6DestUnreach(code=draw(st.integers(0, 6))) if kind == "unreach" else (
            ICMPv6PacketTooBig(mtu=draw(st.integers(1280, 9000))))  # fmt: skip
        pkt = IPv6(src=a(outer_src), dst=a(outer_dst)) / icmp / Raw(quoted[:cut])
        ipcls = IPv6
    else:
        opts = [IPOption_NOP()] * (4 * draw(st.integers(0, 1)))
        qttl = draw(st.integers(1, 255))
        quoted = bytes(IP(src=a(src), dst=a(dst), ttl=qttl, options=opts) / seg)
        ihl = (quoted[0] & 15) * 4
        cut = draw(st.integers(ihl + 8, max(ihl + 8, len(quoted))))
        typ = draw(st.sampled_from([3, 11, 4]))
        icmp = ICMP(type=typ, code=draw(st.integers(0, 4 if typ == 3 else 1)))
        if typ == 3 and icmp.code == 4:
            icmp.nexthopmtu = draw(st.integers(68, 1500))
        pkt = IP(src=a(outer_src), dst=a(outer_dst), ttl=draw(st.integers(1, 255))) / icmp / Raw(
            quoted[:cut]
        )
        ipcls = IP
    return bytes(pkt), ipcls, direction, vip, vport, rip, rport, client


def _icmp_csum_ok(out: bytes, ipcls) -> bool:
    if ipcls is IP:
        ihl = (out[0] & 15) * 4
        return scapy_checksum(out[ihl:]) == 0
    icmp = out[40:]
    zeroed = icmp[:2] + b"\0\0" + icmp[4:]
    return in6_chksum(58, IPv6(out), zeroed) == struct.unpack_from("!H", icmp, 2)[0]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(icmp_errors())
def test_nat_icmp(case):
    orig, ipcls, direction, vip, vport, rip, rport, client = case
    buf = bytearray(orig)
    info = P.parse(buf)
    inner = P.parse_icmp_error(buf, info)
    assert inner is not None and inner.has_ports
    inner_csum_before = bytes(buf[inner.l4_off + (16 if inner.proto == 6 else 6):][:2])
    if direction == "dnat":
        nat.dnat_icmp(buf, info, inner, rip, rport)
    else:
        nat.snat_icmp(buf, info, inner, vip, vport)
    out = bytes(buf)
    # outer IP header and ICMP checksums equal scapy's recomputation
    if ipcls is IP:
        ref = IP(out)
        del ref.chksum
        assert bytes(IP(bytes(ref)))[:20] == out[:20]
    assert _icmp_csum_ok(out, ipcls)
    # embedded header: addresses, ports, IPv4 header checksum
    il3, il4 = inner.l3_off, inner.l4_off
    if ipcls is IP:
        q_src, q_dst = out[il3 + 12 : il3 + 16], out[il3 + 16 : il3 + 20]
        assert scapy_checksum(out[il3:il4]) == 0
        o_src, o_dst = out[12:16], out[16:20]
    else:
        q_src, q_dst = out[il3 + 8 : il3 + 24], out[il3 + 24 : il3 + 40]
        o_src, o_dst = out[8:24], out[24:40]
    q_sport, q_dport = struct.unpack_from("!HH", out, il4)
    if direction == "dnat":
        assert o_dst == rip and q_src == rip and q_sport == rport and q_dst == client
        assert (info.daddr, inner.saddr, inner.sport) == (rip, rip, rport)
    else:
        assert o_src == vip and q_dst == vip and q_dport == vport and q_src == client
        assert (info.saddr, inner.daddr, inner.dport) == (vip, vip, vport)
    # the quoted L4 checksum is left alone (as ip_vs_nat_icmp does), if it was quoted
    assert bytes(buf[il4 + (16 if inner.proto == 6 else 6):][:2]) == inner_csum_before
    # undo restores the original (all checksums in the original were valid)
    if direction == "dnat":
        nat.dnat_icmp(buf, info, inner, vip, vport)
    else:
        nat.snat_icmp(buf, info, inner, rip, rport)
    assert bytes(buf) == orig


def test_dnat_icmp_example_v4():
    quoted = bytes(IP(src="192.0.2.10", dst="198.51.100.5") / TCP(sport=80, dport=40001))[:28]
    pkt = bytes(IP(src="198.51.100.5", dst="192.0.2.10") / ICMP(type=3, code=3) / Raw(quoted))
    buf = bytearray(pkt)
    info = P.parse(buf)
    inner = P.parse_icmp_error(buf, info)
    nat.dnat_icmp(buf, info, inner, socket.inet_aton("172.16.0.2"), 8080)
    p = IP(bytes(buf))
    assert p.dst == "172.16.0.2"
    q = IP(bytes(buf)[28:])
    assert q.src == "172.16.0.2" and q.dst == "198.51.100.5"
    assert struct.unpack_from("!H", buf, 48)[0] == 8080
