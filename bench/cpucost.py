"""Per-core cost per packet: the machine's extra busy CPU time per forwarded packet at a
fixed, loss-free rate, so the generator's limit does not enter.

A *case window* offers ``rate`` pps for a fixed time through the forwarder and
measures the whole machine's busy CPU time over a fixed wall-clock window; a
*baseline window* does the same with the director dropping every packet at its
first interface's ingress (the generator-ceiling setup).  Their difference divided
by the packets the sink counted is what forwarding costs per packet, summed over
every CPU: the forwarder's own work and the kernel work it causes (softirq, wakeups,
the transmit to the sink and the sink's count-and-drop, the same for every case).
bench/README.md says why this method, its assumptions and its limits.

Busy time comes from the cpuidle residency counters (µs, per CPU) when the kernel
has a cpuidle driver: busy = CPUs x wall time - idle residency - steal (each CPU read
from a thread moved onto it, see ``_cpuidle_us``).  Otherwise
from /proc/stat: user + nice + system + irq + softirq, in USER_HZ ticks (on a
kernel with tick-based accounting these are samples, not measurements; the JSON
says which source was used).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from pyvs.bench import traffic
from pyvs.bench.settings import spread_pct
from pyvs.engine.lab.benchtopo import FLOOD_PORT, BenchLab

CPU_SYS = Path("/sys/devices/system/cpu")
PROC_STAT = Path("/proc/stat")
# /proc/stat "cpu" columns; guest time is already inside user (and guest_nice inside
# nice), so the two are never added again
STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
               "guest", "guest_nice")
STAT_BUSY = ("user", "nice", "system", "irq", "softirq")
PACE_US = 1000  # generator batches 1 ms apart, sleeping in between (gen.c --pace-us)
DROP_TABLE = "genceil"
# a window whose CPUs were this busy had no idle time left to show the increment in:
# the forwarder's work displaced other work instead of adding to the busy time
SATURATED_PCT = 90.0


# ------------------------------------------------------------------ CPU time (pure)


def parse_stat(text: str) -> dict[str, int]:
    """The aggregate ``cpu`` line of /proc/stat as {field: ticks}."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            return {k: int(v) for k, v in zip(STAT_FIELDS, parts[1:], strict=False)}
    raise ValueError("no aggregate cpu line in /proc/stat")


def stat_busy_ticks(fields: dict[str, int]) -> int:
    """Ticks the CPUs spent working for someone on this machine: user, nice, system,
    irq, softirq.  Idle and iowait are idle; steal is the hypervisor running another
    guest, not work of this one."""
    return sum(fields.get(k, 0) for k in STAT_BUSY)


def busy_ns(before: dict, after: dict) -> float:
    """Busy CPU time between two samples of ``sample_cpu``, summed over all CPUs (ns)."""
    if before["source"] != after["source"]:
        raise ValueError("samples from different sources")
    if before["source"] == "cpuidle":
        wall = after["cpu_wall_ns"] - before["cpu_wall_ns"]  # summed over the CPUs
        idle = (after["idle_us"] - before["idle_us"]) * 1000.0
        steal = (after["steal_ticks"] - before["steal_ticks"]) * after["tick_ns"]
        return wall - idle - steal
    return (after["busy_ticks"] - before["busy_ticks"]) * after["tick_ns"]


def cost_ns_per_packet(case_busy_ns: float, baseline_busy_ns: list[float],
                       forwarded: int) -> float | None:
    """(busy time of the case window - mean busy time of its baseline windows) per
    forwarded packet; None when nothing was forwarded or there is no baseline."""
    if forwarded <= 0 or not baseline_busy_ns:
        return None
    return (case_busy_ns - statistics.fmean(baseline_busy_ns)) / forwarded


