"""Forwarding methods (ip_vs_xmit.c): one module per method, one object per method.

A Forwarder takes a request packet already bound to a connection and gets it to the
real server.  It returns the director's verdict:
  FORWARD - the buffer was rewritten in place; the port sends it on (reinjects it);
  DROP    - the forwarder sent what it had to itself, through director.outbox (IP
            packets routed by the director's stack) or director.l2_outbox
            ((interface name, Ethernet frame) pairs sent on that interface).
A forwarder may also have ``tick(director)``, called from Director.tick() (periodic
work: neighbour resolution, cache invalidation); what it queues is sent after the tick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyvs.engine.conntable import Conn
    from pyvs.engine.director import Director
    from pyvs.engine.packet import PacketInfo


class Forwarder:
    name = ""

    def to_real(self, director: Director, buf: bytearray, info: PacketInfo,
                conn: Conn) -> int:
        raise NotImplementedError

    def icmp_to_real(self, director: Director, buf: bytearray, info: PacketInfo,
                     inner: PacketInfo, conn: Conn) -> int:
        """An ICMP error from the client side about this connection (ip_vs_in_icmp)."""
        raise NotImplementedError


def default_forwarders() -> dict[int, Forwarder]:
    """Forwarding method number (FWD_*) -> forwarder."""
    from pyvs.engine.neigh import KernelRoutes
    from pyvs.engine.service import FWD_DROUTE, FWD_LOCALNODE, FWD_MASQ, FWD_TUNNEL
    from pyvs.forwarders.dr import DirectRoute
    from pyvs.forwarders.nat import Masquerade
    from pyvs.forwarders.tun import Tunnel

    masq = Masquerade()
    routes = KernelRoutes()  # shared route/neighbour cache; opens netlink on first use
    table: dict[int, Forwarder] = {FWD_MASQ: masq, FWD_LOCALNODE: masq,
                                   FWD_DROUTE: DirectRoute(routes), FWD_TUNNEL: Tunnel(routes)}
    return table
