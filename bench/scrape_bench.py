"""Does scraping `pyvs run --metrics` cost the forwarder anything?

    sudo .venv/bin/python -m pyvs.bench.scrape_bench [--io nfqueue --io xdp]
        [--repeats 3] [--full] [--json FILE]

The bench lab (engine/lab/benchtopo.py) and the loss-free search of `python -m
pyvs.bench` (NAT, 64-byte UDP, < 0.5 % loss), per I/O mode, in three modes:
  * ``off``: `pyvs run` without --metrics (the default);
  * ``idle``: with --metrics, nobody scraping (the once-a-second snapshot alone);
  * ``scraped``: with --metrics and a scraper in the director's namespace fetching
    /metrics every 100 ms (a Prometheus scraping at ten times the usual rate).
Each repeat runs the three modes back to back in a rotating order, so slow drift of a
shared machine hits them alike, and the changes are taken repeat by repeat.  The
noise is the spread of the ``off`` runs.  Then, without traffic, the director's own
CPU time per scrape (its CPU over 10 s with --metrics and nobody scraping, against
10 s of 10 Hz scraping).  Writes bench/results/scrape.json (and --json FILE);
``--repeats 0`` measures the CPU cost only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

from pyvs.bench.repeats import summary as repeat_summary

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PORT = 9100
INTERVAL = 0.1
MODES = ("off", "idle", "scraped")
SCRAPER_LIMIT_S = 900.0  # a scraper never outlives this, whatever happens to the bench


# -- the scraper: runs inside the director's namespace --------------------------------------
def scraper(url: str, interval: float, limit_s: float) -> int:
    """Fetch ``url`` every ``interval`` s until SIGTERM (or ``limit_s``); then one JSON
    line: scrapes, failures, bytes per scrape, latency."""
    stop = False

    def on_term(signum, frame):  # noqa: ARG001
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    ok = failed = size = 0
    took: list[float] = []
    start = time.monotonic()
    next_at = start
    while not stop and time.monotonic() - start < limit_s:
        t = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                size = len(reply.read())
            ok += 1
            took.append(time.monotonic() - t)
        except OSError:
            failed += 1
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    took.sort()
    print(json.dumps({
        "scrapes": ok, "failed": failed, "seconds": round(time.monotonic() - start, 1),
        "bytes_per_scrape": size,
        "latency_ms_p50": round(1000 * took[len(took) // 2], 2) if took else None,
        "latency_ms_max": round(1000 * took[-1], 2) if took else None}), flush=True)
    return 0


# -- the driver -----------------------------------------------------------------------------
def _start_scraper(ns: str):
    import subprocess

    from pyvs.engine.lab import netns as nx

    return nx.popen(ns, [sys.executable, "-m", "pyvs.bench.scrape_bench", "--scraper",
                         f"http://127.0.0.1:{PORT}/metrics"],
                    stdout=subprocess.PIPE, text=True)


def _stop_scraper(proc) -> dict:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=10)
    except Exception:  # noqa: BLE001 - kill it whatever went wrong
        proc.kill()
        proc.communicate()
        return {}
    return json.loads(out.strip().splitlines()[-1]) if out.strip() else {}


def measure(io: str, repeats: int, bench, lab, log) -> dict:
    from pyvs.bench import traffic
    from pyvs.bench.variants import configure_pyvs
    from pyvs.engine.lab.benchtopo import FLOOD_PORT
    from pyvs.engine.runner import DirectorProcess

    s = bench.s
    hi = bench.results["generator"]["ceiling_pps"] * 1.05
    runs: list[dict[str, float]] = []
    scrapes: list[dict] = []
    for i in range(repeats):
        order = MODES[i % 3:] + MODES[:i % 3]
        rates: dict[str, float] = {}
        for mode in order:
            args = (() if io == "nfqueue" else ("--io", io)) + (
                () if mode == "off" else ("--metrics", str(PORT)))
            d = DirectorProcess(lab.ns("director"), log_level="warning", args=args,
                                log_path=str(lab.state_dir / f"scrape-{io}-{mode}-{i}.log"))
            d.start()
            scraper_proc = None
            try:
                configure_pyvs(d, lab, "m")
                ok, why = bench.forwarding_works(lab, lab.VIP)
                if not ok:
                    raise RuntimeError(f"{io} {mode}: forwarding check failed: {why}")
                if mode == "scraped":
                    scraper_proc = _start_scraper(lab.ns("director"))
                    time.sleep(0.5)  # scraping before the search starts
                res = traffic.search_loss_free(
                    lambda r: traffic.trial(lab, bench.gen, lab.VIP, FLOOD_PORT, r, s.trial_s),
                    hi=hi, ratio=s.ratio, max_trials=s.max_trials)
                rates[mode] = res.rate
            finally:
                if scraper_proc is not None:
                    scrapes.append(_stop_scraper(scraper_proc))
                d.stop()
            extra = ""
            if mode == "scraped" and scrapes:
                sc = scrapes[-1]
                extra = (f" ({sc.get('scrapes')} scrapes, {sc.get('failed')} failed, "
                         f"p50 {sc.get('latency_ms_p50')} ms)")
            log(f"  {io} {mode} (run {i + 1}/{repeats}): loss-free {rates[mode]:,.0f} pps"
                f"{extra}")
            time.sleep(0.2)  # the director's stack forgets the rules between runs
        runs.append(rates)

    def summary(mode: str) -> dict:
        return repeat_summary(runs, mode, "off")

    off = summary("off")
    noise = round(100 * (off["max"] - off["min"]) / off["median"], 1) if off["median"] else None
    result = {"io": io, "off": off, "idle": summary("idle"), "scraped": summary("scraped"),
              "noise_pct": noise, "scraper": scrapes,
              "note": "noise = spread of the off runs, max - min over median"}
    scraped = result["scraped"]["median_change_pct"]
    result["within_noise"] = noise is not None and abs(scraped) <= noise
    log(f"  {io}: scraped vs off median change {scraped:+.1f} % (per repeat "
        f"{result['scraped']['change_vs_off_pct']}), idle "
        f"{result['idle']['median_change_pct']:+.1f} %, noise {noise} %")
    return result


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def director_cost(io: str, lab, window: float, log) -> dict:
    """The director's own CPU per scrape, without traffic: its CPU time over ``window``
    seconds with --metrics and nobody scraping, then over as long with the 10 Hz
    scraper; the difference over the scrapes done.  Independent of the machine's
    other load (CPU time, not throughput)."""
    from pyvs.bench.variants import configure_pyvs
    from pyvs.engine.runner import DirectorProcess

    args = (() if io == "nfqueue" else ("--io", io)) + ("--metrics", str(PORT))
    d = DirectorProcess(lab.ns("director"), log_level="warning", args=args,
                        log_path=str(lab.state_dir / f"scrape-cost-{io}.log"))
    d.start()
    try:
        configure_pyvs(d, lab, "m")
        pid = d.proc.pid
        time.sleep(1.0)
        c0 = cpu_seconds(pid)
        time.sleep(window)
        idle = cpu_seconds(pid) - c0
        proc = _start_scraper(lab.ns("director"))
        c1 = cpu_seconds(pid)
        time.sleep(window)
        busy = cpu_seconds(pid) - c1
        sc = _stop_scraper(proc)
    finally:
        d.stop()
    n = max(1, sc.get("scrapes", 0))
    out = {"window_s": window, "cpu_s_idle": round(idle, 3), "cpu_s_scraped": round(busy, 3),
           "scrapes": sc.get("scrapes"), "bytes_per_scrape": sc.get("bytes_per_scrape"),
           "director_cpu_ms_per_scrape": round(1000 * max(0.0, busy - idle) / n, 3),
           "director_core_share_at_10hz": round(max(0.0, busy - idle) / window, 4)}
    log(f"  {io}: director CPU {idle:.2f} s idle vs {busy:.2f} s scraped over {window:.0f} s "
        f"({sc.get('scrapes')} scrapes): {out['director_cpu_ms_per_scrape']} ms per scrape")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pyvs.bench.scrape_bench",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--io", action="append", choices=["nfqueue", "ring", "xdp"],
                   help="I/O modes to measure (repeatable; default nfqueue and xdp)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--full", action="store_true",
                   help="the main bench's full trials (2 s, ratio 1.05) instead of quick ones")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--scraper", metavar="URL", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.scraper:
        return scraper(args.scraper, INTERVAL, SCRAPER_LIMIT_S)
    if os.geteuid() != 0:
        sys.exit("scrape_bench: needs root (network namespaces)")

    from pyvs.bench import tools, traffic
    from pyvs.bench.settings import log
    from pyvs.bench.suite import Bench
    from pyvs.engine.lab.benchtopo import BenchLab

    bench = Bench(argparse.Namespace(quick=not args.full))
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    t0 = time.monotonic()
    built = tools.build_all()
    out = {"meta": {"started": started, "cpus": os.cpu_count(), "repeats": args.repeats,
                    "mode": "full" if args.full else "quick",
                    "scrape_interval_s": INTERVAL, "commit": _commit()}, "cases": []}
    with BenchLab(tools=built) as lab:
        bench.gen = traffic.raw_gen(lab, built["gen"])
        bench.generator_ceiling(lab)
        out["generator"] = bench.results["generator"]
        for io in args.io or ["nfqueue", "xdp"]:
            log(f"pyvs NAT ({io}): loss-free with and without a 10 Hz scraper")
            case = measure(io, args.repeats, bench, lab, log) if args.repeats else {"io": io}
            case["director_cost"] = director_cost(io, lab, 10.0, log)
            out["cases"].append(case)
    out["meta"]["duration_s"] = round(time.monotonic() - t0, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(out, indent=1) + "\n"
    (RESULTS / "scrape.json").write_text(text)
    if args.json:
        Path(args.json).write_text(text)
    for c in out["cases"]:
        if "off" in c:
            print(f"{c['io']:<8} off {c['off']['median']:,} pps; idle "
                  f"{c['idle']['median_change_pct']:+.1f} %, scraped "
                  f"{c['scraped']['median_change_pct']:+.1f} %, noise {c['noise_pct']} %")
        print(f"{c['io']:<8} director CPU per scrape "
              f"{c['director_cost']['director_cpu_ms_per_scrape']} ms")
    return 0


def _commit() -> str | None:
    import subprocess

    r = subprocess.run(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"],
                       capture_output=True, text=True)
    return r.stdout.strip() or None


if __name__ == "__main__":
    sys.exit(main())