def summarize(runs: list[dict]) -> dict:
    """One case's cost from its runs (``CostLedger.run``): each case window against the
    mean of the baseline windows that bracket it; median, spread, and what went in."""
    cases = [r["case_window"] for r in runs]
    bases = [[b["busy_ns"] for b in r["baseline_windows"]] for r in runs]
    costs = [cost_ns_per_packet(c["busy_ns"], b, c["forwarded"])
             for c, b in zip(cases, bases, strict=True)]
    good = [c for c in costs if c is not None]
    med = statistics.median(good) if good else None
    fwd = [c["forwarded"] for c in cases]
    sent = [c["sent"] for c in cases]
    per = statistics.median(fwd) if fwd else 0
    losses = [1 - f / s if s else 1.0 for f, s in zip(fwd, sent, strict=True)]
    tick = max((c.get("resolution_ns", 0) for c in cases), default=0)
    drift = [(max(b) - min(b)) for b in bases if len(b) > 1]
    every = [*cases, *(w for r in runs for w in r["baseline_windows"])]
    return {
        "ns_per_packet": round(med) if med is not None else None,
        "runs_ns_per_packet": [round(c) if c is not None else None for c in costs],
        "spread_pct": spread_pct(good) if med is not None and med > 0 else None,
        "case_busy_ms": [round(c["busy_ns"] / 1e6, 2) for c in cases],
        "baseline_busy_ms": [[round(x / 1e6, 2) for x in b] for b in bases],
        "forwarded": fwd,
        "sent": sent,
        "max_loss": round(max(losses), 5) if losses else None,
        "resolution_ns_per_packet": round(tick / per, 1) if per > 0 else None,
        # how far the background moved between a run's two baselines, per packet (the
        # largest of the runs): the noise floor of this case's figure
        "baseline_drift_ns_per_packet": round(max(drift) / per) if drift and per > 0 else None,
        "cpu_busy_pct": [c["cpu_busy_pct"] for c in cases],
        "saturated": any(w["cpu_busy_pct"] >= SATURATED_PCT for w in every),
    }


def below_noise(cost: dict) -> bool:
    """A figure no larger than its noise floor (how far the background moved between the
    baselines around it, per packet) is no measurement: on a busy VM the kernel's own
    forwarding at a modest rate costs less than that drift, and can come out negative."""
    ns = cost.get("ns_per_packet")
    drift = cost.get("baseline_drift_ns_per_packet") or 0
    return ns is not None and ns <= drift


def ratio_to_kernel_cost(ns: float | None, kernel_ns: float | None) -> float | None:
    """A case's ns per packet over kernel forwarding's; None unless both are positive
    (a non-positive kernel figure means the measurement drowned in noise)."""
    if ns is None or kernel_ns is None or kernel_ns <= 0 or ns <= 0:
        return None
    return round(ns / kernel_ns, 2)


# ------------------------------------------------------------------ CPU time (host)


def _cpuidle_us() -> tuple[int, int, int] | None:
    """(CPUs, idle residency in µs, read times in ns), each summed over the CPUs, from
    cpuidle sysfs; None without a driver or when a CPU cannot be visited.

    A state's ``time`` grows when the CPU leaves the state, so an idle period still
    running when the counter is read is missing from it (on a quiet machine that can be
    hundreds of ms).  Each CPU is therefore read from a thread moved onto it: the move
    wakes the CPU, which ends its idle period, so the counter is complete up to a few
    µs before the read."""
    cpus = sorted(CPU_SYS.glob("cpu[0-9]*"), key=lambda c: int(c.name[3:]))
    if not cpus or not all(list((c / "cpuidle").glob("state[0-9]*")) for c in cpus):
        return None
    home = os.sched_getaffinity(0)
    idle = wall = 0
    try:
        for cpu in cpus:
            os.sched_setaffinity(0, {int(cpu.name[3:])})
            idle += sum(int((st / "time").read_text())
                        for st in (cpu / "cpuidle").glob("state[0-9]*"))
            wall += time.monotonic_ns()
    except OSError:  # an offline or forbidden CPU
        return None
    finally:
        os.sched_setaffinity(0, home)
    return len(cpus), idle, wall


