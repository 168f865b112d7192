"""Which frames the fast ports take, compiled for numpy (IPv4) and sets (IPv6)."""

from __future__ import annotations

import numpy as np

_TCP, _UDP = 6, 17


class Match:
    """The predicate of the netdev drop rules, compiled for numpy (IPv4) and sets (IPv6)."""

    def __init__(self, services=()) -> None:
        self.vip4 = np.zeros(0, dtype=np.int64)  # proto<<48 | addr<<16 | port
        self.vip4_any = np.zeros(0, dtype=np.int64)  # port 0 services: proto<<48 | addr<<16
        self.rs4 = np.zeros(0, dtype=np.int64)
        self.rs4_any = np.zeros(0, dtype=np.int64)
        self.vip6: set = set()
        self.rs6: set = set()
        self.update(services)

    def update(self, services) -> None:
        from pyvs.engine.plumbing_ring import ring_targets

        vips, reals = ring_targets(services)
        def key(p, a, port):
            return (p << 48) | (int.from_bytes(a, "big") << 16) | port
        v4 = [(p, a, port) for p, a, port in vips if len(a) == 4]
        r4 = [(p, a, port) for p, a, port in reals if len(a) == 4]
        self.vip4 = np.array(sorted(key(*t) for t in v4 if t[2]), dtype=np.int64)
        self.vip4_any = np.array(sorted(key(*t) for t in v4 if not t[2]), dtype=np.int64)
        self.rs4 = np.array(sorted(key(*t) for t in r4 if t[2]), dtype=np.int64)
        self.rs4_any = np.array(sorted(key(*t) for t in r4 if not t[2]), dtype=np.int64)
        self.vip6 = {t for t in vips if len(t[1]) == 16}
        self.rs6 = {t for t in reals if len(t[1]) == 16}
        self.sets4 = tuple(frozenset(a.tolist()) for a in (self.vip4, self.vip4_any, self.rs4,
                                                           self.rs4_any))

    def classify(self, f) -> int:
        """One frame (bytes-like): 0 not ours, 1 to a VIP, 2 from a real server
        (forwarded) -- the vectorised test in RingPort._batch, for small batches."""
        n = len(f)
        if n < 14 or f[12] != 0x08:
            return self.v6(f) if n >= 14 and f[12] == 0x86 and f[13] == 0xDD else 0
        if f[13] != 0x00 or n < 38 or f[14] >> 4 != 4:
            return 0
        proto = f[23]
        l4 = 14 + ((f[14] & 15) << 2)
        if (proto != _TCP and proto != _UDP) or n < l4 + 4 or (f[20] & 0x1F) or f[21]:
            return 0
        vip, vip_any, rs, rs_any = self.sets4
        vkey = (proto << 48) | (int.from_bytes(f[30:34], "big") << 16)
        if (vkey | (f[l4 + 2] << 8) | f[l4 + 3]) in vip or vkey in vip_any:
            return 1
        rkey = (proto << 48) | (int.from_bytes(f[26:30], "big") << 16)
        if f[22] > 1 and ((rkey | (f[l4] << 8) | f[l4 + 1]) in rs or rkey in rs_any):
            return 2
        return 0

    @property
    def empty(self) -> bool:
        return not (len(self.vip4) or len(self.vip4_any) or len(self.rs4) or len(self.rs4_any)
                    or self.vip6 or self.rs6)

    def v6(self, frame) -> int:
        """0: not ours, 1: to a VIP, 2: from a real server (forwarded)."""
        if len(frame) < 14 + 44:
            return 0
        nh = frame[14 + 6]
        if nh != _TCP and nh != _UDP:
            return 0
        saddr, daddr = bytes(frame[22:38]), bytes(frame[38:54])
        sport = (frame[54] << 8) | frame[55]
        dport = (frame[56] << 8) | frame[57]
        if (nh, daddr, dport) in self.vip6 or (nh, daddr, 0) in self.vip6:
            return 1
        if frame[14 + 7] > 1 and ((nh, saddr, sport) in self.rs6 or (nh, saddr, 0) in self.rs6):
            return 2
        return 0



def member(table: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``np.isin(x, table)`` for a sorted ``table``: a binary search, a few times
    cheaper than isin on the small batches and tables a director has."""
    if len(table) == 0:
        return np.zeros(len(x), dtype=bool)
    at = np.searchsorted(table, x)
    np.minimum(at, len(table) - 1, out=at)
    return table[at] == x

