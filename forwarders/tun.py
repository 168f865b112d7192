"""Tunnelling (``-i``): IPIP / IPv6 encapsulation (and GUE), as ``ip_vs_tunnel_xmit[_v6]``.

``encapsulate()`` is a pure function (no I/O) so the property tests can check every
header field; ``Tunnel`` is the forwarder: route lookup toward the real server, TTL,
MTU, encapsulation, then the outer packet goes to ``director.outbox`` (a raw
IPPROTO_RAW socket: the director's stack routes it as a locally generated packet,
which works with ``ip_forward=0`` as in the kernel's TUN selftest) and the original
is dropped.

Outer header (ipvs-semantics.md 6.3; ip_vs_prepare_tunneled_skb):
* IPv4 outer: version 4, IHL 5, protocol 4 (inner IPv4) / 41 (inner IPv6) / 17 (GUE),
  source = the address routing chooses toward the real server, destination = the real
  server, TTL = inner TTL after the decrement, TOS = inner DS field with
  INET_ECN_encapsulate (inner CE -> outer ECT(0), otherwise inner ECN copied), DF =
  inner DF when ``pmtu_disc=1`` (IPv6 inner: 0), ID 0: the kernel's raw-socket path
  then picks it exactly as ip_select_ident does for ip_vs (0 with DF, generated
  without).  The inner IPv4 header checksum is recomputed (ip_send_check).
* IPv6 outer: next header 4 / 41 / 17, traffic class as above, flow label 0, hop
  limit = inner TTL.
* GUE (``--tun-type gue --tun-port N``): UDP (source port from a flow hash in
  32768..60999, destination N, checksum only with --tun-csum/--tun-remcsum) + a
  4-byte GUE header (version 0, C=0, hlen 0, proto_ctype 4/41).  No remote-checksum
  option (the kernel adds it only for CHECKSUM_PARTIAL skbs, which a queued packet
  never is).  GRE is not implemented (counted as ``tun-gre-unsupported``).
"""

from __future__ import annotations

import random
import struct
import zlib

from pyvs.engine.neigh import KernelRoutes
from pyvs.engine.packet import (
    IPPROTO_UDP,
    PacketInfo,
    build_icmp_frag_needed,
    build_icmp_time_exceeded,
    checksum,
    dec_ttl,
    may_send_icmp_error,
    pseudo_header_sum,
    set_ipv4_header_csum,
)
from pyvs.engine.service import TUN_TYPE_GRE, TUN_TYPE_GUE, TUN_TYPE_IPIP
from pyvs.engine.verdict import ACCEPT, DROP
from pyvs.forwarders import Forwarder

IPPROTO_IPIP = 4
IPPROTO_IPV6 = 41
TUN_FLAG_CSUM = 1  # IP_VS_TUNNEL_ENCAP_FLAG_CSUM
TUN_FLAG_REMCSUM = 2
GUE_HLEN = 8 + 4  # UDP + GUE base header
LOCAL_PORT_MIN, LOCAL_PORT_MAX = 32768, 60999  # ip_local_port_range default

_ip4 = struct.Struct("!BBHHHBBH4s4s")
_ip6 = struct.Struct("!IHBB16s16s")
_udp = struct.Struct("!HHHH")


def ecn_encapsulate(ds: int) -> int:
    """INET_ECN_encapsulate(ds, ds): outer ECN = inner ECN, but CE becomes ECT(0)."""
    if ds & 3 == 3:
        return (ds & ~3) | 2
    return ds


def inner_fields(inner: bytes | bytearray, pmtu_disc: bool = True) -> tuple[int, int, int, int]:
    """(next protocol, DS field, TTL, DF bit 0x4000 or 0) of an inner IP packet."""
    if inner[0] >> 4 == 4:
        df = (inner[6] << 8 | inner[7]) & 0x4000 if pmtu_disc else 0
        return IPPROTO_IPIP, inner[1], inner[8], df
    ds = ((inner[0] & 0x0F) << 4) | (inner[1] >> 4)
    return IPPROTO_IPV6, ds, inner[7], 0


def gue_sport(inner: bytes | bytearray) -> int:
    """udp_flow_src_port(): a flow hash scaled into the local port range (the kernel
    hashes with a boot-time random seed; this hash is fixed, over the first 40 bytes)."""
    h = zlib.crc32(bytes(inner[:40]))
    return ((h * (LOCAL_PORT_MAX - LOCAL_PORT_MIN)) >> 32) + LOCAL_PORT_MIN


