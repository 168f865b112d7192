"""What ``pyvs sim`` writes: JSON, CSV files, the terminal table and the progress bar.

JSON: ``{"workload": ..., "cluster": ..., "options": ..., "schedulers": {"rr": {...}}}``
with every summary of engine/sim/metrics.py (NaN written as null).  CSV (a folder):
``summary.csv`` (one row per scheduler), ``<scheduler>-series.csv`` (per sample and
server: active, inactive, in_system, bytes, conns, weight, mean response time) and
``<scheduler>-flows.csv`` (per flow: start, client, server, outcome, response, wait).
"""

from __future__ import annotations

import contextlib
import csv
import ipaddress
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pyvs.engine.sim.metrics import OUTCOMES

SUMMARY_COLUMNS = ("scheduler", "flows", "flows_per_second", "events_per_second",
                   "imbalance", "imbalance_flows", "jain", "jain_flows",
                   "persistence_hit_rate", "response_p50", "response_p99", "refusals",
                   "failed", "broken", "no_destination", "disruption_flows",
                   "disruption_clients")


def safe_name(name: str) -> str:
    """A scheduler name usable as a file name (``dir/x.py:Cls`` -> ``x.py_Cls``)."""
    return re.sub(r"[^A-Za-z0-9_.@-]+", "_", name.rsplit("/", 1)[-1]).strip("_") or "sched"


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


def as_json(comparison: dict) -> dict:
    return _clean({k: v for k, v in comparison.items() if k != "results"})


def write_json(comparison: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(as_json(comparison), indent=2) + "\n")


def summary_row(name: str, s: dict) -> dict:
    rt = s["response_time"]
    dis = s.get("disruption", {})
    return {"scheduler": name, "flows": s["flows"],
            "flows_per_second": round(s["flows_per_second"]),
            "events_per_second": round(s["events_per_second"]),
            "imbalance": s["imbalance"], "imbalance_flows": s["imbalance_flows"],
            "jain": s["jain"], "jain_flows": s["jain_flows"],
            "persistence_hit_rate": s["persistence_hit_rate"],
            "response_p50": rt.get("p50"), "response_p99": rt.get("p99"),
            "refusals": s["refusals"], "failed": s["outcomes"]["failed"],
            "broken": s["outcomes"]["broken"],
            "no_destination": s["outcomes"]["no_destination"],
            "disruption_flows": dis.get("existing_flows_remapped"),
            "disruption_clients": dis.get("clients_remapped")}


def write_csv(comparison: dict, folder: str | Path, workload=None) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "summary.csv"]
    with written[0].open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS)
        w.writeheader()
        for name, s in comparison["schedulers"].items():
            w.writerow(summary_row(name, s))
    for name, result in comparison.get("results", {}).items():
        servers = list(result["summary"]["servers"])
        series = result["series"]
        path = folder / f"{safe_name(name)}-series.csv"
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            keys = ("active", "inactive", "in_system", "bytes", "conns", "weight")
            w.writerow(("time", "server", *keys, "mean_response"))
            resp = series["response"]
            for r, t in enumerate(series["time"].tolist()):
                for s, server in enumerate(servers):
                    rt = resp[r, s]
                    w.writerow((f"{t:.6f}", server, *(int(series[k][r, s]) for k in keys),
                                "" if np.isnan(rt) else f"{rt:.6f}"))
        written.append(path)
        if workload is not None:
            path = folder / f"{safe_name(name)}-flows.csv"
            flows = result["flows"]
            with path.open("w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(("start", "client", "sport", "server", "outcome", "response",
                            "wait"))
                for k in range(len(workload)):
                    d = int(flows["dest"][k])
                    oc = int(flows["outcome"][k])
                    w.writerow((f"{workload.start[k]:.6f}",
                                str(ipaddress.IPv4Address(int(workload.caddr[k]))),
                                int(workload.sport[k]), servers[d] if d >= 0 else "",
                                OUTCOMES[oc] if oc >= 0 else "",
                                "" if np.isnan(flows["response"][k])
                                else f"{flows['response'][k]:.6f}",
                                "" if np.isnan(flows["wait"][k]) else f"{flows['wait'][k]:.6f}"))
            written.append(path)
    return written


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(comparison: dict):
    """The terminal table (a rich Table)."""
    from rich.table import Table

    t = Table(title="pyvs sim: " + ", ".join(f"{k}={v}" for k, v in
                                            comparison.get("workload", {}).items()
                                            if k in ("kind", "flows", "arrivals", "file")))
    events = any("disruption" in s for s in comparison["schedulers"].values())
    cols = ["scheduler", "flows/s", "events/s", "imbalance", "jain", "persist hit",
            "resp p50 ms", "resp p99 ms", "refused", "failed", "broken"]
    if events:
        cols += ["disrupted flows", "remapped clients"]
    for c in cols:
        t.add_column(c, justify="left" if c == "scheduler" else "right")
    for name, s in comparison["schedulers"].items():
        row = summary_row(name, s)
        ms = [None if row[k] is None else row[k] * 1000 for k in ("response_p50",
                                                                    "response_p99")]
        cells = [name.rsplit("/", 1)[-1], f"{row['flows_per_second']:,}",
                 f"{row['events_per_second']:,}",
                 _fmt(row["imbalance"]), _fmt(row["jain"]),
                 _fmt(row["persistence_hit_rate"]), _fmt(ms[0], 1), _fmt(ms[1], 1),
                 str(row["refusals"]), str(row["failed"]), str(row["broken"])]
        if events:
            cells += [_fmt(row["disruption_flows"]), _fmt(row["disruption_clients"])]
        t.add_row(*cells)
    return t


@contextlib.contextmanager
def progress_bar(schedulers: list[str], flows: int, enabled: bool = True) -> Iterator:
    """A rich progress bar per scheduler; yields the ``progress(name, done)`` callback."""
    if not enabled:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(TextColumn("{task.description:>14}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), transient=False) as bar:
        tasks = {name: bar.add_task(name, total=flows) for name in schedulers}

        def update(name: str, done: int) -> None:
            bar.update(tasks[name], completed=done)

        yield update
