"""ICMP errors about connections (ip_vs_in_icmp, ip_vs_out_icmp, ip_vs_in_icmp's tunnel case).

IPVS has no ICMP "protocol" of its own: an ICMP error matters when the packet it
quotes belongs to a connection.  Three cases, tried in order:
  * about one of our tunnel packets (the quote is IPIP / IPv6-in-IPv4 toward a tunnel
    real server): learn the path MTU and tell the client, from the VIP, about its
    original request (the quote inside the quote), with the MTU minus 20;
  * from a NAT real server about a request it got (quote: client -> RS): the reply
    direction; the forwarder rewrites it back toward the client;
  * from a client about a reply it got (quote: VIP -> client): the request direction;
    the connection's forwarder takes it to the real server.
Anything else is not IPVS business (ACCEPT).  The ICMP checksum is verified first
where the error is rewritten, as the kernel drops bad ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyvs.engine.model import FWD_MASQ, IPPROTO_TCP, IPPROTO_UDP
from pyvs.engine.packet import (
    Malformed,
    PacketInfo,
    build_icmp_error,
    l4_checksum_ok,
    may_send_icmp_error,
    parse_icmp_error,
    parse_quoted,
)
from pyvs.engine.verdict import ACCEPT, DROP

if TYPE_CHECKING:
    from pyvs.engine.director import Director

IPPROTO_IPIP = 4
IPPROTO_IPV6 = 41


def handle(d: Director, buf: bytearray, info: PacketInfo, now: float) -> int:
    try:
        inner = parse_icmp_error(buf, info)
    except Malformed:
        return ACCEPT  # "The packet looks wrong, ignore" (ip_vs_in_icmp)
    if inner is None:
        return ACCEPT  # echo and friends: not IPVS business
    if info.version == 4 and (inner.proto == IPPROTO_IPIP or inner.proto == IPPROTO_IPV6):
        return _about_tunnel(d, buf, info, inner, now)
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


def _about_tunnel(d: Director, buf: bytearray, info: PacketInfo, outer: PacketInfo,
                  now: float) -> int:
    """An error about one of our IPIP packets: learn the path MTU and tell the client,
    from the VIP, about its original request."""
    if outer.is_frag and not outer.first_frag:
        return ACCEPT
    if not d.services.has_tunnel_dest(outer.daddr):
        return ACCEPT  # only for a known tunnel (ip_vs_find_tunnel)
    end = info.l3_off + info.ip_len
    try:
        orig = parse_quoted(buf, outer.l4_off, end)
    except Malformed:
        return ACCEPT
    if orig.proto != IPPROTO_TCP and orig.proto != IPPROTO_UDP:
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
