"""Building blocks of the throughput, latency and connection-rate measurements.

* ``flood`` runs the C generator in the client namespace (bounded by count and time);
* ``trial`` offers one rate for a fixed time and returns sent / received / loss,
  counted at the sink's ingress after the director has drained;
* ``flat_out`` offers the generator's maximum and measures the forwarding rate over
  a window in the middle of the run (so queues draining afterwards do not count);
* ``search_loss_free`` is the RFC 2544 style search for the highest rate with less
  than 0.5 % loss, bisecting in log space (rates span 10^3..10^6 pps here);
* ``pingpong`` and ``wrk`` drive the latency prober and the HTTP client.

Nothing here asserts a timing; every loop has a count and a time bound.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

LOSS_THRESHOLD = 0.005
# Packets count as delivered only if they reach the sink within GRACE seconds of the
# generator's last send (RFC 2544 waits a fixed time too).  A director that queues
# what it cannot process in time therefore cannot pass a trial by draining a deep
# queue afterwards: for a trial of T seconds the overstatement is at most GRACE / T.
GRACE = 0.1
GEN_CPU = 0
MIN_RATE = 1000.0


@dataclass
class Trial:
    offered: float          # pps asked of the generator
    sent: int
    received: int           # reached the sink by GRACE after the last send
    elapsed: float          # generator's own send time
    loss: float
    received_total: int = -1  # after the director drained (informational)

    @property
    def sent_pps(self) -> float:
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["sent_pps"] = round(self.sent_pps)
        d["loss"] = round(self.loss, 5)
        return d


@dataclass
class SearchResult:
    rate: float                      # achieved pps of the best passing trial (0: none)
    trials: list[Trial] = field(default_factory=list)
    limited_by_generator: bool = False

    def as_dict(self) -> dict:
        return {"rate": round(self.rate), "limited_by_generator": self.limited_by_generator,
                "trials": [t.as_dict() for t in self.trials]}


# ------------------------------------------------------------------ search (pure)


def search_loss_free(trial: Callable[[float], Trial], hi: float, lo: float = MIN_RATE,
                     threshold: float = LOSS_THRESHOLD, ratio: float = 1.06,
                     max_trials: int = 10) -> SearchResult:
    """Highest offered rate in [lo, hi] whose trial loses less than ``threshold``.

    Tries ``hi`` first (if it passes, the result is generator-limited), then bisects
    geometrically between the highest pass and the lowest failure until they are
    within ``ratio`` of each other or ``max_trials`` trials were run.  The reported
    rate is what the generator actually sent in the best passing trial."""
    res = SearchResult(rate=0.0)
    t = trial(hi)
    res.trials.append(t)
    if t.loss < threshold:
        res.rate = t.sent_pps
        res.limited_by_generator = True
        return res
    good, bad = lo, hi
    best: Trial | None = None
    probe_lo_first = True
    while len(res.trials) < max_trials and bad / good > ratio:
        rate = good if probe_lo_first else math.sqrt(good * bad)
        t = trial(rate)
        res.trials.append(t)
        if t.loss < threshold:
            if best is None or t.sent_pps > best.sent_pps:
                best = t
            if probe_lo_first:
                probe_lo_first = False
                continue
            good = rate
        else:
            if probe_lo_first:  # even the floor loses packets
                break
            bad = rate
        probe_lo_first = False
    res.rate = best.sent_pps if best else 0.0
    return res


def median_search(runs: list[SearchResult]) -> SearchResult:
    """The run with the median rate (median of 3 in full mode)."""
    ordered = sorted(runs, key=lambda r: r.rate)
    return ordered[(len(ordered) - 1) // 2] if len(ordered) % 2 else ordered[len(ordered) // 2]


# ------------------------------------------------------------------ lab drivers


@dataclass
class Gen:
    """The compiled generator and how it sends: ``raw`` = {"ifname", "dmac", "src"}
    for AF_PACKET frames (fast), None for one connected UDP socket per source port."""

    path: str
    raw: dict | None = None


def raw_gen(lab, path: str) -> Gen:
    """The generator sending prebuilt frames from the bench lab's client to the director."""
    return Gen(path, raw={"ifname": lab.CLIENT_IF, "src": lab.CLIENT,
                          "dmac": lab.mac("director", lab.DIR_IN_IF)})


def flood_argv(gen: Gen | str, dst: str, dport: int, rate: float = 0, duration: float = 1.0,
               count: int = 50_000_000, ports: int = 1024, cpu: int | None = GEN_CPU,
               size: int = 64, pace_us: int | None = None) -> list[str]:
    """``pace_us``: with a rate, batches last this long (gen.c ``--pace-us``; its
    default, 50, when None); 1000 or more makes the generator sleep instead of spin."""
    if isinstance(gen, str):
        gen = Gen(gen)
    argv = [gen.path, "flood", "--dst", dst, "--dport", str(dport), "--ports", str(ports),
            "--count", str(int(count)), "--duration", f"{duration:.3f}",
            "--rate", f"{rate:.1f}", "--size", str(size)]
    if cpu is not None:
        argv += ["--cpu", str(cpu)]
    if pace_us is not None:
        argv += ["--pace-us", str(int(pace_us))]
    if gen.raw:
        argv += ["--ifname", gen.raw["ifname"], "--dmac", gen.raw["dmac"],
                 "--src", gen.raw["src"]]
    return argv


