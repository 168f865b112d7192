"""The server model: what a real server does with the connections it is given.

Each real server has ``capacity`` service slots (0 = as many as it gets) and serves
requests first come, first served: a request starts when it arrives or when a slot
frees, whichever is later, and takes its service time -- the flow's demand divided by
the server's ``speed``, or a draw from the server's own ``service`` distribution.
The finish time is known the moment the request arrives (a heap of slot-free times),
so the simulator schedules the connection's close then.  At most ``queue`` requests
may wait (None = unlimited); one more is refused (the server answers the SYN with a
RST).  A failed server answers nothing until it recovers, empty.

So the connections IPVS counts as active on a server are the requests in it, queued
or in service, and response time = waiting + service: load means something.  After
every finished request the simulator tells the scheduler the response time through
``Scheduler.report(dest, seconds)`` (schedulers/base.py).
"""

from __future__ import annotations

import heapq

import numpy as np

from pyvs.engine.sim.cluster import ServerSpec

ADMITTED, REFUSED, DOWN = 0, 1, 2


class Server:
    """One real server's queue (see the module doc)."""

    __slots__ = ("spec", "up", "slots", "waiting", "rng", "in_system", "served", "refused",
                 "busy_time", "_draws", "_next_draw")

    def __init__(self, spec: ServerSpec, rng: np.random.Generator) -> None:
        self.spec = spec
        self.rng = rng
        self.up = True
        self.slots: list[float] = []  # free times of busy slots (capacity > 0)
        self.waiting: list[float] = []  # start times of requests not yet in service
        self.in_system = 0
        self.served = 0
        self.refused = 0
        self.busy_time = 0.0
        self._draws: np.ndarray = np.empty(0)
        self._next_draw = 0

    def service_time(self, demand: float) -> float:
        dist = self.spec.service
        if dist is None:
            return demand / self.spec.speed
        if self._next_draw >= len(self._draws):  # draw in blocks: one numpy call per 4096
            self._draws = dist.sample(self.rng, 4096)
            self._next_draw = 0
        v = float(self._draws[self._next_draw])
        self._next_draw += 1
        return v / self.spec.speed

    def admit(self, now: float, demand: float) -> tuple[int, float, float]:
        """(ADMITTED, finish time, waiting time), or (REFUSED | DOWN, 0, 0)."""
        if not self.up:
            return DOWN, 0.0, 0.0
        spec = self.spec
        service = self.service_time(demand)
        cap = spec.capacity
        if cap == 0:
            self.in_system += 1
            self.busy_time += service
            return ADMITTED, now + service, 0.0
        slots = self.slots
        waiting = self.waiting
        while waiting and waiting[0] <= now:
            heapq.heappop(waiting)
        if len(slots) < cap:
            start = now
        else:
            start = max(now, slots[0])
        if start > now:
            if spec.queue is not None and len(waiting) >= spec.queue:
                self.refused += 1
                return REFUSED, 0.0, 0.0
            heapq.heappush(waiting, start)
        finish = start + service
        if len(slots) < cap:
            heapq.heappush(slots, finish)
        else:
            heapq.heapreplace(slots, finish)
        self.in_system += 1
        self.busy_time += service
        return ADMITTED, finish, start - now

    def finished(self) -> None:
        self.in_system -= 1
        self.served += 1

    def queued(self, now: float) -> int:
        """Requests waiting for a slot at ``now``."""
        return sum(1 for s in self.waiting if s > now)

    def fail(self) -> None:
        self.up = False
        self.slots.clear()
        self.waiting.clear()
        self.in_system = 0

    def recover(self) -> None:
        self.up = True


def make_servers(specs: list[ServerSpec], seed: int) -> list[Server]:
    """One Server per spec, each with its own random stream derived from ``seed``
    (adding a server does not change the others' draws)."""
    seqs = np.random.SeedSequence([seed, 0x5e4e]).spawn(len(specs))
    return [Server(s, np.random.default_rng(q)) for s, q in zip(specs, seqs, strict=True)]


def server_for(spec: ServerSpec, seed: int, index: int) -> Server:
    """A server joining later (a timeline ``add``): its own stream from (seed, index)."""
    return Server(spec, np.random.default_rng(np.random.SeedSequence([seed, 0x5e4e, index])))
