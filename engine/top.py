"""`pyvs top`: a full-screen live view of this namespace's director, refreshed every second.

Services and their real servers with weight, ActiveConn, InActConn and the kernel
estimator's rates (CPS, PPS and BPS in each direction: `pyvsadm -L -n --rate`),
drops by reason and the port's counters, each with its rate since the last frame.
It reaches the director as pyvsadm does -- the control socket of its network
namespace (engine/control.py) -- so `ip netns exec NAME pyvs top` watches the
director of NAME.  Keys (read in cbreak mode between frames, never blocking them):
  s / S  next / previous sort column     r  reverse the order
  f or / type a filter on service or real-server address (Enter: done, Esc: clear)
  c      clear the filter                 q  quit
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import termios
import time
import tty

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

# (column key, heading); "address" sorts by name, the others from the largest down
COLUMNS = (("address", "Service / real server"), ("weight", "Weight"),
           ("active", "ActiveConn"), ("inactive", "InActConn"), ("cps", "CPS"),
           ("inpps", "InPPS"), ("outpps", "OutPPS"), ("inbps", "InBPS"), ("outbps", "OutBPS"))
SORT_KEYS = tuple(key for key, _ in COLUMNS)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                   help="refresh period (default 1 s; the rates themselves are the "
                        "estimator's, sampled every 2 s as in the kernel)")
    p.add_argument("--sort", choices=SORT_KEYS, default="address",
                   help="initial sort column (key s cycles)")
    p.add_argument("--filter", default="", metavar="TEXT",
                   help="show only services and real servers whose address contains TEXT")
    p.add_argument("--once", action="store_true",
                   help="print one frame to stdout and exit (no full screen, no keys): "
                        "for scripts and terminals without cursor control")


class View:
    """What the screen shows: sort, filter, and the last counters (for rates)."""

    def __init__(self, sort: str = "address", filt: str = "") -> None:
        self.sort = sort
        self.reverse = False
        self.filter = filt
        self.editing = False  # typing a filter
        self.prev: dict[str, int] = {}
        self.prev_time: float | None = None
        self.rates: dict[str, float | None] = {}

    # -- keys ---------------------------------------------------------------------------
    def key(self, ch: str) -> bool:
        """Apply one key; False: quit."""
        if self.editing:
            if ch in ("\r", "\n"):
                self.editing = False
            elif ch == "\x1b":
                self.editing, self.filter = False, ""
            elif ch in ("\x7f", "\b"):
                self.filter = self.filter[:-1]
            elif ch.isprintable():
                self.filter += ch
            return True
        if ch in ("q", "Q", "\x03"):
            return False
        if ch in ("s", "S"):
            step = 1 if ch == "s" else -1
            self.sort = SORT_KEYS[(SORT_KEYS.index(self.sort) + step) % len(SORT_KEYS)]
        elif ch == "r":
            self.reverse = not self.reverse
        elif ch in ("f", "/"):
            self.editing, self.filter = True, ""
        elif ch == "c":
            self.filter = ""
        return True

    # -- data ---------------------------------------------------------------------------
    def counters(self, status: dict, now: float) -> None:
        """Per-second rates of the drop and port counters since the previous frame."""
        flat = {f"drop {k}": v for k, v in status.get("drops", {}).items()}
        for port, st in status.get("ports", {}).items():
            flat.update({f"{port} {k}": v for k, v in st.items()
                         if isinstance(v, int) and not isinstance(v, bool)})
        span = None if self.prev_time is None else now - self.prev_time
        self.rates = {k: (v - self.prev.get(k, 0)) / span if span else None
                      for k, v in flat.items()}
        self.prev, self.prev_time = flat, now

    def rows(self, services: list[dict]) -> list[tuple[dict, list[dict]]]:
        """Services and their real servers, filtered and sorted."""
        needle = self.filter.lower()
        out = []
        for svc in services:
            svc = {**svc, "address": svc["service"], "weight": sum(
                d["weight"] for d in svc["destinations"])}
            dests = list(svc["destinations"])
            if needle and needle not in svc["address"].lower():
                dests = [d for d in dests if needle in d["address"].lower()]
                if not dests:
                    continue
            dests.sort(key=self._key, reverse=self._descending())
            out.append((svc, dests))
        out.sort(key=lambda pair: self._key(pair[0]), reverse=self._descending())
        return out

    def _descending(self) -> bool:
        return (self.sort != "address") != self.reverse

    def _key(self, row: dict):
        return row[self.sort] if self.sort != "address" else _addr_key(row["address"])


def _addr_key(text: str) -> tuple:
    """ipvsadm's order: protocol, then address and port as numbers where they are."""
    parts = text.replace("[", " ").replace("]", " ").replace(":", " ").replace(".", " ").split()
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def _num(value: int | float | None) -> str:
    if value is None:
        return "-"
    value = round(value)  # up to 99999 exactly, then K, M, G as ipvsadm's print_largenum
    for unit, size, above in (("G", 10**9, 10**11), ("M", 10**6, 10**8), ("K", 1000, 10**5)):
        if abs(value) >= above:
            return f"{value // size}{unit}"
    return str(value)


