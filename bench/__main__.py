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
import contextlib
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

from pyvs.bench import tools, traffic
from pyvs.engine.lab.benchtopo import ECHO_PORT, FLOOD_PORT, HTTP_PORT, BenchLab
from pyvs.engine.runner import ROOT, DirectorError, DirectorProcess

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"
MARK_START = "<!-- bench:results:start -->"
MARK_END = "<!-- bench:results:end -->"


CEILING_LOW = 0.15  # a generator ceiling this far below the best recent one is flagged
CEILING_HISTORY = 10  # runs remembered in bench/results/ceilings.json


def spread_pct(values: list[float]) -> float:
    """(max - min) / median of repeated measurements, in percent (0 for one run)."""
    if len(values) < 2:
        return 0.0
    v = sorted(values)
    mid = v[(len(v) - 1) // 2]
    return round(100.0 * (v[-1] - v[0]) / mid, 1) if mid else 0.0


def remember_ceiling(pps: int, started: str, path: Path | None = None) -> list[int]:
    """Append this run's generator ceiling to the history; the recent ceilings, this
    one included."""
    path = path or RESULTS / "ceilings.json"
    try:
        hist = json.loads(path.read_text())
    except (OSError, ValueError):
        hist = []
    hist = [h for h in hist if isinstance(h, dict) and "ceiling_pps" in h]
    hist.append({"started": started, "ceiling_pps": pps})
    hist = hist[-CEILING_HISTORY:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(hist, indent=1))
    return [h["ceiling_pps"] for h in hist]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------ settings


class Settings:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.repeats = 1 if quick else 3          # loss-free searches per case (median)
        self.trial_s = 1.0 if quick else 2.0      # one offered-rate trial
        self.ratio = 1.10 if quick else 1.05      # search stops when hi/lo is within this
        self.max_trials = 8 if quick else 11
        self.flat_s = 2.0 if quick else 3.0
        self.probes = 1000 if quick else 5000     # ping-pong probes per latency point
        self.probe_s = 2.0 if quick else 6.0
        self.wrk_s = 2.0 if quick else 5.0
        self.wrk_repeats = 1 if quick else 3
        self.mem_sizes = (10_000, 100_000, 1_000_000)


# ------------------------------------------------------------------- pyvs process


def pyvs_capabilities() -> dict:
    """Which `pyvs run` options exist in this tree (read from its --help)."""
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-m", "pyvs.engine.cli", "run", "--help"],
                       capture_output=True, text=True, env=env, timeout=30)
    text = r.stdout
    io_modes = []
    if "--io" in text:
        for mode in ("nfqueue", "ring", "packet", "tun", "xdp"):
            if mode in text.split("--io", 1)[1]:
                io_modes.append(mode)
    return {"io": io_modes, "workers": "--workers" in text, "help": text}


def pyvs_variants(caps: dict) -> tuple[list[dict], list[tuple[str, str]]]:
    """(case name, run options, forwarding method) to measure, best I/O last."""
    out = [{"case": "pyvs NAT (nfqueue)", "args": [], "method": "m"}]
    skipped = []
    if "ring" in caps["io"]:
        out.append({"case": "pyvs NAT (ring)", "args": ["--io", "ring"], "method": "m"})
        if caps["workers"]:
            out.append({"case": "pyvs NAT (ring, 2 workers)",
                        "args": ["--io", "ring", "--workers", "2"], "method": "m"})
    else:
        skipped.append(("pyvs NAT (ring)", "`pyvs run --io ring` is not available yet"))
    best = ["--io", "xdp"] if "xdp" in caps["io"] else ["--io", "ring"] if "ring" in caps[
        "io"] else []
    label = best[1] if best else "nfqueue"
    if best and label != "ring":
        out.append({"case": f"pyvs NAT ({label})", "args": best, "method": "m"})
        if "ring" in caps["io"]:  # the other batch port: DR and TUN take its fast path too
            out.append({"case": "pyvs DR (ring)", "args": ["--io", "ring"], "method": "g"})
            out.append({"case": "pyvs TUN (ring)", "args": ["--io", "ring"], "method": "i"})
    out.append({"case": f"pyvs DR ({label})", "args": best, "method": "g"})
    out.append({"case": f"pyvs TUN ({label})", "args": best, "method": "i"})
    return out, skipped


