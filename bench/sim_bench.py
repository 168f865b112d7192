"""pyvs sim speed: `python -m pyvs.bench.sim_bench [--flows N] [--json FILE]`.

A flow is one TCP connection opened (SYN, SYN|ACK, request), carrying data (a
300-byte request, a 1000-byte response) and closed (FIN both ways, the last ACK):
7 director calls at the flow level, 8 frames at the packet level (engine/sim/drivers.py).
10 real servers, NAT, Poisson arrivals at 2000/s, 1000 Zipf clients, servers without
a capacity limit.  For every built-in scheduler, at both levels: flows/s and
events/s (director calls: ``Director.handle`` at the flow level, frames through
``Director.process`` at the packet level), wall-clock, on this machine.

Then, for rr at the flow level, where the time goes: a cProfile run, its time split
by module (tottime) and the share spent inside ``Director.handle`` (cumulative).
Timings are machine-dependent; nothing asserts them.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys

from pyvs.engine.sim.cluster import Cluster
from pyvs.engine.sim.runner import Options, Run
from pyvs.engine.sim.workload import Synthetic
from pyvs.schedulers.registry import BUILTIN

GROUPS = (("engine/director.py", "director"), ("engine/conntable.py", "conntable"),
          ("engine/proto/", "proto (states)"), ("engine/accounting.py", "accounting"),
          ("engine/packet.py", "packet"), ("schedulers/", "scheduler"),
          ("engine/sim/", "sim (workload, driver, loop)"), ("engine/clock.py", "clock/timers"))


def bench_workload(flows: int, seed: int = 1):
    return Synthetic(flows=flows, rate=2000, clients=1000, duration="exp:mean=0.01",
                     resp_size="fixed:value=1000", req_size="fixed:value=300").generate(seed)


def measure(scheduler: str, level: str, flows: int) -> dict:
    run = Run(bench_workload(flows), Cluster.uniform(10), scheduler, Options(level=level))
    s = run.execute()["summary"]
    return {"scheduler": scheduler, "level": level, "flows": flows,
            "flows_per_second": s["flows_per_second"],
            "events_per_second": s["events_per_second"],
            "calls_per_flow": s["director_calls"] / flows}


def profile(flows: int, scheduler: str = "rr") -> dict:
    run = Run(bench_workload(flows), Cluster.uniform(10), scheduler, Options())
    prof = cProfile.Profile()
    prof.runcall(run.execute)
    stats = pstats.Stats(prof)
    total = stats.total_tt
    groups: dict[str, float] = {}
    handle_cum = 0.0
    for (path, _line, func), (_cc, _nc, tt, ct, _callers) in stats.stats.items():
        label = next((name for key, name in GROUPS if key in path), "other (builtins, numpy)")
        groups[label] = groups.get(label, 0.0) + tt
        if path.endswith("engine/director.py") and func == "handle":
            handle_cum = ct
    return {"scheduler": scheduler, "flows": flows, "profiled_seconds": total,
            "inside_director_handle": handle_cum / total,
            "by_module": {k: v / total for k, v in sorted(groups.items(),
                                                          key=lambda kv: -kv[1])}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pyvs.bench.sim_bench")
    p.add_argument("--flows", type=int, default=30_000, help="flows per flow-level run")
    p.add_argument("--packet-flows", type=int, default=10_000)
    p.add_argument("--schedulers", default=",".join(BUILTIN))
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    rows = []
    print(f"{'scheduler':10} {'level':6} {'flows/s':>9} {'events/s':>10} {'calls/flow':>10}")
    for name in args.schedulers.split(","):
        for level, n in (("flow", args.flows), ("packet", args.packet_flows)):
            r = measure(name, level, n)
            rows.append(r)
            print(f"{name:10} {level:6} {r['flows_per_second']:9,.0f} "
                  f"{r['events_per_second']:10,.0f} {r['calls_per_flow']:10.2f}", flush=True)
    prof = profile(min(args.flows, 20_000))
    print(f"\nflow level, rr, under cProfile: {prof['inside_director_handle']:.0%} of the time "
          "inside Director.handle; by module (own time):")
    for label, share in prof["by_module"].items():
        print(f"  {label:32} {share:6.1%}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"runs": rows, "profile": prof, "python": sys.version.split()[0]}, fh,
                      indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
