"""Random service tables and random frames aimed at them, for the agreement tests of the
model of what pyvs takes (engine/takes.py) and its encodings.

``config_st``: a service table built through the real ServiceTable: addr:port services
(TCP, UDP; port 0, 21 and others) and fwmark services, IPv4 and IPv6, with NAT,
direct-routing and tunnel real servers.  Their addresses come from small pools, so
services and frames meet often; ``LOCAL`` (the virtual addresses) are local in the
kernel tests' namespace.

``frame_st``: mostly a frame aimed at something of the configuration (a service's
addr:port, FTP data ports, a NAT real server's replies, an ICMP error to a service or
quoting a packet to a real server, a marked packet), then, now and then, one of the
details the model cares about changed: protocol, direction, ports, TTL, IPv4 options,
fragments, IPv6 extension headers, ICMP type.  With ``valid=False`` also what netfilter
refuses: version, lengths, ethertype, VLAN tags, truncation.  ``stamp`` puts a tag and a
firewall mark into a valid frame (the kernel tests' own mangle rule sets the mark from
the IPv4 ID / IPv6 flow label), fields the model never reads.
"""

from __future__ import annotations

import ipaddress
import random
import struct

from hypothesis import strategies as st

from pyvs.engine.clock import VirtualClock
from pyvs.engine.model import (
    AF_INET,
    AF_INET6,
    FWD_DROUTE,
    FWD_MASQ,
    FWD_TUNNEL,
    DestSpec,
    ServiceSpec,
)
from pyvs.engine.service import IPVSError, ServiceTable
from pyvs.engine.sysctl import Sysctl
from pyvs.schedulers.base import SchedulerEnv

TCP, UDP, SCTP, ICMP, ICMP6 = 6, 17, 132, 1, 58
ETH_IP, ETH_IP6, ETH_ARP, ETH_VLAN = 0x0800, 0x86DD, 0x0806, 0x8100
DST_MAC = bytes.fromhex("020000000002")
SRC_MAC = bytes.fromhex("020000000001")


def a(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


VIPS = {4: [a(f"198.18.0.{i}") for i in range(1, 5)],
        6: [a(f"2001:db8::{i}") for i in range(1, 5)]}
REALS = {4: [a(f"198.18.1.{i}") for i in range(1, 5)],
         6: [a(f"2001:db8:1::{i}") for i in range(1, 5)]}
LOCAL = frozenset(VIPS[4] + VIPS[6])
# random addresses stay inside 198.18.0.0/16 and 2001:db8:0::/48; 198.19.0.0/16 and
# 2001:db8:ffff::/48 are the kernel tests' own (gateway, sentinel)
v4_any = st.integers(0, 0xFFFF).map(lambda n: (0xC6120000 + n).to_bytes(4, "big"))
v6_any = st.binary(min_size=10, max_size=10).map(lambda b: a("2001:db8::")[:6] + b)
port_st = st.one_of(st.sampled_from([0, 20, 21, 53, 80, 443, 1023, 1024, 65535]),
                    st.integers(0, 65535))
mark_st = st.one_of(st.sampled_from([1, 2, 7, 80]), st.integers(1, 0xFFFF))
ttl_st = st.sampled_from([0, 1, 2, 3, 64, 255])


def rarely(draw, n: int) -> bool:
    """True about once in n draws (False shrinks to the plain case)."""
    return draw(st.integers(0, n - 1)) == n - 1


def any_addr(draw, family: int) -> bytes:
    pools = VIPS[family] + REALS[family]
    return draw(st.one_of(st.sampled_from(pools), v4_any if family == 4 else v6_any))


# ------------------------------------------------------------------ configurations
@st.composite
def config_st(draw, max_services: int = 6) -> list:
    """The services of a ServiceTable filled at random (VirtualService objects)."""
    table = ServiceTable(SchedulerEnv(clock=VirtualClock(), sysctl=Sysctl(),
                                      random=random.Random(0)))
    for _ in range(draw(st.integers(0, max_services))):
        family = draw(st.sampled_from([4, 6]))
        af = AF_INET if family == 4 else AF_INET6
        if rarely(draw, 4):
            spec = ServiceSpec(af, TCP, bytes(len(VIPS[family][0])), 0,
                               fwmark=draw(mark_st), scheduler="rr")
        else:
            proto = draw(st.sampled_from([TCP, UDP]))
            port = draw(st.one_of(st.sampled_from([0, 21, 53, 80, 8080]), port_st))
            spec = ServiceSpec(af, proto, draw(st.sampled_from(VIPS[family])), port,
                               scheduler="rr")
        try:
            svc = table.add_service(spec)
        except IPVSError:
            continue
        for _ in range(draw(st.integers(0, 3))):
            fwd = draw(st.sampled_from([FWD_MASQ, FWD_MASQ, FWD_DROUTE, FWD_TUNNEL]))
            port = draw(st.one_of(st.just(0), st.just(spec.port), port_st))
            try:
                table.add_dest(svc.key, DestSpec(draw(st.sampled_from(REALS[family])), port,
                                                 fwd=fwd))
            except IPVSError:
                continue
    return list(table.services.values())


# ------------------------------------------------------------------ frame building
def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return 0xFFFF ^ s


def eth(ethertype: int, body: bytes, src: bytes = SRC_MAC, dst: bytes = DST_MAC) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + body


def ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, *, ttl: int = 64,
         flags: int = 0, frag: int = 0, options: bytes = b"", version: int = 4,
         ihl: int | None = None, total: int | None = None) -> bytes:
    """An IPv4 header with a valid checksum (IHL from the options unless given)."""
    ihl = 5 + len(options) // 4 if ihl is None else ihl
    total = 20 + len(options) + len(payload) if total is None else total
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", version << 4 | (ihl & 15), 0, total & 0xFFFF,
                                0, flags << 13 | frag, ttl, proto, 0, src, dst) + options)
    struct.pack_into("!H", hdr, 10, csum(bytes(hdr)))
    return bytes(hdr) + payload


