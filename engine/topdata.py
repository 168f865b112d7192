"""What `pyvs top` shows, read from the director between batches (control op "top").

The same numbers as the listings: weight, ActiveConn and InActConn as `pyvsadm -L -n`,
the kernel estimator's rates (ip_vs_est.c, 2 s samples) as `pyvsadm -L -n --rate`,
and the addresses written the way ipvsadm writes them, so the two can be compared."""

from __future__ import annotations

from pyvs.engine.ipvsadm.addresses import AF_INET6
from pyvs.engine.ipvsadm.listing import addrport, fwd_name, proto_name

RATES = ("cps", "inpps", "outpps", "inbps", "outbps")


def _service_name(svc) -> str:
    if svc.fwmark:
        return f"FWM  {svc.fwmark}" + (" IPv6" if svc.af == AF_INET6 else "")
    return f"{proto_name(svc.protocol)} {addrport(svc.af, svc.addr, svc.port)}"


def snapshot(director, ports=()) -> dict:
    """Services with their real servers, drops by reason, the ports' counters."""
    services = []
    for svc in director.services.services.values():
        dests = [{"address": addrport(d.af, d.addr, d.port), "forward": fwd_name(d.fwd),
                  "weight": d.weight, "active": d.activeconns, "inactive": d.inactconns,
                  **dict(zip(RATES, director.rates(d.stats), strict=True))}
                 for d in svc.destinations]
        services.append({"service": _service_name(svc), "scheduler": svc.sched_name,
                         "active": sum(d["active"] for d in dests),
                         "inactive": sum(d["inactive"] for d in dests),
                         **dict(zip(RATES, director.rates(svc.stats), strict=True)),
                         "destinations": dests})
    return {"services": services, "drops": dict(director.drops),
            "connections": len(director.conntable), "size": director.conn_tab_size,
            "ports": {p.name: p.status() for p in ports}}
