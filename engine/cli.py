"""The `pyvs` command: run | reload | sysctl | status | top | lab | realserver | demo | sim |
trace."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys


def _in_range(low: int, high: int | None = None):
    """argparse type: an integer in low..high (no upper bound without ``high``)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"in {low}..{high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, not {value}")
        return value
    return parse


def run_option_errors(args: argparse.Namespace) -> list[str]:
    """Combinations of `pyvs run` options that would be accepted and do nothing, and
    interfaces this network namespace does not have."""
    errors = []
    if args.metrics is not None:
        from pyvs.engine.metrics import parse_listen

        try:
            parse_listen(args.metrics)
        except ValueError as err:
            errors.append(f"--metrics {args.metrics!r}: {err}")
    if args.interfaces and args.io == "nfqueue":
        errors.append("--interface needs --io ring or xdp (NFQUEUE takes what the kernel "
                      "queues, whatever interface it arrived on)")
    elif args.interfaces:
        import socket

        have = sorted(name for _, name in socket.if_nameindex())
        errors += [f"--interface {name}: no such interface in this network namespace "
                   f"(it has {', '.join(have)})" for name in args.interfaces
                   if name not in have]
    return errors


def _need_root() -> None:
    if os.geteuid() != 0:
        sys.exit("pyvs: this needs root (network namespaces, netfilter, raw sockets)")


def cmd_run(args: argparse.Namespace) -> int:
    _need_root()
    from pyvs.engine import logs
    from pyvs.engine.daemon import Daemon

    logs.setup(args.log_level, args.log_format)
    health = _load_health(args)
    if health is False:
        return 1
    if args.workers > 1:
        if health is not None:
            sys.stderr.write("pyvs run: --keepalived/--config run with one worker\n")
            return 2
        if args.seed is not None:
            sys.stderr.write("pyvs run: --seed needs one worker (each worker process would "
                             "draw its own sequence)\n")
            return 2
        if args.conn_limit is not None:
            sys.stderr.write("pyvs run: --conn-limit works with one worker (each worker has "
                             "its own table)\n")
            return 2
        if args.metrics is not None:
            sys.stderr.write("pyvs run: --metrics works with one worker (each worker has "
                             "its own counters)\n")
            return 2
        try:
            from pyvs.engine.workers import run_workers
        except ImportError:
            sys.stderr.write("pyvs: --workers is not available in this version\n")
            return 2
        return run_workers(args)
    daemon = Daemon(io=args.io, interfaces=args.interfaces, seed=args.seed)
    daemon.health = health
    if args.conn_limit is not None:
        daemon.director.defense.limit = args.conn_limit
    if args.rules:
        from pyvs.engine.config import RulesError, load_rules

        try:
            count = load_rules(args.rules, daemon.director)
        except RulesError as err:
            sys.stderr.write(f"pyvs: {err}\n")
            return 1
        logging.getLogger("pyvs").info("%d rules loaded from %s", count, args.rules)
    profile = os.environ.get("PYVS_PROFILE")  # a cProfile output file, for measurements
    try:
        if args.metrics is not None:  # engine/metrics.py: listen first, refuse a taken port
            from pyvs.engine.metrics import MetricsExporter, parse_listen

            daemon.metrics = MetricsExporter(*parse_listen(args.metrics))
            daemon.metrics.start()
            logging.getLogger("pyvs").info("metrics on http://%s/metrics",
                                           daemon.metrics.where)
        if not profile:
            return daemon.run()
        import cProfile

        prof = cProfile.Profile()
        try:
            return prof.runcall(daemon.run)
        finally:
            prof.dump_stats(profile)
    except (RuntimeError, OSError) as err:  # could not start (what it set up is removed)
        sys.stderr.write(f"pyvs run: {err}{_start_hint(args, err)}\n")
        return 1
    finally:
        if daemon.metrics is not None:
            daemon.metrics.close()


def _start_hint(args: argparse.Namespace, err: BaseException) -> str:
    """Why a permission error at start may not be about root: a user namespace."""
    from pyvs.engine.io.nfqueue import verdicts_carry_packets

    if (isinstance(err, OSError) and err.errno == errno.EPERM and args.io == "xdp"
            and not verdicts_carry_packets()):
        return (" (this network namespace belongs to a user namespace, where loading BPF "
                "is not allowed: use --io ring or the default)")
    return ""


def _load_health(args: argparse.Namespace):
    """The health-checking configuration of --keepalived / --config (engine/health/):
    None without one, False (after one line on stderr) when it is refused."""
    path, kind = (args.keepalived, "keepalived") if args.keepalived else (args.config, "toml")
    if not path:
        return None
    from pyvs.engine.health.model import ConfigError
    from pyvs.engine.health.supervisor import HealthSupervisor, load

    try:
        return HealthSupervisor(path, kind, load(path, kind))
    except ConfigError as err:
        sys.stderr.write(f"pyvs run: {err}\n")
        return False


