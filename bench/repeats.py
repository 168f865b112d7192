"""Summaries of repeated trials: on this shared VM one trial says little, so the
A/B benches (scrape_bench, health_storm) run each mode several times, interleaved, and
report the median, the range and each repeat's change against the baseline mode of the
same repeat (``runs``: one {mode: rate} dict per repeat)."""

from __future__ import annotations

import statistics


def summary(runs: list[dict[str, float]], mode: str, baseline: str) -> dict:
    """``mode``'s rates over the repeats; for a mode other than ``baseline`` also the
    change against it, repeat by repeat (``change_vs_<baseline>_pct``) and its median."""
    rates = [r[mode] for r in runs]
    out = {"runs": [round(r) for r in rates], "median": round(statistics.median(rates)),
           "min": round(min(rates)), "max": round(max(rates))}
    if mode != baseline:
        changes = [100 * (r[mode] / r[baseline] - 1) for r in runs]
        out[f"change_vs_{baseline}_pct"] = [round(c, 1) for c in changes]
        out["median_change_pct"] = round(statistics.median(changes), 1)
    return out