def ipv6(src: bytes, dst: bytes, nh: int, payload: bytes, *, hlim: int = 64,
         version: int = 6, plen: int | None = None) -> bytes:
    plen = len(payload) if plen is None else plen
    return struct.pack("!IHBB16s16s", version << 28, plen & 0xFFFF, nh, hlim, src,
                       dst) + payload


def ext_header(kind: int, nh: int, frag_offset: int = 0) -> bytes:
    """An IPv6 extension header of 8 bytes: hop-by-hop / destination options holding
    one PadN option, or a fragment header (``frag_offset`` in 8-byte units, M set)."""
    if kind == 44:
        return struct.pack("!BBHI", nh, 0, frag_offset << 3 | 1, 0x1234)
    return struct.pack("!BB", nh, 0) + bytes([1, 4, 0, 0, 0, 0])


def l4(proto: int, sport: int, dport: int, rest: bytes = b"") -> bytes:
    if proto == TCP:
        return struct.pack("!HHIIHHHH", sport, dport, 1, 0, 5 << 12 | 2, 65535, 0, 0) + rest
    if proto in (UDP, SCTP):
        return struct.pack("!HHHH", sport, dport, 8 + len(rest), 0) + rest
    return struct.pack("!HH", sport, dport) + rest


def icmp_error(family: int, icmp_type: int, quoted_src: bytes, quoted_dst: bytes,
               proto: int, sport: int, dport: int) -> bytes:
    """An ICMP(v6) message quoting the first bytes of a packet (header + 8 bytes)."""
    inner = (ipv4(quoted_src, quoted_dst, proto, l4(proto, sport, dport)[:8]) if family == 4
             else ipv6(quoted_src, quoted_dst, proto, l4(proto, sport, dport)[:8]))
    return struct.pack("!BBHI", icmp_type, 0, 0, 0) + inner


# ------------------------------------------------------------------ frames
def _aims(services) -> list[tuple]:
    """What frames may aim at: (kind, family, proto, addr, port, extra)."""
    aims = []
    for svc in services:
        family = 4 if svc.af == AF_INET else 6
        if svc.fwmark:
            aims.append(("mark", family, None, None, None, svc.fwmark))
            aims.append(("icmp-local", family, None, None, None, None))
        else:
            aims.append(("to", family, svc.protocol, svc.addr, svc.port, None))
            aims.append(("icmp-to", family, svc.protocol, svc.addr, svc.port, None))
        for d in svc.destinations:
            if d.fwd == FWD_MASQ:
                aims.append(("from", family, svc.protocol, d.addr, d.port, None))
                aims.append(("icmp-about", family, svc.protocol, d.addr, d.port, None))
            elif d.fwd == FWD_TUNNEL:
                aims.append(("icmp-local", 4, None, None, None, None))
    return aims


