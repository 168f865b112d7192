"""engine.packet: parsing, validation, checksums, ICMP builders (scapy as the oracle)."""

import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, IPOption_NOP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    in6_chksum,
)
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import checksum as scapy_checksum

from pyvs.engine import csum as C
from pyvs.engine import icmperror
from pyvs.engine import packet as P
from pyvs.engine.packet import Malformed, parse

HSET = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

v4addr = st.binary(min_size=4, max_size=4)
v6addr = st.binary(min_size=16, max_size=16)
port = st.integers(0, 65535)
payload = st.binary(max_size=300)
tcp_opts = st.sampled_from(
    [[], [("MSS", 1460)], [("NOP", None), ("WScale", 7)], [("Timestamp", (1, 2))],
     [("SAckOK", b""), ("MSS", 536)]]  # fmt: skip
)


def a4(b):
    return socket.inet_ntop(socket.AF_INET, b)


def a6(b):
    return socket.inet_ntop(socket.AF_INET6, b)


@st.composite
def l4_layer(draw, allow_icmp=True):
    kind = draw(st.sampled_from(["tcp", "udp", "other"] + (["icmp"] if allow_icmp else [])))
    data = Raw(draw(payload))
    if kind == "tcp":
        return TCP(sport=draw(port), dport=draw(port), flags=draw(st.integers(0, 255)),
                   seq=draw(st.integers(0, 2**32 - 1)), options=draw(tcp_opts)) / data  # fmt: skip
    if kind == "udp":
        return UDP(sport=draw(port), dport=draw(port)) / data
    if kind == "icmp":
        return "icmp", data
    return "other", data


@st.composite
def v4_packet(draw):
    l4 = draw(l4_layer())
    ip = IP(src=a4(draw(v4addr)), dst=a4(draw(v4addr)), ttl=draw(st.integers(0, 255)),
            flags=draw(st.sampled_from([0, 2])), tos=draw(st.integers(0, 255)),
            options=[IPOption_NOP()] * (4 * draw(st.integers(0, 3))))  # fmt: skip
    if isinstance(l4, tuple):
        if l4[0] == "icmp":
            return ip / ICMP(type=8, id=draw(port)) / l4[1]
        ip.proto = 47
        return ip / l4[1]
    return ip / l4


@st.composite
def v6_packet(draw):
    l4 = draw(l4_layer())
    ip = IPv6(src=a6(draw(v6addr)), dst=a6(draw(v6addr)), hlim=draw(st.integers(0, 255)),
              tc=draw(st.integers(0, 255)), fl=draw(st.integers(0, 2**20 - 1)))  # fmt: skip
    for ext in draw(st.lists(st.sampled_from(["hbh", "dst", "rt"]), max_size=3)):
        if ext == "hbh":
            ip = ip / IPv6ExtHdrHopByHop()
        elif ext == "dst":
            ip = ip / IPv6ExtHdrDestOpt()
        else:
            ip = ip / IPv6ExtHdrRouting(addresses=[], segleft=0)
    if isinstance(l4, tuple):
        if l4[0] == "icmp":
            return ip / ICMPv6EchoRequest(id=draw(port)) / l4[1]
        return ip / IPv6ExtHdrDestOpt(nh=59) / l4[1]
    return ip / l4