def _gen_result(proc: subprocess.Popen, timeout: float) -> dict:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError("generator did not stop in time") from None
    if proc.returncode != 0:
        raise RuntimeError(f"generator failed ({proc.returncode}): {err.strip()}")
    return json.loads(out.strip().splitlines()[-1])


def flood(lab, gen: Gen | str, dst: str, dport: int, **kw) -> dict:
    """Run the generator to completion in the client namespace; its JSON report."""
    argv = flood_argv(gen, dst, dport, **kw)
    proc = lab.popen("client", argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return _gen_result(proc, kw.get("duration", 1.0) + 15)


def settle(read: Callable[[], int], max_wait: float = 3.0, quiet: float = 0.15) -> int:
    """Read a counter until it stops moving (the director drained its queues)."""
    last = read()
    deadline = time.monotonic() + max_wait
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = read()
        if now != last:
            last = now
            still_since = time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            break
    return last


def trial(lab, gen: Gen | str, dst: str, dport: int, rate: float, duration: float,
          counter: Callable[[], int] | None = None) -> Trial:
    """Offer ``rate`` pps for ``duration`` s; count what reached the sink by GRACE
    seconds after the last packet was sent, then wait for the director to drain."""
    read = counter or lab.counter
    before = read()  # the previous trial ended with settle()
    rep = flood(lab, gen, dst, dport, rate=rate, duration=duration)
    time.sleep(GRACE)
    received = read() - before
    total = settle(read) - before
    sent = int(rep["sent"])
    loss = 1.0 - received / sent if sent else 1.0
    return Trial(offered=rate, sent=sent, received=received, elapsed=float(rep["elapsed"]),
                 loss=max(loss, 0.0), received_total=total)


def flat_out(lab, gen: Gen | str, dst: str, dport: int, duration: float = 2.0,
             counter: Callable[[], int] | None = None) -> dict:
    """Offer the generator's maximum; forwarding rate over the middle of the run."""
    read = counter or lab.counter
    before = read()
    argv = flood_argv(gen, dst, dport, rate=0, duration=duration)
    proc = lab.popen("client", argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(min(0.5, duration * 0.25))
        t0a = time.monotonic()
        c0 = read()
        t0 = (t0a + time.monotonic()) / 2
        time.sleep(max(0.2, duration * 0.5))
        t1a = time.monotonic()
        c1 = read()
        t1 = (t1a + time.monotonic()) / 2
    finally:
        rep = _gen_result(proc, duration + 15)
    after = settle(read)
    sent = int(rep["sent"])
    return {"pps": (c1 - c0) / (t1 - t0), "generator_pps": float(rep["pps"]), "sent": sent,
            "received": after - before, "window_s": round(t1 - t0, 3),
            "loss": round(1 - (after - before) / sent, 5) if sent else None}


def pingpong(lab, gen: str, dst: str, dport: int, count: int = 2000,
             duration: float = 3.0, interval_us: int = 200) -> dict:
    argv = [gen, "pingpong", "--dst", dst, "--dport", str(dport), "--count", str(count),
            "--duration", f"{duration:.3f}", "--interval-us", str(interval_us),
            "--timeout-ms", "200"]
    proc = lab.popen("client", argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return _gen_result(proc, duration + 15)


def pingpong_under_load(lab, gen: Gen, dst: str, probe_port: int, load_port: int,
                        load_pps: float, count: int, duration: float) -> dict:
    """RTT probes while the generator offers ``load_pps`` toward the same director."""
    load = None
    if load_pps > 0:
        argv = flood_argv(gen, dst, load_port, rate=load_pps, duration=duration + 1.0)
        load = lab.popen("client", argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        time.sleep(0.3)
    try:
        res = pingpong(lab, gen.path, dst, probe_port, count=count, duration=duration)
    finally:
        if load is not None:
            rep = _gen_result(load, duration + 15)
            res["load_sent_pps"] = round(float(rep["pps"]))
    return res


_WRK_RPS = re.compile(r"Requests/sec:\s+([0-9.]+)")
_WRK_ERR = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_REQS = re.compile(r"(\d+) requests in ([0-9.]+)s")


def wrk(lab, url: str, duration: float = 3.0, connections: int = 32,
        threads: int = 1) -> dict:
    """New connections per second: every request on a fresh connection."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
            "--timeout", "2s", "-H", "Connection: close", url]
    r = lab.run("client", argv, capture_output=True, timeout=duration + 30)
    if r.returncode != 0:
        raise RuntimeError(f"wrk failed ({r.returncode}): {r.stderr.strip()[-300:]}")
    out = r.stdout
    m = _WRK_RPS.search(out)
    res = {"conn_per_s": float(m.group(1)) if m else 0.0}
    if m2 := _WRK_REQS.search(out):
        res["requests"] = int(m2.group(1))
    errs = _WRK_ERR.search(out)
    res["socket_errors"] = ({k: int(v) for k, v in zip(("connect", "read", "write", "timeout"),
                                                        errs.groups(), strict=True)}
                            if errs else {})
    non2xx = _WRK_NON2XX.search(out)
    res["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    return res


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
