"""Plots of a comparison (matplotlib, each as PNG and SVG).

* ``load``: active connections per real server over time, one panel per scheduler,
  timeline events marked;
* ``metrics``: the schedulers side by side (imbalance, Jain's index, p99 response
  time, persistence hit rate, and disruption when there were events);
* ``response_cdf``: the response-time distribution of each scheduler.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("plots need matplotlib (pip install 'pyvs[sim]')") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, folder: Path, stem: str) -> list[Path]:
    paths = [folder / f"{stem}.png", folder / f"{stem}.svg"]
    fig.savefig(paths[0], dpi=110, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    return paths


def load_over_time(comparison: dict, folder: Path):
    plt = _pyplot()
    results = comparison["results"]
    n = len(results)
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.2 * n + 0.6), sharex=True, squeeze=False)
    events = comparison.get("options", {}).get("events", [])
    for ax, (name, r) in zip(axes[:, 0], results.items(), strict=True):
        series = r["series"]
        servers = list(r["summary"]["servers"])
        for s, server in enumerate(servers):
            ax.plot(series["time"], series["active"][:, s], lw=0.9, label=server)
        for ev in events:
            ax.axvline(ev["time"], color="grey", ls=":", lw=0.8)
        ax.set_ylabel("active conns")
        ax.set_title(f"{name}: imbalance {r['summary']['imbalance']:.2f}, "
                     f"Jain {r['summary']['jain']:.3f}", fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("simulated time (s)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if len(labels) <= 20:
        fig.legend(handles, labels, loc="upper right", fontsize=7, ncol=2)
    fig.tight_layout()
    paths = save(fig, folder, "load")
    plt.close(fig)
    return paths


def metric_comparison(comparison: dict, folder: Path):
    plt = _pyplot()
    summaries = comparison["schedulers"]
    names = list(summaries)
    metrics = [("imbalance", "imbalance (max/mean active)", lambda s: s["imbalance"]),
               ("jain", "Jain's fairness index", lambda s: s["jain"]),
               ("p99", "p99 response time (ms)",
                lambda s: (s["response_time"].get("p99") or np.nan) * 1000),
               ("persist", "persistence hit rate",
                lambda s: s["persistence_hit_rate"] if s["persistence_hit_rate"] is not None
                else np.nan)]
    if any("disruption" in s for s in summaries.values()):
        metrics += [("dflows", "existing flows disrupted",
                     lambda s: s.get("disruption", {}).get("existing_flows_remapped", np.nan)),
                    ("dclients", "clients remapped",
                     lambda s: s.get("disruption", {}).get("clients_remapped", np.nan))]
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.6 * len(metrics), 3.2),
                             squeeze=False)
    for ax, (_, title, get) in zip(axes[0], metrics, strict=True):
        values = [get(summaries[n]) for n in names]
        ax.bar(range(len(names)), values, color="tab:blue")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([n.rsplit("/", 1)[-1] for n in names], rotation=45, ha="right",
                           fontsize=8)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    paths = save(fig, folder, "metrics")
    plt.close(fig)
    return paths


def response_cdf(comparison: dict, folder: Path):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, r in comparison["results"].items():
        x = r["flows"]["response"]
        x = np.sort(x[~np.isnan(x)])
        if len(x):
            ax.plot(x * 1000, np.arange(1, len(x) + 1) / len(x), label=name)
    ax.set_xscale("log")
    ax.set_xlabel("response time (ms, log)")
    ax.set_ylabel("share of served flows")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths = save(fig, folder, "response_cdf")
    plt.close(fig)
    return paths


def plot_all(comparison: dict, folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return (load_over_time(comparison, folder) + metric_comparison(comparison, folder)
            + response_cdf(comparison, folder))
