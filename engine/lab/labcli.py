"""`pyvs lab`: up, down, exec and load, for root labs and rootless ones.

Every failure a user can cause ends in a LabError with one line that says what to do
(engine/cli.py prints it and exits 1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .netns import LabError


def add_arguments(lab: argparse.ArgumentParser) -> None:
    sub = lab.add_subparsers(dest="lab_cmd", required=True)
    up = sub.add_parser("up", help="build a lab and start its real servers; prints JSON")
    up.add_argument("--mode", default="nat", choices=["nat", "dr", "tun"])
    up.add_argument("--real-servers", type=int, default=3, metavar="N", help="1..100")
    up.add_argument("--clients", type=int, default=2, metavar="N", help="1..200")
    up.add_argument("--name", help="the lab's name (default pyvs-<6 hex>)")
    up.add_argument("--rootless", action="store_true",
                    help="as this (unprivileged) user, in a user namespace of its own "
                         "(README: Rootless); use the lab with `pyvs lab exec`")
    up.add_argument("--delay", action="append", default=[], metavar="[rsN=]DIST",
                    help="service time of the real servers' requests, in seconds: a "
                         "number or a distribution (exp:mean=0.02, lognormal:mean=0.02,"
                         "sigma=1, pareto:alpha=1.5,min=0.01, uniform:low=0.01,high=0.03);"
                         " rsN= for one server; repeatable")
    up.add_argument("--capacity", action="append", default=[], metavar="[rsN=]K",
                    help="requests a real server serves at once; more wait in its queue "
                         "(default: unlimited); rsN= for one server; repeatable")
    down = sub.add_parser("down", help="remove a lab (everything running in it too)")
    down.add_argument("name")
    ex = sub.add_parser("exec", help="run a command in one of a lab's namespaces, e.g. "
                        "`pyvs lab exec NAME director -- pyvsadm -Ln`")
    ex.add_argument("name")
    ex.add_argument("role", help="client, director, rs1..rsN (lan, router)")
    ex.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    from .loadcli import add_arguments as load_arguments

    load_arguments(sub.add_parser("load", help="a bounded load generator in a lab's client "
                                  "namespace: per-server distribution, imbalance, CSV"))


def server_options(delays: list[str], capacities: list[str], real_servers: int
                   ) -> dict[str, list[str]]:
    """``--delay``/``--capacity`` values -> {"*" or "rsN": [servers.py arguments]}, each
    value checked here so a typo fails before anything is built."""
    from .pace import parse_capacity, parse_delay

    names = {f"rs{i}" for i in range(1, real_servers + 1)}
    out: dict[str, list[str]] = {}
    for flag, values, check in (("--delay", delays, parse_delay),
                                ("--capacity", capacities, parse_capacity)):
        for value in values:
            target, eq, spec = value.partition("=")
            if not eq or target not in names and not target.startswith("rs"):
                target, spec = "*", value
            elif target not in names:
                raise LabError(f"{flag} {value}: no real server {target} (the lab has "
                               f"rs1..rs{real_servers})")
            try:
                check(spec)
            except ValueError as err:
                raise LabError(f"{flag} {value}: {err}") from None
            out.setdefault(target, []).extend([flag, spec])
    return out


def _check_counts(args: argparse.Namespace) -> None:
    from .topology import MAX_CLIENTS, MAX_REAL_SERVERS, check_name

    if not 1 <= args.real_servers <= MAX_REAL_SERVERS:
        raise LabError(f"--real-servers must be 1..{MAX_REAL_SERVERS}, not {args.real_servers}")
    if not 1 <= args.clients <= MAX_CLIENTS:
        raise LabError(f"--clients must be 1..{MAX_CLIENTS}, not {args.clients}")
    if args.name is not None:
        check_name(args.name)


def up(args: argparse.Namespace) -> int:
    _check_counts(args)
    options = server_options(args.delay, args.capacity, args.real_servers)
    if args.rootless:
        from . import rootless

        info = rootless.lab_up(args.mode, args.real_servers, args.clients, name=args.name,
                               server_options=options)
    else:
        if os.geteuid() != 0:
            raise LabError("building a lab needs root (network namespaces); as another "
                           "user add --rootless")
        from . import lab_up

        info = lab_up(args.mode, args.real_servers, args.clients, name=args.name,
                      server_options=options)
    print(json.dumps(info, indent=2))
    return 0


def _root_lab(name: str) -> bool:
    from .topology import STATE_DIR, lab_namespaces

    return os.geteuid() == 0 and (bool(lab_namespaces(name)) or (STATE_DIR / name).exists())


def down(args: argparse.Namespace) -> int:
    from . import rootless
    from .topology import check_name, down_by_name

    check_name(args.name)
    if _root_lab(args.name):
        removed = down_by_name(args.name)
        print(f"lab {args.name} removed ({len(removed)} namespaces)")
        return 0
    if rootless.lab_down(args.name):
        print(f"lab {args.name} removed")
        return 0
    raise LabError(f"no lab named {args.name}")


def exec_(args: argparse.Namespace) -> int:
    from . import rootless
    from .topology import check_name

    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise LabError("lab exec: no command (pyvs lab exec NAME ROLE -- CMD ...)")
    check_name(args.name)
    if _root_lab(args.name):
        ns = f"{args.name}-{args.role}"
        if not Path("/run/netns", ns).exists():
            raise LabError(f"lab {args.name} has no namespace {args.role!r}")
        command = ["ip", "netns", "exec", ns, *argv]
    else:
        command = rootless.exec_argv(args.name, args.role, argv)
    sys.stdout.flush()
    try:
        os.execvp(command[0], command)
    except OSError as err:
        raise LabError(f"cannot run {command[0]}: {err.strerror}") from None


def run(args: argparse.Namespace) -> int:
    commands = {"up": up, "down": down, "exec": exec_}
    if args.lab_cmd == "load":  # the load generator in the lab's client namespace
        from .loadcli import command, describe
        from .topology import check_name

        check_name(args.name)
        argv = command(args, describe(args.name))
        return exec_(argparse.Namespace(name=args.name, role="client", argv=argv))
    return commands[args.lab_cmd](args)
