"""lblc: locality-based least connection.  Kernel: net/netfilter/ipvs/ip_vs_lblc.c.

A cache maps the packet's *destination* address (flow.daddr) to a real server.
Schedule: if an entry exists, its last-use time is refreshed and its server is
returned when it is AVAILABLE, has weight > 0 and is not "overloaded" in the
lblc sense (active > weight while some server of the service has
2*active < weight; the OVERLOAD flag is not checked here).  Otherwise the wlc
loop (__ip_vs_lblc_schedule) picks a server and the entry is replaced.

Expiry is not a thread: the engine calls expire(now) periodically (any period);
it replays the kernel's 60 s timer ticks that are due.  Every 30th tick (at
30 min, 60 min, ...: the counter starts at 1 and is reset to 1) is a full
sweep removing entries unused for net.ipv4.vs.lblc_expiration seconds; on the
other ticks, when the table holds more than 16384 entries, entries idle for
6 minutes are removed bucket by bucket from a rover until
min((entries - 16384) * 4/3, 8192) are gone.
"""

from __future__ import annotations

from pyvs.engine.model import Destination, Flow, VirtualService
from pyvs.schedulers.base import Scheduler
from pyvs.schedulers.hashing import fold, hash_32
from pyvs.schedulers.registry import register
from pyvs.schedulers.wlc import weighted_least

TAB_BITS = 10
TAB_SIZE = 1 << TAB_BITS
TAB_MASK = TAB_SIZE - 1
CHECK_EXPIRE_INTERVAL = 60.0
ENTRY_TIMEOUT = 6 * 60.0
COUNT_FOR_FULL_EXPIRATION = 30


def lblc_overloaded(dest: Destination, svc: VirtualService) -> bool:
    """is_overloaded() of ip_vs_lblc.c / ip_vs_lblcr.c."""
    if dest.activeconns > dest.weight:
        for d in svc.destinations:
            if d.activeconns * 2 < d.weight:
                return True
    return False


class LocalityTable:
    """The hash table + GC timer shared by lblc and lblcr (entry = [value, lastuse])."""

    sysctl_name = "lblc_expiration"

    def __init__(self, env) -> None:
        self.env = env
        self.entries: dict[bytes, list] = {}
        self.max_size = TAB_SIZE * 16
        self.rover = 0
        self.counter = 1
        self.next_tick = env.clock.now() + CHECK_EXPIRE_INTERVAL

    def expiration(self) -> float:
        return float(getattr(self.env.sysctl, self.sysctl_name))

    def _buckets(self) -> dict[int, list[bytes]]:
        buckets: dict[int, list[bytes]] = {}
        for key in self.entries:
            buckets.setdefault(hash_32(fold(key), TAB_BITS), []).append(key)
        return buckets

    def full_check(self, now: float) -> int:
        exp = self.expiration()
        stale = [k for k, en in self.entries.items() if not now < en[1] + exp]
        for k in stale:
            del self.entries[k]
        self.rover = (self.rover + TAB_SIZE) & TAB_MASK  # j ends where it started
        return len(stale)

    def tick(self, now: float) -> int:
        """One run of ip_vs_lblc_check_expire(); returns the number of entries removed."""
        if self.counter % COUNT_FOR_FULL_EXPIRATION == 0:
            removed = self.full_check(now)
            self.counter = 1
            return removed
        if len(self.entries) <= self.max_size:
            self.counter += 1
            return 0
        goal = (len(self.entries) - self.max_size) * 4 // 3
        goal = min(goal, self.max_size // 2)
        buckets = self._buckets()
        removed = 0
        j = self.rover
        for _ in range(TAB_SIZE):
            j = (j + 1) & TAB_MASK
            for key in buckets.get(j, ()):
                if now < self.entries[key][1] + ENTRY_TIMEOUT:
                    continue
                del self.entries[key]
                removed += 1
                goal -= 1
            if goal <= 0:
                break
        self.rover = j
        return removed

    def expire(self, now: float | None = None) -> int:
        """Run every 60 s GC tick that is due by `now` (default: env.clock.now())."""
        if now is None:
            now = self.env.clock.now()
        removed = 0
        while self.next_tick <= now:
            removed += self.tick(self.next_tick)
            self.next_tick += CHECK_EXPIRE_INTERVAL
        return removed


@register
class LocalityBasedLeastConnection(Scheduler):
    name = "lblc"

    def __init__(self, svc: VirtualService, env) -> None:
        super().__init__(svc, env)
        self.table = LocalityTable(env)

    def done_service(self, svc: VirtualService) -> None:
        self.table.entries.clear()

    def expire(self, now: float | None = None) -> int:
        return self.table.expire(now)

    def schedule(self, svc: VirtualService, flow: Flow) -> Destination | None:
        now = self.env.clock.now()
        entries = self.table.entries
        en = entries.get(flow.daddr)
        if en is not None:
            en[1] = now
            dest = en[0]
            if dest.available and dest.weight > 0 and not lblc_overloaded(dest, svc):
                return dest
        dest = weighted_least(svc.destinations)
        if dest is None:
            return None
        # ip_vs_lblc_new(): same dest -> keep entry; otherwise a fresh entry
        if en is None or en[0] is not dest:
            entries[flow.daddr] = [dest, now]
        return dest
