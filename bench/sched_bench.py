"""Scheduler decision throughput: `python -m pyvs.bench.sched_bench [--json FILE]`.

For every built-in scheduler and 3, 30 and 300 destinations, builds the service
through ServiceTable (one add at a time, as ipvsadm does), gives the
destinations realistic counters (weights 1..10, active 0..64, inactive 0..1024,
about 1 in 20 at weight 0 and 1 in 50 OVERLOAD) and times schedule() over a
pre-generated pool of 100000 flows with distinct client addresses/ports (and, for
lblc/lblcr, 256 different packet destinations).  Also times the mh lookup-table
rebuild (M = 4093).  Prints a table and optionally writes JSON:
[{"scheduler": ..., "dests": n, "decisions_per_sec": x}, ...]; the mh rebuild
rows are {"scheduler": "mh-rebuild", "dests": n, "decisions_per_sec": rebuilds/s,
"rebuild_ms": ms}.  Timings are machine-dependent; nothing asserts them.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

from pyvs.engine.clock import VirtualClock
from pyvs.engine.model import AF_INET, DEST_F_OVERLOAD, IPPROTO_TCP, Flow
from pyvs.schedulers import registry
from pyvs.schedulers.mh import mh_table
from pyvs.schedulers.testing import build, make_env

SIZES = (3, 30, 300)


def make_service(sched: str, n: int, seed: int = 1):
    rnd = random.Random(seed)
    items = [(f"10.{1 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}", rnd.randint(1, 10))
             for i in range(n)]
    env = make_env(seed=seed, clock=VirtualClock(0.0))
    table, svc = build(sched, items, env=env)
    for d in svc.destinations:
        d.activeconns = rnd.randint(0, 64)
        d.inactconns = rnd.randint(0, 1024)
        if n > 3 and rnd.random() < 0.05:
            d.weight = 0
        if n > 3 and rnd.random() < 0.02:
            d.flags |= DEST_F_OVERLOAD
    return table, svc


def make_flows(count: int = 100_000, seed: int = 2) -> list[Flow]:
    rnd = random.Random(seed)
    vips = [bytes((192, 0, 2, 1))] * 3 + [bytes((198, 51, 100, i)) for i in range(256)]
    return [Flow(af=AF_INET, protocol=IPPROTO_TCP,
                 saddr=rnd.getrandbits(32).to_bytes(4, "big"), sport=rnd.randint(1024, 65535),
                 daddr=rnd.choice(vips), dport=80)
            for _ in range(count)]


def time_decisions(svc, flows: list[Flow], min_time: float) -> float:
    schedule = svc.scheduler.schedule
    chunk = 512
    pos = 0
    done = 0
    start = time.perf_counter()
    elapsed = 0.0
    while elapsed < min_time:
        for f in flows[pos:pos + chunk]:
            schedule(svc, f)
        done += min(chunk, len(flows) - pos)
        pos = pos + chunk if pos + chunk < len(flows) else 0
        elapsed = time.perf_counter() - start
    return done / elapsed


def time_mh_rebuild(n: int, min_time: float) -> float:
    _, svc = make_service("mh", n)
    dests = svc.destinations
    count = 0
    start = time.perf_counter()
    elapsed = 0.0
    while elapsed < min_time or count < 3:
        mh_table(dests)
        count += 1
        elapsed = time.perf_counter() - start
    return elapsed / count


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--json", metavar="FILE", help="write results as JSON")
    ap.add_argument("--min-time", type=float, default=0.25,
                    help="seconds to run each measurement (default 0.25)")
    ap.add_argument("--schedulers", default=",".join(registry.BUILTIN))
    ap.add_argument("--clients", type=int, default=100_000,
                    help="distinct client flows cycled through (default 100000, more than "
                         "mh's 65536-entry hash cache, so mh pays for SipHash)")
    args = ap.parse_args(argv)

    flows = make_flows(args.clients)
    random.Random(3).shuffle(flows)
    results = []
    names = [s for s in args.schedulers.split(",") if s]
    print(f"{'scheduler':<12}" + "".join(f"{n:>14} dests" for n in SIZES))
    for name in names:
        row = []
        for n in SIZES:
            _, svc = make_service(name, n)
            rate = time_decisions(svc, flows, args.min_time)
            results.append({"scheduler": name, "dests": n, "decisions_per_sec": round(rate)})
            row.append(rate)
        print(f"{name:<12}" + "".join(f"{r:>20,.0f}" for r in row), flush=True)
    row = []
    for n in SIZES:
        secs = time_mh_rebuild(n, args.min_time)
        results.append({"scheduler": "mh-rebuild", "dests": n,
                        "decisions_per_sec": round(1 / secs, 1),
                        "rebuild_ms": round(secs * 1000, 3)})
        row.append(secs * 1000)
    print(f"{'mh rebuild':<12}" + "".join(f"{r:>17.2f} ms" for r in row))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
