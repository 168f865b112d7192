"""Next hops for the fast ports: egress interface and Ethernet header per destination
address, from the kernel's route and neighbour tables (engine/neigh.py), cached for a
second and dropped on any route or neighbour change the kernel reports."""

from __future__ import annotations

import time

from pyvs.engine.neigh import KernelRoutes


class NextHops:
    """Egress interface and Ethernet header per destination address (engine/neigh.py)."""

    TTL = 1.0

    def __init__(self) -> None:
        self.routes = KernelRoutes()
        self.cache: dict[bytes, tuple[int, bytes] | None] = {}
        self._flushed = time.monotonic()

    def get(self, addr: bytes) -> tuple[int, bytes] | None:
        """(ifindex, dst MAC + src MAC) or None (local, no route, or unresolved)."""
        hit = self.cache.get(addr, 0)
        if hit != 0:
            return hit
        r = self.routes.route(addr)
        res = None
        if r is not None and not r.local and r.ifindex and len(r.lladdr) == 6:
            mac = self.routes.mac(r, r.gateway or addr)
            if mac is not None and len(mac) == 6:
                res = (r.ifindex, mac + r.lladdr)
        if res is not None:  # unresolved entries are asked again next time
            self.cache[addr] = res
        return res

    def tick(self) -> None:
        self.routes.poll()
        now = time.monotonic()
        if now - self._flushed >= self.TTL:
            self.cache.clear()
            self._flushed = now

    def close(self) -> None:
        self.routes.close()