def _check_fields(info, pkt, ipcls):
    ip = pkt[ipcls]
    assert info.ip_len == (ip.len if ipcls is IP else 40 + ip.plen)
    if ipcls is IP:
        assert info.af == socket.AF_INET and info.version == 4
        assert info.saddr == socket.inet_aton(ip.src) and info.daddr == socket.inet_aton(ip.dst)
        assert info.ttl == ip.ttl and info.df == bool(ip.flags.DF)
        assert info.l4_off - info.l3_off == ip.ihl * 4
    else:
        assert info.af == socket.AF_INET6 and info.version == 6
        assert info.saddr == socket.inet_pton(socket.AF_INET6, ip.src)
        assert info.daddr == socket.inet_pton(socket.AF_INET6, ip.dst)
        assert info.ttl == ip.hlim and not info.df
    if TCP in pkt:
        t = pkt[TCP]
        assert info.proto == 6 and (info.sport, info.dport) == (t.sport, t.dport)
        assert info.tcp_flags == int(t.flags) and info.has_ports
        assert info.payload_len == len(t.payload)
        assert info.icmp_type == -1
    elif UDP in pkt:
        u = pkt[UDP]
        assert info.proto == 17 and (info.sport, info.dport) == (u.sport, u.dport)
        assert info.payload_len == len(u.payload) and info.tcp_flags == 0
    elif ICMP in pkt:
        assert info.proto == 1 and info.icmp_type == 8 and info.icmp_code == 0
        assert (info.sport, info.dport) == (0, 0)
    elif ICMPv6EchoRequest in pkt:
        assert info.proto == 58 and info.icmp_type == 128
    else:
        assert info.proto in (47, 59) and not info.has_ports
        assert (info.sport, info.dport, info.icmp_type) == (0, 0, -1)
    assert not info.is_frag and info.first_frag


@HSET
@given(v4_packet())
def test_parse_v4_matches_scapy(pkt):
    buf = bytes(pkt)
    _check_fields(parse(buf), IP(buf), IP)


@HSET
@given(v6_packet())
def test_parse_v6_matches_scapy(pkt):
    buf = bytes(pkt)
    _check_fields(parse(buf), IPv6(buf), IPv6)


@HSET
@given(v4_packet(), st.binary(max_size=20))
def test_parse_with_ethernet_offset_and_padding(pkt, pad):
    frame = bytes(Ether() / pkt) + pad  # trailing padding beyond total length is allowed
    info = parse(frame, 14)
    assert info.l3_off == 14
    _check_fields(info, IP(bytes(pkt)), IP)
    assert info.ip_end == 14 + len(bytes(pkt))


def test_parse_v4_fragments():
    first = bytes(IP(src="1.2.3.4", dst="5.6.7.8", flags="MF", frag=0) / TCP(sport=1, dport=2))
    i = parse(first)
    assert i.is_frag and i.first_frag and i.more_frags and (i.sport, i.dport) == (1, 2)
    later = bytes(IP(src="1.2.3.4", dst="5.6.7.8", frag=185, proto=6) / Raw(b"z" * 40))
    i = parse(later)
    assert i.is_frag and not i.first_frag and not i.more_frags
    assert (i.sport, i.dport, i.has_ports, i.proto) == (0, 0, False, 6)
    # first fragment of a UDP datagram: UDP length covers the whole datagram
    udp = IP(flags="MF") / UDP(sport=7, dport=9, len=1000) / Raw(b"q" * 32)
    i = parse(bytes(udp))
    assert (i.sport, i.dport, i.payload_len) == (7, 9, 32)


def test_parse_v6_fragments_and_ext_headers():
    first = bytes(IPv6() / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(offset=0, m=1, nh=17)
                  / UDP(sport=53, dport=99, len=500) / Raw(b"a" * 16))  # fmt: skip
    i = parse(first)
    assert i.proto == 17 and i.is_frag and i.first_frag and i.more_frags
    assert (i.sport, i.dport) == (53, 99) and i.l4_off == 40 + 8 + 8
    later = bytes(IPv6() / IPv6ExtHdrFragment(offset=100, m=0, nh=6) / Raw(b"b" * 24))
    i = parse(later)
    assert i.proto == 6 and i.is_frag and not i.first_frag and not i.has_ports
    assert i.l4_off == 48
    rt = bytes(IPv6() / IPv6ExtHdrRouting(addresses=["2001:db8::1"], segleft=1) / TCP(dport=443))
    i = parse(rt)
    assert i.proto == 6 and i.dport == 443 and i.l4_off == 40 + 24


# ---------------------------------------------------------------- malformed

GOOD4 = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1000, dport=80) / Raw(b"hello"))
GOOD6 = bytes(IPv6(src="::1", dst="::2") / UDP(sport=1, dport=2) / Raw(b"hello"))


def _mut(buf, off, val):
    b = bytearray(buf)
    b[off] = val
    return bytes(b)


