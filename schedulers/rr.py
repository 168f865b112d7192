"""rr: round robin.  Kernel: net/netfilter/ipvs/ip_vs_rr.c.

The cursor points at a list element or at the list head (None).  Schedule walks
from the element after the cursor to the end, wraps to the start and stops at
the cursor itself; the first eligible destination becomes the new cursor.
"""

from __future__ import annotations

from engine.service import Destination, Flow, VirtualService
from schedulers.base import Scheduler, is_eligible
from schedulers.registry import register


@register
class RoundRobin(Scheduler):
    name = "rr"

    def __init__(self, svc: VirtualService, env) -> None:
        super().__init__(svc, env)
        self.cursor: Destination | None = None  # None = the list head

    def del_dest(self, svc: VirtualService, dest: Destination, index: int) -> None:
        # ip_vs_rr_del_dest: a cursor on the deleted entry moves to its predecessor.
        if self.cursor is dest:
            self.cursor = svc.destinations[index - 1] if index > 0 else None

    def schedule(self, svc: VirtualService, flow: Flow) -> Destination | None:
        dests = svc.destinations
        n = len(dests)
        start = 0 if self.cursor is None else dests.index(self.cursor) + 1
        # walk start..end, then (if the cursor was not the head) 0..cursor inclusive
        count = n if self.cursor is not None else n
        for step in range(count):
            dest = dests[(start + step) % n] if n else None
            if dest is not None and is_eligible(dest):
                self.cursor = dest
                return dest
        return None
