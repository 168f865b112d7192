"""Direct routing (``-g``, gatewaying), as ``ip_vs_dr_xmit[_v6]``.

The IP packet is not changed except for the TTL / hop limit (and the IPv4 header
checksum, incrementally, as ip_decrease_ttl).  It is sent on the link to the real
server's own link-layer address: the real server is the next hop ("known next hop"),
the IP destination stays the VIP.  The real server must therefore be on-link: a route
toward it through a gateway is refused (counted ``dr-not-on-link``).

Route and neighbour come from the kernel's tables (engine/neigh.py).  While the
neighbour is being resolved the packets wait in a bounded queue (like the kernel's
``unres_qlen``), flushed from ``tick()`` when the kernel reports the entry resolved and
dropped after ``RESOLVE_TIMEOUT`` (counted ``neigh-failed``).
"""

from __future__ import annotations

import struct

from pyvs.engine.neigh import RESOLVE_TIMEOUT, Pending, ReadyHop, Route, ready_l2_hop
from pyvs.engine.packet import PacketInfo, dec_ttl
from pyvs.engine.verdict import ACCEPT, DROP
from pyvs.forwarders.base import ForwardContext
from pyvs.forwarders.encap import fragment_v4
from pyvs.forwarders.routed import RoutedForwarder

ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
_ETYPE = {4: struct.pack("!H", ETH_P_IP), 6: struct.pack("!H", ETH_P_IPV6)}


def ethernet_frame(dst_mac: bytes, src_mac: bytes, packet: bytes | bytearray) -> bytes:
    """Ethernet II frame around one IP packet (EtherType from the IP version)."""
    return b"".join((dst_mac, src_mac, _ETYPE[packet[0] >> 4], packet))


def dr_rewrite(buf: bytearray, info: PacketInfo) -> None:
    """Everything DR does to the IP packet itself: TTL - 1, IPv4 checksum fixed."""
    dec_ttl(buf, info)


class DirectRoute(RoutedForwarder):
    name = "Route"

    def __init__(self) -> None:
        super().__init__()
        self.pending: dict[tuple[int, bytes], tuple[Route, Pending]] = {}

    def to_real(self, ctx, buf, info, conn) -> int:
        return self._xmit(ctx, buf, info, conn, False)

    def ready_hop(self, ctx: ForwardContext, daddr: bytes) -> ReadyHop | None:
        """Where ``_xmit`` would send a packet for real server ``daddr`` right now, if it
        would only decrement the TTL and send one frame (the batch path's question,
        engine/fastpath.py): on-link, not local, neighbour resolved, nothing queued for
        it.  None whenever the per-packet path has more to do; a packet longer than
        ``mtu`` is the caller's to hand over."""
        routes = ctx.routes
        route = routes.route(daddr)
        if route is None or route.local or route.gateway is not None:
            return None
        if (route.ifindex, daddr) in self.pending:
            return None
        return ready_l2_hop(routes, route, daddr)

    def icmp_to_real(self, ctx, buf, info, inner, conn) -> int:
        return self._xmit(ctx, buf, info, conn, True)

    def _xmit(self, ctx: ForwardContext, buf, info: PacketInfo, conn, icmp: bool) -> int:
        routes = ctx.routes
        daddr = conn.daddr
        route = routes.route(daddr)
        if route is None:
            ctx.drops["no-route"] += 1
            return DROP
        if route.local:
            return ACCEPT  # local real server: the director's own stack takes it
        if route.gateway is not None:
            ctx.drops["dr-not-on-link"] += 1
            return DROP
        if info.ttl <= 1:
            return self.time_exceeded(ctx, buf, info)
        dr_rewrite(buf, info)
        l3 = info.l3_off
        packet = bytes(buf[l3 : l3 + info.ip_len])
        packets = [packet]
        if info.ip_len > route.mtu:
            if info.version == 6 or info.df:
                return self.too_big(ctx, buf, info, route.mtu, icmp)
            packets = fragment_v4(packet, route.mtu, self.next_ident())
        key = (route.ifindex, daddr)
        waiting = self.pending.get(key)
        if waiting is not None:
            if key in routes.poll():
                self._try_flush(ctx, key)
                waiting = self.pending.get(key)
            if waiting is not None:
                for p in packets:
                    if not waiting[1].push(p, None):
                        ctx.drops["neigh-queue-full"] += 1
                return DROP
        mac = routes.mac(route, daddr)
        if mac is None:
            pend = Pending(routes.clock())
            for p in packets:
                pend.push(p, None)
            self.pending[key] = (route, pend)
            return DROP
        out = ctx.l2_outbox
        for p in packets:
            out.append((route.ifname, ethernet_frame(mac, route.lladdr, p)))
        return DROP

    def _try_flush(self, ctx: ForwardContext, key) -> None:
        route, pend = self.pending[key]
        mac = ctx.routes.mac(route, key[1])
        if mac is not None:
            for p, _ in pend.frames:
                ctx.l2_outbox.append((route.ifname, ethernet_frame(mac, route.lladdr, p)))
            del self.pending[key]
        elif ctx.routes.clock() - pend.since > RESOLVE_TIMEOUT:
            ctx.drops["neigh-failed"] += len(pend.frames)
            del self.pending[key]

    def tick(self, ctx: ForwardContext) -> None:
        """Periodic: flush the queues whose neighbour resolved, expire failed ones (the
        director drains the kernel's notifications first)."""
        for key in list(self.pending):
            self._try_flush(ctx, key)
