"""Smoke tests of the benchmark harness's building blocks, at tiny scale.

Behaviour only (packets counted, searches converge, reports written); nothing here
asserts a speed.  The lab test builds a BenchLab (client -> director -> sink) and
sends 1000 packets through plain kernel forwarding.
"""

from __future__ import annotations

import shutil

import pytest

from pyvs.bench import traffic


def synthetic(capacity: float):
    """A forwarder that loses everything above ``capacity`` pps (and a little noise
    of the generator: it sends 99 % of what it is asked)."""

    def trial(rate: float) -> traffic.Trial:
        sent = int(rate * 0.99)
        received = min(sent, int(capacity))
        return traffic.Trial(offered=rate, sent=sent, received=received, elapsed=1.0,
                             loss=1 - received / sent if sent else 1.0)

    return trial


@pytest.mark.parametrize("capacity", [5_000, 90_000, 400_000])
def test_search_converges_on_synthetic_loss_model(capacity):
    res = traffic.search_loss_free(synthetic(capacity), hi=1_000_000, ratio=1.05,
                                   max_trials=20)
    assert not res.limited_by_generator
    assert capacity / 1.06 <= res.rate <= capacity
    assert all(t.loss < traffic.LOSS_THRESHOLD for t in res.trials if t.sent_pps == res.rate)


def test_search_reports_generator_limit_and_total_failure():
    res = traffic.search_loss_free(synthetic(2_000_000), hi=1_000_000)
    assert res.limited_by_generator and len(res.trials) == 1
    res = traffic.search_loss_free(synthetic(10), hi=1_000_000, max_trials=5)
    assert res.rate == 0 and len(res.trials) <= 5


def test_median_search_picks_the_middle_run():
    runs = [traffic.SearchResult(rate=r) for r in (3.0, 1.0, 2.0)]
    assert traffic.median_search(runs).rate == 2.0


def test_conntable_memory_counts_every_entry_and_its_bytes():
    """Every synthetic client makes one entry, and the per-entry cost it reports is the
    size of a real entry: at least the Conn object with its eleven slots and its index
    slot (about 100 bytes), at most a few hundred (engine/conntable.py: about 200).  The heap
    figure comes from tracemalloc in this process; the resident-set figure needs a fresh
    process (the module says so), so it is measured in one."""
    import json
    import subprocess
    import sys

    from pyvs.bench import conn_memory

    res = conn_memory.measure(2000, use_tracemalloc=True)
    assert res["entries"] == res["requested"] == 2000
    assert 100 <= res["bytes_per_entry_tracemalloc"] <= 1000
    out = subprocess.run([sys.executable, "-m", "pyvs.bench.conn_memory", "--entries",
                          "20000"], capture_output=True, text=True, check=True, timeout=120)
    fresh = json.loads(out.stdout)
    assert fresh["entries"] == 20000
    assert 100 <= fresh["bytes_per_entry_rss"] <= 1000
    assert fresh["rss_delta_bytes"] == pytest.approx(fresh["bytes_per_entry_rss"] * 20000,
                                                     rel=0.01)


def test_report_lands_between_the_markers(tmp_path):
    from pyvs.bench.report import MARK_END, MARK_START, markdown, write_readme

    res = {"meta": {"started": "now", "mode": "quick", "commit": "x", "cpus": 2,
                    "kernel": "k", "duration_s": 1},
           "generator": {}, "throughput": [
               {"case": "kernel IP forwarding", "pps_loss_free": 1000, "pps_flat_out": 900,
                "ratio_to_kernel_forwarding": 1.0},
               {"case": "pyvs NAT (ring)", "pyvs_loss_free": None, "pps_loss_free": None,
                "pps_flat_out": None, "skipped": "not available"}],
           "tcp_connections": [], "latency": [], "conntable_memory": [], "notes": []}
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{MARK_START}\nold\n{MARK_END}\noutro\n")
    write_readme(res, readme)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n")
    assert "old" not in text and "| kernel IP forwarding | 1,000 | — | 900 |" in text
    assert "not available" in markdown(res)


