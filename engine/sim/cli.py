"""``pyvs sim``: the command line of the simulator (engine/cli.py hands over here).

Builds the workload (synthetic, a CSV/JSON flow list or a pcap), the cluster and the
timeline from the options, runs every scheduler named in ``--schedulers`` on the same
workload and seed, prints a table and writes what was asked (``--json``, ``--csv``,
``--plot``).  Nothing here needs root or a network.  Bad input is one clear line and
exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    w = p.add_argument_group("workload")
    w.add_argument("--workload", default="synthetic", metavar="synthetic|FILE",
                   help="'synthetic', a flow list (.csv/.json) or a capture (.pcap/.pcapng)")
    w.add_argument("--flows", type=int, default=20_000, help="synthetic: number of flows")
    w.add_argument("--rate", type=float, default=1000.0, help="synthetic: mean flows/s")
    w.add_argument("--arrivals", default="poisson", choices=["poisson", "onoff", "diurnal"])
    w.add_argument("--on", type=float, default=1.0, help="onoff: mean on-period (s)")
    w.add_argument("--off", type=float, default=1.0, help="onoff: mean off-period (s)")
    w.add_argument("--period", type=float, default=60.0, help="diurnal: period (s)")
    w.add_argument("--amplitude", type=float, default=0.8, help="diurnal: 0..1")
    w.add_argument("--duration", default="lognormal:mean=0.05,sigma=1.0", metavar="DIST",
                   help="service demand per flow (s at speed 1), e.g. pareto:alpha=1.5,min=0.01")
    w.add_argument("--size", default="lognormal:mean=20000,sigma=1.5", metavar="DIST",
                   help="response bytes per flow")
    w.add_argument("--request-size", default="fixed:value=300", metavar="DIST")
    w.add_argument("--clients", type=int, default=1000)
    w.add_argument("--zipf", type=float, default=1.0, help="client activity exponent (0: even)")
    w.add_argument("--services", default="tcp:198.18.1.1:80", metavar="LIST",
                   help="proto:vip:port[@share],... e.g. tcp:198.18.1.1:80,udp:198.18.1.1:53@0.2")
    w.add_argument("--save-workload", metavar="FILE", help="write the flows (.csv or .json)")
    c = p.add_argument_group("cluster")
    c.add_argument("--servers", type=int, default=10, help="real servers rs1..rsN")
    c.add_argument("--weights", default="1", help="comma list, cycled over the servers")
    c.add_argument("--capacity", type=int, default=8,
                   help="requests served at once per server (0: unlimited)")
    c.add_argument("--speeds", default="1", help="comma list of service speeds, cycled")
    c.add_argument("--queue", type=int, default=None, help="waiting requests before refusing")
    c.add_argument("--service-time", default=None, metavar="DIST",
                   help="per-server service time (replaces the flows' demand)")
    c.add_argument("--cluster", metavar="FILE", help="servers from a JSON file (see docs)")
    c.add_argument("--fwd", default="nat", choices=["nat", "dr"])
    s = p.add_argument_group("schedulers and director")
    s.add_argument("--schedulers", default="rr,wlc,sh,mh,twos",
                   help="comma list: kernel names, mh@SIZE, file.py:Class, module:Class")
    s.add_argument("--sched-flags", default="", help="ipvsadm -b flags, e.g. mh-port")
    s.add_argument("--persistent", type=int, default=0, metavar="SECONDS", help="ipvsadm -p")
    s.add_argument("--sysctl", action="append", default=[], metavar="NAME=VALUE",
                   help="net.ipv4.vs setting, e.g. expire_nodest_conn=1 (repeatable)")
    s.add_argument("--level", default="flow", choices=["flow", "packet"])
    s.add_argument("--seed", type=int, default=1)
    e = p.add_argument_group("timeline")
    e.add_argument("--events", metavar="FILE", help="fail/recover/add/remove/weight/quiesce")
    e.add_argument("--detect-delay", type=float, default=3.0,
                   help="health-check detection delay (s)")
    e.add_argument("--on-failure", default="remove", choices=["remove", "quiesce"])
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="FILE")
    o.add_argument("--csv", metavar="DIR")
    o.add_argument("--plot", metavar="DIR", help="PNG and SVG plots")
    o.add_argument("--interval", type=float, default=None, help="sampling period (s)")
    o.add_argument("--no-progress", action="store_true")


def _list(text: str, conv, what: str) -> list:
    try:
        return [conv(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a comma list of numbers") from None


def parse_services(text: str):
    from pyvs.engine.sim.workload import ServiceDef, WorkloadError

    out = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        spec, _, share = item.partition("@")
        parts = spec.split(":")
        if len(parts) != 3:
            raise WorkloadError(f"--services: {item!r} is not proto:vip:port[@share]")
        try:
            out.append(ServiceDef(parts[1], int(parts[2]), parts[0].lower(),
                                  float(share) if share else 1.0))
        except ValueError as err:
            raise WorkloadError(f"--services: {item!r}: {err}") from None
    return out


def build(args: argparse.Namespace):
    """(workload, cluster, schedulers, options) from the command line."""
    from pyvs.engine.sim import events as sim_events
    from pyvs.engine.sim import flowfile, pcap, schedspec
    from pyvs.engine.sim.cluster import Cluster
    from pyvs.engine.sim.runner import Options
    from pyvs.engine.sim.workload import Synthetic

    source = args.workload
    if source == "synthetic":
        workload = Synthetic(flows=args.flows, rate=args.rate, arrivals=args.arrivals,
                             on=args.on, off=args.off, period=args.period,
                             amplitude=args.amplitude, duration=args.duration,
                             resp_size=args.size, req_size=args.request_size,
                             clients=args.clients, zipf=args.zipf,
                             services=parse_services(args.services)).generate(args.seed)
    elif source.lower().endswith((".pcap", ".pcapng", ".cap")):
        workload = pcap.load(source)
    elif source.lower().endswith((".csv", ".json")):
        workload = flowfile.load(source)
    else:
        raise ValueError(f"--workload: {source!r} is not 'synthetic' nor a .csv, .json or "
                         ".pcap file")
    if args.cluster:
        cluster = Cluster.from_json(args.cluster)
    else:
        cluster = Cluster.uniform(args.servers, _list(args.weights, int, "--weights"),
                                  args.capacity, _list(args.speeds, float, "--speeds"),
                                  args.queue, args.service_time, args.fwd)
    sysctl = {}
    for item in args.sysctl:
        name, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--sysctl: {item!r} is not NAME=VALUE")
        sysctl[name.strip().removeprefix("net.ipv4.vs.")] = value.strip()
    timeline = sim_events.load(args.events) if args.events else []
    options = Options(level=args.level, seed=args.seed, events=timeline,
                      detect_delay=args.detect_delay, on_failure=args.on_failure,
                      persistent=args.persistent, sched_flags=args.sched_flags,
                      sysctl=sysctl, interval=args.interval)
    return workload, cluster, schedspec.split(args.schedulers), options


def run(args: argparse.Namespace) -> int:
    from pyvs.engine.sim import flowfile, output
    from pyvs.engine.sim.compare import compare

    try:
        workload, cluster, names, options = build(args)
        if args.save_workload:
            flowfile.save(workload, args.save_workload)
        with output.progress_bar(names, len(workload),
                                 not args.no_progress and sys.stderr.isatty()) as progress:
            comparison = compare(workload, cluster, names, options, progress)
    except (ValueError, OSError) as err:  # every input error of the sim is a ValueError
        sys.stderr.write(f"pyvs sim: {err}\n")
        return 2
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # a pipe or a file: room for every column, no wrapping
        console = Console(width=200)
    console.print(output.table(comparison))
    try:
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            output.write_json(comparison, args.json)
        if args.csv:
            output.write_csv(comparison, args.csv, workload)
        if args.plot:
            from pyvs.engine.sim import plots

            plots.plot_all(comparison, args.plot)
    except (OSError, RuntimeError) as err:
        sys.stderr.write(f"pyvs sim: cannot write the results: {err}\n")
        return 2
    return 0
