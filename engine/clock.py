"""One clock abstraction, so the same engine code runs live and on virtual time.

Every time read in the engine goes through a Clock.  Live runs use MonotonicClock;
tests and simulations use VirtualClock and move time with advance().
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable


class Clock:
    """Seconds as a float; only differences matter (like the kernel's jiffies)."""

    def now(self) -> float:  # pragma: no cover - interface
        raise NotImplementedError


class MonotonicClock(Clock):
    def now(self) -> float:
        return time.monotonic()


class VirtualClock(Clock):
    """Time that only moves when told to: deterministic tests and simulations."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time cannot go backwards")
        self._now += seconds


class TimerWheel:
    """Amortised expiry: items are filed under the slot (``granularity`` s) they are due.

    Refreshing an item does not move it: the caller files an item again only when its
    deadline moves earlier (ConnTable.put); when a slot comes up the callback reports
    the item's real deadline and the wheel re-files it if that is still in the
    future.  Each packet therefore costs O(1) and each expiry run only touches the
    slots that are due (ip_vs_conn.c arms one kernel timer per entry; this is the
    batch-friendly equivalent).  Slots are plain lists (an item may sit in more than
    one; duplicates are harmless and dropped when a slot is run).  ``run`` takes an
    optional budget: at most that many items are looked at per call and the rest of a
    due slot waits for the next call, so expiring a million entries at once never
    stalls the packet path.
    """

    def __init__(self, clock: Clock, granularity: float = 1.0) -> None:
        self.clock = clock
        self.granularity = granularity
        self._slots: dict[int, list[Hashable]] = {}
        self._cursor = int(clock.now() // granularity)
        self._pending: list[Hashable] = []  # rest of a due slot (run out of budget)

    def __len__(self) -> int:
        return sum(len(s) for s in self._slots.values()) + len(self._pending)

    def _slot(self, deadline: float) -> int:
        return max(int(deadline // self.granularity), self._cursor)

    def schedule(self, item: Hashable, deadline: float) -> None:
        slot = self._slot(deadline)
        bucket = self._slots.get(slot)
        if bucket is None:
            self._slots[slot] = [item]
        else:
            bucket.append(item)

    def run(self, deadline_of: Callable[[Hashable], float | None],
            expire: Callable[[Hashable], float | None], budget: int | None = None) -> int:
        """Expire what is due.

        deadline_of(item) returns the item's current deadline (None if it is gone);
        expire(item) removes it, or returns a new deadline to keep it (a template
        that still controls connections).  Returns the number of items expired.
        With ``budget``, stops after looking at that many items (the rest is kept).
        """
        now = self.clock.now()
        last = int(now // self.granularity)
        expired = 0
        work = 0
        pending = self._pending
        while True:
            if not pending:
                if self._cursor > last:
                    break
                bucket = self._slots.pop(self._cursor, None)
                self._cursor += 1
                if not bucket:
                    continue
                pending = list(dict.fromkeys(bucket))
                pending.reverse()  # pop() from the end keeps filing order
                self._pending = pending
            while pending:
                if budget is not None and work >= budget:
                    return expired
                item = pending.pop()
                work += 1
                deadline = deadline_of(item)
                if deadline is None:
                    continue
                if deadline > now:
                    self.schedule(item, deadline)
                    continue
                again = expire(item)
                if again is None:
                    expired += 1
                else:
                    self.schedule(item, again)
        return expired