@st.composite
def frame_st(draw, services, valid: bool = False) -> tuple[bytes, int]:
    """(frame, mark): see the module's docstring.  The mark is meant for ``stamp``."""
    aims = _aims(services)
    aim = draw(st.sampled_from(aims)) if aims and not rarely(draw, 6) else None
    kind = aim[0] if aim else "none"
    family = aim[1] if aim else draw(st.sampled_from([4, 6]))
    src, dst = any_addr(draw, family), any_addr(draw, family)
    proto = (aim[2] if aim and aim[2] else draw(st.sampled_from([TCP, UDP, SCTP])))
    sport, dport = draw(port_st), draw(port_st)
    mark = aim[5] if kind == "mark" and not rarely(draw, 4) else draw(
        st.one_of(st.just(0), mark_st))
    if kind == "to":
        dst = aim[3]
        if aim[4] and not rarely(draw, 3):
            dport = aim[4]
        elif aim[4] == 21:
            dport = draw(st.sampled_from([20, 19, 1023, 1024, 2121, 65535]))
    elif kind == "from":
        src = aim[3]
        if aim[4] and not rarely(draw, 3):
            sport = aim[4]
    elif kind == "icmp-local":
        dst = draw(st.sampled_from(VIPS[family]))
    if draw(st.booleans()) and kind in ("to", "mark", "none"):
        dst = draw(st.sampled_from(VIPS[family])) if kind != "to" else dst
    if rarely(draw, 8):  # 0 is also IPv6's hop-by-hop header, which ipv6_rcv checks
        proto = draw(st.sampled_from([TCP, UDP, SCTP, ICMP, ICMP6, 47, 255]
                                     + ([] if valid and family == 6 else [0])))
    if rarely(draw, 8):  # the other direction
        src, dst, sport, dport = dst, src, dport, sport
    if rarely(draw, 10):
        sport, dport = dport, sport
    payload = l4(proto, sport, dport, draw(st.binary(max_size=8)))
    if kind.startswith("icmp") or rarely(draw, 12):
        proto = ICMP if family == 4 else ICMP6
        errors = [3, 4, 11] if family == 4 else [1, 2, 3, 4, 0, 100]
        icmp_type = draw(st.one_of(st.sampled_from(errors), st.integers(0, 255)))
        qsrc, qdst = any_addr(draw, family), any_addr(draw, family)
        if kind == "icmp-to":  # about a reply the service sent: to and from its address
            dst, qsrc = aim[3], aim[3]
        elif kind == "icmp-about":  # about a request forwarded to a real server
            qdst = aim[3]
        payload = icmp_error(family, icmp_type, qsrc, qdst, draw(st.sampled_from([TCP, UDP])),
                             sport, dport)
        if rarely(draw, 5):
            payload = payload[:draw(st.integers(0, len(payload)))]
    ttl = draw(ttl_st)
    if family == 4:
        options = b""
        if rarely(draw, 4):  # NOPs when valid: the kernel drops bad options before routing
            options = draw(st.binary(min_size=4, max_size=40).map(
                lambda b: b[:len(b) - len(b) % 4]))
            if valid:
                options = b"\x01" * len(options)
        frag = draw(st.integers(1, 0x1FFF)) if rarely(draw, 6) else 0
        kw = {}
        if not valid and rarely(draw, 10):
            kw = draw(st.sampled_from([{"version": 6}, {"ihl": 4}, {"ihl": 3}]))
        if not valid and rarely(draw, 10):
            kw["total"] = draw(st.integers(0, 20 + len(options) + len(payload) + 8))
        body = ipv4(src, dst, proto, payload, ttl=ttl, flags=draw(st.integers(0, 3)),
                    frag=frag, options=options, **kw)
        ethertype = ETH_IP
    else:
        chain, nh = [], proto
        if rarely(draw, 4):
            chain = draw(st.lists(st.sampled_from([0, 60, 44]), min_size=1, max_size=2,
                                  unique=True))
            if 0 in chain:  # hop-by-hop comes first or not at all
                chain = [0] + [k for k in chain if k != 0]
        headers = b""
        for k in reversed(chain):
            offset = draw(st.sampled_from([0, 0, 1, 185])) if k == 44 else 0
            headers = ext_header(k, nh, offset) + headers
            nh = k
        kw = {}
        if not valid and rarely(draw, 10):
            kw["version"] = draw(st.sampled_from([4, 0, 7]))
        if not valid and rarely(draw, 10):
            kw["plen"] = draw(st.integers(0, len(headers) + len(payload) + 8))
        body = ipv6(src, dst, nh, headers + payload, hlim=ttl, **kw)
        ethertype = ETH_IP6
    if not valid and rarely(draw, 12):
        ethertype = draw(st.sampled_from([ETH_ARP, ETH_VLAN, 0x88A8, 0x0008, 0xDD86,
                                          ETH_IP6 if family == 4 else ETH_IP]))
    frame = eth(ethertype, body)
    if not valid and rarely(draw, 6):
        frame = frame[:draw(st.integers(14, len(frame)))]
    return frame, mark


def stamp(frame: bytes, tag: int, mark: int) -> bytes:
    """A valid frame with ``tag`` in its TOS / traffic class and ``mark`` in its IPv4 ID
    / IPv6 flow label (the IPv4 header checksum recomputed)."""
    b = bytearray(frame)
    if b[12:14] == b"\x08\x00":
        b[15] = tag
        struct.pack_into("!H", b, 18, mark & 0xFFFF)
        ihl = (b[14] & 15) << 2
        struct.pack_into("!H", b, 24, 0)
        struct.pack_into("!H", b, 24, csum(bytes(b[14:14 + ihl])))
    else:
        struct.pack_into("!I", b, 14, 6 << 28 | tag << 20 | (mark & 0xFFFFF))
    return bytes(b)


def describe(frame: bytes) -> str:
    return f"{len(frame)} bytes: {frame.hex(' ')}"
