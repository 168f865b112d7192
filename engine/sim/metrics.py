"""What a run measured: per-flow outcomes, per-server time series, and their summary.

Definitions (all per unit of weight, over the servers in service with weight > 0):

* ``imbalance``: max/mean of the active connections (IPVS's ActiveConn, what lc/wlc
  see), averaged over the sampling instants; ``imbalance_flows``: max/mean of the
  connections each server received over the whole run (the Maglev paper's balance).
* ``jain``: Jain's fairness index (sum x)^2 / (n sum x^2) of the same loads (1 = even),
  time-averaged; ``jain_flows`` for the totals.
* ``persistence_hit_rate``: of the flows whose client had an earlier flow to the same
  service, the share sent to the same real server as that earlier flow.
* ``disruption`` per timeline event (the Maglev paper's measure): ``existing_flows``,
  the share of the flows open at the event that were later broken (their server lost
  them or the director dropped their packets) before the next event; ``clients``,
  the share of the clients active both before the event and before the next one whose
  first flow after the event that reached a live server went to another server than
  their last flow before it (connections sent to a dead server before the health
  checker noticed are not an answer yet).
* ``refused`` (the server's queue was full), ``failed`` (sent to a dead server),
  ``no_destination`` (the director had none: ICMP unreachable), ``drops`` (the
  director's drop counters by reason).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pyvs.engine.sim.events import Event
    from pyvs.engine.sim.runner import Run

# What became of a flow
SERVED, NODEST, REFUSED, FAILED, BROKEN = range(5)
OUTCOMES = ("served", "no_destination", "refused", "failed", "broken")


def jain(x: np.ndarray) -> float:
    """Jain's fairness index of the loads x (1.0 = perfectly even)."""
    x = np.asarray(x, dtype=np.float64)
    s2 = float((x * x).sum())
    return float(x.sum() ** 2 / (len(x) * s2)) if s2 > 0 else 1.0


def max_over_mean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    m = float(x.mean()) if len(x) else 0.0
    return float(x.max() / m) if m > 0 else 1.0


def persistence_hits(service: np.ndarray, client: np.ndarray, dest: np.ndarray
                     ) -> tuple[int, int]:
    """(repeat flows, of which sent to the previous flow's server), in arrival order."""
    ok = dest >= 0
    svc, cl, ds = service[ok], client[ok], dest[ok]
    order = np.lexsort((np.arange(len(cl)), cl, svc))
    svc, cl, ds = svc[order], cl[order], ds[order]
    same = (svc[1:] == svc[:-1]) & (cl[1:] == cl[:-1])
    return int(same.sum()), int((same & (ds[1:] == ds[:-1])).sum())


def clients_remapped(start: np.ndarray, client: np.ndarray, dest: np.ndarray, t0: float,
                     t1: float) -> tuple[int, int]:
    """(clients seen before t0 and in [t0, t1), of which moved to another server)."""
    ok = dest >= 0
    st, cl, ds = start[ok], client[ok], dest[ok]
    before = st < t0
    after = (st >= t0) & (st < t1)
    last_before: dict[int, int] = dict(zip(cl[before].tolist(), ds[before].tolist(),
                                           strict=True))  # later flows overwrite earlier
    first_after: dict[int, int] = {}
    for c, d in zip(cl[after].tolist(), ds[after].tolist(), strict=True):
        first_after.setdefault(c, d)
    both = [c for c in first_after if c in last_before]
    moved = sum(1 for c in both if first_after[c] != last_before[c])
    return len(both), moved


def percentiles(x: np.ndarray) -> dict:
    x = x[~np.isnan(x)]
    if not len(x):
        return {"count": 0}
    p = np.percentile(x, [50, 95, 99])
    return {"count": int(len(x)), "mean": float(x.mean()), "p50": float(p[0]),
            "p95": float(p[1]), "p99": float(p[2]), "max": float(x.max())}