def _set16(buf, off, val):
    b = bytearray(buf)
    struct.pack_into("!H", b, off, val)
    return bytes(b)


@pytest.mark.parametrize(
    "buf,reason",
    [
        (b"", "truncated"),
        (GOOD4[:19], "truncated"),
        (GOOD6[:39], "truncated"),
        (b"\x00" * 40, "bad-version"),
        (_mut(GOOD4, 0, 0x55), "bad-version"),
        (_mut(GOOD4, 0, 0x44), "bad-ihl"),  # IHL 4 < 5
        (_mut(GOOD4, 0, 0x40), "bad-ihl"),
        (_set16(_mut(GOOD4, 0, 0x4F), 2, 60)[:45], "bad-ihl"),  # IHL 15 beyond the buffer
        (_set16(GOOD4, 2, 19), "bad-length"),  # total length < header
        (_set16(GOOD4, 2, len(GOOD4) + 1), "bad-length"),  # total length > buffer
        (GOOD4[:-6], "bad-length"),
        (_set16(GOOD6, 4, len(GOOD6) - 39), "bad-length"),  # payload length > buffer
        (_mut(GOOD4, 20 + 12, 0x40), "bad-tcp-doff"),  # TCP data offset 4
        (_mut(GOOD4, 20 + 12, 0xF0), "bad-tcp-doff"),  # data offset beyond packet
        (_set16(bytes(IP() / TCP())[:30], 2, 30), "truncated"),  # TCP header cut
        (_set16(GOOD6, 44, 7), "bad-udp-length"),
        (_set16(GOOD6, 44, 20), "bad-udp-length"),
        (_set16(bytes(IP() / ICMP())[:24], 2, 24), "truncated"),
        (_set16(bytes(IPv6() / IPv6ExtHdrHopByHop() / TCP())[:44], 4, 4), "truncated"),
    ],
)
def test_malformed_reasons(buf, reason):
    with pytest.raises(Malformed) as ei:
        parse(buf)
    assert ei.value.reason == reason
    assert reason in P.DROP_REASONS


def test_offset_beyond_buffer():
    with pytest.raises(Malformed) as ei:
        parse(GOOD4, len(GOOD4))
    assert ei.value.reason == "truncated"


def _parse_or_malformed(buf, offset=0):
    try:
        info = parse(buf, offset)
    except Malformed as e:
        assert e.reason in P.DROP_REASONS
        return None
    assert isinstance(info, P.PacketInfo)
    assert info.l3_off <= info.l4_off <= info.l3_off + info.ip_len <= len(buf)
    try:
        inner = P.parse_icmp_error(buf, info)
    except Malformed as e:
        assert e.reason in P.DROP_REASONS
        return info
    if inner is not None:
        assert inner.l3_off > info.l4_off
    return info


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=120))
def test_fuzz_arbitrary_bytes(data):
    _parse_or_malformed(data)
    if data:
        _parse_or_malformed(bytes([0x45]) + data)
        _parse_or_malformed(bytes([0x60]) + data)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(v4_packet(), v6_packet()), st.data())
def test_fuzz_mutated_packets(pkt, data):
    b = bytearray(bytes(pkt))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(b) - 1))
        b[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(b)))
    _parse_or_malformed(bytes(b[:cut]))
    _parse_or_malformed(bytes(b))


# ---------------------------------------------------------------- ICMP errors (parse)


def test_parse_icmp_error_v4():
    quoted = bytes(IP(src="192.0.2.1", dst="198.51.100.7") / TCP(sport=80, dport=40000,
                                                                flags="SA"))[:28]  # fmt: skip
    pkt = bytes(IP(src="198.51.100.7", dst="192.0.2.1") / ICMP(type=3, code=1) / Raw(quoted))
    info = parse(pkt)
    assert info.icmp_type == 3 and info.icmp_code == 1
    inner = P.parse_icmp_error(pkt, info)
    assert inner.l3_off == 28 and inner.l4_off == 48 and inner.proto == 6
    assert inner.saddr == socket.inet_aton("192.0.2.1")
    assert inner.daddr == socket.inet_aton("198.51.100.7")
    assert (inner.sport, inner.dport) == (80, 40000) and inner.ip_len == 40
    echo = bytes(IP() / ICMP(type=8))
    assert P.parse_icmp_error(echo, parse(echo)) is None
    short = bytes(IP() / ICMP(type=11) / Raw(quoted[:22]))
    with pytest.raises(Malformed):
        P.parse_icmp_error(short, parse(short))
    v6in4 = bytes(IP() / ICMP(type=3) / Raw(bytes(IPv6() / UDP())))
    with pytest.raises(Malformed) as ei:
        P.parse_icmp_error(v6in4, parse(v6in4))
    assert ei.value.reason == "bad-icmp-quote"


