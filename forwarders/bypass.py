"""Cache bypass (ip_vs_bypass_xmit): the packet goes on to its own destination.

Only entries made by ip_vs_leave under ``cache_bypass=1`` use it (a fwmark service
with no destination left, for a packet to a routed unicast address): the director's
stack routes the packet unchanged, as it would without IPVS.
"""

from __future__ import annotations

from pyvs.engine.verdict import ACCEPT
from pyvs.forwarders.base import Forwarder


class Bypass(Forwarder):
    name = "Bypass"

    def to_real(self, ctx, buf, info, conn) -> int:
        return ACCEPT

    def icmp_to_real(self, ctx, buf, info, inner, conn) -> int:
        return ACCEPT
