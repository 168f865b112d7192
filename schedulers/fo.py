"""fo: weighted failover.  Kernel: net/netfilter/ipvs/ip_vs_fo.c.

Return the non-OVERLOAD destination with the highest weight (> 0); strict '>',
so the first in list order wins ties.  No balancing at all.
"""

from __future__ import annotations

from pyvs.engine.model import DEST_F_OVERLOAD, Destination, Flow, VirtualService
from pyvs.schedulers.base import Scheduler
from pyvs.schedulers.registry import register


@register
class WeightedFailover(Scheduler):
    name = "fo"

    def schedule(self, svc: VirtualService, flow: Flow) -> Destination | None:
        best = None
        hw = 0
        for d in svc.destinations:
            if d.weight > hw and not d.flags & DEST_F_OVERLOAD:
                best = d
                hw = d.weight
        return best
