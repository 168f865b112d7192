"""Tunnelling (``-i``): IPIP / IPv6 encapsulation, GUE and GRE, as ``ip_vs_tunnel_xmit[_v6]``.

``Tunnel`` is the forwarder (the pure encapsulation functions are in
forwarders/encap.py): route lookup toward the real server, TTL,
MTU, encapsulation, then the outer packet goes to ``ctx.outbox`` (a raw
IPPROTO_RAW socket: the director's stack routes it as a locally generated packet,
which works with ``ip_forward=0`` as in the kernel's TUN selftest) and the original
is dropped.

Outer header (ip_vs_prepare_tunneled_skb; docs/ipvs-semantics.md, "Tunnelling"):
* IPv4 outer: version 4, IHL 5, protocol 4 (inner IPv4) / 41 (inner IPv6) / 17 (GUE) /
  47 (GRE),
  source = the address routing chooses toward the real server, destination = the real
  server, TTL = inner TTL after the decrement, TOS = inner DS field with
  INET_ECN_encapsulate (inner CE -> outer ECT(0), otherwise inner ECN copied), DF =
  inner DF when ``pmtu_disc=1`` (IPv6 inner: 0), ID 0: the kernel's raw-socket path
  then picks it exactly as ip_select_ident does for ip_vs (0 with DF, generated
  without).  The inner IPv4 header checksum is recomputed (ip_send_check).
* IPv6 outer: next header 4 / 41 / 17 / 47, traffic class as above, flow label 0, hop
  limit = inner TTL.
* GUE (``--tun-type gue --tun-port N``): UDP (source port from a flow hash in
  32768..60999, destination N, checksum only with --tun-csum/--tun-remcsum) + a
  4-byte GUE header (version 0, C=0, hlen 0, proto_ctype 4/41).  No remote-checksum
  option (the kernel adds it only for CHECKSUM_PARTIAL skbs, which a queued packet
  never is).
* GRE (``--tun-type gre``): the 4-byte base header (version 0, protocol 0x0800 for an
  inner IPv4 packet, 0x86DD for IPv6); with --tun-csum the C bit and the checksum over
  GRE header and payload (8 bytes).  No key, no sequence number.
* The MTU left for the inner packet is the route's minus the outer IP header, minus
  UDP + GUE (12) or the GRE header (4 or 8); below 68 (IPv6: 1280) the packet is dropped.
"""

from __future__ import annotations

from typing import NamedTuple

from pyvs.engine.model import AF_INET6, TUN_TYPE_GRE, TUN_TYPE_GUE, TUN_TYPE_IPIP
from pyvs.engine.neigh import ReadyHop, ready_l2_hop
from pyvs.engine.packet import PacketInfo, dec_ttl
from pyvs.engine.verdict import ACCEPT, DROP
from pyvs.forwarders.base import ForwardContext
from pyvs.forwarders.encap import GUE_HLEN, encapsulate, fragment_v4, gre_hlen
from pyvs.forwarders.routed import RoutedForwarder


class TunnelPlan(NamedTuple):
    """The outer header every IPIP (IPv4 in IPv4) or IPv6-in-IPv6 packet toward one real
    server shares: source, destination (its size says the family), whether DF is copied
    from the inner packet (pmtu_disc; IPv4 only), and the largest inner packet that goes
    without ICMP or fragmentation; and, for IPIP, when the next hop's MAC is known and
    routing gave a source address, the Ethernet frame's way out (``hop``: the batch path
    then sends ready frames instead of going through the stack, engine/fastpath.py)."""

    saddr: bytes
    daddr: bytes
    copy_df: bool
    mtu: int  # the largest inner packet
    hop: ReadyHop | None = None


