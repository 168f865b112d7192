"""What pyvs sim's runs mean: the server model's queueing, the timeline's effects on
the director (health-check delay, removal vs quiesce), disruption as the Maglev paper
measures it, persistence, the feedback hook, fresh plugin loading and the command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyvs.engine.sim import Cluster, Event, Options, ServiceDef, Synthetic, Workload, compare
from pyvs.engine.sim.runner import FAILED, REFUSED, SERVED, Run
from pyvs.engine.sim.schedspec import SchedulerSpecError

ROOT = Path(__file__).resolve().parent.parent


def workload(starts, demands, clients=None) -> Workload:
    n = len(starts)
    caddr = np.array(clients or [3323199489 + k for k in range(n)], dtype=np.uint32)
    return Workload(np.array(starts, float), np.array(demands, float),
                    np.full(n, 300), np.full(n, 3000), caddr,
                    np.arange(40000, 40000 + n, dtype=np.int32), np.zeros(n, np.int16),
                    [ServiceDef()])


def test_server_model_fifo_slots_waiting_and_refusal():
    wl = workload([0.0, 0.5, 0.6, 0.7], [1.0, 1.0, 1.0, 1.0])
    one = Cluster.uniform(1, capacity=1, queue=1)
    r = Run(wl, one, "rr").execute()
    f = r["flows"]
    assert f["outcome"].tolist() == [SERVED, SERVED, REFUSED, REFUSED]
    assert f["response"][:2].tolist() == pytest.approx([1.0, 1.5])
    assert f["wait"][:2].tolist() == pytest.approx([0.0, 0.5])
    unlimited = Run(wl, Cluster.uniform(1, capacity=1), "rr").execute()["flows"]
    assert unlimited["response"].tolist() == pytest.approx([1.0, 1.5, 2.4, 3.3])
    fast = Run(wl, Cluster.uniform(1, capacity=2, speeds=[2.0]), "rr").execute()["flows"]
    assert fast["response"].tolist() == pytest.approx([0.5, 0.5, 0.5, 0.5 + 0.3])
    # the director saw the refused connections' RST from the server: no entry stays active
    run = Run(wl, one, "rr")
    run.execute()
    assert run.dests[0][0].activeconns == 0


def active_run(scheduler, events, **opts):
    wl = Synthetic(flows=12_000, rate=1000, clients=2000, zipf=0.0,
                   duration="exp:mean=0.02").generate(2)
    return wl, Run(wl, Cluster.uniform(10, capacity=8), scheduler,
                   Options(seed=1, events=events, **opts)).execute()


@pytest.mark.parametrize("on_failure", ["remove", "quiesce"])
def test_failure_is_noticed_after_the_detection_delay(on_failure):
    wl, r = active_run("rr", [Event(4.0, "fail", "rs4"), Event(8.0, "recover", "rs4")],
                       detect_delay=1.5, on_failure=on_failure)
    f = r["flows"]
    to4 = f["dest"] == 3
    blind = (wl.start >= 4.0) & (wl.start < 5.5)
    assert (f["outcome"][to4 & blind] == FAILED).all() and (to4 & blind).sum() > 50
    assert not (to4 & (wl.start > 5.6) & (wl.start < 9.4)).any()  # out until recovered
    assert (to4 & (wl.start > 9.6)).sum() > 50  # back after recover + delay
    assert (f["outcome"][~blind | ~to4] != FAILED).all()


def test_remove_breaks_open_flows_quiesce_drains_them():
    _, removed = active_run("wlc", [Event(5.0, "remove", "rs2")])
    _, quiesced = active_run("wlc", [Event(5.0, "quiesce", "rs2")])
    rm = removed["summary"]["disruption"]["events"][0]
    qu = quiesced["summary"]["disruption"]["events"][0]
    # ip_vs_in: packets of a connection whose destination was deleted are dropped
    assert rm["existing_flows"] > 0 and 0.05 < rm["existing_flows_remapped"] < 0.2
    assert removed["summary"]["drops"]["dest-unavailable"] > 0
    assert qu["existing_flows_remapped"] == 0.0 and quiesced["summary"]["outcomes"]["broken"] == 0


def test_clients_remapped_mh_keeps_clients_sh_and_rr_move_them():
    wl = Synthetic(flows=20_000, rate=1000, clients=3000, zipf=0.0,
                   duration="exp:mean=0.01").generate(3)
    out = compare(wl, Cluster.uniform(10), ["mh", "sh", "rr"],
                  Options(seed=1, events=[Event(10.0, "remove", "rs7")]))
    moved = {k: s["disruption"]["clients_remapped"] for k, s in out["schedulers"].items()}
    assert 0.05 < moved["mh"] < 0.2  # about the removed server's 1/10, plus a little
    assert moved["sh"] > 0.5 and moved["rr"] > 0.8


def test_persistence_keeps_clients_on_their_server():
    wl = Synthetic(flows=5000, rate=500, clients=200).generate(4)
    plain = Run(wl, Cluster.uniform(5), "rr").execute()["summary"]
    sticky = Run(wl, Cluster.uniform(5), "rr", Options(persistent=300)).execute()["summary"]
    assert plain["persistence_hit_rate"] < 0.4
    assert sticky["persistence_hit_rate"] == 1.0


def test_least_response_uses_the_feedback_and_avoids_the_slow_server(monkeypatch):
    monkeypatch.chdir(ROOT)
    wl = Synthetic(flows=8000, rate=600, clients=500, duration="exp:mean=0.01").generate(5)
    cluster = Cluster.uniform(4, speeds=[1, 1, 1, 0.1], capacity=4)
    out = compare(wl, cluster, ["rr", "schedulers/examples/least_response.py:LeastResponse"],
                  Options(seed=2))
    rr, lr = out["schedulers"].values()
    share = {k: s["servers"]["rs4"]["flows"] / s["flows"] for k, s in (("rr", rr), ("lr", lr))}
    assert share["rr"] == pytest.approx(0.25, abs=0.01)
    assert share["lr"] < 0.15
    assert lr["response_time"]["p99"] < rr["response_time"]["p99"]


PLUGIN = """
from pyvs.schedulers.base import Scheduler

