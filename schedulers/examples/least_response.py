"""least_response: "least recent response time" - an example third-party scheduler.

Not a kernel scheduler.  It overrides the feedback hook Scheduler.report(dest,
seconds) (schedulers/base.py), which the simulator's server model calls after every
finished request (engine/sim/servers.py) and a live health checker is to call
after every check; the scheduler keeps an exponentially
weighted moving average per destination in a WeakKeyDictionary (so deleted
destinations vanish with their objects; dest.sched_data would work as well).

Decision: among eligible destinations (weight > 0, not OVERLOAD) pick the one
with the smallest expected delay  ewma * (active + 1) / weight.  A destination
without a fresh sample (none yet, or older than `stale_after` seconds on
self.env.clock) counts as 0, so new or recovered servers get probed first.
Ties keep list order (newest first), like the kernel schedulers.

Use it with:
    pyvsadm -A -t 192.0.2.1:80 -s schedulers/examples/least_response.py:LeastResponse
"""

from __future__ import annotations

import weakref

from pyvs.engine.model import DEST_F_OVERLOAD, Destination, Flow, VirtualService
from pyvs.schedulers.base import Scheduler, SchedulerEnv


class LeastResponse(Scheduler):
    name = "least_response"
    alpha = 0.3  # EWMA weight of a new sample
    stale_after = 30.0  # seconds

    def __init__(self, svc: VirtualService, env: SchedulerEnv) -> None:
        super().__init__(svc, env)
        # dest -> [ewma seconds, time of last sample]
        self.samples: weakref.WeakKeyDictionary[Destination, list[float]] = (
            weakref.WeakKeyDictionary())

    def report(self, dest: Destination, seconds: float) -> None:
        """Scheduler.report: one measured response time (the simulator's server model,
        a health checker)."""
        now = self.env.clock.now()
        s = self.samples.get(dest)
        if s is None or now - s[1] > self.stale_after:
            self.samples[dest] = [seconds, now]
        else:
            s[0] += self.alpha * (seconds - s[0])
            s[1] = now

    def expected(self, dest: Destination, now: float) -> float:
        s = self.samples.get(dest)
        if s is None or now - s[1] > self.stale_after:
            return 0.0
        return s[0] * (dest.activeconns + 1)

    def schedule(self, svc: VirtualService, flow: Flow) -> Destination | None:
        now = self.env.clock.now()
        best = None
        bcost = 0.0
        for d in svc.destinations:
            if d.weight <= 0 or d.flags & DEST_F_OVERLOAD:
                continue
            cost = self.expected(d, now)
            # cost(best)/w(best) > cost(d)/w(d), cross-multiplied, strict
            if best is None or bcost * d.weight > cost * best.weight:
                best, bcost = d, cost
        return best