@pytest.mark.lab
@pytest.mark.skipif(shutil.which("nft") is None, reason="needs nftables (nft)")
def test_generator_through_kernel_forwarding(lab_env):
    from pyvs.bench import tools
    from pyvs.engine.lab.benchtopo import ECHO_PORT, FLOOD_PORT, BenchLab

    built = tools.build_all()
    with BenchLab(tools=built) as lab:
        raw = traffic.raw_gen(lab, built["gen"])
        for gen in (raw, traffic.Gen(built["gen"])):
            before = lab.counter()
            rep = traffic.flood(lab, gen, lab.SINK, FLOOD_PORT, count=1000, rate=20_000,
                                duration=5)
            assert rep["sent"] == 1000
            assert traffic.settle(lab.counter) - before == 1000
        t = traffic.trial(lab, raw, lab.SINK, FLOOD_PORT, rate=5000, duration=0.2)
        assert t.sent > 0 and t.received == t.sent and t.loss == 0
        pp = traffic.pingpong(lab, built["gen"], lab.SINK, ECHO_PORT, count=50, duration=3)
        assert pp["received"] == 50 and 0 < pp["p50_us"] <= pp["p99_us"]


@pytest.mark.lab
@pytest.mark.skipif(shutil.which("nft") is None, reason="needs nftables (nft)")
def test_cost_windows_count_what_was_forwarded_and_what_the_director_dropped(lab_env):
    """A per-core cost window through kernel forwarding counts at the sink every packet
    the paced generator sent; a baseline window counts them at the director's ingress
    and forwards none; the drop table is gone afterwards."""
    from pyvs.bench import cpucost, tools
    from pyvs.engine.lab.benchtopo import BenchLab

    built = tools.build_all()
    with BenchLab(tools=built) as lab:
        gen = traffic.raw_gen(lab, built["gen"])
        case = cpucost.window(lab, gen, lab.SINK, rate=5000, duration=0.4, tail=0.2)
        assert case.sent > 0 and case.forwarded + case.late == case.sent
        sink = lab.counter()
        with cpucost.ingress_drop(lab) as read:
            base = cpucost.window(lab, gen, lab.SINK, 5000, 0.4, 0.2, read)
        assert base.sent > 0 and base.forwarded + base.late == base.sent
        assert lab.counter() == sink
        tables = lab.run("director", ["nft", "list", "tables"], capture_output=True,
                         check=True).stdout
        assert cpucost.DROP_TABLE not in tables
        for w in (case, base):
            assert w.busy_ns > 0 and 0 < w.cpu_busy_pct <= 100 and w.wall_s >= 0.6


def test_spread_and_the_low_generator_ceiling_history(tmp_path):
    """`runs.spread_pct` is (max - min) / median; the ceiling history keeps the last
    CEILING_HISTORY runs and gives what a run's ceiling is compared with."""
    from pyvs.bench.settings import CEILING_HISTORY, remember_ceiling, spread_pct

    assert spread_pct([100.0]) == 0.0
    assert spread_pct([90.0, 100.0, 120.0]) == 30.0
    path = tmp_path / "ceilings.json"
    for n in range(CEILING_HISTORY + 3):
        recent = remember_ceiling(1000 + n, f"run{n}", path)
    assert len(recent) == CEILING_HISTORY and recent[-1] == 1000 + CEILING_HISTORY + 2
    assert remember_ceiling(500, "busy", path)[-1] == 500  # a low one is remembered too


def test_repeat_summary_compares_each_repeat_with_its_own_baseline():
    """A/B benches report the change per repeat (the VM's noise moves both modes of a
    repeat together), not the change of the medians."""
    from pyvs.bench.repeats import summary

    runs = [{"off": 100, "on": 90}, {"off": 200, "on": 220}, {"off": 150, "on": 150}]
    on = summary(runs, "on", "off")
    assert on["runs"] == [90, 220, 150] and (on["min"], on["median"], on["max"]) == (90, 150, 220)
    assert on["change_vs_off_pct"] == [-10.0, 10.0, 0.0] and on["median_change_pct"] == 0.0
    assert "median_change_pct" not in summary(runs, "off", "off")