class Mine(Scheduler):
    name = "mine"

    def schedule(self, svc, flow):
        return svc.destinations[{index}]
"""


def test_plugin_file_is_loaded_afresh_on_every_run(tmp_path):
    path = tmp_path / "mine.py"
    wl = Synthetic(flows=300, rate=300).generate(1)
    cluster = Cluster.uniform(3)

    def servers_used() -> set:
        s = Run(wl, cluster, f"{path}:Mine").execute()["summary"]["servers"]
        return {k for k, v in s.items() if v["flows"]}

    path.write_text(PLUGIN.format(index=0))
    assert servers_used() == {"rs3"}  # the list head: the newest destination
    path.write_text(PLUGIN.format(index=-1))
    assert servers_used() == {"rs1"}  # the edit is seen without restarting Python


@pytest.mark.parametrize("body,words", [("def broken(:\n", "SyntaxError"),
                                        ("Mine = 3\n", "not a Scheduler subclass")])
def test_plugin_errors_are_clear(tmp_path, body, words):
    path = tmp_path / "bad.py"
    path.write_text(body)
    with pytest.raises(SchedulerSpecError, match=words):
        Run(Synthetic(flows=10).generate(1), Cluster.uniform(2), f"{path}:Mine")


def pyvs(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "pyvs.engine.cli", "sim", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def test_pyvs_sim_command_writes_json_csv_and_plots(tmp_path):
    (tmp_path / "ev.txt").write_text("3 fail rs2\n6 recover rs2\n")
    (tmp_path / "mine.py").write_text(PLUGIN.format(index=-1))
    out = tmp_path / "out.json"
    p = pyvs("--workload", "synthetic", "--flows", "6000", "--schedulers",
             f"rr,wlc,sh,mh,twos,{tmp_path / 'mine.py'}:Mine", "--events",
             str(tmp_path / "ev.txt"), "--seed", "7", "--json", str(out), "--csv",
             str(tmp_path / "csv"), "--plot", str(tmp_path / "plots"), "--servers", "4")
    assert p.returncode == 0, p.stderr
    data = json.loads(out.read_text())
    names = ["rr", "wlc", "sh", "mh", "twos", f"{tmp_path / 'mine.py'}:Mine"]
    assert list(data["schedulers"]) == names
    for s in data["schedulers"].values():
        for key in ("flows_per_second", "imbalance", "jain", "disruption"):
            assert key in s
        assert s["flows"] == 6000
    assert data["schedulers"]["wlc"]["imbalance"] < data["schedulers"][names[-1]]["imbalance"]
    assert "wlc" in p.stdout and "imbalance" in p.stdout  # the table
    assert (tmp_path / "csv" / "summary.csv").read_text().count("\n") == 7
    for stem in ("load", "metrics", "response_cdf"):
        for ext in ("png", "svg"):
            assert (tmp_path / "plots" / f"{stem}.{ext}").stat().st_size > 1000
    again = tmp_path / "again.json"
    p = pyvs("--workload", "synthetic", "--flows", "6000", "--schedulers", "twos", "--events",
             str(tmp_path / "ev.txt"), "--seed", "7", "--json", str(again), "--servers", "4")
    first, second = data["schedulers"]["twos"], json.loads(again.read_text())["schedulers"]["twos"]
    for key in ("imbalance", "jain", "servers", "disruption", "response_time"):
        assert first[key] == second[key]  # the seed reproduces the run


@pytest.mark.parametrize("args,words", [(["--schedulers", "nosuch"], "unknown scheduler"),
                                        (["--workload", "x.txt"], "not 'synthetic'"),
                                        (["--weights", "a,b"], "--weights"),
                                        (["--events", "/nonexistent"], "cannot read events"),
                                        (["--sysctl", "bogus=1"], "bogus"),
                                        (["--services", "tcp:1.2.3:80"], "IPv4")])
def test_pyvs_sim_bad_input_is_one_clear_line(args, words):
    p = pyvs("--flows", "100", *args)
    assert p.returncode == 2
    assert words in p.stderr and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


def test_response_time_series_per_server_follows_the_flows():
    wl = workload([0.0, 0.5, 0.6, 0.7], [1.0, 1.0, 1.0, 1.0])
    r = Run(wl, Cluster.uniform(1, capacity=1), "rr", Options(interval=1.0)).execute()
    series = r["series"]
    by_time = dict(zip(series["time"].tolist(), series["response"][:, 0].tolist(),
                       strict=True))
    assert by_time[1.0] == pytest.approx(1.0)  # finished at 1.0
    assert by_time[2.0] == pytest.approx(1.5)  # finished at 1.5 (the interval to 2.0)
    assert by_time[3.0] == pytest.approx(2.4)  # finished at 3.0 (arrived 0.6)
    assert np.isnan(by_time[0.0])
