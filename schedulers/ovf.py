"""ovf: weighted overflow.  Kernel: net/netfilter/ipvs/ip_vs_ovf.c.

Candidates are not OVERLOAD, weight != 0 and activeconns <= weight; the one with
the highest weight wins (strict '>', first in list order on ties).  Only active
connections count, so UDP (never active) does not overflow.
"""

from __future__ import annotations

from pyvs.engine.model import DEST_F_OVERLOAD, Destination, Flow, VirtualService
from pyvs.schedulers.base import Scheduler
from pyvs.schedulers.registry import register


@register
class WeightedOverflow(Scheduler):
    name = "ovf"

    def schedule(self, svc: VirtualService, flow: Flow) -> Destination | None:
        h = None
        hw = 0
        for d in svc.destinations:
            w = d.weight
            if d.flags & DEST_F_OVERLOAD or d.activeconns > w or w == 0:
                continue
            if h is None or w > hw:
                h = d
                hw = w
        return h
