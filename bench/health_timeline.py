"""The failure timeline: `python -m pyvs.bench.health_timeline [--out DIR]`.

Builds a NAT lab (3 real servers), runs `pyvs run --keepalived` with one HTTP_GET per
real server (delay_loop 1 s, connect_timeout 0.5 s, retry 1, delay_before_retry 0.5 s),
sends 50 requests/s through round robin, kills rs1's server, restarts it, and plots
every request's outcome against time with the detection window.  Writes
health_timeline.png and health_timeline.json (the times, the counts, the
configuration, the director's log and listings) to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from pyvs.bench.health_scenario import (
    BOUND,
    HealthRun,
    Stream,
    epoch,
    failure_window,
    http_conf,
    wait_for,
)
from pyvs.engine.lab import NatLab

RESULTS = Path(__file__).resolve().parent / "results"
RATE = 50.0
RS1 = "198.18.2.11:80"


def run_scenario(workdir: Path) -> dict:
    with NatLab(real_servers=3, clients=1, start_servers=True) as lab:
        conf = http_conf(lab)
        with HealthRun(lab, conf, workdir, sysctls=("expire_nodest_conn=1",)) as run:
            before = run.listing()
            stream = Stream(lab, lab.url(), workdir / "stream.jsonl", RATE, 60, 1.0)
            try:
                for name in ("rs1", "rs2", "rs3"):
                    wait_for(lambda n=name: stream.answered_by(n, 0), 15, f"{name}")
                t_start = stream.records()[0].t
                wait_for(lambda: time.time() > t_start + 3, 10, "3 s of traffic")
                t_kill = time.time()
                run.kill_server("rs1")
                down = run.wait_transition(RS1, "DOWN", t_kill, BOUND + 10)
                during = run.listing()
                wait_for(lambda: time.time() > epoch(down["time"]) + 3, 10, "3 s without rs1")
                t_restart = time.time()
                run.start_server("rs1")
                up = run.wait_transition(RS1, "UP", t_restart, 20)
                wait_for(lambda: time.time() > epoch(up["time"]) + 3, 10, "3 s with rs1")
                status = run.health()
            finally:
                records = stream.stop()
        log = run.director.log()
    n, first, last = failure_window(records, lambda o: not o.ok)
    t_down, t_up = epoch(down["time"]), epoch(up["time"])
    return {
        "config": conf, "rate": RATE, "bound_s": BOUND, "t0": t_start, "t_kill": t_kill,
        "t_down": t_down, "t_restart": t_restart, "t_up": t_up,
        "detection_s": round(t_down - t_kill, 3), "failed": n,
        "failed_first": first, "failed_last": last, "requests": len(records),
        "records": [[o.t, o.ok, o.server] for o in records],
        "listing_before": before, "listing_during": during, "status": status,
        "log": log,
    }


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = res["t0"]
    rows = {"rs1": 3, "rs2": 2, "rs3": 1}
    fig, ax = plt.subplots(figsize=(10, 4.6))
    ax.axvspan(res["t_kill"] - t0, res["t_kill"] - t0 + res["bound_s"], color="#f6d7a7",
               label=f"allowed: delay_loop + retry x (connect_timeout + "
                     f"delay_before_retry) + 1 s = {res['bound_s']:g} s")
    ax.axvspan(res["t_kill"] - t0, res["t_down"] - t0, color="#e8a0a0",
               label=f"detection: {res['detection_s']:.2f} s")
    ok = [(t - t0, rows.get(s, 0)) for t, good, s in res["records"] if good]
    bad = [t - t0 for t, good, _ in res["records"] if not good]
    ax.scatter([x for x, _ in ok], [y for _, y in ok], s=4, color="#2b6cb0",
               label="answered (by the real server on that row)")
    ax.scatter(bad, [0] * len(bad), s=10, marker="x", color="#c53030",
               label=f"failed ({len(bad)})")
    marks = ((res["t_kill"], "rs1 killed", "right"), (res["t_down"], "rs1 removed", "left"),
             (res["t_restart"], "rs1 restarted", "center"), (res["t_up"], "rs1 back in",
                                                              "center"))
    for t, text, align in marks:
        ax.axvline(t - t0, color="grey", linestyle=":", linewidth=1)
        ax.text(t - t0, 3.55, f" {text} ", fontsize=7, ha=align)
    ax.set_yticks([0, 1, 2, 3])
    ax.set_yticklabels(["failed", "rs3", "rs2", "rs1"])
    ax.set_ylim(-0.6, 3.8)
    ax.set_xlabel(f"seconds ({res['rate']:g} HTTP requests/s, each on a new connection, "
                  f"round robin over 3 real servers)")
    ax.set_title("A real server killed under traffic: HTTP_GET takes it out, then back in",
                 fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, fontsize=7,
              frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pyvs.bench.health_timeline",
                                description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pyvs-timeline-") as tmp:
        res = run_scenario(Path(tmp))
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "health_timeline.json").write_text(json.dumps(res, indent=1))
    plot(res, a.out / "health_timeline.png")
    print(f"rs1 removed {res['detection_s']:.2f} s after it was killed (allowed "
          f"{res['bound_s']:g} s); {res['failed']} of {res['requests']} requests failed, "
          f"sent between {res['failed_first'] - res['t_kill']:+.2f} s and "
          f"{res['failed_last'] - res['t_kill']:+.2f} s from the kill")
    return 0


if __name__ == "__main__":
    sys.exit(main())
