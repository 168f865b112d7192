"""Run several schedulers on one workload: what ``pyvs sim`` and a notebook call.

``compare(workload, cluster, ["rr", "wlc", "my.py:Mine"], Options(seed=1))`` runs
each scheduler on a fresh director with the same workload, cluster, timeline and
seed, and returns ``{"schedulers": {name: summary}, "results": {name: result}}``:
summaries are plain JSON-able dicts (engine/sim/metrics.py), results add the numpy
arrays (``series``: per-sample, per-server; ``flows``: per flow).
"""

from __future__ import annotations

from collections.abc import Callable

from pyvs.engine.sim.cluster import Cluster
from pyvs.engine.sim.runner import Options, Run
from pyvs.engine.sim.workload import Workload


def simulate(workload: Workload, cluster: Cluster, scheduler: str,
             options: Options | None = None,
             progress: Callable[[int], None] | None = None) -> dict:
    """One scheduler: the result dict (summary, series, flows)."""
    return Run(workload, cluster, scheduler, options, progress).execute()


def compare(workload: Workload, cluster: Cluster, schedulers: list[str],
            options: Options | None = None,
            progress: Callable[[str, int], None] | None = None) -> dict:
    """Every scheduler on the same workload (see the module doc)."""
    options = options or Options()
    results = {}
    for name in schedulers:
        tick = (lambda done, name=name: progress(name, done)) if progress else None
        results[name] = simulate(workload, cluster, name, options, tick)
    return {"workload": dict(workload.description), "cluster": cluster.as_dict(),
            "options": {"level": options.level, "seed": options.seed,
                        "persistent": options.persistent, "sched_flags": options.sched_flags,
                        "detect_delay": options.detect_delay, "on_failure": options.on_failure,
                        "events": [e.as_dict() for e in options.events],
                        "sysctl": dict(options.sysctl)},
            "schedulers": {name: r["summary"] for name, r in results.items()},
            "results": results}
