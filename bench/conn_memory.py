"""Memory per connection-table entry: `python -m pyvs.bench.conn_memory --entries N [--json]`.

Builds an engine.director.Director with one UDP NAT service (one real server),
feeds it N synthetic first packets from N distinct clients (addr:port) through
Director.process in batches of 1024 — so every entry is created the way traffic
creates it: lookup miss, scheduling, ConnTable.new, binding, timer-wheel arming —
and reports the growth of the process's resident set (/proc/self/statm) per entry,
plus the Python heap growth per entry from tracemalloc when --tracemalloc is given
(it slows creation several times, so the bench uses it for the smaller sizes only).
Run it in a fresh process per size: RSS deltas are only meaningful there.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import struct
import sys
import time
import tracemalloc

from pyvs.engine import ipvsadm
from pyvs.engine.director import Director
from pyvs.engine.packet import set_ipv4_header_csum

VIP = "198.18.1.1"
RIP = "198.18.2.2"
PAGE = os.sysconf("SC_PAGE_SIZE")
BATCH = 1024


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def make_director() -> Director:
    d = Director()
    for argv in (["-A", "-u", f"{VIP}:9", "-s", "rr"],
                 ["-a", "-u", f"{VIP}:9", "-r", f"{RIP}:9", "-m"]):
        rc, _out, err = ipvsadm.run(argv, "", d)
        if rc != 0:
            raise RuntimeError(f"ipvsadm {argv}: {err}")
    return d


def template() -> bytearray:
    payload = b"x" * 18
    udp = struct.pack("!HHHH", 0, 9, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     bytes((198, 18, 0, 0)), bytes((198, 18, 1, 1)))
    return bytearray(ip + udp)


def fill(d: Director, n: int) -> None:
    """n distinct clients: 198.18.0.0/16 sources (the low two bytes) x ports 1024.."""
    tpl = template()
    made = 0
    while made < n:
        batch = []
        for i in range(made, min(made + BATCH, n)):
            buf = bytearray(tpl)
            host, port = divmod(i, 60000)
            buf[14] = (host >> 8) & 0xFF
            buf[15] = host & 0xFF
            struct.pack_into("!H", buf, 20, 1024 + port)
            set_ipv4_header_csum(buf)
            batch.append(buf)
        d.process(batch)
        made += len(batch)


def measure(n: int, use_tracemalloc: bool = False) -> dict:
    d = make_director()
    gc.collect()
    if use_tracemalloc:
        tracemalloc.start()
        heap0 = tracemalloc.get_traced_memory()[0]
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    fill(d, n)
    seconds = time.perf_counter() - t0
    gc.collect()
    rss1 = rss_bytes()
    res = {
        "entries": len(d.conntable),
        "requested": n,
        "rss_delta_bytes": rss1 - rss0,
        "bytes_per_entry_rss": round((rss1 - rss0) / max(1, len(d.conntable)), 1),
        "seconds": round(seconds, 2),
        "entries_per_s": round(n / seconds) if seconds > 0 else None,
    }
    if use_tracemalloc:
        heap1 = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        res["bytes_per_entry_tracemalloc"] = round((heap1 - heap0) / max(1, len(d.conntable)),
                                                   1)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--tracemalloc", action="store_true")
    args = ap.parse_args(argv)
    if not 1 <= args.entries <= 5_000_000:
        ap.error("--entries must be 1..5000000")
    print(json.dumps(measure(args.entries, args.tracemalloc)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