STAT = """cpu  1000 50 300 9000 40 7 60 25 200 0
cpu0 500 25 150 4500 20 3 30 12 100 0
intr 123
"""


def test_proc_stat_busy_counts_work_not_idle_steal_or_guest_twice():
    """Busy = user + nice + system + irq + softirq; idle and iowait are idle, steal is
    another guest's time, and guest time is already inside user."""
    from pyvs.bench import cpucost

    fields = cpucost.parse_stat(STAT)
    assert fields["user"] == 1000 and fields["steal"] == 25 and fields["guest"] == 200
    assert cpucost.stat_busy_ticks(fields) == 1000 + 50 + 300 + 7 + 60
    with pytest.raises(ValueError):
        cpucost.parse_stat("cpu0 1 2 3 4\n")
    before = {"source": "proc_stat", "busy_ticks": 100, "tick_ns": 1e7}
    after = {"source": "proc_stat", "busy_ticks": 130, "tick_ns": 1e7}
    assert cpucost.busy_ns(before, after) == 30 * 1e7


def test_cpuidle_busy_is_wall_time_of_all_cpus_minus_idle_and_steal():
    from pyvs.bench import cpucost

    before = {"source": "cpuidle", "cpus": 2, "cpu_wall_ns": 0, "idle_us": 10_000_000,
              "steal_ticks": 5, "tick_ns": 1e7}
    after = dict(before, cpu_wall_ns=4_000_000_000, idle_us=13_000_000, steal_ticks=6)
    # 2 CPUs read 2 s apart each = 4 s; 3 s idle; 10 ms stolen
    assert cpucost.busy_ns(before, after) == pytest.approx(0.99e9)
    with pytest.raises(ValueError):
        cpucost.busy_ns(before, {"source": "proc_stat"})


def _w(busy_ms: float, forwarded: int, sent: int | None = None, pct: float = 10.0) -> dict:
    return {"busy_ns": busy_ms * 1e6, "forwarded": forwarded,
            "sent": forwarded if sent is None else sent, "resolution_ns": 2000.0,
            "cpu_busy_pct": pct}


def _run(case: dict, *baselines: dict) -> dict:
    return {"case_window": case, "baseline_windows": list(baselines)}


def test_cost_per_packet_is_the_increment_over_the_bracketing_baselines():
    """(case busy - mean busy of the baselines around it) / forwarded packets, per case
    window; the median of the windows, their spread, and None when nothing can be
    said."""
    from pyvs.bench import cpucost

    assert cpucost.cost_ns_per_packet(310e6, [100e6, 120e6], 20_000) == 10_000
    assert cpucost.cost_ns_per_packet(310e6, [100e6], 0) is None
    assert cpucost.cost_ns_per_packet(310e6, [], 20_000) is None
    b0, b1, b2, b3 = _w(100, 20_000), _w(120, 20_000), _w(100, 20_000), _w(140, 20_000)
    s = cpucost.summarize([_run(_w(310, 20_000), b0, b1), _run(_w(290, 20_000), b1, b2),
                           _run(_w(370, 20_000, sent=20_100), b2, b3)])
    assert s["runs_ns_per_packet"] == [10_000, 9_000, 12_500]
    assert s["ns_per_packet"] == 10_000 and s["spread_pct"] == 35.0
    assert s["baseline_busy_ms"] == [[100.0, 120.0], [120.0, 100.0], [100.0, 140.0]]
    assert s["max_loss"] == pytest.approx(100 / 20_100, abs=1e-5)
    assert s["resolution_ns_per_packet"] == 0.1
    assert s["baseline_drift_ns_per_packet"] == 2_000 and not s["saturated"]
    # a case window that forwarded nothing has no cost and does not enter the median
    s = cpucost.summarize([_run(_w(300, 0, sent=20_000), b0), _run(_w(310, 20_000), b0)])
    assert s["runs_ns_per_packet"] == [None, 10_500] and s["ns_per_packet"] == 10_500
    assert s["max_loss"] == 1.0 and s["baseline_drift_ns_per_packet"] is None
    assert cpucost.summarize([_run(_w(300, 20_000))])["ns_per_packet"] is None
    # below the baseline (noise): a figure, but no spread relative to it
    s = cpucost.summarize([_run(_w(90, 20_000), b0), _run(_w(95, 20_000), b0)])
    assert s["ns_per_packet"] < 0 and s["spread_pct"] is None
    # CPUs with no idle time left cannot show an increment: flagged, window or baseline
    assert cpucost.summarize([_run(_w(300, 20_000), _w(110, 20_000, pct=95.0))])["saturated"]


