"""lblcr: locality-based least connection with replication.
Kernel: net/netfilter/ipvs/ip_vs_lblcr.c.

The cache maps the packet's destination address to a *set* of servers (new
members go to the front; the set records its last-modified time).  With an
entry: m = weighted-least-loaded member (first member not OVERLOAD with weight
> 0 and AVAILABLE, then strict wlc comparison against later non-OVERLOAD
AVAILABLE members).  If the set has more than one member and was last modified
more than lblcr_expiration seconds ago, the weighted-most-loaded member
(weight > 0 members only) is removed.  If m exists and is not lblc-overloaded
it is returned (even if it was the member just removed, as in the kernel);
otherwise wlc over the service picks a server that is added to the set.
No entry: wlc over the service, new entry {server}.

Expiry as lblc (expire(now), sysctl lblcr_expiration).
"""

from __future__ import annotations

from pyvs.engine.model import DEST_F_AVAILABLE, DEST_F_OVERLOAD, Destination, Flow, VirtualService
from pyvs.schedulers.base import Scheduler
from pyvs.schedulers.lblc import LocalityTable, lblc_overloaded
from pyvs.schedulers.registry import register
from pyvs.schedulers.wlc import weighted_least


class DestSet:
    """struct ip_vs_dest_set: members front-first, lastmod time."""

    __slots__ = ("members", "lastmod")

    def __init__(self, dest: Destination, now: float) -> None:
        self.members = [dest]
        self.lastmod = now

    def insert(self, dest: Destination, now: float) -> None:
        if any(m is dest for m in self.members):
            return
        self.members.insert(0, dest)
        self.lastmod = now

    def erase(self, dest: Destination, now: float) -> None:
        for i, m in enumerate(self.members):
            if m is dest:
                del self.members[i]
                self.lastmod = now
                return

    def min(self) -> Destination | None:
        """ip_vs_dest_set_min()."""
        it = iter(self.members)
        for d in it:
            if d.flags & DEST_F_OVERLOAD:
                continue
            if d.weight > 0 and d.flags & DEST_F_AVAILABLE:
                least = d
                loh = (d.activeconns << 8) + d.inactconns
                break
        else:
            return None
        for d in it:
            if d.flags & DEST_F_OVERLOAD:
                continue
            doh = (d.activeconns << 8) + d.inactconns
            if loh * d.weight > doh * least.weight and d.flags & DEST_F_AVAILABLE:
                least = d
                loh = doh
        return least

    def max(self) -> Destination | None:
        """ip_vs_dest_set_max()."""
        it = iter(self.members)
        for d in it:
            if d.weight > 0:
                most = d
                moh = (d.activeconns << 8) + d.inactconns
                break
        else:
            return None
        for d in it:
            doh = (d.activeconns << 8) + d.inactconns
            if moh * d.weight < doh * most.weight and d.weight > 0:
                most = d
                moh = doh
        return most


class _LblcrTable(LocalityTable):
    sysctl_name = "lblcr_expiration"


@register
class LocalityBasedLeastConnectionReplication(Scheduler):
    name = "lblcr"

    def __init__(self, svc: VirtualService, env) -> None:
        super().__init__(svc, env)
        self.table = _LblcrTable(env)

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
            dset: DestSet = en[0]
            dest = dset.min()
            if (len(dset.members) > 1
                    and now > dset.lastmod + self.table.expiration()):
                m = dset.max()
                if m is not None:
                    dset.erase(m, now)
            if dest is not None and not lblc_overloaded(dest, svc):
                return dest
            dest = weighted_least(svc.destinations)
            if dest is None:
                return None
            dset.insert(dest, now)
            return dest
        dest = weighted_least(svc.destinations)
        if dest is None:
            return None
        entries[flow.daddr] = [DestSet(dest, now), now]
        return dest
