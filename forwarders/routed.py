"""What direct routing and tunnelling share (__ip_vs_get_out_rt and friends): the route
toward the real server, the TTL rule, ICMP errors to the client, IP identifiers."""

from __future__ import annotations

import random

from pyvs.engine.icmperror import build_icmp_frag_needed, may_send_icmp_error
from pyvs.engine.packet import PacketInfo
from pyvs.engine.verdict import DROP
from pyvs.forwarders.base import ForwardContext, Forwarder, time_exceeded


class RoutedForwarder(Forwarder):
    """Shared by DR and TUN: route lookup toward the real server and the TTL rule."""

    def __init__(self) -> None:
        self._ident = random.getrandbits(16) or 1

    def next_ident(self) -> int:
        self._ident = (self._ident % 0xFFFF) + 1
        return self._ident

    time_exceeded = staticmethod(time_exceeded)

    @staticmethod
    def too_big(ctx: ForwardContext, buf, info: PacketInfo, mtu: int, icmp: bool) -> int:
        """ensure_mtu_is_adequate(): ICMP frag needed / packet too big to the client."""
        if not icmp and info.first_frag and may_send_icmp_error(buf, info):
            ctx.outbox.append(build_icmp_frag_needed(buf, info, info.daddr, mtu))
        ctx.drops["frag-needed"] += 1
        return DROP