def test_parse_icmp_error_v6():
    quoted = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrDestOpt()
                   / UDP(sport=53, dport=5353) / Raw(b"x" * 100))[:60]  # fmt: skip
    pkt = bytes(IPv6(src="2001:db8::2", dst="2001:db8::1") / ICMPv6PacketTooBig(mtu=1280)
                / Raw(quoted))  # fmt: skip
    info = parse(pkt)
    assert info.proto == 58 and info.icmp_type == 2
    inner = P.parse_icmp_error(pkt, info)
    assert inner.proto == 17 and (inner.sport, inner.dport) == (53, 5353)
    assert inner.saddr == socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    assert inner.l4_off == 48 + 40 + 8
    echo = bytes(IPv6() / ICMPv6EchoRequest())
    assert P.parse_icmp_error(echo, parse(echo)) is None


# ---------------------------------------------------------------- checksums


@HSET
@given(st.binary(max_size=3000))
def test_checksum_matches_scapy(data):
    assert C.checksum(data) == scapy_checksum(data)


@HSET
@given(st.one_of(v4_packet(), v6_packet()))
def test_l4_checksum_recompute(pkt):
    buf = bytearray(bytes(pkt))
    info = parse(buf)
    if info.version == 4:
        assert P.ipv4_header_ok(buf, info)
        assert P.ipv4_header_csum(buf, 0) == struct.unpack_from("!H", buf, 10)[0]
    if info.csum_off >= 0:
        assert P.l4_checksum_ok(buf, info)
        assert P.l4_checksum(buf, info) == struct.unpack_from("!H", buf, info.csum_off)[0]
        buf[info.csum_off] ^= 0x55
        assert not P.l4_checksum_ok(buf, info)


