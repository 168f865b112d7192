"""rr: round robin.  Kernel: net/netfilter/ipvs/ip_vs_rr.c.

The cursor points at a list element or at the list head (None).  Schedule walks
from the element after the cursor to the end, wraps to the start and stops at
the cursor itself (inclusive); the first eligible destination (!OVERLOAD,
weight > 0) becomes the new cursor.  Nothing eligible: fail, cursor unchanged.

Add has no hook in the kernel: the new destination sits at the list head, so it
is reached after the walk wraps.  Deleting the destination under the cursor
moves the cursor to its predecessor (ip_vs_rr_del_dest uses p->next->prev of the
unlinked entry), so the next pick is the deleted entry's successor.

Review note (vs. ip_vs_rr.c): the walk order and stop rule of the original
skeleton were right; this version only replaces the O(n) list.index() per
decision with an index hint that add/del keep current.
"""

from __future__ import annotations

from pyvs.engine.model import DEST_F_OVERLOAD, Destination, Flow, VirtualService
from pyvs.schedulers.base import Scheduler
from pyvs.schedulers.registry import register


@register
class RoundRobin(Scheduler):
    name = "rr"

    def __init__(self, svc: VirtualService, env) -> None:
        super().__init__(svc, env)
        self.cursor: Destination | None = None  # None = the list head
        self._idx = -1  # index of cursor in svc.destinations (hint)

    def _cursor_index(self, dests: list[Destination]) -> int:
        cur = self.cursor
        if cur is None:
            return -1
        i = self._idx
        if 0 <= i < len(dests) and dests[i] is cur:
            return i
        try:
            i = dests.index(cur)
        except ValueError:  # unlinked without our hook (should not happen): restart
            self.cursor = None
            i = -1
        self._idx = i
        return i

    def add_dest(self, svc: VirtualService, dest: Destination) -> None:
        if self.cursor is not None:
            self._idx += 1  # everything shifted one place right

    def del_dest(self, svc: VirtualService, dest: Destination, index: int) -> None:
        if self.cursor is dest:
            # ip_vs_rr_del_dest: the cursor moves to the deleted entry's predecessor.
            if index > 0:
                self.cursor = svc.destinations[index - 1]
                self._idx = index - 1
            else:
                self.cursor = None
                self._idx = -1
        elif self.cursor is not None and index < self._idx:
            self._idx -= 1

    def schedule(self, svc: VirtualService, flow: Flow) -> Destination | None:
        dests = svc.destinations
        n = len(dests)
        c = self._cursor_index(dests)
        # pass 1: c+1 .. n-1 ; pass 2 (only if the cursor is not the head): 0 .. c
        for i in range(c + 1, n):
            d = dests[i]
            if d.weight > 0 and not d.flags & DEST_F_OVERLOAD:
                self.cursor = d
                self._idx = i
                return d
        for i in range(0, c + 1):
            d = dests[i]
            if d.weight > 0 and not d.flags & DEST_F_OVERLOAD:
                self.cursor = d
                self._idx = i
                return d
        return None
