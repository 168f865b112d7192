"""random: one eligible destination drawn uniformly -- the "one choice" baseline of the
power-of-two-choices experiment (not a kernel scheduler).  Draws come from
self.env.random, so ``Director(seed=)`` / ``pyvs sim --seed`` fix them."""

from __future__ import annotations

from pyvs.engine.model import DEST_F_OVERLOAD, Destination, Flow, VirtualService
from pyvs.schedulers.base import Scheduler

SPEC = "pyvs.engine.sim.experiments.random_choice:RandomChoice"


class RandomChoice(Scheduler):
    name = "random"

    def schedule(self, svc: VirtualService, flow: Flow) -> Destination | None:
        pool = [d for d in svc.destinations if d.weight > 0 and not d.flags & DEST_F_OVERLOAD]
        return self.env.random.choice(pool) if pool else None