class Recorder:
    """Collects a Run's measurements while it runs (sample/assigned/finish/event) and
    turns them into plain dicts and numpy arrays (result)."""

    def __init__(self, run: Run, n: int) -> None:
        self.run = run
        # plain lists while running (a list store is cheaper than a numpy one),
        # numpy arrays once result() is called
        nan = math.nan
        self.dest: list | np.ndarray = [-1] * n
        self.outcome: list | np.ndarray = [-1] * n
        self.response: list | np.ndarray = [nan] * n
        self.wait: list | np.ndarray = [nan] * n
        self.end: list | np.ndarray = [nan] * n
        self.interval = 1.0
        self.times: list[float] = []
        self.rows: list[tuple[list, ...]] = []  # per sample: active, inactive, in_system...
        self.events: list[tuple[Event, np.ndarray]] = []
        self.initial_weights = [s.weight for s in run.cluster.servers]

    def assigned(self, i: int, server: int) -> None:
        self.dest[i] = server

    def finish(self, i: int, outcome: int, t: float, response: float,
               wait: float = math.nan) -> None:
        self.outcome[i] = outcome
        self.end[i] = t
        self.response[i] = response
        self.wait[i] = wait

    def event(self, event: Event, open_ids: list[int]) -> None:
        self.events.append((event, np.asarray(open_ids, dtype=np.int64)))

    def sample(self, t: float) -> None:
        run = self.run
        active, inactive, nbytes, conns, weight = [], [], [], [], []
        for index, dests in enumerate(run.dests):
            a = i = b = c = 0
            for d in dests:
                a += d.activeconns
                i += d.inactconns
                st = d.stats
                b += st.inbytes + st.outbytes
                c += st.conns
            active.append(a)
            inactive.append(i)
            nbytes.append(b)
            conns.append(c)
            weight.append(dests[0].weight if run.in_service[index] and dests else 0)
        in_system = [s.in_system for s in run.servers]
        self.times.append(t)
        self.rows.append((active, inactive, in_system, nbytes, conns, weight))

    # -- the result ----------------------------------------------------------------------
    def series(self) -> dict[str, np.ndarray]:
        width = len(self.run.dests)

        def column(k: int, dtype=np.int64) -> np.ndarray:
            out = np.zeros((len(self.rows), width), dtype=dtype)
            for r, row in enumerate(self.rows):
                out[r, :len(row[k])] = row[k]
            return out

        cum_bytes, cum_conns = column(3), column(4)
        times = np.asarray(self.times)
        return {"time": times, "active": column(0), "inactive": column(1),
                "in_system": column(2), "weight": column(5),
                "bytes": np.diff(cum_bytes, axis=0, prepend=0),
                "conns": np.diff(cum_conns, axis=0, prepend=0),
                "response": self.response_series(times, width)}

    def response_series(self, times: np.ndarray, width: int) -> np.ndarray:
        """Mean response time per sampling interval and server, of the requests that
        finished in the interval ending at each sample (NaN: none finished)."""
        done = ~np.isnan(self.response) & (self.dest >= 0)
        out = np.full((len(times), width), np.nan)
        if not done.any() or not len(times):
            return out
        row = np.searchsorted(times, self.end[done], side="left").clip(0, len(times) - 1)
        col = self.dest[done].astype(np.int64)
        total = np.zeros((len(times), width))
        count = np.zeros((len(times), width))
        np.add.at(total, (row, col), self.response[done])
        np.add.at(count, (row, col), 1)
        np.divide(total, count, out=out, where=count > 0)
        return out

    def _to_arrays(self) -> None:
        self.dest = np.asarray(self.dest, dtype=np.int16)
        self.outcome = np.asarray(self.outcome, dtype=np.int8)
        self.response = np.asarray(self.response, dtype=np.float64)
        self.wait = np.asarray(self.wait, dtype=np.float64)
        self.end = np.asarray(self.end, dtype=np.float64)

    def result(self, wall: float, calls: int) -> dict:
        self._to_arrays()
        run = self.run
        wl = run.workload
        n = len(wl)
        series = self.series()
        active, weight = series["active"], series["weight"]
        imb, fair = [], []
        for a_row, w_row in zip(active, weight, strict=True):
            live = w_row > 0
            if live.sum() == 0:
                continue
            x = a_row[live] / w_row[live]
            if x.sum() > 0:
                imb.append(max_over_mean(x))
                fair.append(jain(x))
        names = [s.name for s in run.cluster.servers]
        counts = np.bincount(self.dest[self.dest >= 0], minlength=len(names))[:len(names)]
        w0 = np.array(self.initial_weights + [s.weight for s in
                                              run.cluster.servers[len(self.initial_weights):]],
                      dtype=np.float64)
        base = w0 > 0
        per_weight = counts[base] / w0[base] if base.any() else np.zeros(1)
        repeats, hits = persistence_hits(wl.service, wl.caddr, self.dest)
        outcomes = np.bincount(self.outcome[self.outcome >= 0], minlength=5)
        total_bytes = series["bytes"].sum(axis=0)
        per_server = {}
        for s, name in enumerate(names):
            mine = self.dest == s
            per_server[name] = {
                "addr": run.cluster.servers[s].addr, "weight": int(w0[s]),
                "flows": int(counts[s]), "bytes": int(total_bytes[s]),
                "mean_active": float(active[:, s].mean()) if len(active) else 0.0,
                "max_active": int(active[:, s].max()) if len(active) else 0,
                "response": percentiles(self.response[mine]),
                "refused": int(run.servers[s].refused),
            }
        summary = {
            "scheduler": run.label, "level": run.opt.level, "flows": n,
            "wall_seconds": wall,
            "flows_per_second": n / wall if wall > 0 else 0.0,
            "events_per_second": calls / wall if wall > 0 else 0.0,
            "director_calls": calls,
            "simulated_seconds": float(self.times[-1]) if self.times else 0.0,
            "imbalance": float(np.mean(imb)) if imb else 1.0,
            "imbalance_peak": float(np.max(imb)) if imb else 1.0,
            "imbalance_flows": max_over_mean(per_weight),
            "jain": float(np.mean(fair)) if fair else 1.0,
            "jain_flows": jain(per_weight),
            "persistence_hit_rate": hits / repeats if repeats else None,
            "response_time": percentiles(self.response),
            "wait_time": percentiles(self.wait),
            "outcomes": {name: int(outcomes[k]) for k, name in enumerate(OUTCOMES)},
            "drops": {k: int(v) for k, v in sorted(run.director.drops.items())},
            "refusals": int(outcomes[2]),
            "servers": per_server,
        }
        if self.events:
            summary["disruption"] = self.disruption()
            ev = summary["disruption"]["events"]
            flows = [e["existing_flows_remapped"] for e in ev if e["existing_flows"]]
            clients = [e["clients_remapped"] for e in ev if e["clients"]]
            summary["disruption"]["existing_flows_remapped"] = (float(np.mean(flows))
                                                                if flows else 0.0)
            summary["disruption"]["clients_remapped"] = (float(np.mean(clients))
                                                         if clients else 0.0)
        flows = {"dest": self.dest, "outcome": self.outcome, "response": self.response,
                 "wait": self.wait, "end": self.end}
        return {"summary": summary, "series": series, "flows": flows}

    def disruption(self) -> dict:
        wl = self.run.workload
        times = [e.time for e, _ in self.events] + [math.inf]
        out = []
        for k, (event, open_ids) in enumerate(self.events):
            t0, t1 = event.time, times[k + 1]
            broken = 0
            if len(open_ids):
                oc = self.outcome[open_ids]
                end = self.end[open_ids]
                broken = int(((oc == BROKEN) & (end >= t0) & (end < t1)).sum())
            reached = np.where(self.outcome == FAILED, -1, self.dest)  # dead server: not yet
            seen, moved = clients_remapped(wl.start, wl.caddr, reached, t0, t1)
            out.append({"event": event.label, "time": t0, "existing_flows": len(open_ids),
                        "existing_flows_remapped": broken / len(open_ids) if len(open_ids)
                        else 0.0,
                        "clients": seen, "clients_remapped": moved / seen if seen else 0.0})
        return {"events": out}
