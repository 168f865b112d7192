"""The rate estimator behind ipvsadm --rate (ip_vs_est.c).

Every 2 s each Stats object is sampled; rates are kept scaled (x1024 for
connections/packets per second, x32 for bytes per second) in an EWMA with
weight 1/4, and reported rounded, exactly as the kernel computes them.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from pyvs.engine.model import Stats

PERIOD = 2.0


@dataclass
class _EstState:
    last: tuple[int, int, int, int, int]
    avg: list[int]


class Estimator:
    def __init__(self) -> None:
        self._state: weakref.WeakKeyDictionary[Stats, _EstState] = weakref.WeakKeyDictionary()
        self._next = 0.0

    def track(self, stats: Stats) -> None:
        if stats not in self._state:
            self._state[stats] = _EstState(stats.as_tuple(), [0, 0, 0, 0, 0])

    def due(self, now: float) -> bool:
        if now >= self._next:
            self._next = now + PERIOD
            return True
        return False

    def sample(self, stats_objects: list[Stats]) -> None:
        """estimation_timer(): one 2 s step for every tracked object."""
        for stats in stats_objects:
            self.track(stats)
            st = self._state[stats]
            cur = stats.as_tuple()
            for i in range(5):
                delta = cur[i] - st.last[i]
                rate = delta << (9 if i < 3 else 4)
                st.avg[i] += (rate - st.avg[i]) >> 2
            st.last = cur

    def rates(self, stats: Stats) -> tuple[int, int, int, int, int]:
        st = self._state.get(stats)
        if st is None:
            return (0, 0, 0, 0, 0)
        a = st.avg
        return ((a[0] + 0x1FF) >> 10, (a[1] + 0x1FF) >> 10, (a[2] + 0x1FF) >> 10,
                (a[3] + 0xF) >> 5, (a[4] + 0xF) >> 5)