@HSET
@given(st.integers(0, 0xFFFF), st.binary(min_size=2, max_size=64), st.data())
def test_csum_replace_rfc1624(seed, data, d):
    if len(data) & 1:
        data = data + b"\x01"
    data = struct.pack("!H", seed | 1) + data  # non-zero sum, like any real header
    c = C.checksum(data)
    for size in (2, 4, 16):
        if len(data) < size + 2:
            continue
        off = d.draw(st.integers(0, (len(data) - size) // 2)) * 2
        new = d.draw(st.binary(min_size=size, max_size=size))
        changed = data[:off] + new + data[off + size :]
        if int.from_bytes(changed, "big") == 0:
            continue
        assert C.csum_replace(c, data[off : off + size], new) == C.checksum(changed)


# ---------------------------------------------------------------- TTL, ICMP builders


@HSET
@given(st.one_of(v4_packet(), v6_packet()))
def test_dec_ttl(pkt):
    buf = bytearray(bytes(pkt))
    info = parse(buf)
    if info.ttl == 0:
        return
    before = info.ttl
    assert P.dec_ttl(buf, info) == before - 1 == info.ttl
    if info.version == 4:
        p = IP(bytes(buf))
        assert p.ttl == before - 1
        ref = p.copy()
        del ref.chksum
        assert IP(bytes(ref)).chksum == p.chksum
        assert P.ipv4_header_ok(buf, info)
    else:
        assert IPv6(bytes(buf)).hlim == before - 1


@pytest.mark.parametrize("plen", [0, 10, 548 - 40, 1000])
def test_build_icmp_unreachable_v4(plen):
    orig = bytes(IP(src="10.1.1.1", dst="192.168.0.10", tos=0xB8) / UDP(sport=5000, dport=53)
                 / Raw(b"p" * plen))  # fmt: skip
    vip = socket.inet_aton("192.168.0.10")
    out = icmperror.build_icmp_unreachable(orig, parse(orig), vip)
    p = IP(out)
    assert p.src == "192.168.0.10" and p.dst == "10.1.1.1" and p.ttl == 64
    assert p[ICMP].type == 3 and p[ICMP].code == 3
    assert len(out) == min(576, 28 + len(orig)) == p.len
    assert p.tos == (0xB8 & 0x1E) | 0xC0
    assert scapy_checksum(out[:20]) == 0 and scapy_checksum(out[20:]) == 0
    assert out[28:] == orig[: len(out) - 28]
    assert IPerror in p and p[IPerror].dst == "192.168.0.10"
    info = parse(out)
    assert P.l4_checksum_ok(out, info)


@pytest.mark.parametrize("plen", [0, 10, 3000])
def test_build_icmp_unreachable_v6(plen):
    orig = bytes(IPv6(src="2001:db8::c", dst="2001:db8::1") / TCP(sport=5000, dport=80)
                 / Raw(b"p" * plen))  # fmt: skip
    vip = socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    out = icmperror.build_icmp_unreachable(orig, parse(orig), vip)
    p = IPv6(out)
    assert p.src == "2001:db8::1" and p.dst == "2001:db8::c" and p.hlim == 64
    assert p[ICMPv6DestUnreach].type == 1 and p[ICMPv6DestUnreach].code == 4
    assert len(out) == min(1280, 48 + len(orig))
    icmp = out[40:]
    zeroed = icmp[:2] + b"\0\0" + icmp[4:]
    assert in6_chksum(58, p, zeroed) == struct.unpack_from("!H", icmp, 2)[0]
    assert P.l4_checksum_ok(out, parse(out))


def test_build_icmp_frag_needed():
    orig = bytes(IP(src="10.1.1.1", dst="192.168.0.10", flags="DF") / TCP() / Raw(b"x" * 1500))
    out = icmperror.build_icmp_frag_needed(orig, parse(orig), socket.inet_aton("192.168.0.10"),
                                           1400)
    p = IP(out)
    assert p[ICMP].type == 3 and p[ICMP].code == 4 and p[ICMP].nexthopmtu == 1400
    assert scapy_checksum(out[20:]) == 0 and len(out) == 576
    orig6 = bytes(IPv6(src="2001:db8::c", dst="2001:db8::1") / TCP() / Raw(b"x" * 1500))
    vip6 = socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    out6 = icmperror.build_icmp_frag_needed(orig6, parse(orig6), vip6, 1280)
    p6 = IPv6(out6)
    assert p6[ICMPv6PacketTooBig].mtu == 1280 and len(out6) == 1280
    assert P.l4_checksum_ok(out6, parse(out6))


def test_may_send_icmp_error():
    ok = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP())
    assert icmperror.may_send_icmp_error(ok, parse(ok))
    err = bytes(IP() / ICMP(type=3) / Raw(bytes(IP() / UDP())))
    assert not icmperror.may_send_icmp_error(err, parse(err))
    frag = bytes(IP(frag=10, proto=17) / Raw(b"x" * 8))
    assert not icmperror.may_send_icmp_error(frag, parse(frag))
    mc = bytes(IP(src="10.0.0.1", dst="224.0.0.1") / UDP())
    assert not icmperror.may_send_icmp_error(mc, parse(mc))
    err6 = bytes(IPv6() / ICMPv6DestUnreach() / Raw(bytes(IPv6() / UDP())))
    assert not icmperror.may_send_icmp_error(err6, parse(err6))


@pytest.mark.parametrize("n", [2049, 2050, 9000, 65535])
def test_checksum_large_buffers(n):
    data = bytes((i * 7919 + 13) & 0xFF for i in range(n))
    assert C.checksum(data) == scapy_checksum(data)
    assert C.checksum(bytearray(data)) == scapy_checksum(data)
    assert C.checksum(bytes(n)) == 0xFFFF
