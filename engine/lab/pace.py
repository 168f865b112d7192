"""Service time and capacity of a lab real server (``--delay``, ``--capacity``).

This kernel has no netem, so heterogeneous servers are made at the application: each
HTTP request holds one of the server's ``capacity`` slots for a service time drawn from
a distribution (engine/sim/distributions.py syntax, in seconds); requests beyond the
capacity wait in the server's queue (first come, first served).  That is the server
model of ``pyvs sim`` (engine/sim/servers.py) made real, so response-time-aware
schedulers can be shown on a live lab.  Each response says what it cost in its headers:
``X-Queue-Wait`` and ``X-Service-Time`` (seconds).  UDP answers are not paced.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager


def parse_delay(text: str):
    """A service-time distribution (seconds): ``0.02``, ``exp:mean=0.02``,
    ``lognormal:mean=0.02,sigma=1``...; ValueError with the reason."""
    from pyvs.engine.sim.distributions import parse

    return parse(text)


def parse_capacity(text: str) -> int:
    """Requests served at once, at least 1; ValueError otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"capacity must be a whole number, not {text!r}") from None
    if value < 1:
        raise ValueError(f"capacity must be at least 1, not {value}")
    return value


class Pace:
    """One server's pacing: ``delay`` (a Distribution or None: no service time) and
    ``capacity`` (None: every request at once).  Draws are seeded (``seed``, default
    from the server's name) so a lab run can be repeated."""

    def __init__(self, delay=None, capacity: int | None = None, seed: int = 0) -> None:
        self.delay = delay
        self.capacity = capacity
        self._slots = threading.BoundedSemaphore(capacity) if capacity else None
        self._lock = threading.Lock()
        self._rng = None
        if delay is not None:
            import numpy as np

            self._rng = np.random.default_rng(seed)
        self.active = 0
        self.waiting = 0

    @classmethod
    def of(cls, name: str, delay: str | None, capacity: str | None) -> Pace:
        return cls(parse_delay(delay) if delay else None,
                   parse_capacity(capacity) if capacity else None, zlib.crc32(name.encode()))

    @property
    def paced(self) -> bool:
        return self.delay is not None or self.capacity is not None

    def _draw(self) -> float:
        if self.delay is None:
            return 0.0
        with self._lock:
            return max(0.0, float(self.delay.sample(self._rng, 1)[0]))

    @contextmanager
    def request(self) -> Iterator[tuple[float, float]]:
        """Hold a slot for one request: yields (seconds waited, service seconds) after
        the wait and the service time; the response is sent inside."""
        start = time.monotonic()
        if self._slots is not None:
            with self._lock:
                self.waiting += 1
            self._slots.acquire()
            with self._lock:
                self.waiting -= 1
        waited = time.monotonic() - start
        with self._lock:
            self.active += 1
        try:
            service = self._draw()
            if service:
                time.sleep(service)
            yield waited, service
        finally:
            with self._lock:
                self.active -= 1
            if self._slots is not None:
                self._slots.release()


NO_PACE = Pace()