def sample_cpu(source: str | None = None) -> dict:
    """One reading of the machine's CPU time, from ``source`` ("cpuidle" or
    "proc_stat"; the first one available when None)."""
    tick_ns = 1e9 / os.sysconf("SC_CLK_TCK")
    fields = parse_stat(PROC_STAT.read_text())
    if source in (None, "cpuidle"):
        got = _cpuidle_us()
        if got is not None:
            cpus, idle, wall = got
            return {"source": "cpuidle", "cpus": cpus, "idle_us": idle, "cpu_wall_ns": wall,
                    "steal_ticks": fields.get("steal", 0), "tick_ns": tick_ns,
                    "resolution_ns": 1000.0 * cpus}
        if source == "cpuidle":
            raise RuntimeError("cpuidle counters unavailable: use /proc/stat")
    return {"source": "proc_stat", "busy_ticks": stat_busy_ticks(fields),
            "tick_ns": tick_ns, "resolution_ns": tick_ns * (os.cpu_count() or 1)}


# ------------------------------------------------------------------ lab windows


@contextlib.contextmanager
def ingress_drop(lab: BenchLab) -> Iterator[Callable[[], int]]:
    """The director counts and drops the flood at its first interface's netdev ingress
    (no forwarding work at all); yields the counter's reader."""
    lab.nft("director", f"""
table netdev {DROP_TABLE} {{
  counter pkts {{ }}
  chain ingress {{
    type filter hook ingress device "{lab.DIR_IN_IF}" priority 0; policy accept;
    udp dport {FLOOD_PORT} counter name "pkts" drop
  }}
}}
""")
    try:
        yield lambda: lab.counter("director", DROP_TABLE)
    finally:
        lab.nft("director", f"delete table netdev {DROP_TABLE}", check=False)


@dataclass
class Window:
    busy_ns: float          # busy CPU time of all CPUs over the window
    wall_s: float
    sent: int               # what the generator sent
    forwarded: int          # counted (sink, or director ingress for a baseline) by the end
    late: int               # counted after the window closed (not in ``forwarded``)
    cpu_busy_pct: float     # busy share of all CPUs over the window
    source: str
    resolution_ns: float    # one unit of the CPU-time source, over all CPUs

    def as_dict(self) -> dict:
        d = asdict(self)
        d["busy_ns"] = round(self.busy_ns)
        return d


def window(lab: BenchLab, gen: traffic.Gen, dst: str, rate: float, duration: float,
           tail: float, counter: Callable[[], int] | None = None,
           source: str | None = None) -> Window:
    """Offer ``rate`` pps for ``duration`` s (generator sleeping between 1 ms batches) and
    measure the machine's busy CPU over exactly ``duration + tail`` s from just before
    the generator starts; packets counted by then are the forwarded ones."""
    read = counter or lab.counter
    c0 = read()  # counter reads spawn nft: outside the window
    s0 = sample_cpu(source)
    t0 = time.monotonic()
    rep = traffic.flood(lab, gen, dst, FLOOD_PORT, rate=rate, duration=duration,
                        pace_us=PACE_US)
    time.sleep(max(0.0, t0 + duration + tail - time.monotonic()))
    s1 = sample_cpu(s0["source"])
    wall = time.monotonic() - t0
    c1 = read()
    c2 = traffic.settle(read)
    busy = busy_ns(s0, s1)
    cpus = s0.get("cpus") or os.cpu_count() or 1
    return Window(busy_ns=busy, wall_s=round(wall, 4), sent=int(rep["sent"]),
                  forwarded=c1 - c0, late=c2 - c1,
                  cpu_busy_pct=round(100.0 * busy / (cpus * wall * 1e9), 1),
                  source=s0["source"], resolution_ns=s0["resolution_ns"])


class CostLedger:
    """Windows in the order they were taken.  Each case window is charged against the
    baseline windows that bracket it: the last one taken before and the first one taken
    after (a baseline needs the forwarder inert: the kernel cases alternate the two, a
    pyvs case's windows wait until the director process has stopped)."""

    def __init__(self) -> None:
        self.last: dict | None = None
        self.waiting: list[dict] = []

    def baseline(self, w: dict) -> None:
        for run in self.waiting:
            run["baseline_windows"].append(w)
        self.waiting.clear()
        self.last = w

    def run(self, window: dict) -> dict:
        """A case window; the run gains its closing baseline with the next one."""
        run = {"case_window": window,
               "baseline_windows": [self.last] if self.last is not None else []}
        self.waiting.append(run)
        return run


def finish(runs: list[dict]) -> dict:
    """A case's runs with their summary (``summarize``) beside them."""
    return {**summarize(runs), "runs": runs}