def encapsulate(inner: bytes | bytearray, saddr: bytes, daddr: bytes, *, pmtu_disc: bool = True,
                tun_type: int = TUN_TYPE_IPIP, tun_port: int = 0, tun_flags: int = 0,
                ident: int = 0) -> bytearray:  # fmt: skip
    """Outer header(s) + ``inner`` (one IP packet whose TTL is already decremented).

    The outer family follows the address size of ``daddr`` (4 -> IPv4, 16 -> IPv6).
    The inner IPv4 header checksum is recomputed in the copy that is encapsulated.
    """
    inner = bytearray(inner)
    if inner[0] >> 4 == 4:
        set_ipv4_header_csum(inner, 0)
    proto, ds, ttl, df = inner_fields(inner, pmtu_disc)
    tos = ecn_encapsulate(ds)
    payload = inner
    if tun_type == TUN_TYPE_GUE:
        gue = bytes((0, proto, 0, 0))  # ver 0, C 0, hlen 0 | proto_ctype | flags
        ulen = 8 + len(gue) + len(inner)
        udp = bytearray(_udp.pack(gue_sport(inner), tun_port, ulen, 0))
        payload = udp + gue + inner
        if tun_flags & (TUN_FLAG_CSUM | TUN_FLAG_REMCSUM):
            c = checksum(payload, pseudo_header_sum(saddr, daddr, IPPROTO_UDP, ulen))
            struct.pack_into("!H", payload, 6, c if c else 0xFFFF)
        proto = IPPROTO_UDP
    elif tun_type != TUN_TYPE_IPIP:
        raise NotImplementedError("GRE encapsulation")
    if len(daddr) == 4:
        hdr = bytearray(_ip4.pack(0x45, tos, 20 + len(payload), ident & 0xFFFF, df, ttl, proto,
                                  0, saddr, daddr))
        set_ipv4_header_csum(hdr, 0)
    else:
        hdr = bytearray(_ip6.pack(0x60000000 | (tos << 20), len(payload), proto, ttl, saddr,
                                  daddr))
    return hdr + payload