def test_ratio_to_kernel_cost_needs_two_positive_costs():
    from pyvs.bench import cpucost

    assert cpucost.ratio_to_kernel_cost(30_000, 1_500) == 20.0
    assert cpucost.ratio_to_kernel_cost(1_500, 1_500) == 1.0
    assert cpucost.ratio_to_kernel_cost(30_000, None) is None
    assert cpucost.ratio_to_kernel_cost(30_000, -200) is None  # drowned in noise
    assert cpucost.ratio_to_kernel_cost(None, 1_500) is None


def test_a_cost_no_larger_than_its_noise_floor_is_not_a_measurement():
    """The kernel's forwarding can cost less than the background moved between its
    baselines, or come out negative: that is no figure to build a ratio on."""
    from pyvs.bench import cpucost

    assert cpucost.below_noise({"ns_per_packet": -1005, "baseline_drift_ns_per_packet": 80})
    assert cpucost.below_noise({"ns_per_packet": 60, "baseline_drift_ns_per_packet": 80})
    assert not cpucost.below_noise({"ns_per_packet": 9_978,
                                    "baseline_drift_ns_per_packet": 300})
    assert not cpucost.below_noise({"ns_per_packet": None})


def test_cost_ledger_charges_each_window_to_the_baselines_around_it():
    """A case window is charged against the last baseline taken before it and the first
    one taken after: alternating for the kernel cases, shared by all of a pyvs case's
    windows (its closing baseline comes once the director has stopped)."""
    from pyvs.bench import cpucost

    b = [_w(100 + 10 * i, 1) for i in range(4)]
    ledger = cpucost.CostLedger()
    ledger.baseline(b[0])
    k1 = ledger.run(_w(200, 10))
    ledger.baseline(b[1])
    k2 = ledger.run(_w(200, 10))
    ledger.baseline(b[2])
    assert k1["baseline_windows"] == [b[0], b[1]] and k2["baseline_windows"] == [b[1], b[2]]
    pyvs = [ledger.run(_w(300, 10)), ledger.run(_w(320, 10))]
    assert all(r["baseline_windows"] == [b[2]] for r in pyvs)  # closing one not yet taken
    ledger.baseline(b[3])
    assert all(r["baseline_windows"] == [b[2], b[3]] for r in pyvs) and not ledger.waiting
    done = cpucost.finish(pyvs)
    assert done["runs_ns_per_packet"] == [round(175e6 / 10), round(195e6 / 10)]
    assert done["runs"] is pyvs