class Tunnel(RoutedForwarder):
    """ip_vs_tunnel_xmit / ip_vs_tunnel_xmit_v6."""

    name = "Tunnel"

    def ready_plan(self, ctx: ForwardContext, conn) -> TunnelPlan | None:
        """The outer header ``_xmit`` would put on a packet of ``conn`` now, if all it
        would do is decrement the TTL / hop limit and encapsulate in plain IPIP: IPv4 in
        IPv4 (ip_vs_tunnel_xmit) or IPv6 in IPv6 (ip_vs_tunnel_xmit_v6, next header
        IPPROTO_IPV6) -- the batch path's question, engine/fastpath.py.  None for
        GUE/GRE, mixed families, a local or unroutable real server, a path MTU too
        small, an IPv6 route without a source address: the per-packet path decides
        those.  A packet longer than ``mtu`` is the caller's to hand over."""
        dest = conn.dest
        if dest is None or dest.tun_type != TUN_TYPE_IPIP:
            return None
        daddr = conn.daddr
        outer6 = len(daddr) == 16
        if outer6 != (conn.af == AF_INET6):
            return None
        route = ctx.routes.route(daddr)
        if route is None or route.local:
            return None
        mtu = ctx.pmtu.get(daddr, route.mtu, ctx.now()) - (40 if outer6 else 20)
        if mtu < (1280 if outer6 else 68):
            return None
        saddr = route.src
        if saddr is None:
            if outer6:
                return None
            # the raw socket fills in the routing source
            return TunnelPlan(bytes(4), daddr, bool(ctx.sysctl.pmtu_disc), mtu)
        hop = None if outer6 else ready_l2_hop(ctx.routes, route, route.gateway or daddr)
        return TunnelPlan(saddr, daddr, bool(ctx.sysctl.pmtu_disc), mtu, hop)

    def to_real(self, ctx, buf, info, conn) -> int:
        return self._xmit(ctx, buf, info, conn, False)

    def icmp_to_real(self, ctx, buf, info, inner, conn) -> int:
        return self._xmit(ctx, buf, info, conn, True)

    def _xmit(self, ctx: ForwardContext, buf, info: PacketInfo, conn, icmp: bool) -> int:
        dest = conn.dest
        tun_type = dest.tun_type if dest is not None else TUN_TYPE_IPIP
        tun_flags = dest.tun_flags if dest is not None else 0
        daddr = conn.daddr
        route = ctx.routes.route(daddr)
        if route is None:
            ctx.drops["no-route"] += 1
            return DROP
        if route.local:
            return ACCEPT  # the real server is this host: local delivery, untouched
        if info.ttl <= 1:
            return self.time_exceeded(ctx, buf, info)
        dec_ttl(buf, info)
        outer6 = len(daddr) == 16
        route_mtu = ctx.pmtu.get(daddr, route.mtu, ctx.now())
        mtu = route_mtu - (40 if outer6 else 20)
        if tun_type == TUN_TYPE_GUE:
            mtu -= GUE_HLEN
        elif tun_type == TUN_TYPE_GRE:
            mtu -= gre_hlen(tun_flags)
        if mtu < (1280 if outer6 else 68):
            ctx.drops["tun-mtu-too-small"] += 1
            return DROP
        pmtu_disc = bool(ctx.sysctl.pmtu_disc)
        length = info.ip_len
        if length > mtu:
            if info.version == 6:
                return self.too_big(ctx, buf, info, mtu, icmp)
            if pmtu_disc and info.df and not icmp:
                return self.too_big(ctx, buf, info, mtu, icmp)
        saddr = route.src
        if saddr is None:
            if outer6:
                ctx.drops["no-source-address"] += 1
                return DROP
            saddr = bytes(4)  # the raw socket fills in the routing source
        l3 = info.l3_off
        outer = encapsulate(memoryview(buf)[l3 : l3 + length], saddr, daddr,
                            pmtu_disc=pmtu_disc, tun_type=tun_type,
                            tun_port=dest.tun_port if dest is not None else 0,
                            tun_flags=tun_flags)
        if len(outer) > route_mtu:  # only without DF (or ICMP): fragment the outer packet
            if outer6:
                ctx.drops["tun-v6-fragment-unsupported"] += 1
                return DROP
            frags = fragment_v4(outer, route_mtu, self.next_ident())
            ctx.outbox.extend(frags)
            return DROP
        ctx.outbox.append(bytes(outer))
        return DROP