def _uptime(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    return (f"{days}d " if days else "") + time.strftime("%H:%M:%S", time.gmtime(rest))


def render(view: View, status: dict, top: dict, error: str | None = None):
    """One frame."""
    table_info = status.get("table", {})
    limit = table_info.get("limit")
    head = Text()
    head.append("pyvs top", style="bold")
    head.append(f"  pid {status.get('pid', '?')}  up {_uptime(status.get('uptime', 0))}"
                f"  io {status.get('io', '?')}  connections "
                f"{top.get('connections', status.get('connections', 0))}"
                f" (limit {limit if limit else 'none'}, size {top.get('size', '?')})")
    if status.get("config"):
        head.append(f"  config {status['config']}")
    keys = Text(f"sort: {view.sort}{' (reversed)' if view.reverse else ''}   filter: ",
                style="dim")
    keys.append(f"{view.filter}{'_' if view.editing else ''}" or "(none)",
                style="bold yellow" if view.filter or view.editing else "dim")
    keys.append("   keys: s/S sort  r reverse  f or / filter  c clear  q quit", style="dim")
    parts = [head, keys]
    if error:
        parts.append(Text(error, style="bold red"))

    svc_table = Table(expand=True, box=None, header_style="bold reverse")
    for key, heading in COLUMNS:
        svc_table.add_column(heading + (" ▼" if key == view.sort else ""),
                             justify="left" if key == "address" else "right",
                             no_wrap=True)
    rows = view.rows(top.get("services", []))
    for svc, dests in rows:
        svc_table.add_row(Text(f"{svc['address']} {svc['scheduler']}", style="bold cyan"),
                          *(_num(svc[k]) for k, _ in COLUMNS[1:]))
        for d in dests:
            svc_table.add_row(f"  -> {d['address']} {d['forward']}",
                              *(_num(d[k]) for k, _ in COLUMNS[1:]))
    if not rows:
        svc_table.add_row(Text("no service matches the filter" if view.filter
                               else "no services (add one with pyvsadm -A)", style="dim"))
    parts.append(svc_table)

    drops = Table(title="Drops by reason", box=None, header_style="bold", expand=False)
    drops.add_column("reason")
    drops.add_column("total", justify="right")
    drops.add_column("/s", justify="right")
    for reason, count in sorted(status.get("drops", {}).items(), key=lambda kv: -kv[1]):
        drops.add_row(reason, str(count), _num(view.rates.get(f"drop {reason}")))
    if not status.get("drops"):
        drops.add_row(Text("none", style="dim"), "", "")
    load = Table(title="Port load", box=None, header_style="bold", expand=False)
    load.add_column("counter")
    load.add_column("total", justify="right")
    load.add_column("/s", justify="right")
    for port, st in status.get("ports", {}).items():
        for key, value in st.items():
            if isinstance(value, int) and not isinstance(value, bool):
                load.add_row(f"{port} {key}", str(value),
                             _num(view.rates.get(f"{port} {key}")))
    bottom = Table.grid(padding=(0, 6))
    bottom.add_row(drops, load)
    parts += [Text(""), bottom]
    return Group(*parts)


def fetch() -> tuple[dict, dict]:
    from pyvs.engine.control import client_request

    status = client_request({"op": "status"}, timeout=5.0)
    top = client_request({"op": "top"}, timeout=5.0)
    if top.get("rc") != 0:
        raise OSError(top.get("err", "").strip() or "the director refused `top`")
    return status, top


class _Cbreak:
    """stdin in cbreak mode (keys without Enter, no echo) while the view runs."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.saved = None

    def __enter__(self):
        if os.isatty(self.fd):
            self.saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc) -> None:
        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        sys.stderr.write("pyvs top: Permission denied (you must be root)\n")
        return 1
    if args.interval <= 0:
        sys.stderr.write("pyvs top: --interval must be positive\n")
        return 2
    view = View(args.sort, args.filter)
    try:
        status, top = fetch()
    except (FileNotFoundError, ConnectionRefusedError):
        sys.stderr.write("pyvs top: no pyvs director runs in this network namespace "
                         "(start one with `pyvs run`)\n")
        return 1
    except OSError as err:  # refused (--workers), or the socket failed
        sys.stderr.write(f"pyvs top: {err}\n")
        return 1
    view.counters(status, time.monotonic())
    if args.once:
        # a pipe has no width: wide enough for IPv6 addresses and every column
        Console(width=None if sys.stdout.isatty() else 160).print(render(view, status, top))
        return 0
    fd = sys.stdin.fileno()
    error = None
    with _Cbreak(fd), Live(render(view, status, top), screen=True, auto_refresh=False,
                           transient=True) as live:
        next_frame = time.monotonic() + args.interval
        while True:
            timeout = max(0.0, next_frame - time.monotonic())
            ready, _, _ = select.select([fd] if fd >= 0 else [], [], [], timeout)
            if ready:
                data = os.read(fd, 64).decode(errors="replace")
                if not data:  # stdin closed: keep refreshing, no more keys
                    fd = -1
                if any(not view.key(ch) for ch in data):
                    return 0
            else:
                next_frame = time.monotonic() + args.interval
                try:
                    status, top = fetch()
                    view.counters(status, time.monotonic())
                    error = None
                except (OSError, ValueError) as err:
                    error = f"cannot reach the director: {err}"
            live.update(render(view, status, top, error), refresh=True)
