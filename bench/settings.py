"""The bench's run settings and small shared helpers: how long and how often each
measurement runs (quick or full), the repeat spread, the generator-ceiling history
that flags a busy machine, and the progress log."""

from __future__ import annotations

import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


CEILING_LOW = 0.15  # a generator ceiling this far below the best recent one is flagged
CEILING_HISTORY = 10  # runs remembered in bench/results/ceilings.json


def spread_pct(values: list[float]) -> float:
    """(max - min) / median of repeated measurements, in percent (0 for one run)."""
    if len(values) < 2:
        return 0.0
    v = sorted(values)
    mid = v[(len(v) - 1) // 2]
    return round(100.0 * (v[-1] - v[0]) / mid, 1) if mid else 0.0


def remember_ceiling(pps: int, started: str, path: Path | None = None) -> list[int]:
    """Append this run's generator ceiling to the history; the recent ceilings, this
    one included."""
    path = path or RESULTS / "ceilings.json"
    try:
        hist = json.loads(path.read_text())
    except (OSError, ValueError):
        hist = []
    hist = [h for h in hist if isinstance(h, dict) and "ceiling_pps" in h]
    hist.append({"started": started, "ceiling_pps": pps})
    hist = hist[-CEILING_HISTORY:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(hist, indent=1))
    return [h["ceiling_pps"] for h in hist]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Settings:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.repeats = 1 if quick else 3          # loss-free searches per case (median)
        self.trial_s = 1.0 if quick else 2.0      # one offered-rate trial
        self.ratio = 1.10 if quick else 1.05      # search stops when hi/lo is within this
        self.max_trials = 8 if quick else 11
        self.flat_s = 2.0 if quick else 3.0
        self.probes = 1000 if quick else 5000     # ping-pong probes per latency point
        self.probe_s = 2.0 if quick else 6.0
        self.wrk_s = 2.0 if quick else 5.0
        self.wrk_repeats = 1 if quick else 3
        self.mem_sizes = (10_000, 100_000, 1_000_000)
        self.cost_rate = 10_000.0                 # pps of the per-core cost windows
        self.cost_repeats = 3                     # case windows per case (median)
        self.cost_window_s = 2.0 if quick else 4.0  # generator time of one window
        self.cost_tail_s = 0.5                    # window left open after the last send
