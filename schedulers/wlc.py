"""wlc: weighted least connection.  Kernel: net/netfilter/ipvs/ip_vs_wlc.c.

The first destination in list order that is not OVERLOAD and has weight > 0 is
the initial candidate; every later non-OVERLOAD destination replaces it when
overhead(least) * weight(d) > overhead(d) * weight(least) (cross-multiplied,
strict, so ties keep the earlier one; weight-0 destinations can never win).
overhead = active*256 + inactive (ip_vs_dest_conn_overhead).

weighted_least() is shared with lblc/lblcr, whose fallback
(__ip_vs_lblc_schedule) is this exact loop.
"""

from __future__ import annotations

from pyvs.engine.model import DEST_F_OVERLOAD, Destination, Flow, VirtualService
from pyvs.schedulers.base import Scheduler
from pyvs.schedulers.registry import register


def weighted_least(dests: list[Destination]) -> Destination | None:
    """The wlc loop over a destination list."""
    it = iter(dests)
    for d in it:
        if d.weight > 0 and not d.flags & DEST_F_OVERLOAD:
            least = d
            loh = (d.activeconns << 8) + d.inactconns
            lw = d.weight
            break
    else:
        return None
    for d in it:
        if d.flags & DEST_F_OVERLOAD:
            continue
        doh = (d.activeconns << 8) + d.inactconns
        if loh * d.weight > doh * lw:
            least = d
            loh = doh
            lw = d.weight
    return least


@register
class WeightedLeastConnection(Scheduler):
    name = "wlc"

    def schedule(self, svc: VirtualService, flow: Flow) -> Destination | None:
        return weighted_least(svc.destinations)
