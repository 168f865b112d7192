"""Helpers for scheduler tests and benchmarks: build services the way ipvsadm does.

Destinations are added one at a time through ServiceTable.add_dest, so the
kernel list order (newest first) and every add_dest hook (e.g. wrr's
dest_changed) happen exactly as with `ipvsadm -a`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from pyvs.engine.clock import VirtualClock
from pyvs.engine.model import (
    AF_INET,
    AF_INET6,
    IPPROTO_TCP,
    DestSpec,
    Flow,
    ServiceSpec,
    VirtualService,
    format_addr,
    pack_addr,
)
from pyvs.engine.service import ServiceTable
from pyvs.schedulers.base import SchedulerEnv

VIP = "192.0.2.1"


def make_env(seed: int = 1, clock: VirtualClock | None = None) -> SchedulerEnv:
    return SchedulerEnv(clock=clock or VirtualClock(), random=random.Random(seed))


def build(scheduler: str, dests: Iterable[tuple[str, int] | tuple[str, int, int]],
          flags: int = 0, env: SchedulerEnv | None = None, vip: str = VIP,
          port: int = 80, protocol: int = IPPROTO_TCP,
          ) -> tuple[ServiceTable, VirtualService]:
    """`ipvsadm -A -t vip:port -s scheduler` then `-a` each (addr, weight[, port]) in order."""
    table = ServiceTable(env or make_env())
    packed = pack_addr(vip)
    af = AF_INET if len(packed) == 4 else AF_INET6
    svc = table.add_service(ServiceSpec(af=af, protocol=protocol, addr=packed, port=port,
                                        scheduler=scheduler, flags=flags))
    for item in dests:
        addr, weight = item[0], item[1]
        dport = item[2] if len(item) > 2 else port
        table.add_dest(svc.key, DestSpec(addr=pack_addr(addr), port=dport, weight=weight))
    return table, svc


def add(table: ServiceTable, svc: VirtualService, addr: str, weight: int = 1,
        port: int | None = None):
    return table.add_dest(svc.key, DestSpec(addr=pack_addr(addr),
                                            port=svc.port if port is None else port,
                                            weight=weight))


def edit(table: ServiceTable, svc: VirtualService, addr: str, weight: int,
         port: int | None = None, u_threshold: int = 0):
    return table.edit_dest(svc.key, DestSpec(addr=pack_addr(addr),
                                             port=svc.port if port is None else port,
                                             weight=weight, u_threshold=u_threshold))


def delete(table: ServiceTable, svc: VirtualService, addr: str, port: int | None = None,
           now: float = 0.0) -> None:
    packed = pack_addr(addr)
    table.del_dest(svc.key, AF_INET if len(packed) == 4 else AF_INET6, packed,
                   svc.port if port is None else port, now)


def flow(saddr: str = "10.0.0.1", sport: int = 40000, daddr: str = VIP, dport: int = 80,
         protocol: int = IPPROTO_TCP, **extra) -> Flow:
    s = pack_addr(saddr)
    return Flow(af=AF_INET if len(s) == 4 else AF_INET6, protocol=protocol, saddr=s,
                sport=sport, daddr=pack_addr(daddr), dport=dport, extra=extra)


def dest(svc: VirtualService, addr: str):
    """The Destination object for an address (first port match)."""
    packed = pack_addr(addr)
    for d in svc.destinations:
        if d.addr == packed:
            return d
    raise KeyError(addr)


def name_of(d) -> str | None:
    return None if d is None else format_addr(d.addr)


def run(svc: VirtualService, n: int, fl: Flow | None = None) -> list[str | None]:
    """n decisions for the same flow, as address strings (None = fail)."""
    fl = fl or flow()
    return [name_of(svc.scheduler.schedule(svc, fl)) for _ in range(n)]
