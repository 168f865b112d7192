"""ICMP errors about connections (ip_vs_in_icmp, ip_vs_out_icmp, ip_vs_in_icmp's tunnel case).

IPVS has no ICMP "protocol" of its own: an ICMP error matters when the packet it
quotes belongs to a connection.  Three cases, tried in order:
  * about one of our tunnel packets (the quote is IPIP, GUE or GRE toward a tunnel real
    server of that type, and the error came to one of the director's own addresses):
    learn the path MTU and tell the client, from the VIP, about its original request
    (the IPv4 packet inside the quote), with the MTU minus 20;
  * from a NAT real server about a request it got (quote: client -> RS): the reply
    direction; the forwarder rewrites it back toward the client;
  * from a client about a reply it got (quote: VIP -> client): the request direction;
    the connection's forwarder takes it to the real server.
Anything else is not IPVS business (ACCEPT).  The ICMP checksum is verified first
where the error is rewritten, as the kernel drops bad ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyvs.engine.icmperror import build_icmp_error, may_send_icmp_error
from pyvs.engine.model import (
    FWD_MASQ,
    IPPROTO_TCP,
    IPPROTO_UDP,
    TUN_TYPE_GRE,
    TUN_TYPE_GUE,
    TUN_TYPE_IPIP,
)
from pyvs.engine.packet import (
    Malformed,
    PacketInfo,
    l4_checksum_ok,
    parse_icmp_error,
    parse_quoted,
)
from pyvs.engine.verdict import ACCEPT, DROP

if TYPE_CHECKING:
    from pyvs.engine.director import Director

IPPROTO_IPIP = 4
IPPROTO_GRE = 47
GRE_CSUM = 0x8000
_TUNNEL_PROTOS = frozenset((IPPROTO_IPIP, IPPROTO_UDP, IPPROTO_GRE))


def handle(d: Director, buf: bytearray, info: PacketInfo, now: float) -> int:
    try:
        inner = parse_icmp_error(buf, info)
    except Malformed:
        return ACCEPT  # "The packet looks wrong, ignore" (ip_vs_in_icmp)
    if inner is None:
        return ACCEPT  # echo and friends: not IPVS business
    if info.version == 4 and inner.proto in _TUNNEL_PROTOS and _arrived_locally(d, info):
        if inner.is_frag and not inner.first_frag:
            return ACCEPT  # no tunnel header in a later fragment
        at = _tunnel_payload(d, buf, inner, info.l3_off + info.ip_len)
        if inner.proto == IPPROTO_IPIP or at is not None:
            return _about_tunnel(d, buf, info, inner, at, now) if at is not None else ACCEPT
    if inner.proto != IPPROTO_TCP and inner.proto != IPPROTO_UDP:
        return ACCEPT
    if inner.is_frag and not inner.first_frag:
        return ACCEPT
    table = d.conntable
    if not l4_checksum_ok(buf, info):
        d.drops["bad-icmp-checksum"] += 1
        return DROP
    # From a real server about a request it got (quoted client -> RS): NAT out.
    conn = table.out_get(inner.proto, inner.daddr, inner.dport, inner.saddr, inner.sport)
    if conn is not None and conn.fwd == FWD_MASQ:
        d.last = conn
        d.count_out(conn.dest, 1, info.ip_len)
        verdict = d.forwarders[conn.fwd].icmp_to_client(d.ctx, buf, info, inner, conn)
        d.release(conn, now)
        return verdict
    # From a client about a reply it got (quoted VIP -> client): in, swapped.
    conn = table.in_get(inner.proto, inner.daddr, inner.dport, inner.saddr, inner.sport)
    if conn is None:
        return ACCEPT
    d.last = conn
    d.count_in(conn.dest, 1, info.ip_len)
    verdict = d.forwarders[conn.fwd].icmp_to_real(d.ctx, buf, info, inner, conn)
    d.release(conn, now)
    return verdict


def _arrived_locally(d: Director, info: PacketInfo) -> bool:
    """An error about our tunnel packets must be addressed to the director (RTCF_LOCAL)."""
    route = d.ctx.routes.route(info.daddr)
    return route is not None and route.local


def _tunnel_payload(d: Director, buf: bytearray, outer: PacketInfo, end: int) -> int | None:
    """Where the client's packet starts inside a quoted tunnel packet to one of our tunnel
    real servers, or None: IPIP (ip_vs_in_icmp), GUE (ipvs_udp_decap: version 0, no
    control, inner IPIP) or GRE (ipvs_gre_decap: version 0, only the checksum flag,
    protocol IPv4), each checked against the destination's tunnel type."""
    l4 = outer.l4_off
    if outer.proto == IPPROTO_IPIP:
        dest = d.services.find_tunnel(outer.daddr, 0)
        return l4 if dest is not None and dest.tun_type == TUN_TYPE_IPIP else None
    if outer.proto == IPPROTO_UDP:
        if end - l4 < 12:
            return None
        dest = d.services.find_tunnel(outer.daddr, int.from_bytes(buf[l4 + 2:l4 + 4], "big"))
        first, ctype = buf[l4 + 8], buf[l4 + 9]
        if dest is None or dest.tun_type != TUN_TYPE_GUE or first >> 5 or ctype != IPPROTO_IPIP:
            return None
        return l4 + 8 + 4 + ((first & 0x1F) << 2)
    if end - l4 < 4:  # GRE
        return None
    dest = d.services.find_tunnel(outer.daddr, 0)
    flags, ptype = int.from_bytes(buf[l4:l4 + 2], "big"), int.from_bytes(buf[l4 + 2:l4 + 4], "big")
    if dest is None or dest.tun_type != TUN_TYPE_GRE or flags & ~GRE_CSUM or ptype != 0x0800:
        return None
    return l4 + (8 if flags & GRE_CSUM else 4)


