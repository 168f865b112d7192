"""sh: source hashing (+ sh-fallback, sh-port).  Kernel: net/netfilter/ipvs/ip_vs_sh.c.

256 buckets, rebuilt on add, delete and edit: walking buckets 0..255 while
cycling through the destinations in list order, each destination fills
`weight` consecutive buckets (a weight-0 destination still fills one) before
the walk moves on.  Key: the client address (the destination address for
inverse ICMP lookups, flow.extra['inverse']), folded as in dh, plus the client
port when SVC_F_SCHED_SH_PORT is set (TCP/UDP/SCTP only):
ihash = hash_32(ntohs(port) + addr, 8).

Usable = weight > 0 and not OVERLOAD.  Without SVC_F_SCHED_SH_FALLBACK an
unusable bucket fails.  With it: empty bucket -> fail; else probe buckets
(k + 2*ihash) mod 256 for k = 0..255 (the kernel adds the original hash to the
rotated offset), failing at the first empty one, returning the first usable.
"""

from __future__ import annotations

from pyvs.engine.model import (
    DEST_F_OVERLOAD,
    SVC_F_SCHED_SH_FALLBACK,
    SVC_F_SCHED_SH_PORT,
    Destination,
    Flow,
    VirtualService,
)
from pyvs.schedulers.base import Scheduler
from pyvs.schedulers.hashing import flow_hash_key, fold, hash_32
from pyvs.schedulers.registry import register

SH_TAB_BITS = 8
SH_TAB_SIZE = 1 << SH_TAB_BITS
_M32 = 0xFFFFFFFF


def sh_table(dests: list[Destination]) -> list[Destination | None]:
    """ip_vs_sh_reassign(): the 256-bucket table for a destination list."""
    if not dests:
        return [None] * SH_TAB_SIZE
    table: list[Destination | None] = []
    n = len(dests)
    p = 0
    count = 0
    for _ in range(SH_TAB_SIZE):
        d = dests[p]
        table.append(d)
        count += 1
        if count >= d.weight:
            p = (p + 1) % n
            count = 0
    return table


@register
class SourceHashing(Scheduler):
    name = "sh"

    def __init__(self, svc: VirtualService, env) -> None:
        super().__init__(svc, env)
        self.buckets = sh_table(svc.destinations)

    def add_dest(self, svc: VirtualService, dest: Destination) -> None:
        self.buckets = sh_table(svc.destinations)

    def del_dest(self, svc: VirtualService, dest: Destination, index: int) -> None:
        self.buckets = sh_table(svc.destinations)

    def upd_dest(self, svc: VirtualService, dest: Destination) -> None:
        self.buckets = sh_table(svc.destinations)

    def schedule(self, svc: VirtualService, flow: Flow) -> Destination | None:
        flags = svc.flags
        addr, port = flow_hash_key(flow, bool(flags & SVC_F_SCHED_SH_PORT))
        a = fold(addr)
        ihash = hash_32((port + a) & _M32, SH_TAB_BITS)
        buckets = self.buckets
        d = buckets[ihash]
        if d is None:
            return None
        if d.weight > 0 and not d.flags & DEST_F_OVERLOAD:
            return d
        if not flags & SVC_F_SCHED_SH_FALLBACK:
            return None
        start = 2 * ihash
        for k in range(SH_TAB_SIZE):
            d = buckets[(start + k) & (SH_TAB_SIZE - 1)]
            if d is None:
                return None
            if d.weight > 0 and not d.flags & DEST_F_OVERLOAD:
                return d
        return None
