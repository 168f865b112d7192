"""The power of two choices (Mitzenmacher), on pyvs's ``twos`` and ``lc``, through pyvs sim.

    python -m pyvs.engine.sim.experiments.power_of_two [--out docs/experiments] [--quick]

Writes img/power-of-two.{png,svg}, power-of-two.json and the result table inside
power-of-two.md.  Two settings, each run through the director (``Run``: services,
schedulers, connection table and its active counters, on virtual time):

* **static** (balls into bins): n connections arrive within a millisecond and all
  stay open for 5 s (how long does not matter here, only that they overlap), so the
  final active-connection count of the fullest server is the classic maximum load
  of n balls in n bins.  Theory: one random choice ~ ln n / ln ln n, two choices
  ~ ln ln n / ln 2 (both up to additive constants), always-the-least (lc) = 1.
* **dynamic** (the supermarket model): Poisson arrivals at 80 % of the cluster's
  capacity, each server serving one request at a time first come first served,
  Pareto (alpha = 2.1, mean 1 s) service times; the load of a server is its active
  connections (queued + in service), and the measured value is the time-averaged
  maximum over the servers.  Theory (exponential service): one choice ~ log n /
  log(1/rho), two choices ~ log log n / log 2; heavy tails raise both.

``random`` is engine/sim/experiments/random_choice.py; ``twos`` and ``lc`` are the
kernel's (ip_vs_twos.c, ip_vs_lc.c).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from pyvs.engine.sim.cluster import Cluster
from pyvs.engine.sim.experiments.maglev import update_page
from pyvs.engine.sim.experiments.random_choice import SPEC as RANDOM
from pyvs.engine.sim.runner import Options, Run
from pyvs.engine.sim.workload import Synthetic

SCHEDS = {"random": RANDOM, "twos": "twos", "lc": "lc"}
SIZES = (10, 20, 50, 100, 200, 500, 1000)
RHO = 0.8
PARETO = "pareto:alpha=2.1,min=0.5238"  # mean = alpha * min / (alpha - 1) = 1 s


def static_max_load(scheduler: str, n: int, seed: int) -> int:
    wl = Synthetic(flows=n, rate=n * 1000.0, clients=min(n, 60_000), zipf=0.0,
                   duration="fixed:value=5").generate(seed)
    run = Run(wl, Cluster.uniform(n), scheduler, Options(seed=seed, interval=1.0))
    run.execute()
    # every connection is still open at the first sampling instant after the arrivals
    return int(run.recorder.series()["active"][1].max())


def dynamic_max_load(scheduler: str, n: int, seed: int, jobs_per_server: int) -> float:
    flows = n * jobs_per_server
    wl = Synthetic(flows=flows, rate=RHO * n, clients=min(n * 20, 60_000), zipf=0.0,
                   duration=PARETO).generate(seed)
    r = Run(wl, Cluster.uniform(n, capacity=1), scheduler,
            Options(seed=seed, interval=1.0)).execute()
    active = r["series"]["active"]
    steady = active[len(active) // 3: 2 * len(active) // 3 + 1]  # warm, still arriving
    return float(steady.max(axis=1).mean())


def theory(n: np.ndarray) -> dict[str, np.ndarray]:
    ln = np.log(n)
    return {"one choice: ln n / ln ln n": ln / np.log(ln),
            "two choices: ln ln n / ln 2": np.log(ln) / math.log(2),
            f"supermarket, one choice: ln n / ln(1/{RHO})": ln / math.log(1 / RHO)}


def plot(results: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = out / "img"
    img.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.3))
    sizes = np.array(results["sizes"], dtype=float)
    th = theory(sizes)
    colors = {"random": "tab:red", "twos": "tab:blue", "lc": "tab:green"}
    for name in SCHEDS:
        axes[0].plot(sizes, results["static"][name], "o-", color=colors[name],
                     label=f"{name} (measured)")
        axes[1].plot(sizes, results["dynamic"][name], "o-", color=colors[name],
                     label=f"{name} (measured)")
    keys = list(th)
    axes[0].plot(sizes, th[keys[0]], "--", color="tab:red", label=keys[0])
    axes[0].plot(sizes, th[keys[1]], "--", color="tab:blue", label=keys[1])
    axes[1].plot(sizes, th[keys[2]], "--", color="tab:red", label=keys[2])
    axes[1].plot(sizes, th[keys[1]], "--", color="tab:blue", label=keys[1])
    axes[0].set_title("static: n connections on n servers, max per server", fontsize=10)
    axes[1].set_title(f"dynamic: FIFO servers at {RHO:.0%} load, Pareto jobs,\n"
                      "time-averaged max active per server", fontsize=10)
    axes[1].set_yscale("log")  # random's queues are an order of magnitude above the rest
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("servers n")
        ax.set_ylabel("maximum load")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths = []
    for ext in ("png", "svg"):
        path = img / f"power-of-two.{ext}"
        fig.savefig(path, dpi=110)
        paths.append(path)
    plt.close(fig)
    return paths


def table(results: dict) -> str:
    sizes = np.array(results["sizes"], dtype=float)
    th = theory(sizes)
    keys = list(th)
    lines = ["| n | random | twos | lc | ln n / ln ln n | ln ln n / ln 2 | "
             "dyn. random | dyn. twos | dyn. lc | ln n / ln(1/rho) |",
             "|---:|" + "---:|" * 9]
    for k, n in enumerate(results["sizes"]):
        s, d = results["static"], results["dynamic"]
        lines.append(f"| {n} | {s['random'][k]:.2f} | {s['twos'][k]:.2f} | {s['lc'][k]:.2f} | "
                     f"{th[keys[0]][k]:.2f} | {th[keys[1]][k]:.2f} | {d['random'][k]:.1f} | "
                     f"{d['twos'][k]:.1f} | {d['lc'][k]:.1f} | {th[keys[2]][k]:.1f} |")
    return "\n".join(lines) + (f"\n\nStatic: mean over {results['trials']} seeds. Dynamic: "
                               f"{results['jobs_per_server']} jobs per server, one seed.\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pyvs.engine.sim.experiments.power_of_two")
    p.add_argument("--out", default="docs/experiments")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--jobs-per-server", type=int, default=200)
    p.add_argument("--quick", action="store_true", help="small sizes, few trials (a check)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--replot", action="store_true",
                   help="redraw the plot and table from power-of-two.json, no new runs")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        results = json.loads((out / "power-of-two.json").read_text())
        plot(results, out)
        update_page(out / "power-of-two.md", table(results))
        return 0
    sizes = SIZES[:3] if args.quick else SIZES
    trials = 3 if args.quick else args.trials
    jobs = 40 if args.quick else args.jobs_per_server
    results = {"sizes": list(sizes), "trials": trials, "jobs_per_server": jobs, "rho": RHO,
               "static": {k: [] for k in SCHEDS}, "dynamic": {k: [] for k in SCHEDS}}
    for n in sizes:
        for name, spec in SCHEDS.items():
            loads = [static_max_load(spec, n, args.seed + t) for t in range(trials)]
            results["static"][name].append(float(np.mean(loads)))
            results["dynamic"][name].append(dynamic_max_load(spec, n, args.seed, jobs))
        print(n, {k: (results["static"][k][-1], results["dynamic"][k][-1]) for k in SCHEDS},
              flush=True)
    (out / "power-of-two.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, out)
    update_page(out / "power-of-two.md", table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
