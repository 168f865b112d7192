"""pyvs benchmarks: `python -m pyvs.bench [--quick] [--json FILE] [--no-plot] [--no-readme]`.

Builds its own lab (engine/lab/benchtopo.py: client ns -> director ns -> sink ns),
compiles the C generator (bench/gen.c) and HTTP server (bench/httpd.c), and measures
in one run, side by side:

* the generator's own ceiling (what reaches the director's first interface when the
  director does nothing but drop at ingress), so no one reads a generator limit as a
  forwarder limit;
* loss-free rate (< 0.5 % loss, log-space binary search; median of 3 runs, 1 with
  --quick) and flat-out rate for kernel IP forwarding, kernel nftables DNAT, and
  pyvs NAT / DR / TUN with each I/O and worker option `pyvs run` offers (cases that
  do not work yet are listed as skipped, with the reason);
* the per-core cost per packet of each case (bench/cpucost.py): the machine's extra
  busy CPU time per forwarded packet at a fixed rate every case forwards loss-free,
  against a baseline where the director drops at ingress, and its ratio to kernel
  forwarding's;
* new TCP connections per second (wrk, `Connection: close`) through kernel
  forwarding, nftables DNAT and pyvs NAT;
* RTT p50/p99 of a UDP ping-pong through each case, idle and under load at half the
  case's loss-free rate;
* connection-table memory per entry at 10k, 100k and 1M entries;
* scheduler decisions/s (bench/sched_bench.py), when present.

Writes bench/results/latest.json (and --json FILE), bench/results/throughput.png and
the table in bench/README.md between the `bench:results` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pyvs.bench.report import markdown, plot, write_readme
from pyvs.bench.settings import RESULTS, log
from pyvs.bench.suite import Bench


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="one search per case, short trials (about five minutes)")
    ap.add_argument("--json", metavar="FILE", help="also write the results here")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--no-readme", action="store_true", help="leave bench/README.md alone")
    ap.add_argument("--no-pyvs", action="store_true", help="kernel cases only")
    ap.add_argument("--no-traffic", action="store_true",
                    help="no lab: memory and scheduler sections only")
    ap.add_argument("--no-sched", action="store_true")
    ap.add_argument("--case", action="append", metavar="TEXT",
                    help="only the pyvs cases whose name contains TEXT (repeatable); the "
                         "kernel cases always run, for the ratios; 'storm' adds the "
                         "health-check storm (bench/health_storm.py)")
    ap.add_argument("--repeats", type=int, metavar="N",
                    help="loss-free searches per case (median and spread; default 1 with "
                         "--quick, 3 without)")
    ap.add_argument("--cost-rate", type=float, metavar="PPS",
                    help="offered rate of the per-core cost windows (default 10000; every "
                         "case should forward it loss-free); 0 skips the per-core cost")
    ap.add_argument("--cost-window", type=float, metavar="S",
                    help="generator time of one per-core cost window (default 2 with "
                         "--quick, 4 without); longer windows average more background out")
    args = ap.parse_args(argv)
    if os.geteuid() != 0 and not args.no_traffic:
        sys.exit("python -m bench: needs root (network namespaces); --no-traffic runs "
                 "the in-process sections only")
    res = Bench(args).run()
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(res, indent=1)
    (RESULTS / "latest.json").write_text(text)
    if args.json:
        Path(args.json).write_text(text)
    if not args.no_plot:
        try:
            plot(res, RESULTS / "throughput.png")
        except ImportError as err:
            log(f"no plot: {err} (pip install '.[bench]')")
    if not args.no_readme:
        write_readme(res)
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
