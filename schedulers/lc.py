"""lc: least connection.  Kernel: net/netfilter/ipvs/ip_vs_lc.c.

Pick the destination with the smallest overhead = active*256 + inactive among
those that are not OVERLOAD and have weight != 0; strict '<', so the first in
list order (newest first) wins ties.
"""

from __future__ import annotations

from pyvs.engine.model import DEST_F_OVERLOAD, Destination, Flow, VirtualService
from pyvs.schedulers.base import Scheduler
from pyvs.schedulers.registry import register


@register
class LeastConnection(Scheduler):
    name = "lc"

    def schedule(self, svc: VirtualService, flow: Flow) -> Destination | None:
        least = None
        loh = 0
        for d in svc.destinations:
            if d.flags & DEST_F_OVERLOAD or d.weight == 0:
                continue
            doh = (d.activeconns << 8) + d.inactconns
            if least is None or doh < loh:
                least = d
                loh = doh
        return least
