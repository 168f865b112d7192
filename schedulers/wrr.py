"""wrr: weighted round robin.  Kernel: net/netfilter/ipvs/ip_vs_wrr.c.

State (struct ip_vs_wrr_mark): cl = cursor (list element or head), di = gcd of
the positive weights (1 if none), mw = max weight - (di - 1), cw = current
weight.  add_dest, del_dest and upd_dest all run ip_vs_wrr_dest_changed(): cl
goes back to the head, di/mw are recomputed and cw is carried over (reset to mw
if it is 0 or above mw, otherwise rounded to (cw / di) * di + 1 when di > 1).
Because ipvsadm adds destinations one at a time, cw is carried across the adds;
docs/ipvs-semantics.md ("Schedulers", wrr) shows the consequence.

Schedule walks from the element after cl; a destination wins when it is not
OVERLOAD and weight >= cw.  At the end of the list cw drops by di; when cw
reaches 0 it restarts at mw, with the kernel's "last pass / stop" rules so an
all-overloaded service fails instead of looping.
"""

from __future__ import annotations

from math import gcd

from pyvs.engine.model import DEST_F_OVERLOAD, Destination, Flow, VirtualService
from pyvs.schedulers.base import Scheduler
from pyvs.schedulers.registry import register


def gcd_weight(dests: list[Destination]) -> int:
    """ip_vs_wrr_gcd_weight(): gcd of the positive weights, 1 if there are none."""
    g = 0
    for d in dests:
        if d.weight > 0:
            g = gcd(d.weight, g) if g > 0 else d.weight
    return g or 1


def max_weight(dests: list[Destination]) -> int:
    return max((d.weight for d in dests), default=0) if dests else 0


@register
class WeightedRoundRobin(Scheduler):
    name = "wrr"

    def __init__(self, svc: VirtualService, env) -> None:
        super().__init__(svc, env)
        # ip_vs_wrr_init_svc
        self.cl = -1  # index into svc.destinations; -1 = the list head
        self.di = gcd_weight(svc.destinations)
        self.mw = max(max_weight(svc.destinations), 0) - (self.di - 1)
        self.cw = self.mw

    def dest_changed(self, svc: VirtualService) -> None:
        """ip_vs_wrr_dest_changed()."""
        self.cl = -1
        self.di = gcd_weight(svc.destinations)
        self.mw = max(max_weight(svc.destinations), 0) - (self.di - 1)
        if self.cw > self.mw or not self.cw:
            self.cw = self.mw
        elif self.di > 1:
            self.cw = (self.cw // self.di) * self.di + 1

    def add_dest(self, svc: VirtualService, dest: Destination) -> None:
        self.dest_changed(svc)

    def del_dest(self, svc: VirtualService, dest: Destination, index: int) -> None:
        self.dest_changed(svc)

    def upd_dest(self, svc: VirtualService, dest: Destination) -> None:
        self.dest_changed(svc)

    def schedule(self, svc: VirtualService, flow: Flow) -> Destination | None:
        mw = self.mw
        if mw == 0:  # err_noavail: cl unchanged
            return None
        dests = svc.destinations
        n = len(dests)
        last = self.cl if self.cl < n else -1
        di = self.di
        cw = self.cw
        stop = -2  # no stop element
        last_pass = restarted = False
        i = last + 1
        while True:
            while i < n:
                d = dests[i]
                if d.weight >= cw and not d.flags & DEST_F_OVERLOAD:
                    self.cl = i
                    self.cw = cw
                    return d
                if i == stop:  # err_over, cl = the stop element
                    self.cl = i
                    self.cw = cw
                    return None
                i += 1
            cw -= di
            if cw <= 0:
                cw = mw
                if last_pass or last == -1:  # err_over with cl at the head
                    self.cl = -1
                    self.cw = cw
                    return None
                restarted = True
            last_pass = cw <= di
            if last_pass and restarted and last != -1:
                stop = last
            i = 0