def _about_tunnel(d: Director, buf: bytearray, info: PacketInfo, outer: PacketInfo,
                  at: int, now: float) -> int:
    """An error about one of our tunnel packets: learn the path MTU and tell the client,
    from the VIP, about its original request (quoted from ``at``)."""
    end = info.l3_off + info.ip_len
    try:
        orig = parse_quoted(buf, at, end)
    except Malformed:
        return ACCEPT
    if orig.version != 4 or (orig.proto != IPPROTO_TCP and orig.proto != IPPROTO_UDP):
        return ACCEPT
    conn = d.conntable.in_get(orig.proto, orig.saddr, orig.sport, orig.daddr, orig.dport)
    if conn is None:
        return ACCEPT
    if not l4_checksum_ok(buf, info):
        d.drops["bad-icmp-checksum"] += 1
        return DROP
    icmp_off = info.l4_off
    word = bytes(buf[icmp_off + 4:icmp_off + 8])  # ic->un.gateway
    if info.icmp_type == 3 and info.icmp_code == 4:
        mtu = int.from_bytes(word[2:4], "big")
        d.ctx.pmtu.learn(outer.daddr, mtu, now)
        route = d.ctx.routes.route(outer.daddr)
        if route is not None:
            mtu = d.ctx.pmtu.get(outer.daddr, route.mtu, now)
        if not outer.df:  # client uses PMTUD?
            return DROP
        if mtu > 68 + 20:
            mtu -= 20
        word = mtu.to_bytes(4, "big")
    quote = bytearray(buf[orig.l3_off:end])
    qinfo = parse_quoted(quote, 0, len(quote))
    if may_send_icmp_error(quote, qinfo):
        d.outbox.append(build_icmp_error(quote, qinfo, orig.daddr, info.icmp_type,
                                         info.icmp_code, word))
    d.last = conn
    d.count_out(conn.dest, 1, len(quote))
    return DROP