def cmd_reload(args: argparse.Namespace) -> int:  # noqa: ARG001
    """Re-read the --keepalived/--config file; a broken one changes nothing."""
    from pyvs.engine.control import client_request

    try:
        reply = client_request({"op": "reload"})
    except (FileNotFoundError, ConnectionRefusedError):
        sys.stderr.write("pyvs reload: no pyvs director runs in this network namespace\n")
        return 1
    sys.stdout.write(reply.get("out", ""))
    sys.stderr.write(reply.get("err", ""))
    return int(reply.get("rc", 1))


def cmd_sysctl(args: argparse.Namespace) -> int:
    from pyvs.engine.control import client_request

    try:
        reply = client_request({"op": "sysctl", "args": args.settings})
    except (FileNotFoundError, ConnectionRefusedError):
        sys.stderr.write("pyvs sysctl: no pyvs director runs in this network namespace\n")
        return 1
    sys.stdout.write(reply.get("out", ""))
    sys.stderr.write(reply.get("err", ""))
    return int(reply.get("rc", 1))


def cmd_status(args: argparse.Namespace) -> int:
    """Uptime, table, configuration file, port counters and drops by reason, as JSON."""
    from pyvs.engine.control import client_request

    try:
        reply = client_request({"op": "status"})
    except (FileNotFoundError, ConnectionRefusedError):
        sys.stderr.write("pyvs status: no pyvs director runs in this network namespace\n")
        return 1
    print(json.dumps({k: reply[k] for k in ("pid", "uptime", "config", "connections", "table",
                                            "drops", "io", "ports", "workers",
                                            "xdp-workers", "health",
                                            "sync", "defense")
                      if reply.get(k) is not None}, indent=2))
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    """A live view of this namespace's director (engine/top.py)."""
    from pyvs.engine.top import run

    return run(args)


def cmd_lab(args: argparse.Namespace) -> int:
    """`pyvs lab up|down|exec|load` (engine/lab/; rootless labs: engine/lab/rootless.py)."""
    from pyvs.engine.lab import labcli

    return labcli.run(args)


def cmd_realserver(args: argparse.Namespace) -> int:
    """Userspace tunnel endpoint of an LVS-TUN real server (engine/realserver.py)."""
    _need_root()
    from pyvs.engine.realserver import RealServer

    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="pyvs-realserver[%(process)d] %(levelname)s: %(message)s",
                        stream=sys.stderr)
    return RealServer(args.tun_name, args.mtu, args.gue_port, args.ready_file).run()


def cmd_demo(args: argparse.Namespace) -> int:
    _need_root()
    from pyvs.engine.demo import run_demo

    return run_demo(requests=args.requests, real_servers=args.real_servers,
                    clients=args.clients, scheduler=args.scheduler, io=args.io)


def cmd_sim(args: argparse.Namespace) -> int:
    """Scheduling experiments on the director core, no root (engine/sim/cli.py)."""
    from pyvs.engine.sim.cli import run

    return run(args)


