"""sed: shortest expected delay.  Kernel: net/netfilter/ipvs/ip_vs_sed.c.

As wlc, but overhead = activeconns + 1 (inactive connections are ignored):
first non-OVERLOAD destination with weight > 0 is the candidate, later
non-OVERLOAD ones replace it on (active(least)+1) * w(d) > (active(d)+1) * w(least).
"""

from __future__ import annotations

from pyvs.engine.model import DEST_F_OVERLOAD, Destination, Flow, VirtualService
from pyvs.schedulers.base import Scheduler
from pyvs.schedulers.registry import register


@register
class ShortestExpectedDelay(Scheduler):
    name = "sed"

    def schedule(self, svc: VirtualService, flow: Flow) -> Destination | None:
        it = iter(svc.destinations)
        for d in it:
            if d.weight > 0 and not d.flags & DEST_F_OVERLOAD:
                least = d
                loh = d.activeconns + 1
                lw = d.weight
                break
        else:
            return None
        for d in it:
            if d.flags & DEST_F_OVERLOAD:
                continue
            doh = d.activeconns + 1
            if loh * d.weight > doh * lw:
                least = d
                loh = doh
                lw = d.weight
        return least
