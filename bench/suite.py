"""The benchmark run itself (class Bench): builds the lab, measures the generator's
ceiling, then each case's loss-free and flat-out rate, latency and TCP connection rate,
the conntable memory and the scheduler section, and collects them in one result dict."""

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
from collections.abc import Iterator

from pyvs.bench import cpucost, tools, traffic
from pyvs.bench.settings import (
    CEILING_LOW,
    RESULTS,
    Settings,
    log,
    remember_ceiling,
    spread_pct,
)
from pyvs.bench.variants import (
    configure_pyvs,
    nft_dnat_script,
    pyvs_capabilities,
    pyvs_variants,
)
from pyvs.engine.lab.benchtopo import ECHO_PORT, FLOOD_PORT, HTTP_PORT, BenchLab
from pyvs.engine.runner import ROOT, DirectorError, DirectorProcess


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.s = Settings(args.quick)
        if getattr(args, "repeats", None):
            self.s.repeats = max(1, args.repeats)
        if getattr(args, "cost_rate", None) is not None:
            self.s.cost_rate = max(0.0, args.cost_rate)
        if getattr(args, "cost_window", None):
            self.s.cost_window_s = max(0.5, args.cost_window)
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
        self.ledger = cpucost.CostLedger()
        if self.s.cost_rate > 0:
            self.results["meta"]["cpu_cost"] = {
                "rate_pps": self.s.cost_rate, "window_s": self.s.cost_window_s,
                "tail_s": self.s.cost_tail_s, "repeats": self.s.cost_repeats,
                "pace_us": cpucost.PACE_US, "source": cpucost.sample_cpu()["source"]}

    # -- helpers ------------------------------------------------------------------------
    def note(self, text: str) -> None:
        log(f"note: {text}")
        self.results["notes"].append(text)

    def skip(self, case: str, reason: str) -> None:
        log(f"skip {case}: {reason}")
        self.results["throughput"].append({
            "case": case, "pps_loss_free": None, "pps_flat_out": None,
            "ratio_to_kernel_forwarding": None, "ns_per_packet": None,
            "ratio_to_kernel_cost": None, "skipped": reason})

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

    def cost_baseline(self, lab: BenchLab) -> None:
        """A baseline window of the per-core cost (bench/cpucost.py): the director drops
        the flood at ingress; only when no pyvs process is running."""
        s = self.s
        if s.cost_rate <= 0:
            return
        with cpucost.ingress_drop(lab) as read:
            w = cpucost.window(lab, self.gen, lab.SINK, s.cost_rate, s.cost_window_s,
                               s.cost_tail_s, read)
        log(f"  cost baseline at {s.cost_rate:,.0f} pps: {w.busy_ns / 1e6:,.1f} ms busy "
            f"({w.cpu_busy_pct} % of the CPUs)")
        self.ledger.baseline(w.as_dict())

    def measure_cost(self, lab: BenchLab, row: dict, dst: str, drop_inert: bool) -> None:
        """The case's per-core cost windows at the fixed rate.  ``drop_inert``: the
        ingress drop makes this forwarder inert (kernel cases), so a baseline is taken
        before each window and after the last; otherwise the caller takes the closing
        one once the forwarder has stopped."""
        s = self.s
        if s.cost_rate <= 0:
            return
        runs = []
        for _ in range(s.cost_repeats):
            if drop_inert or self.ledger.last is None:
                self.cost_baseline(lab)
            w = cpucost.window(lab, self.gen, dst, s.cost_rate, s.cost_window_s,
                               s.cost_tail_s)
            log(f"  {row['case']}: cost window {w.busy_ns / 1e6:,.1f} ms busy "
                f"({w.cpu_busy_pct} %), {w.forwarded:,} of {w.sent:,} forwarded")
            runs.append(self.ledger.run(w.as_dict()))
        row["cpu_cost"] = runs
        if drop_inert:
            self.cost_baseline(lab)

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
        with cpucost.ingress_drop(lab) as read:
            raw = traffic.flat_out(lab, self.gen, lab.SINK, FLOOD_PORT, self.s.flat_s, read)
            sock_gen = traffic.Gen(self.gen.path, raw=None)
            sock = traffic.flat_out(lab, sock_gen, lab.SINK, FLOOD_PORT, self.s.flat_s, read)
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
        self.measure_cost(lab, self.kernel_fwd, lab.SINK, drop_inert=True)

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
            self.measure_cost(lab, row, lab.VIP, drop_inert=True)
        finally:
            lab.nft("director", "delete table ip benchnat", check=False)

    @contextlib.contextmanager
    def pyvs_director(self, lab: BenchLab, v: dict,
                      again: bool = False) -> Iterator[DirectorProcess | None]:
        """`pyvs run` for variant ``v``, configured and checked to forward; None (and the
        case skipped, or with ``again`` a note) when it does not; stopped on exit."""
        case = v["case"]
        fail = (lambda why: self.note(f"{case}, restarted: {why}")) if again else (
            lambda why: self.skip(case, why))
        logf = lab.state_dir / f"pyvs-{len(self.results['throughput'])}{'b' if again else ''}.log"
        d = DirectorProcess(lab.ns("director"), log_path=str(logf), log_level="warning",
                            args=tuple(v["args"]))
        try:
            d.start()
        except DirectorError as err:
            fail(f"pyvs run {' '.join(v['args'])} did not start: {str(err)[-300:]}")
            yield None
            return
        try:
            try:
                configure_pyvs(d, lab, v["method"])
            except DirectorError as err:
                fail(f"pyvsadm refused the configuration: {err}; pyvs log: "
                     f"{d.log()[-300:].strip() or '(empty)'}")
                yield None
                return
            ok, why = self.forwarding_works(lab, lab.VIP)
            if not ok:
                fail(f"forwarding check failed: {why}; pyvs log: "
                     f"{d.log()[-300:].strip() or '(empty)'}")
                yield None
                return
            yield d
        finally:
            d.stop()

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
            with self.pyvs_director(lab, v) as d:
                if d is None:
                    continue
                row = self.measure_throughput(lab, case, lab.VIP)
                if v["method"] == "m":
                    self.measure_latency(lab, case, lab.VIP, row["pps_loss_free"])
                    self.measure_tcp(lab, case, lab.VIP)
                row["pyvs_run_args"] = v["args"]
            # let the director's stack forget the pyvs rules before the next case
            time.sleep(0.2)
            if self.s.cost_rate > 0:
                # a fresh process between two baselines taken with none running, so
                # both bracket the cost windows closely (a baseline needs pyvs stopped)
                self.cost_baseline(lab)
                with self.pyvs_director(lab, v, again=True) as d:
                    if d is not None:
                        self.measure_cost(lab, row, lab.VIP, drop_inert=False)
                time.sleep(0.2)
                self.cost_baseline(lab)
        if self.args.case and any("storm" in c.lower() for c in self.args.case):
            from pyvs.bench import health_storm  # a health-check storm: bench/health_storm.py

            log("pyvs NAT (nfqueue) with and without a health-check storm")
            self.results["health_storm"] = health_storm.measure(
                self, lab, lambda d: configure_pyvs(d, lab, "m"), log)

    def costs(self) -> None:
        """Each case's per-core cost from its windows, and its ratio to kernel
        forwarding's."""
        for row in self.results["throughput"]:
            if "cpu_cost" in row:
                row["cpu_cost"] = cpucost.finish(row["cpu_cost"])
            c = row.get("cpu_cost") or {}
            # a saturated measurement, or one below its noise floor, is no measurement:
            # its raw figure stays in cpu_cost
            if c:
                c["below_noise"] = cpucost.below_noise(c)
            row["ns_per_packet"] = (None if c.get("saturated") or c.get("below_noise")
                                    else c.get("ns_per_packet"))
        kernel = self.kernel_fwd["ns_per_packet"] if self.kernel_fwd else None
        for row in self.results["throughput"]:
            row["ratio_to_kernel_cost"] = cpucost.ratio_to_kernel_cost(
                row["ns_per_packet"], kernel)
            c = row.get("cpu_cost")
            if not c:
                continue
            if c["max_loss"] is not None and c["max_loss"] >= traffic.LOSS_THRESHOLD:
                self.note(f"{row['case']}: lost {c['max_loss']:.1%} in a per-core cost "
                          f"window at {self.s.cost_rate:,.0f} pps: above its loss-free rate, "
                          f"its ns per packet is not a loss-free cost")
            if c["saturated"]:
                self.note(f"{row['case']}: the CPUs were {cpucost.SATURATED_PCT:.0f} % busy "
                          f"or more in a per-core cost window: other work on the machine "
                          f"hides the increment, its ns per packet means nothing")

    def ratios(self) -> None:
        self.costs()
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


def _git_commit() -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True, timeout=10)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