def cmd_trace(args: argparse.Namespace) -> int:
    """This namespace's director's decisions, packet by packet (engine/trace/client.py)."""
    from pyvs.engine.trace.client import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyvs", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", help="run the director in this network namespace")
    run.add_argument("--rules", metavar="FILE",
                     help="ipvsadm rules to load at start (the format `pyvsadm -S` prints)")
    run.add_argument("--io", choices=["nfqueue", "ring", "xdp"], default="nfqueue",
                     help="packet port: nfqueue (default, faithful), ring (AF_PACKET "
                          "TPACKET_V3 rings + batch fast path) or xdp (AF_XDP sockets + the "
                          "same fast path); in ring and xdp modes fwmark/ICMP stay on NFQUEUE")
    run.add_argument("--workers", type=_in_range(1), default=1,
                     help="worker processes (ring: PACKET_FANOUT; xdp: one AF_XDP socket "
                          "per receive queue, each interface needs at least N queues); "
                          "default 1")
    run.add_argument("--interface", dest="interfaces", action="append", metavar="IF",
                     help="ring/xdp interfaces (default: every interface with an address)")
    run.add_argument("--conn-limit", type=_in_range(0), metavar="N",
                     help="most connection entries the table holds (templates included); "
                          "new connections beyond it are dropped and counted, none is "
                          "evicted; 0 = no bound (default 1048576, about 240 MiB)")
    run.add_argument("--log-level", default="info",
                     choices=["debug", "info", "warning", "error"])
    run.add_argument("--log-format", choices=["text", "json"], default=None,
                     help="text: one line per event for people (default); json: one JSON "
                          "object per line (ts, level, event, message, fields) for log "
                          "shippers; without the option, $PYVS_LOG_FORMAT if set")
    run.add_argument("--metrics", metavar="[ADDR:]PORT",
                     help="serve Prometheus metrics over HTTP (/metrics) on ADDR:PORT "
                          "(no ADDR: 127.0.0.1; IPv6 as [ADDR]:PORT); node_exporter's "
                          "node_ipvs_* names and labels, plus pyvs_*; off by default")
    run.add_argument("--seed", type=int, default=None,
                     help="seed the schedulers' random choices (twos, plugins), so a run "
                          "can be reproduced, e.g. by `pyvs sim --seed`")
    conf = run.add_mutually_exclusive_group()
    conf.add_argument("--keepalived", metavar="FILE",
                      help="health checking and services from a keepalived.conf (its LVS "
                           "part; README: Health checks)")
    conf.add_argument("--config", metavar="FILE",
                      help="the same from pyvs's native TOML configuration")
    run.set_defaults(func=cmd_run)

    reload = sub.add_parser("reload", help="re-read the --keepalived/--config file (as "
                            "SIGHUP); a broken file changes nothing")
    reload.set_defaults(func=cmd_reload)

    sysctl = sub.add_parser("sysctl", help="read or set net.ipv4.vs.* of the running director")
    sysctl.add_argument("settings", nargs="*", metavar="NAME[=VALUE]")
    sysctl.set_defaults(func=cmd_sysctl)

    status = sub.add_parser("status", help="uptime, table, port counters and drops of the "
                            "director (JSON)")
    status.set_defaults(func=cmd_status)

    from pyvs.engine.top import add_arguments as top_arguments

    top = sub.add_parser("top", help="full-screen live view of services, real servers, "
                         "rates, drops and the port's load")
    top_arguments(top)
    top.set_defaults(func=cmd_top)

    from pyvs.engine.lab.labcli import add_arguments as lab_arguments

    lab = sub.add_parser("lab", help="build, use or remove a network-namespace lab")
    lab_arguments(lab)
    lab.set_defaults(func=cmd_lab)

    rs = sub.add_parser("realserver", help="tunnel-mode real server: decapsulate IPIP, GRE "
                        "and GUE into a TUN device (for hosts without tunnel modules)")
    rs.add_argument("--tun-name", default="pyvstun0")
    rs.add_argument("--mtu", type=_in_range(68, 65535), default=1480)
    rs.add_argument("--gue-port", type=_in_range(0, 65535), default=0,
                    help="also accept GUE on this UDP port (0: no GUE)")
    rs.add_argument("--ready-file", help="written once the device and sockets are ready")
    rs.add_argument("--log-level", default="info",
                    choices=["debug", "info", "warning", "error"])
    rs.set_defaults(func=cmd_realserver)

    demo = sub.add_parser("demo", help="NAT lab + pyvs + curl: show the balancing")
    demo.add_argument("--requests", type=_in_range(1, 100_000), default=30)
    demo.add_argument("--real-servers", type=_in_range(1, 100), default=3)
    demo.add_argument("--clients", type=_in_range(1, 200), default=3)
    demo.add_argument("--scheduler", default="rr")
    demo.add_argument("--io", choices=["nfqueue", "ring", "xdp"], default="nfqueue",
                      help="the director's packet path (see `pyvs run --help`)")
    demo.set_defaults(func=cmd_demo)

    from pyvs.engine.sim.cli import add_arguments as sim_arguments

    sim = sub.add_parser("sim", help="simulate schedulers on the director core "
                         "(no root, no network): metrics, JSON, CSV, plots")
    sim_arguments(sim)
    sim.set_defaults(func=cmd_sim)

    from pyvs.engine.trace.client import add_arguments as trace_arguments

    trace = sub.add_parser("trace", help="watch the running director decide, packet by "
                           "packet: lookup, scheduling, state, rewrite (pcap, ladder)")
    trace_arguments(trace)
    trace.set_defaults(func=cmd_trace)
    return parser


REPORT = ("this is a bug in pyvs: please report it on the pyvs issue tracker with the "
          "command line and this message (PYVS_TRACEBACK=1 shows where it happened)")


def user_errors() -> tuple[type[BaseException], ...]:
    """Failures a user can cause (a name taken, a missing file, no permission...): one
    line, exit status 1.  Anything else is a bug in pyvs (``REPORT``)."""
    from pyvs.engine.lab.netns import LabError
    from pyvs.engine.plumbing import PlumbingError

    return (LabError, PlumbingError, OSError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cmd == "run":
        for error in run_option_errors(args):
            parser.exit(2, f"pyvs run: error: {error}\n")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `pyvs status | head`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except user_errors() as err:
        if os.environ.get("PYVS_TRACEBACK"):
            raise
        sys.stderr.write(f"pyvs {args.cmd}: {describe_error(err)}\n")
        return 1
    except Exception as err:
        if os.environ.get("PYVS_TRACEBACK"):
            raise
        sys.stderr.write(f"pyvs {args.cmd}: internal error: {type(err).__name__}: {err}\n"
                         f"{REPORT}\n")
        return 70  # EX_SOFTWARE


def describe_error(err: BaseException) -> str:
    """One line: OSError with its file name (``Permission denied: /run/x``)."""
    if isinstance(err, OSError) and err.strerror:
        where = err.filename if err.filename is not None else ""
        return f"{err.strerror}: {where}" if where else err.strerror
    return str(err).splitlines()[0] if str(err) else type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
