"""What a forwarder is, and the small context it works in.

A forwarder (one per IPVS forwarding method, ip_vs_xmit.c) takes a packet already
bound to a connection and gets it where it goes.  It returns the director's verdict:
  FORWARD - the buffer was rewritten in place; the port sends it on;
  ACCEPT  - the director's own stack takes it unchanged (a local real server);
  DROP    - the forwarder sent what it had to itself, through ``ctx.outbox`` (IP
            packets routed by the director's stack) or ``ctx.l2_outbox`` ((interface,
            Ethernet frame) pairs), or nothing, having counted why in ``ctx.drops``.

The context is all a forwarder sees of the engine: the clock, the sysctls, the drop
counters, the two outboxes, the kernel's routes and neighbours, and the path MTUs
learned from ICMP.  Tests build one with their own routes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pyvs.engine.icmperror import build_icmp_time_exceeded, may_send_icmp_error
from pyvs.engine.packet import PacketInfo
from pyvs.engine.verdict import DROP

PMTU_EXPIRES = 600.0  # ip_rt_mtu_expires: a learned path MTU is forgotten after 10 min


class PathMtu:
    """Path MTUs toward real servers learned from frag-needed errors about our tunnel
    packets (ipv4_update_pmtu from ip_vs_in_icmp), each forgotten after PMTU_EXPIRES."""

    def __init__(self) -> None:
        self._learned: dict[bytes, tuple[int, float]] = {}

    def learn(self, daddr: bytes, mtu: int, now: float) -> None:
        if mtu >= 68:
            self._learned[daddr] = (mtu, now + PMTU_EXPIRES)

    def get(self, daddr: bytes, route_mtu: int, now: float) -> int:
        """The MTU toward daddr: the route's, lowered by a learned path MTU."""
        learned = self._learned.get(daddr)
        if learned is not None:
            if learned[1] > now:
                return min(route_mtu, learned[0])
            del self._learned[daddr]
        return route_mtu


@dataclass
class ForwardContext:
    """What the core lends every forwarder.  ``routes``: engine/neigh.py KernelRoutes or
    anything with its route()/mac()/poll()/clock() (tests pass their own)."""

    clock: Any
    sysctl: Any
    routes: Any
    drops: Counter = field(default_factory=Counter)
    outbox: list = field(default_factory=list)  # IP packets for the director's stack
    l2_outbox: list = field(default_factory=list)  # (interface name, Ethernet frame)
    pmtu: PathMtu = field(default_factory=PathMtu)
    # Whether the director's stack forwards a FORWARD packet after pyvs (NFQUEUE: the
    # kernel routes it, and ip_forward decrements its TTL) or the port transmits it
    # itself (ring, xdp), so the forwarder does what __ip_vs_get_out_rt does: the TTL.
    stack_forwards: bool = True

    def now(self) -> float:
        return self.clock.now()


def time_exceeded(ctx: ForwardContext, buf, info: PacketInfo) -> int:
    """decrement_ttl(): TTL <= 1 -> ICMP time exceeded to the client (from the VIP, the
    address the packet was for: icmp_send's choice for a local destination), drop."""
    if may_send_icmp_error(buf, info):
        ctx.outbox.append(build_icmp_time_exceeded(buf, info, info.daddr))
    ctx.drops["ttl-exceeded"] += 1
    return DROP


class Forwarder:
    """One forwarding method.  ``name`` is what ipvsadm prints in its Forward column."""

    name = ""

    def to_real(self, ctx: ForwardContext, buf: bytearray, info: PacketInfo, conn) -> int:
        """A request (client -> real server)."""
        raise NotImplementedError

    def icmp_to_real(self, ctx: ForwardContext, buf: bytearray, info: PacketInfo,
                     inner: PacketInfo, conn) -> int:
        """An ICMP error from the client side about this connection (ip_vs_in_icmp)."""
        raise NotImplementedError

    def to_client(self, ctx: ForwardContext, buf: bytearray, info: PacketInfo, conn) -> int:
        """A reply through the director (real server -> client): only NAT has them."""
        ctx.drops["reply-without-nat"] += 1
        return DROP

    def icmp_to_client(self, ctx: ForwardContext, buf: bytearray, info: PacketInfo,
                       inner: PacketInfo, conn) -> int:
        """An ICMP error from the real server's side about this connection (ip_vs_out_icmp)."""
        ctx.drops["reply-without-nat"] += 1
        return DROP

    def tick(self, ctx: ForwardContext) -> None:
        """Periodic work (neighbour resolution); what it queues is sent after the tick."""

