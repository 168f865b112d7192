"""Workloads: the flows a simulation offers, as numpy columns, and the synthetic generator.

A ``Workload`` is a table of flows sorted by start time (seconds from 0): client
address (IPv4 as an integer) and source port, the service it asks for (an index
into ``services``), the flow's service demand in seconds (``duration``: what one
unit-speed real server needs to serve it) and its bytes in each direction.  Every
scheduler of one ``pyvs sim`` run is offered the same Workload.

``Synthetic`` draws one from a seed: Poisson, on/off (bursty) or diurnal arrivals;
durations and sizes from engine/sim/distributions.py (lognormal, Pareto, ...); a
client population with Zipf-distributed activity (a few clients make most flows,
which is what sh, mh and persistence react to); and several services sharing the
traffic.  Client addresses come from the benchmarking range 198.18.0.0/15.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field

import numpy as np

from pyvs.engine.sim import distributions
from pyvs.engine.sim.distributions import Distribution

PORT_LOW, PORT_HIGH = 32768, 60999  # Linux's default ip_local_port_range
CLIENT_BASE = int(ipaddress.IPv4Address("198.19.0.0"))  # 65536 clients, then 198.18.128/17
CLIENT_OVERFLOW = int(ipaddress.IPv4Address("198.18.128.0"))
MAX_CLIENTS = 65536 + 32768
ARRIVALS = ("poisson", "onoff", "diurnal")


class WorkloadError(ValueError):
    """A workload that cannot be built or read (the message says why)."""


@dataclass
class ServiceDef:
    """One virtual service the workload addresses (``ipvsadm -A -t|-u vip:port``)."""

    vip: str = "198.18.1.1"
    port: int = 80
    proto: str = "tcp"  # tcp | udp
    share: float = 1.0  # relative share of the flows (synthetic workloads)

    def __post_init__(self) -> None:
        if self.proto not in ("tcp", "udp"):
            raise WorkloadError(f"service protocol must be tcp or udp, not {self.proto!r}")
        try:
            ipaddress.IPv4Address(self.vip)
        except ValueError:
            raise WorkloadError(f"service address {self.vip!r} is not an IPv4 address") \
                from None
        if not 0 <= self.port <= 65535:
            raise WorkloadError(f"service port {self.port} out of range")

    @property
    def label(self) -> str:
        return f"{self.proto.upper()} {self.vip}:{self.port}"


def client_address(k: np.ndarray | int) -> np.ndarray | int:
    """The address of client number k: 198.19.0.0/16 first, then 198.18.128.0/17."""
    k = np.asarray(k, dtype=np.int64)
    if np.any(k >= MAX_CLIENTS) or np.any(k < 0):
        raise WorkloadError(f"at most {MAX_CLIENTS} clients")
    out = np.where(k < 65536, CLIENT_BASE + k, CLIENT_OVERFLOW + (k - 65536))
    return out.astype(np.uint32)


@dataclass
class Workload:
    """Flows sorted by start time; all columns have one entry per flow."""

    start: np.ndarray  # float64 seconds
    duration: np.ndarray  # float64 service demand, seconds at speed 1
    req_bytes: np.ndarray  # int64 client -> server payload bytes
    resp_bytes: np.ndarray  # int64 server -> client payload bytes
    caddr: np.ndarray  # uint32 client IPv4 address
    sport: np.ndarray  # int32 client port
    service: np.ndarray  # int16 index into services
    services: list[ServiceDef] = field(default_factory=lambda: [ServiceDef()])
    description: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.start)
        for name in ("duration", "req_bytes", "resp_bytes", "caddr", "sport", "service"):
            if len(getattr(self, name)) != n:
                raise WorkloadError(f"column {name} has {len(getattr(self, name))} rows, "
                                    f"start has {n}")
        if n and np.any(np.diff(self.start) < 0):
            order = np.argsort(self.start, kind="stable")
            for name in ("start", "duration", "req_bytes", "resp_bytes", "caddr", "sport",
                         "service"):
                setattr(self, name, getattr(self, name)[order])
        if n and (self.service.min() < 0 or self.service.max() >= len(self.services)):
            raise WorkloadError("a flow names a service that the workload does not define")

    def __len__(self) -> int:
        return len(self.start)

    @property
    def span(self) -> float:
        """Seconds from the first arrival to the last."""
        return float(self.start[-1] - self.start[0]) if len(self) else 0.0

    @property
    def clients(self) -> int:
        return int(np.unique(self.caddr).size)

    def head(self, n: int) -> Workload:
        """The first n flows."""
        return Workload(self.start[:n], self.duration[:n], self.req_bytes[:n],
                        self.resp_bytes[:n], self.caddr[:n], self.sport[:n], self.service[:n],
                        list(self.services), dict(self.description))

    def columns(self) -> dict[str, np.ndarray]:
        return {"start": self.start, "duration": self.duration, "req_bytes": self.req_bytes,
                "resp_bytes": self.resp_bytes, "caddr": self.caddr, "sport": self.sport,
                "service": self.service}


def zipf_weights(n: int, s: float) -> np.ndarray:
    """Activity of n clients ranked 1..n: p(k) proportional to k^-s (s = 0: uniform)."""
    w = np.arange(1, n + 1, dtype=np.float64) ** -s
    return w / w.sum()


def ephemeral_ports(rng: np.random.Generator, caddr_index: np.ndarray,
                    n_clients: int) -> np.ndarray:
    """Each client's flows take consecutive ports from a random start, wrapping in the
    ephemeral range (so a busy client reuses ports, as a real one does)."""
    span = PORT_HIGH - PORT_LOW + 1
    base = rng.integers(0, span, n_clients)
    order = np.argsort(caddr_index, kind="stable")  # by client, then arrival
    sorted_idx = caddr_index[order]
    first = np.r_[0, np.flatnonzero(np.diff(sorted_idx)) + 1]
    counts = np.diff(np.r_[first, len(sorted_idx)])
    rank_sorted = np.arange(len(sorted_idx)) - np.repeat(first, counts)
    rank = np.empty_like(rank_sorted)
    rank[order] = rank_sorted
    return (PORT_LOW + (base[caddr_index] + rank) % span).astype(np.int32)


@dataclass
class Synthetic:
    """A synthetic workload: ``generate(seed)`` draws the flows."""

    flows: int = 10_000
    rate: float = 1000.0  # mean arrivals per second
    arrivals: str = "poisson"  # poisson | onoff | diurnal
    on: float = 1.0  # onoff: mean on-period seconds
    off: float = 1.0  # onoff: mean off-period seconds
    period: float = 60.0  # diurnal: seconds per "day"
    amplitude: float = 0.8  # diurnal: rate swings between (1 -/+ amplitude) * rate
    duration: str | Distribution = "lognormal:mean=0.1,sigma=1.0"
    resp_size: str | Distribution = "lognormal:mean=20000,sigma=1.5"
    req_size: str | Distribution = "fixed:value=300"
    clients: int = 1000
    zipf: float = 1.0
    services: list[ServiceDef] = field(default_factory=lambda: [ServiceDef()])

    def __post_init__(self) -> None:
        if self.flows < 1:
            raise WorkloadError("--flows must be at least 1")
        if self.rate <= 0:
            raise WorkloadError("--rate must be positive")
        if self.arrivals not in ARRIVALS:
            raise WorkloadError(f"arrivals must be one of {', '.join(ARRIVALS)}")
        if not 1 <= self.clients <= MAX_CLIENTS:
            raise WorkloadError(f"--clients must be 1..{MAX_CLIENTS}")
        if self.on <= 0 or self.off < 0 or self.period <= 0 or not 0 <= self.amplitude < 1:
            raise WorkloadError("on > 0, off >= 0, period > 0 and 0 <= amplitude < 1")
        if not self.services:
            raise WorkloadError("a workload needs at least one service")
        self.duration = distributions.parse(self.duration)
        self.resp_size = distributions.parse(self.resp_size)
        self.req_size = distributions.parse(self.req_size)

    def arrival_times(self, rng: np.random.Generator) -> np.ndarray:
        n = self.flows
        if self.arrivals == "poisson":
            return np.cumsum(rng.exponential(1.0 / self.rate, n))
        if self.arrivals == "onoff":
            return self._onoff(rng, n)
        return self._diurnal(rng, n)

    def _onoff(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Poisson while on, silent while off; the long-run mean rate stays ``rate``."""
        rate_on = self.rate * (self.on + self.off) / self.on
        on_time = np.cumsum(rng.exponential(1.0 / rate_on, n))
        periods = int(on_time[-1] / self.on * 2) + 16
        on_lens = rng.exponential(self.on, periods)
        off_lens = rng.exponential(self.off, periods) if self.off > 0 else np.zeros(periods)
        while on_lens.sum() < on_time[-1]:
            on_lens = np.r_[on_lens, rng.exponential(self.on, periods)]
            off_lens = np.r_[off_lens, rng.exponential(self.off, periods)
                             if self.off > 0 else np.zeros(periods)]
        k = np.searchsorted(np.cumsum(on_lens), on_time, side="right")
        gaps = np.r_[0.0, np.cumsum(off_lens)]
        return on_time + gaps[k]

    def _diurnal(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Rate r(t) = rate * (1 + amplitude * sin(2 pi t / period)) by time rescaling:
        unit-rate arrivals mapped through the inverse of the integrated rate."""
        unit = np.cumsum(rng.exponential(1.0, n))
        w = 2 * math.pi / self.period
        a = self.amplitude

        def integrated(t: np.ndarray) -> np.ndarray:
            return self.rate * (t + a / w * (1 - np.cos(w * t)))

        end = unit[-1] / self.rate * 1.2 + self.period
        grid = np.linspace(0.0, end, max(4096, int(end / self.period * 2048)))
        return np.interp(unit, integrated(grid), grid)

    def generate(self, seed: int = 0) -> Workload:
        rng = np.random.default_rng(seed)
        n = self.flows
        start = self.arrival_times(rng)
        cdf = np.cumsum(zipf_weights(self.clients, self.zipf))
        rank = np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), self.clients - 1)
        who = rng.permutation(self.clients)[rank]  # hot clients spread over the range
        shares = np.array([s.share for s in self.services], dtype=np.float64)
        if np.any(shares < 0) or shares.sum() <= 0:
            raise WorkloadError("service shares must be >= 0 and not all 0")
        service = (np.searchsorted(np.cumsum(shares / shares.sum()), rng.random(n),
                                   side="right").clip(0, len(shares) - 1).astype(np.int16))
        duration = self.duration.sample(rng, n)
        resp = np.maximum(self.resp_size.sample(rng, n), 0).astype(np.int64)
        req = np.maximum(self.req_size.sample(rng, n), 0).astype(np.int64)
        sport = ephemeral_ports(rng, who, self.clients)
        desc = {"kind": "synthetic", "flows": n, "rate": self.rate, "arrivals": self.arrivals,
                "duration": str(self.duration), "resp_size": str(self.resp_size),
                "req_size": str(self.req_size), "clients": self.clients, "zipf": self.zipf,
                "seed": seed}
        if self.arrivals == "onoff":
            desc.update(on=self.on, off=self.off)
        elif self.arrivals == "diurnal":
            desc.update(period=self.period, amplitude=self.amplitude)
        return Workload(start, duration, req, resp, client_address(who), sport, service,
                        list(self.services), desc)