def configure_pyvs(d: DirectorProcess, lab: BenchLab, method: str) -> None:
    vip, rip = lab.VIP, lab.SINK
    for proto, port in (("-u", FLOOD_PORT), ("-u", ECHO_PORT), ("-t", HTTP_PORT)):
        d.adm("-A", proto, f"{vip}:{port}", "-s", "rr")
        if method == "m":
            d.adm("-a", proto, f"{vip}:{port}", "-r", f"{rip}:{port}", "-m")
        else:  # DR and TUN keep the port
            d.adm("-a", proto, f"{vip}:{port}", "-r", rip, f"-{method}")


# ---------------------------------------------------------------- nftables DNAT


def nft_dnat_script(lab: BenchLab) -> str:
    rules = "\n".join(
        f"    ip daddr {lab.VIP} {proto} dport {port} dnat to {lab.SINK}:{port}"
        for proto, port in (("udp", FLOOD_PORT), ("udp", ECHO_PORT), ("tcp", HTTP_PORT)))
    return (f"table ip benchnat {{\n  chain pre {{\n"
            f"    type nat hook prerouting priority dstnat; policy accept;\n{rules}\n"
            f"  }}\n}}\n")


# --------------------------------------------------------------------- the cases


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.s = Settings(args.quick)
        if getattr(args, "repeats", None):
            self.s.repeats = max(1, args.repeats)
        self.results: dict = {
            "meta": {
                "mode": "quick" if args.quick else "full",
                "started": datetime.datetime.now().isoformat(timespec="seconds"),
                "host": platform.node(),
                "kernel": platform.release(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "commit": _git_commit(),
                "loss_threshold": traffic.LOSS_THRESHOLD,
                "payload_bytes": 64,
                "source_ports": 1024,
            },
            "generator": {},
            "throughput": [],
            "tcp_connections": [],
            "latency": [],
            "conntable_memory": [],
            "scheduler": None,
            "notes": [],
        }
        self.gen: traffic.Gen | None = None
        self.kernel_fwd: dict | None = None

    # -- helpers ------------------------------------------------------------------------
    def note(self, text: str) -> None:
        log(f"note: {text}")
        self.results["notes"].append(text)

    def skip(self, case: str, reason: str) -> None:
        log(f"skip {case}: {reason}")
        self.results["throughput"].append({
            "case": case, "pps_loss_free": None, "pps_flat_out": None,
            "ratio_to_kernel_forwarding": None, "skipped": reason})

    def measure_throughput(self, lab: BenchLab, case: str, dst: str,
                           counter=None) -> dict:
        s = self.s
        hi = self.results["generator"]["ceiling_pps"] * 1.05
        runs = []
        for i in range(s.repeats):
            res = traffic.search_loss_free(
                lambda r: traffic.trial(lab, self.gen, dst, FLOOD_PORT, r, s.trial_s, counter),
                hi=hi, ratio=s.ratio, max_trials=s.max_trials)
            log(f"  {case}: loss-free search {i + 1}/{s.repeats}: {res.rate:,.0f} pps "
                f"({len(res.trials)} trials)")
            runs.append(res)
        best = traffic.median_search(runs)
        overload = None  # issue target: at 2x the loss-free rate, >= 80 % of it still forwarded
        if not best.limited_by_generator and best.rate > 0:
            t = traffic.trial(lab, self.gen, dst, FLOOD_PORT, 2 * best.rate, s.trial_s, counter)
            overload = {"offered_pps": round(t.sent / t.elapsed) if t.elapsed else None,
                        "forwarded_pps": round(t.received / t.elapsed) if t.elapsed else None}
            overload["ratio_to_loss_free"] = (round(overload["forwarded_pps"] / best.rate, 3)
                                              if overload["forwarded_pps"] else 0.0)
            log(f"  {case}: at 2x loss-free offered {overload['offered_pps']:,} pps, "
                f"forwarded {overload['forwarded_pps']:,} "
                f"({overload['ratio_to_loss_free']:.0%} of loss-free)")
        flats = []
        for _ in range(s.repeats):
            flats.append(traffic.flat_out(lab, self.gen, dst, FLOOD_PORT, s.flat_s, counter))
        flats.sort(key=lambda f: f["pps"])
        flat = flats[(len(flats) - 1) // 2]
        log(f"  {case}: flat out {flat['pps']:,.0f} pps (generator offered "
            f"{flat['generator_pps']:,.0f})")
        row = {
            "case": case,
            "pps_loss_free": round(best.rate),
            "pps_flat_out": round(flat["pps"]),
            "ratio_to_kernel_forwarding": None,
            "ratio_flat_out_to_kernel_forwarding": None,
            "loss_free_runs": [round(r.rate) for r in runs],
            "runs": {"loss_free_pps": [round(r.rate) for r in runs],
                     "median": round(best.rate),
                     "spread_pct": spread_pct([r.rate for r in runs])},
            "loss_free_limited_by_generator": best.limited_by_generator,
            "flat_out_offered_pps": round(flat["generator_pps"]),
            "flat_out_loss": flat["loss"],
            "overload_2x": overload,
            "search": best.as_dict(),
        }
        self.results["throughput"].append(row)
        return row

    def forwarding_works(self, lab: BenchLab, dst: str) -> tuple[bool, str]:
        t = traffic.trial(lab, self.gen, dst, FLOOD_PORT, rate=2000, duration=0.5)
        ok = t.sent > 0 and t.received >= 0.9 * t.sent
        return ok, f"{t.received} of {t.sent} test packets reached the sink"

    def measure_latency(self, lab: BenchLab, case: str, dst: str, loss_free: float) -> None:
        s = self.s
        try:
            idle = traffic.pingpong(lab, self.gen.path, dst, ECHO_PORT, count=s.probes,
                                    duration=s.probe_s)
            load = loss_free / 2
            busy = traffic.pingpong_under_load(lab, self.gen, dst, ECHO_PORT, FLOOD_PORT,
                                               load, s.probes, s.probe_s)
        except RuntimeError as err:
            self.note(f"latency {case}: {err}")
            return
        row = {"case": case, "load_pps": round(load), "idle": idle, "loaded": busy}
        log(f"  {case}: RTT idle p50 {idle['p50_us']} us p99 {idle['p99_us']} us; "
            f"at {load:,.0f} pps p50 {busy['p50_us']} us p99 {busy['p99_us']} us")
        self.results["latency"].append(row)

    def measure_tcp(self, lab: BenchLab, case: str, dst: str) -> None:
        s = self.s
        if shutil.which("wrk") is None:
            self.note(f"tcp {case}: wrk not installed (apt-get install wrk)")
            return
        runs = []
        try:
            for _ in range(s.wrk_repeats):
                runs.append(traffic.wrk(lab, f"http://{dst}:{HTTP_PORT}/", s.wrk_s))
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            self.note(f"tcp {case}: {err}")
            return
        runs.sort(key=lambda r: r["conn_per_s"])
        mid = runs[(len(runs) - 1) // 2]
        row = {"case": case, "conn_per_s": round(mid["conn_per_s"]),
               "runs": [round(r["conn_per_s"]) for r in runs],
               "spread_pct": spread_pct([r["conn_per_s"] for r in runs]),
               "socket_errors": mid["socket_errors"], "non_2xx": mid["non_2xx"]}
        log(f"  {case}: {row['conn_per_s']:,} new TCP connections/s "
            f"(errors {mid['socket_errors'] or 'none'})")
        self.results["tcp_connections"].append(row)

    # -- sections -----------------------------------------------------------------------
    def generator_ceiling(self, lab: BenchLab) -> None:
        lab.nft("director", f"""
table netdev genceil {{
  counter pkts {{ }}
  chain ingress {{
    type filter hook ingress device "{lab.DIR_IN_IF}" priority 0; policy accept;
    udp dport {FLOOD_PORT} counter name "pkts" drop
  }}
}}
""")
        try:
            read = lambda: lab.counter("director", "genceil")  # noqa: E731
            raw = traffic.flat_out(lab, self.gen, lab.SINK, FLOOD_PORT, self.s.flat_s, read)
            sock_gen = traffic.Gen(self.gen.path, raw=None)
            sock = traffic.flat_out(lab, sock_gen, lab.SINK, FLOOD_PORT, self.s.flat_s, read)
        finally:
            lab.nft("director", "delete table netdev genceil", check=False)
        self.results["generator"] = {
            "ceiling_pps": round(raw["pps"]),
            "generator_reported_pps": round(raw["generator_pps"]),
            "method": "AF_PACKET sendmmsg of prebuilt frames, pinned to CPU0",
            "udp_socket_ceiling_pps": round(sock["pps"]),
            "measured_at": "director lb0 netdev ingress (counted and dropped, no forwarding)",
        }
        log(f"generator ceiling {raw['pps']:,.0f} pps (AF_PACKET); UDP sockets "
            f"{sock['pps']:,.0f} pps")
        g = self.results["generator"]
        recent = remember_ceiling(g["ceiling_pps"], self.results["meta"]["started"])
        g["best_recent_ceiling_pps"] = max(recent)
        g["generator_ceiling_low"] = g["ceiling_pps"] < (1 - CEILING_LOW) * max(recent)
        if g["generator_ceiling_low"]:
            self.note(f"generator ceiling {g['ceiling_pps']:,} pps is more than "
                      f"{CEILING_LOW:.0%} below the best of the last {len(recent)} runs "
                      f"({max(recent):,}): the machine is busy, read this run's rates "
                      f"with care")

    def kernel_cases(self, lab: BenchLab) -> None:
        case = "kernel IP forwarding"
        log(case)
        self.kernel_fwd = self.measure_throughput(lab, case, lab.SINK)
        self.measure_latency(lab, case, lab.SINK, self.kernel_fwd["pps_loss_free"])
        self.measure_tcp(lab, case, lab.SINK)

        case = "kernel nftables DNAT"
        log(case)
        lab.nft("director", nft_dnat_script(lab))
        try:
            ok, why = self.forwarding_works(lab, lab.VIP)
            if not ok:
                self.skip(case, f"nftables DNAT did not forward: {why}")
                return
            row = self.measure_throughput(lab, case, lab.VIP)
            self.measure_latency(lab, case, lab.VIP, row["pps_loss_free"])
            self.measure_tcp(lab, case, lab.VIP)
        finally:
            lab.nft("director", "delete table ip benchnat", check=False)

    def pyvs_cases(self, lab: BenchLab) -> None:
        caps = pyvs_capabilities()
        self.results["meta"]["pyvs_run_options"] = {"io": caps["io"], "workers": caps["workers"]}
        variants, skipped = pyvs_variants(caps)
        if self.args.case:
            variants = [v for v in variants
                        if any(c.lower() in v["case"].lower() for c in self.args.case)]
        for case, why in skipped:
            self.skip(case, why)
        for v in variants:
            case = v["case"]
            log(case)
            logf = lab.state_dir / f"pyvs-{len(self.results['throughput'])}.log"
            d = DirectorProcess(lab.ns("director"), log_path=str(logf), log_level="warning",
                                args=tuple(v["args"]))
            try:
                d.start()
            except DirectorError as err:
                self.skip(case, f"pyvs run {' '.join(v['args'])} did not start: "
                                f"{str(err)[-300:]}")
                continue
            try:
                try:
                    configure_pyvs(d, lab, v["method"])
                except DirectorError as err:
                    self.skip(case, f"pyvsadm refused the configuration: {err}; pyvs log: "
                                    f"{d.log()[-300:].strip() or '(empty)'}")
                    continue
                ok, why = self.forwarding_works(lab, lab.VIP)
                if not ok:
                    self.skip(case, f"forwarding check failed: {why}; pyvs log: "
                                    f"{d.log()[-300:].strip() or '(empty)'}")
                    continue
                row = self.measure_throughput(lab, case, lab.VIP)
                if v["method"] == "m":
                    self.measure_latency(lab, case, lab.VIP, row["pps_loss_free"])
                    self.measure_tcp(lab, case, lab.VIP)
                row["pyvs_run_args"] = v["args"]
            finally:
                d.stop()
            # let the director's stack forget the pyvs rules before the next case
            time.sleep(0.2)
        if self.args.case and any("storm" in c.lower() for c in self.args.case):
            from pyvs.bench import health_storm  # a health-check storm: bench/health_storm.py

            log("pyvs NAT (nfqueue) with and without a health-check storm")
            self.results["health_storm"] = health_storm.measure(
                self, lab, lambda d: configure_pyvs(d, lab, "m"), log)

    def ratios(self) -> None:
        base = self.kernel_fwd
        if not base:
            return
        for row in self.results["throughput"]:
            if row.get("pps_loss_free") is None:
                continue
            if base["pps_loss_free"]:
                row["ratio_to_kernel_forwarding"] = round(
                    row["pps_loss_free"] / base["pps_loss_free"], 4)
            if base["pps_flat_out"]:
                row["ratio_flat_out_to_kernel_forwarding"] = round(
                    row["pps_flat_out"] / base["pps_flat_out"], 4)
        lat = {r["case"]: r for r in self.results["latency"]}
        ref = lat.get("kernel IP forwarding")
        if ref:
            for r in self.results["latency"]:
                r["added_p50_us"] = round(r["loaded"]["p50_us"] - ref["idle"]["p50_us"], 1)
                r["added_p99_us"] = round(r["loaded"]["p99_us"] - ref["idle"]["p99_us"], 1)
        # per case, beside its rates: what the other sections measured for it (None: not
        # measured for this case, e.g. latency and conn/s run for the NAT cases only)
        conns = {r["case"]: r["conn_per_s"] for r in self.results["tcp_connections"]}
        for row in self.results["throughput"]:
            r = lat.get(row["case"])
            row["added_latency_us"] = ({"p50": r.get("added_p50_us"),
                                        "p99": r.get("added_p99_us")} if r else None)
            row["conn_per_s"] = conns.get(row["case"])

    def memory(self) -> None:
        env = dict(os.environ)
        for n in self.s.mem_sizes:
            row = {}
            for tm in ([False, True] if n <= 100_000 else [False]):
                argv = [sys.executable, "-m", "pyvs.bench.conn_memory", "--entries", str(n)]
                if tm:
                    argv.append("--tracemalloc")
                t0 = time.monotonic()
                try:
                    r = subprocess.run(argv, capture_output=True, text=True, env=env,
                                       timeout=600, cwd=str(ROOT))
                except subprocess.TimeoutExpired:
                    self.note(f"conntable memory at {n}: timed out after 600 s")
                    break
                if r.returncode != 0:
                    self.note(f"conntable memory at {n}: {r.stderr.strip()[-300:]}")
                    break
                out = json.loads(r.stdout.strip().splitlines()[-1])
                if tm:
                    row["bytes_per_entry_tracemalloc"] = out["bytes_per_entry_tracemalloc"]
                else:
                    row.update(out)
                    row["wall_s"] = round(time.monotonic() - t0, 2)
            if row:
                log(f"conntable {n:,}: {row.get('bytes_per_entry_rss')} B/entry RSS, "
                    f"{row.get('bytes_per_entry_tracemalloc', '-')} B/entry heap, "
                    f"{row.get('seconds')} s to create")
                self.results["conntable_memory"].append(row)

    def scheduler(self) -> None:
        try:
            from pyvs.bench import sched_bench
        except ImportError as err:
            self.note(f"scheduler section skipped: {err}")
            return
        out = RESULTS / "sched.json"
        argv = ["--json", str(out)]
        if self.s.quick:
            argv += ["--min-time", "0.02", "--clients", "20000"]
        with contextlib.redirect_stdout(sys.stderr):
            sched_bench.main(argv)
        self.results["scheduler"] = json.loads(out.read_text())
        out.unlink(missing_ok=True)

    # -- run ----------------------------------------------------------------------------
    def run(self) -> dict:
        t_start = time.monotonic()
        RESULTS.mkdir(parents=True, exist_ok=True)
        built = tools.build_all()
        if not self.args.no_traffic:
            with BenchLab(tools=built) as lab:
                log(f"lab {lab.name} up")
                self.gen = traffic.raw_gen(lab, built["gen"])
                self.generator_ceiling(lab)
                self.kernel_cases(lab)
                if not self.args.no_pyvs:
                    self.pyvs_cases(lab)
            self.ratios()
        self.memory()
        if not self.args.no_sched:
            try:
                self.scheduler()
            except Exception:  # noqa: BLE001 - another engineer's section must not sink ours
                self.note("scheduler section failed: " + traceback.format_exc()[-300:])
        self.results["meta"]["duration_s"] = round(time.monotonic() - t_start, 1)
        return self.results


# ------------------------------------------------------------------------ output


def _git_commit() -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True, timeout=10)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _fmt(v, unit: str = "") -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and v < 10:
        return f"{v:.3f}{unit}"
    return f"{v:,.0f}{unit}"


def markdown(res: dict) -> str:
    m = res["meta"]
    g = res.get("generator") or {}
    lines = [
        f"Last run: {m['started']} ({m['mode']} mode, commit {m.get('commit') or '?'}, "
        f"{m.get('cpus')} CPUs, kernel {m.get('kernel')}, {m.get('duration_s')} s). "
        f"Generated by `python -m bench`; do not edit by hand.",
        "",
    ]
    if g:
        lines += [
            f"Generator ceiling: **{_fmt(g['ceiling_pps'])} pps** "
            f"({g['method']}; UDP-socket mode {_fmt(g['udp_socket_ceiling_pps'])} pps), "
            f"measured at the director's ingress with no forwarding work.",
            "",
        ]
    if res["throughput"]:
        lines += ["| case | loss-free pps | 2x trial: offered → forwarded | flat-out pps "
                  "| loss-free / kernel fwd | flat-out / kernel fwd | note |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for r in res["throughput"]:
            note = r.get("skipped") or ""
            if r.get("loss_free_limited_by_generator"):
                note = "generator-limited (passed at the generator's maximum)"
            o = r.get("overload_2x")
            at2x = "—"
            if o and o.get("forwarded_pps") is not None and r["pps_loss_free"]:
                # the generator may fall short of 2x (with XDP the director's receive
                # work runs on the generator's CPU): show what it really offered
                at2x = (f"{o['offered_pps'] / r['pps_loss_free']:.2f}x → "
                        f"{_fmt(o['forwarded_pps'])} ({o['ratio_to_loss_free']:.0%})")
            lines.append(
                f"| {r['case']} | {_fmt(r['pps_loss_free'])} | {at2x} | "
                f"{_fmt(r['pps_flat_out'])} | "
                f"{_fmt(r.get('ratio_to_kernel_forwarding'))} | "
                f"{_fmt(r.get('ratio_flat_out_to_kernel_forwarding'))} | {note} |")
        lines.append("")
    if res["tcp_connections"]:
        lines += ["| new TCP connections/s (wrk, Connection: close) | conn/s | errors |",
                  "|---|---:|---|"]
        for r in res["tcp_connections"]:
            errs = ", ".join(f"{k} {v}" for k, v in r["socket_errors"].items() if v) or "none"
            lines.append(f"| {r['case']} | {_fmt(r['conn_per_s'])} | {errs} |")
        lines.append("")
    if res["latency"]:
        lines += ["| UDP RTT (µs) | idle p50 | idle p99 | load pps | loaded p50 | loaded p99 "
                  "| added p50 | added p99 |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in res["latency"]:
            i, b = r["idle"], r["loaded"]
            lines.append(f"| {r['case']} | {i['p50_us']} | {i['p99_us']} | "
                         f"{_fmt(r['load_pps'])} | {b['p50_us']} | {b['p99_us']} | "
                         f"{r.get('added_p50_us', '—')} | {r.get('added_p99_us', '—')} |")
        lines.append("")
    if res["conntable_memory"]:
        lines += ["| conntable entries | bytes/entry (RSS) | bytes/entry (Python heap) "
                  "| seconds to create |", "|---:|---:|---:|---:|"]
        for r in res["conntable_memory"]:
            lines.append(f"| {r['entries']:,} | {r['bytes_per_entry_rss']} | "
                         f"{r.get('bytes_per_entry_tracemalloc', '—')} | {r['seconds']} |")
        lines.append("")
    if res.get("scheduler"):
        rows = [r for r in res["scheduler"] if r["scheduler"] != "mh-rebuild"]
        if rows:
            sizes = sorted({r["dests"] for r in rows})
            by = {}
            for r in rows:
                by.setdefault(r["scheduler"], {})[r["dests"]] = r["decisions_per_sec"]
            lines += ["| scheduler decisions/s | " + " | ".join(f"{n} dests" for n in sizes)
                      + " |", "|---|" + "---:|" * len(sizes)]
            for name, v in by.items():
                lines.append(f"| {name} | " + " | ".join(_fmt(v.get(n)) for n in sizes) + " |")
            lines.append("")
    storm = res.get("health_storm")
    if storm:
        q, w, p = storm["quiet"], storm["storm"], storm["storm_checker_on_generator_cpu"]
        lines += [f"Health-check storm ({storm['checkers']} real servers checked every "
                  f"{storm['delay_loop_s']} s; {storm['case']}): median loss-free "
                  f"{_fmt(q['median'])} pps quiet, {_fmt(w['median'])} with the storm "
                  f"(median change per repeat {w['median_change_pct']:+.1f} %, checker "
                  f"{w['checker_cpu_share_of_one_core']:.1%} of a core), {_fmt(p['median'])} "
                  f"with the checker on the generator's CPU ({p['median_change_pct']:+.1f} %).",
                  ""]
    for n in res.get("notes", []):
        lines.append(f"- {n}")
    return "\n".join(lines).rstrip() + "\n"


def write_readme(res: dict, path: Path = README) -> None:
    """Replace the text between the markers of ``path`` with ``markdown(res)``."""
    empty = f"# pyvs benchmarks\n\n{MARK_START}\n{MARK_END}\n"
    text = path.read_text() if path.exists() else empty
    if MARK_START not in text or MARK_END not in text:
        text = text.rstrip() + f"\n\n{MARK_START}\n{MARK_END}\n"
    head, rest = text.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    path.write_text(f"{head}{MARK_START}\n{markdown(res)}{MARK_END}{tail}")


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in res["throughput"] if r.get("pps_loss_free") is not None]
    if not rows:
        return
    names = [r["case"] for r in rows]
    lf = [r["pps_loss_free"] for r in rows]
    fo = [r["pps_flat_out"] for r in rows]
    y = range(len(rows))
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(rows) + 1.8))
    ax.barh([i - 0.2 for i in y], lf, height=0.4, label="loss-free (<0.5 % loss)")
    ax.barh([i + 0.2 for i in y], fo, height=0.4, label="flat out")
    g = res.get("generator", {}).get("ceiling_pps")
    if g:
        ax.axvline(g, color="grey", linestyle="--", label=f"generator ceiling {g:,.0f}")
    ax.set_yticks(list(y))
    ax.set_yticklabels(names)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("packets per second (64-byte UDP, log scale)")
    ax.set_title(f"Forwarding rate, {res['meta']['mode']} run {res['meta']['started']}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
