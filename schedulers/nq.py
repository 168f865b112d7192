"""nq: never queue.  Kernel: net/netfilter/ipvs/ip_vs_nq.c.

Walk the list skipping OVERLOAD and weight-0 destinations.  The first one with
no active connection is returned at once; otherwise the sed comparison
((active+1) cross-multiplied by weight, strict, first wins ties) decides.
"""

from __future__ import annotations

from pyvs.engine.model import DEST_F_OVERLOAD, Destination, Flow, VirtualService
from pyvs.schedulers.base import Scheduler
from pyvs.schedulers.registry import register


@register
class NeverQueue(Scheduler):
    name = "nq"

    def schedule(self, svc: VirtualService, flow: Flow) -> Destination | None:
        least = None
        loh = lw = 0
        for d in svc.destinations:
            if d.flags & DEST_F_OVERLOAD or not d.weight:
                continue
            active = d.activeconns
            if active == 0:
                return d
            doh = active + 1
            if least is None or loh * d.weight > doh * lw:
                least = d
                loh = doh
                lw = d.weight
        return least
