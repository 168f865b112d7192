"""`pyvs lab load NAME`: engine/lab/load.py in the lab's client namespace, aimed at the
lab's VIP from the lab's client addresses, counting every real server of the lab."""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import load
from .netns import LabError
from .topology import STATE_DIR, url


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the lab")
    p.add_argument("--clients", type=int, default=None, metavar="K",
                   help="client addresses to connect from (default: all of the lab's)")
    p.add_argument("--ipv6", action="store_true", help="to the IPv6 VIP from IPv6 clients")
    p.add_argument("--port", type=int, default=None, help="the VIP's port (default: the "
                   "real servers' HTTP port)")
    load.add_arguments(p)


def describe(name: str) -> dict:
    """The lab's description (``pyvs lab up``'s JSON), root lab or this user's rootless."""
    from . import rootless

    paths = [STATE_DIR / name / "lab.json"] if os.geteuid() == 0 else []
    paths.append(rootless.state_root() / name / "lab.json")
    for path in paths:
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if "describe" in state:
            return state["describe"]
    raise LabError(f"no lab named {name}")


def command(args: argparse.Namespace, lab: dict) -> list[str]:
    """The load generator's command line for ``lab``; LabError for a bad option."""
    family = "client_addrs6" if args.ipv6 else "client_addrs"
    sources = lab[family]
    if args.clients is not None:
        if not 1 <= args.clients <= len(sources):
            raise LabError(f"--clients must be 1..{len(sources)} (the lab's clients), "
                           f"not {args.clients}")
        sources = sources[:args.clients]
    try:
        load.bounds(args)
    except ValueError as err:
        raise LabError(str(err)) from None
    port = args.port or lab["real_servers"][0]["tcp_port"]
    target = url(lab["vip6" if args.ipv6 else "vip"], port, args.path)
    argv = [sys.executable, "-m", "pyvs.engine.lab.load", "--url", target]
    for source in sources:
        argv += ["--source", source]
    for rs in lab["real_servers"]:
        argv += ["--server", rs["name"]]
    for flag, value in (("--requests", args.requests), ("--duration", args.duration),
                        ("--concurrency", args.concurrency), ("--rate", args.rate)):
        if value is not None:
            argv += [flag, str(value)]
    if args.csv:
        argv += ["--csv", os.path.abspath(args.csv)]
    if args.json:
        argv.append("--json")
    return argv
