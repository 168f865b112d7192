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
    """Amortised expiry: items are filed under the whole second they are due.

    Refreshing an item does not move it; when its slot comes up the callback
    reports the item's real deadline and the wheel re-files it if that is still
    in the future.  Each packet therefore costs O(1) and each expiry run only
    touches the slots that are due (ip_vs_conn.c arms one kernel timer per
    entry; this is the batch-friendly equivalent).
    """

    def __init__(self, clock: Clock, granularity: float = 1.0) -> None:
        self.clock = clock
        self.granularity = granularity
        self._slots: dict[int, dict[Hashable, None]] = {}
        self._cursor = int(clock.now() // granularity)

    def __len__(self) -> int:
        return sum(len(s) for s in self._slots.values())

    def _slot(self, deadline: float) -> int:
        return max(int(deadline // self.granularity), self._cursor)

    def schedule(self, item: Hashable, deadline: float) -> None:
        slot = self._slot(deadline)
        self._slots.setdefault(slot, {})[item] = None

    def discard(self, item: Hashable, deadline: float) -> None:
        bucket = self._slots.get(self._slot(deadline))
        if bucket is not None:
            bucket.pop(item, None)

    def run(self, deadline_of: Callable[[Hashable], float | None],
            expire: Callable[[Hashable], float | None]) -> int:
        """Expire what is due.

        deadline_of(item) returns the item's current deadline (None if it is gone);
        expire(item) removes it, or returns a new deadline to keep it (a template
        that still controls connections).  Returns the number of items expired.
        """
        now = self.clock.now()
        last = int(now // self.granularity)
        expired = 0
        while self._cursor <= last:
            bucket = self._slots.pop(self._cursor, None)
            self._cursor += 1
            if not bucket:
                continue
            for item in bucket:
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
