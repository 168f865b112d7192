"""pick_k: "power of k random choices" - an example third-party scheduler.

Not a kernel scheduler.  It generalises twos (net/netfilter/ipvs/ip_vs_twos.c):
draw k distinct eligible destinations uniformly at random (self.env.random, so
tests can seed it) and return the one with the lowest overhead / weight,
compared by cross-multiplication; ties keep the earlier draw.

Use it with:
    pyvsadm -A -t 192.0.2.1:80 -s schedulers/examples/pick_k.py:PickK
    pyvsadm -A -t 192.0.2.1:80 -s schedulers.examples.pick_k:PickK
"""

from __future__ import annotations

from pyvs.engine.model import DEST_F_OVERLOAD, Destination, Flow, VirtualService
from pyvs.schedulers.base import Scheduler, SchedulerEnv


class PickK(Scheduler):
    name = "pick_k"
    k = 3

    def __init__(self, svc: VirtualService, env: SchedulerEnv) -> None:
        super().__init__(svc, env)
        self._eligible: list[Destination] = []
        self._refresh(svc)

    # The eligible list changes only on add/del/edit (weight) - keep it precomputed.
    # OVERLOAD changes without a hook, so it is re-checked per decision.
    def _refresh(self, svc: VirtualService) -> None:
        self._eligible = [d for d in svc.destinations if d.weight > 0]

    def add_dest(self, svc: VirtualService, dest: Destination) -> None:
        self._refresh(svc)

    def del_dest(self, svc: VirtualService, dest: Destination, index: int) -> None:
        self._refresh(svc)

    def upd_dest(self, svc: VirtualService, dest: Destination) -> None:
        self._refresh(svc)

    def schedule(self, svc: VirtualService, flow: Flow) -> Destination | None:
        pool = [d for d in self._eligible if not d.flags & DEST_F_OVERLOAD]
        if not pool:
            return None
        picks = pool if len(pool) <= self.k else self.env.random.sample(pool, self.k)
        best = picks[0]
        boh = best.conn_overhead()
        for d in picks[1:]:
            doh = d.conn_overhead()
            if boh * d.weight > doh * best.weight:
                best, boh = d, doh
        return best