def fragment_v4(packet: bytes | bytearray, mtu: int, ident: int) -> list[bytes]:
    """ip_fragment() for an IPv4 packet without DF semantics (ignore_df): fragments of
    at most ``mtu`` bytes, payloads in multiples of 8, DF cleared, all with ``ident``.
    IP options are copied into every fragment (the kernel copies only "copied" ones)."""
    ihl = (packet[0] & 0x0F) << 2
    hdr = bytearray(packet[:ihl])
    data = memoryview(bytes(packet))[ihl:]
    base = (struct.unpack_from("!H", packet, 6)[0] & 0x1FFF) << 3
    orig_mf = struct.unpack_from("!H", packet, 6)[0] & 0x2000
    step = ((mtu - ihl) // 8) * 8
    if step <= 0:
        return []
    out = []
    for off in range(0, len(data), step):
        chunk = data[off : off + step]
        more = off + step < len(data)
        h = bytearray(hdr)
        struct.pack_into("!HH", h, 2, ihl + len(chunk), ident & 0xFFFF)
        struct.pack_into("!H", h, 6, ((base + off) >> 3) | (0x2000 if more or orig_mf else 0))
        set_ipv4_header_csum(h, 0)
        out.append(bytes(h + chunk))
    return out


class _RoutedForwarder(Forwarder):
    """Shared by DR and TUN: route lookup toward the real server and the TTL rule."""

    def __init__(self, routes: KernelRoutes | None = None) -> None:
        self._routes = routes
        self._ident = random.getrandbits(16) or 1

    @property
    def routes(self) -> KernelRoutes:
        if self._routes is None:
            self._routes = KernelRoutes()
        return self._routes

    def tick(self, director) -> None:
        """Periodic: take the kernel's route/neighbour notifications (cache invalidation)."""
        if self._routes is not None:
            self._routes.poll()

    def next_ident(self) -> int:
        self._ident = (self._ident % 0xFFFF) + 1
        return self._ident

    @staticmethod
    def time_exceeded(director, buf, info: PacketInfo) -> int:
        """decrement_ttl(): TTL <= 1 -> ICMP time exceeded to the client (from the VIP,
        the address the packet was for: icmp_send's choice for a local destination)."""
        if may_send_icmp_error(buf, info):
            director.outbox.append(build_icmp_time_exceeded(buf, info, info.daddr))
        director.drops["ttl-exceeded"] += 1
        return DROP

    @staticmethod
    def too_big(director, buf, info: PacketInfo, mtu: int, icmp: bool) -> int:
        """ensure_mtu_is_adequate(): ICMP frag needed / packet too big to the client."""
        if not icmp and info.first_frag and may_send_icmp_error(buf, info):
            director.outbox.append(build_icmp_frag_needed(buf, info, info.daddr, mtu))
        director.drops["frag-needed"] += 1
        return DROP


PMTU_EXPIRES = 600.0  # ip_rt_mtu_expires: a learned path MTU is forgotten after 10 min


class Tunnel(_RoutedForwarder):
    """ip_vs_tunnel_xmit / ip_vs_tunnel_xmit_v6."""

    name = "Tunnel"

    def __init__(self, routes: KernelRoutes | None = None) -> None:
        super().__init__(routes)
        self._pmtu: dict[bytes, tuple[int, float]] = {}  # real server -> (mtu, expires)

    def learn_pmtu(self, daddr: bytes, mtu: int, now: float) -> None:
        """ipv4_update_pmtu() from a frag-needed about our tunnel packets (ip_vs_in_icmp)."""
        if mtu >= 68:
            self._pmtu[daddr] = (mtu, now + PMTU_EXPIRES)

    def path_mtu(self, daddr: bytes, now: float) -> int | None:
        """The MTU toward daddr: the route's, lowered by a learned path MTU."""
        route = self.routes.route(daddr)
        if route is None:
            return None
        learned = self._pmtu.get(daddr)
        if learned is not None:
            if learned[1] > now:
                return min(route.mtu, learned[0])
            del self._pmtu[daddr]
        return route.mtu

    def to_real(self, director, buf, info, conn) -> int:
        return self._xmit(director, buf, info, conn, False)

    def icmp_to_real(self, director, buf, info, inner, conn) -> int:
        return self._xmit(director, buf, info, conn, True)

    def _xmit(self, director, buf, info: PacketInfo, conn, icmp: bool) -> int:
        dest = conn.dest
        tun_type = dest.tun_type if dest is not None else TUN_TYPE_IPIP
        if tun_type == TUN_TYPE_GRE:
            director.drops["tun-gre-unsupported"] += 1
            return DROP
        daddr = conn.daddr
        route = self.routes.route(daddr)
        if route is None:
            director.drops["no-route"] += 1
            return DROP
        if route.local:
            return ACCEPT  # the real server is this host: local delivery, untouched
        if info.ttl <= 1:
            return self.time_exceeded(director, buf, info)
        dec_ttl(buf, info)
        outer6 = len(daddr) == 16
        route_mtu = self.path_mtu(daddr, director.clock.now()) or route.mtu
        mtu = route_mtu - (40 if outer6 else 20)
        if tun_type == TUN_TYPE_GUE:
            mtu -= GUE_HLEN
        if mtu < (1280 if outer6 else 68):
            director.drops["tun-mtu-too-small"] += 1
            return DROP
        pmtu_disc = bool(director.sysctl.pmtu_disc)
        length = info.ip_len
        if length > mtu:
            if info.version == 6:
                return self.too_big(director, buf, info, mtu, icmp)
            if pmtu_disc and info.df and not icmp:
                return self.too_big(director, buf, info, mtu, icmp)
        saddr = route.src
        if saddr is None:
            if outer6:
                director.drops["no-source-address"] += 1
                return DROP
            saddr = bytes(4)  # the raw socket fills in the routing source
        l3 = info.l3_off
        outer = encapsulate(memoryview(buf)[l3 : l3 + length], saddr, daddr,
                            pmtu_disc=pmtu_disc, tun_type=tun_type,
                            tun_port=dest.tun_port if dest is not None else 0,
                            tun_flags=dest.tun_flags if dest is not None else 0)
        if len(outer) > route_mtu:  # only without DF (or ICMP): fragment the outer packet
            if outer6:
                director.drops["tun-v6-fragment-unsupported"] += 1
                return DROP
            frags = fragment_v4(outer, route_mtu, self.next_ident())
            director.outbox.extend(frags)
            return DROP
        director.outbox.append(bytes(outer))
        return DROP