def test_report_shows_the_per_core_cost_columns():
    from pyvs.bench.report import markdown

    res = {"meta": {"started": "now", "mode": "quick", "commit": "x", "cpus": 2,
                    "kernel": "k", "duration_s": 1,
                    "cpu_cost": {"source": "cpuidle", "rate_pps": 10000.0, "repeats": 3,
                                 "window_s": 2.0}},
           "generator": {}, "throughput": [
               {"case": "kernel IP forwarding", "pps_loss_free": 1000, "pps_flat_out": 900,
                "ratio_to_kernel_forwarding": 1.0, "ns_per_packet": 1500,
                "ratio_to_kernel_cost": 1.0, "cpu_cost": {"spread_pct": 12.0}},
               {"case": "pyvs NAT (xdp)", "pps_loss_free": 100, "pps_flat_out": 90,
                "ratio_to_kernel_forwarding": 0.1, "ns_per_packet": 30_000,
                "ratio_to_kernel_cost": 20.0, "cpu_cost": {"spread_pct": 0.0}}],
           "tcp_connections": [], "latency": [], "conntable_memory": [], "notes": []}
    text = markdown(res)
    assert "| 1,500 (12 %) | 1.000 |" in text
    assert "| 30,000 | 20 |" in text
    assert "at 10,000 pps" in text


def test_bench_turns_cost_windows_into_ns_per_packet_and_ratios():
    """Every measured case gets ns_per_packet and its ratio to kernel forwarding's; a
    case whose windows saturated the CPUs gets none (its raw figure stays in
    cpu_cost), and a case that lost packets at the cost rate is noted."""
    import argparse

    from pyvs.bench import cpucost
    from pyvs.bench.suite import Bench

    bench = Bench(argparse.Namespace(quick=True, repeats=None, cost_rate=None))
    ledger = cpucost.CostLedger()

    def case(name: str, busy_ms: float, pct: float = 10.0, sent: int | None = None) -> dict:
        ledger.baseline(_w(100, 20_000))
        runs = [ledger.run(_w(busy_ms, 20_000, sent=sent, pct=pct))]
        ledger.baseline(_w(100, 20_000))
        return {"case": name, "pps_loss_free": 1, "pps_flat_out": 1, "cpu_cost": runs}

    kernel = case("kernel IP forwarding", 130)
    rows = [kernel, case("pyvs NAT (xdp)", 700), case("pyvs NAT (ring)", 900, pct=97.0),
            case("pyvs TUN (ring)", 1100, sent=21_000),
            {"case": "skipped one", "pps_loss_free": None, "skipped": "no"}]
    bench.results["throughput"] = rows
    bench.kernel_fwd = kernel
    bench.costs()
    assert [r["ns_per_packet"] for r in rows] == [1_500, 30_000, None, 50_000, None]
    assert [r["ratio_to_kernel_cost"] for r in rows] == [1.0, 20.0, None, 33.33, None]
    assert rows[2]["cpu_cost"]["ns_per_packet"] == 40_000 and rows[2]["cpu_cost"]["saturated"]
    notes = " ".join(bench.results["notes"])
    assert "pyvs NAT (ring): the CPUs were 90 % busy" in notes
    assert "pyvs TUN (ring): lost 4.8% in a per-core cost window" in notes


@pytest.mark.parametrize("source", [None, "proc_stat"])
def test_cpu_samples_of_this_machine_bound_the_busy_time_and_leave_affinity_alone(source):
    """Two readings of this machine's CPU time: the busy time between them lies within
    what its CPUs could have done, and reading (which visits every CPU for cpuidle)
    leaves the process's CPU affinity as it was."""
    import os
    import time

    from pyvs.bench import cpucost

    home = os.sched_getaffinity(0)
    t0 = time.monotonic()
    a = cpucost.sample_cpu(source)
    sum(range(200_000))
    b = cpucost.sample_cpu(a["source"])
    wall = time.monotonic() - t0
    assert os.sched_getaffinity(0) == home
    cpus = a.get("cpus") or os.cpu_count()
    # proc_stat: five fields rounded to ticks, and tick sampling charges whole ticks
    slack = 2 * a["resolution_ns"] + (10 * a["tick_ns"] if a["source"] == "proc_stat" else 0)
    assert -slack <= cpucost.busy_ns(a, b) <= cpus * wall * 1e9 + slack
