"""The scheduler interface: the hooks of struct ip_vs_scheduler (include/net/ip_vs.h).

A scheduler is constructed per service (init_service), told about destination
changes (add_dest / del_dest / upd_dest) and asked for a destination for each new
connection or persistence template (schedule).  It is a pure decision: no I/O.

What a scheduler may read:
  * svc.destinations - Destination objects in kernel list order (newest first),
    each with weight, last_weight, flags (available/overloaded), activeconns,
    inactconns, persistconns, conn_overhead(), addr, port, and sched_data (free
    for the scheduler's own per-destination state);
  * svc.flags (SVC_F_SCHED1..3 carry sh-/mh- flags), svc.sched_data;
  * the Flow being scheduled (addresses, ports, protocol, fwmark);
  * self.env: the clock, the sysctl values and the random source.

What a scheduler may be told (feedback): ``report(dest, seconds)`` carries one
observation of a real server -- a measured response time -- from whoever measures
it: the server model of ``pyvs sim`` (engine/sim/servers.py) once per finished
request; a live health checker is to call it once per check.  The kernel has no such hook;
the base implementation ignores it, so every kernel scheduler stays kernel-identical.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from pyvs.engine.clock import Clock, MonotonicClock
from pyvs.engine.sysctl import Sysctl

if TYPE_CHECKING:
    from pyvs.engine.model import Destination, Flow, VirtualService


@dataclass
class SchedulerEnv:
    """What the engine lends every scheduler."""

    clock: Clock = field(default_factory=MonotonicClock)
    sysctl: Sysctl = field(default_factory=Sysctl)
    random: random.Random = field(default_factory=random.Random)


class Scheduler:
    """Base class; subclasses set `name` and implement schedule()."""

    name: ClassVar[str] = ""

    def __init__(self, svc: VirtualService, env: SchedulerEnv) -> None:
        """init_service: called when the scheduler is bound to a service."""
        self.env = env

    def done_service(self, svc: VirtualService) -> None:
        """Called when the scheduler is unbound (service deleted or -E -s other)."""

    def add_dest(self, svc: VirtualService, dest: Destination) -> None:
        """A destination was inserted at the head of svc.destinations."""

    def del_dest(self, svc: VirtualService, dest: Destination, index: int) -> None:
        """dest was removed; it stood at svc.destinations[index] before removal."""

    def upd_dest(self, svc: VirtualService, dest: Destination) -> None:
        """dest's weight, thresholds or forwarding method were edited in place."""

    def schedule(self, svc: VirtualService, flow: Flow) -> Destination | None:
        raise NotImplementedError

    def report(self, dest: Destination, seconds: float) -> None:
        """An observation of ``dest``: one response time in seconds, measured now
        (``self.env.clock``).  Called by the simulator's server model after every
        finished request (a live health checker is to call it after every check); ignored
        unless a scheduler overrides it (schedulers/examples/least_response.py)."""


def is_eligible(dest: Destination) -> bool:
    """Not OVERLOAD and weight > 0: the common rule of most schedulers."""
    return dest.weight > 0 and not dest.overloaded
