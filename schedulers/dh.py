"""dh: destination hashing.  Kernel: net/netfilter/ipvs/ip_vs_dh.c.

256 buckets (CONFIG_IP_VS_DH_TAB_BITS = 8), rebuilt on add and delete (the
kernel has no upd_dest hook for dh): bucket i holds destinations[i mod n] in
list order, weights ignored; an empty service leaves every bucket empty.
Key: the packet's *destination* address, folded (IPv6: XOR of the four words),
bucket = hash_32(key, 8).  The bucket's destination is used only if it is
AVAILABLE, has weight > 0 and is not OVERLOAD; there is no fallback.
"""

from __future__ import annotations

from pyvs.engine.model import DEST_F_AVAILABLE, DEST_F_OVERLOAD, Destination, Flow, VirtualService
from pyvs.schedulers.base import Scheduler
from pyvs.schedulers.hashing import fold, hash_32
from pyvs.schedulers.registry import register

DH_TAB_BITS = 8
DH_TAB_SIZE = 1 << DH_TAB_BITS


@register
class DestinationHashing(Scheduler):
    name = "dh"

    def __init__(self, svc: VirtualService, env) -> None:
        super().__init__(svc, env)
        self.buckets: list[Destination | None] = []
        self.reassign(svc)

    def reassign(self, svc: VirtualService) -> None:
        """ip_vs_dh_reassign()."""
        dests = svc.destinations
        n = len(dests)
        if n == 0:
            self.buckets = [None] * DH_TAB_SIZE
        else:
            self.buckets = [dests[i % n] for i in range(DH_TAB_SIZE)]

    def add_dest(self, svc: VirtualService, dest: Destination) -> None:
        self.reassign(svc)

    def del_dest(self, svc: VirtualService, dest: Destination, index: int) -> None:
        self.reassign(svc)

    def schedule(self, svc: VirtualService, flow: Flow) -> Destination | None:
        d = self.buckets[hash_32(fold(flow.daddr), DH_TAB_BITS)]
        if (d is None or not d.flags & DEST_F_AVAILABLE or d.weight <= 0
                or d.flags & DEST_F_OVERLOAD):
            return None
        return d
