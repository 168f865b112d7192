"""SYN flood against a pyvs director: the table's bound, the drops by reason, and what a
held connection and a stream of new legitimate connections get, with and without the
flood.

    python -m pyvs.bench.synflood [--seconds 30] [--io nfqueue] [--conn-limit 50000]
                                  [--sysctl drop_entry=1 ...] [--json FILE]

A NAT lab (engine/lab NatLab, 2 real servers); `pyvs run --conn-limit N`.  The flood
is bench/gen.c ``synflood`` from the client namespace at the generator's full rate:
TCP SYNs to the VIP, every one from a new spoofed source (198.19.0.0/16, in the lab
range, routed to a blackhole on the director; the real servers answer with SYN
cookies, as servers behind a director under a flood should).  Two windows of the same
length, first without, then with the flood; in both, one held connection downloads at
up to HELD_RATE and a client opens a new connection every LEGIT_INTERVAL (GET /, 10 s
to succeed, which leaves room for SYN retransmissions).  Reported per window: the held connection's
throughput, the new connections' success rate and latency; during the flood: the
director's largest table and RSS, its drops by reason, what the kernel's queue
dropped, and the generator's rate.

The same ``run_trial`` serves tests/test_synflood_lab.py (short, asserting behaviour
only: success, the bound, the counters; never timings).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import threading
import time

HELD_RATE = 4e6  # bytes/s
LEGIT_INTERVAL = 0.05
LEGIT_TIMEOUT = 10.0
FLOOD_SPAN = 65536
FLOOD_SRC = "198.19.0.0"


# -- the client-side loops (run inside the client namespace) -----------------------------------
def legit(src: str, host: str, seconds: float) -> dict:
    """New connections, one every LEGIT_INTERVAL, each a whole GET /; in parallel threads
    so a slow one (SYN retransmitted) does not delay the next."""
    results: list[tuple[bool, float]] = []
    lock = threading.Lock()

    def one() -> None:
        t0 = time.monotonic()
        ok = False
        try:
            with socket.create_connection((host, 80), timeout=LEGIT_TIMEOUT,
                                          source_address=(src, 0)) as s:
                s.settimeout(max(0.1, LEGIT_TIMEOUT - (time.monotonic() - t0)))
                s.sendall(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                ok = data.startswith(b"HTTP/1.") and b"\r\n\r\nrs" in data
        except OSError:
            ok = False
        with lock:
            results.append((ok, time.monotonic() - t0))

    threads = []
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        t = threading.Thread(target=one, daemon=True)
        t.start()
        threads.append(t)
        time.sleep(LEGIT_INTERVAL)
    for t in threads:
        t.join(LEGIT_TIMEOUT + 5)
    lat = sorted(d for ok, d in results if ok)
    return {"attempts": len(results), "ok": sum(ok for ok, _ in results),
            "p50_ms": round(1000 * statistics.median(lat), 2) if lat else None,
            "p99_ms": round(1000 * lat[int(0.99 * (len(lat) - 1))], 2) if lat else None}


# -- the trial --------------------------------------------------------------------------------
def _window_rate(timeline: str, t0: float, t1: float) -> float:
    """Bytes/s the held download got between wall times t0 and t1."""
    points = [tuple(map(float, line.split())) for line in open(timeline) if line.strip()]

    def at(t: float) -> float:
        before = [b for ts, b in points if ts <= t]
        return before[-1] if before else 0.0

    return (at(t1) - at(t0)) / (t1 - t0)


def _rss_kib(pid: int) -> int:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def kernel_drops(ns: str) -> dict:
    """What the director's kernel dropped before pyvs saw it: packets the NFQUEUE had
    no room for (/proc/net/netfilter/nfnetlink_queue: queue_dropped, user_dropped) and
    the veth receive drops (rx_dropped of the client-side interface)."""
    import subprocess

    out = {"nfqueue_dropped": 0, "rx_dropped": 0}
    r = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/netfilter/nfnetlink_queue"],
                       capture_output=True, text=True, timeout=10)
    for line in r.stdout.splitlines():
        f = line.split()
        if len(f) >= 7:
            out["nfqueue_dropped"] += int(f[5]) + int(f[6])
    r = subprocess.run(["ip", "netns", "exec", ns, "ip", "-s", "-j", "link"],
                       capture_output=True, text=True, timeout=10)
    for link in json.loads(r.stdout or "[]"):
        out["rx_dropped"] += link.get("stats64", {}).get("rx", {}).get("dropped", 0)
    return out


def run_trial(seconds: float = 30.0, io: str = "nfqueue", conn_limit: int = 50_000,
              sysctls: tuple[str, ...] = (), rate: float = 0) -> dict:
    from pyvs.bench.tools import build
    from pyvs.engine.lab import NatLab
    from pyvs.engine.lab import netns as nx
    from pyvs.engine.runner import DirectorProcess

    gen = build("gen")
    lab = NatLab(real_servers=2, clients=3, start_servers=True)
    lab.up()
    held = None
    try:
        nx.sysctl(lab.ns("director"), {"net.ipv4.conf.all.rp_filter": 0,
                                       "net.ipv4.conf.default.rp_filter": 0})
        # the spoofed sources are "out there": their replies are discarded on the way,
        # and the real servers answer floods with SYN cookies only (no SYN-ACK resent)
        nx.run(lab.ns("director"), ["ip", "route", "add", "blackhole", f"{FLOOD_SRC}/16"],
               check=True)
        for rs in lab.real_server_list():
            nx.sysctl(rs["ns"], {"net.ipv4.tcp_syncookies": 2})
        d = DirectorProcess(lab.ns("director"), log_path=lab.state_dir / "pyvs.log",
                            args=("--io", io, "--conn-limit", str(conn_limit)))
        d.start()
        try:
            d.adm("-A", "-t", f"{lab.VIP}:80", "-s", "rr")
            for rs in lab.real_server_list():
                d.adm("-a", "-t", f"{lab.VIP}:80", "-r", f"{rs['addr']}:80", "-m")
            if sysctls:
                d.sysctl(*sysctls)
            env = ["env", f"PYTHONPATH={os.getcwd()}", sys.executable]
            timeline = str(lab.state_dir / "held-timeline")
            size = int(HELD_RATE * (2 * seconds + 30))
            held = lab.popen("client", [*env, "-m", "pyvs.engine.lab.download", "--bind",
                                        lab.client_addrs[0], "--host", lab.VIP, "--bytes",
                                        str(size), "--rate", str(HELD_RATE), "--timeline",
                                        timeline], stdout=-1, stderr=-1, text=True)
            time.sleep(2)  # the held connection gets going

            def legit_window() -> dict:
                r = lab.run("client", [*env, "-m", "pyvs.bench.synflood", "legit", "--src",
                                       lab.client_addrs[1], "--host", lab.VIP, "--seconds",
                                       str(seconds)], capture_output=True, text=True,
                            timeout=seconds + 60)
                return json.loads(r.stdout.strip().splitlines()[-1])

            t0 = time.time()
            quiet = legit_window()
            t1 = time.time()
            quiet["held_Bps"] = round(_window_rate(timeline, t0, t1))

            flood = lab.popen("client", [
                gen, "synflood", "--dst", lab.VIP, "--dport", "80", "--src", FLOOD_SRC,
                "--span", str(FLOOD_SPAN), "--ifname", lab.CLIENT_IF,
                "--dmac", lab.mac("director", lab.DIR_CLIENT_IF), "--duration", str(seconds),
                "--rate", str(rate), "--batch", "64", "--count", str(10**10)],
                stdout=-1, stderr=-1, text=True)
            peak = {"connections": 0, "rss_kib": 0}
            stop = threading.Event()

            def watch() -> None:
                while not stop.is_set():
                    try:
                        peak["connections"] = max(peak["connections"],
                                                  d.status()["connections"])
                    except Exception:  # noqa: BLE001 - a busy director may answer late
                        pass
                    peak["rss_kib"] = max(peak["rss_kib"], _rss_kib(d.proc.pid))
                    stop.wait(0.5)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            t2 = time.time()
            flooded = legit_window()
            t3 = time.time()
            out, err = flood.communicate(timeout=seconds + 30)
            stop.set()
            watcher.join(10)
            flooded["held_Bps"] = round(_window_rate(timeline, t2, t3))
            status = d.status()
            kernel = kernel_drops(lab.ns("director"))
            held_alive = held.poll() is None  # still downloading: never reset or stalled out
            return {
                "held_alive": held_alive,
                "kernel_drops": kernel,
                "seconds": seconds, "io": io, "conn_limit": conn_limit,
                "sysctls": list(sysctls),
                "generator": json.loads(out.strip().splitlines()[-1]) if out.strip()
                else {"error": err},
                "no_flood": quiet, "flood": flooded, "peak": peak,
                "drops": status["drops"], "defense": status.get("defense", {}),
                "ports": status["ports"], "connections_after": status["connections"],
            }
        finally:
            if held is not None and held.poll() is None:
                held.kill()
                held.wait(10)
            d.stop()
    finally:
        lab.down()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pyvs.bench.synflood")
    sub = p.add_subparsers(dest="cmd")
    lg = sub.add_parser("legit")
    lg.add_argument("--src", required=True)
    lg.add_argument("--host", required=True)
    lg.add_argument("--seconds", type=float, default=10)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--io", default="nfqueue", choices=["nfqueue", "ring", "xdp"])
    p.add_argument("--conn-limit", type=int, default=50_000)
    p.add_argument("--sysctl", action="append", default=[])
    p.add_argument("--rate", type=float, default=0, help="flood pps (0 = the generator's "
                   "full rate)")
    p.add_argument("--json")
    a = p.parse_args(argv)
    if a.cmd == "legit":
        print(json.dumps(legit(a.src, a.host, a.seconds)))
        return 0
    result = run_trial(a.seconds, a.io, a.conn_limit, tuple(a.sysctl), a.rate)
    text = json.dumps(result, indent=2)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
