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
