"""twos: power of two choices.  Kernel: net/netfilter/ipvs/ip_vs_twos.c.

W = sum of the weights of the non-OVERLOAD destinations with weight > 0 (none:
fail).  Two numbers r1, r2 are drawn uniformly from [0, W] (the kernel's
get_random_u32_below(W + 1)); walking the eligible destinations in list order
and subtracting each weight, choice 1 is the first where r1 <= 0, choice 2 the
first where r2 <= 0.  Choice 2 wins iff w2 * overhead1 > w1 * overhead2.
(So the first eligible destination is picked with probability (w1+1)/(W+1).)

Randomness comes from self.env.random.randrange() so tests can inject it.
"""

from __future__ import annotations

from pyvs.engine.model import DEST_F_OVERLOAD, Destination, Flow, VirtualService
from pyvs.schedulers.base import Scheduler
from pyvs.schedulers.registry import register


@register
class TwoChoices(Scheduler):
    name = "twos"

    def schedule(self, svc: VirtualService, flow: Flow) -> Destination | None:
        dests = svc.destinations
        total = 0
        for d in dests:
            if d.weight > 0 and not d.flags & DEST_F_OVERLOAD:
                total += d.weight
        if total == 0:
            return None
        rand = self.env.random.randrange
        r1 = rand(total + 1)
        r2 = rand(total + 1)
        c1 = c2 = None
        w1 = w2 = oh1 = oh2 = 0
        for d in dests:
            w = d.weight
            if w <= 0 or d.flags & DEST_F_OVERLOAD:
                continue
            r1 -= w
            r2 -= w
            if c1 is None and r1 <= 0:
                c1, w1, oh1 = d, w, (d.activeconns << 8) + d.inactconns
            if c2 is None and r2 <= 0:
                c2, w2, oh2 = d, w, (d.activeconns << 8) + d.inactconns
            if c1 is not None and c2 is not None:
                break
        if c2 is not None and w2 * oh1 > w1 * oh2:
            return c2
        return c1
