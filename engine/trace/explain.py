"""The scheduler's inputs, as a teacher would point at them.

``dest_inputs`` is what every kernel scheduler may read of its destinations (list
order, weight, active/inactive connections, overload); ``before`` and ``after``
add what a given scheduler keeps or computes: round robin's cursor, weighted round
robin's current weight, the overhead that the least-connection family compares
(ip_vs_dest_conn_overhead), the hash slot of sh, dh and mh (the same hash functions
as schedulers/), lblc's destination cache.  A scheduler pyvs does not know (a
plugin) gets the common inputs only.
"""

from __future__ import annotations

from pyvs.engine.model import SVC_F_SCHED_MH_PORT, SVC_F_SCHED_SH_PORT
from pyvs.engine.trace.filter import show_addr, show_endpoint
from pyvs.schedulers import dh, mh, sh
from pyvs.schedulers.hashing import flow_hash_key, fold, hash_32


def dest_name(dest) -> str:
    return show_endpoint(dest.addr, dest.port)


def dest_inputs(svc) -> list[dict]:
    """Every destination in list order (the order the kernel walks)."""
    return [{"dest": dest_name(d), "weight": d.weight, "active": d.activeconns,
             "inactive": d.inactconns, "overhead": d.conn_overhead(),
             "overloaded": d.overloaded, "available": d.available}
            for d in svc.destinations]


def before(sched) -> dict:
    """What the scheduler keeps between decisions, read before it decides."""
    name = getattr(sched, "name", "")
    if name == "rr":
        cur = sched.cursor
        return {"cursor": dest_name(cur) if cur is not None else "the list head"}
    if name == "wrr":
        return {"cw": sched.cw, "mw": sched.mw, "di": sched.di}
    return {}


def _sh_slot(svc, flow) -> int:
    addr, port = flow_hash_key(flow, bool(svc.flags & SVC_F_SCHED_SH_PORT))
    return hash_32((port + fold(addr)) & 0xFFFFFFFF, sh.SH_TAB_BITS)


def _mh_slot(sched, svc, flow) -> int:
    addr, port = flow_hash_key(flow, bool(svc.flags & SVC_F_SCHED_MH_PORT))
    return mh.h1(mh.mh_key(addr, port)) % sched.table_size


def after(sched, svc, flow) -> dict:
    """What the decision was computed from: hash slots, overheads, caches."""
    name = getattr(sched, "name", "")
    if name == "sh":
        slot = _sh_slot(svc, flow)
        owner = sched.buckets[slot]
        return {"hash": f"hash_32(client {show_addr(flow.saddr)}) -> slot {slot} of "
                        f"{sh.SH_TAB_SIZE}", "slot": slot,
                "slot_owner": dest_name(owner) if owner is not None else None}
    if name == "dh":
        slot = hash_32(fold(flow.daddr), dh.DH_TAB_BITS)
        owner = sched.buckets[slot]
        return {"hash": f"hash_32(destination {show_addr(flow.daddr)}) -> slot {slot} of "
                        f"{dh.DH_TAB_SIZE}", "slot": slot,
                "slot_owner": dest_name(owner) if owner is not None else None}
    if name.startswith("mh"):
        slot = _mh_slot(sched, svc, flow)
        owner = sched.table[slot]
        return {"hash": f"hsiphash(client {show_addr(flow.saddr)}) -> slot {slot} of "
                        f"{sched.table_size}", "slot": slot,
                "slot_owner": dest_name(owner) if owner is not None else None}
    if name == "wrr":
        return {"cw": sched.cw}
    if name in ("lc", "wlc", "sed", "nq", "fo", "ovf", "twos", "lblc", "lblcr"):
        return {"rule": RULES[name]}
    return {}


RULES = {  # what the least-connection family minimises (include/net/ip_vs.h, ip_vs_*.c)
    "lc": "least overhead = active*256 + inactive",
    "wlc": "least overhead/weight (overhead = active*256 + inactive)",
    "sed": "least (active+1)/weight",
    "nq": "an idle server first, else least (active+1)/weight",
    "fo": "the available server with the highest weight",
    "ovf": "the highest weight whose active connections are below its weight",
    "twos": "the lesser overhead/weight of two random picks",
    "lblc": "the server this destination address went to, unless overloaded; else wlc",
    "lblcr": "the least loaded of this destination address's server set",
}
