"""The real servers of a simulation: what ipvsadm knows of them and how fast they serve.

A ``ServerSpec`` is one real server: its name and address, the weight and
thresholds ``ipvsadm -a -w -x -y`` would give it, and the server model's view
(engine/sim/servers.py): ``capacity`` requests served at once (0 = unlimited),
``speed`` (a flow's service demand divided by it is its service time), an optional
``service`` distribution that replaces the flow's own demand, and ``queue`` (how
many requests may wait for a free slot before new connections are refused with a
RST; None = unlimited).  Weights, capacities and speeds may differ from server to
server (heterogeneous clusters).  Every service of the workload gets every server.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pyvs.engine.sim import distributions
from pyvs.engine.sim.distributions import Distribution, DistributionError

SERVER_BASE = int(ipaddress.IPv4Address("198.18.2.11"))
FWD_METHODS = ("nat", "dr")


class ClusterError(ValueError):
    """A cluster description that cannot be used (the message says why)."""


@dataclass
class ServerSpec:
    name: str
    addr: str
    weight: int = 1
    capacity: int = 0
    speed: float = 1.0
    service: str | Distribution | None = None
    queue: int | None = None
    u_threshold: int = 0
    l_threshold: int = 0

    def __post_init__(self) -> None:
        try:
            ipaddress.IPv4Address(self.addr)
        except ValueError:
            raise ClusterError(f"server {self.name}: {self.addr!r} is not an IPv4 address") \
                from None
        if self.weight < 0 or self.capacity < 0 or self.speed <= 0:
            raise ClusterError(f"server {self.name}: weight >= 0, capacity >= 0, speed > 0")
        if self.queue is not None and self.queue < 0:
            raise ClusterError(f"server {self.name}: queue must be >= 0")
        if self.l_threshold > self.u_threshold:
            raise ClusterError(f"server {self.name}: lower threshold above upper")
        if self.service is not None:
            try:
                self.service = distributions.parse(self.service)
            except DistributionError as err:
                raise ClusterError(f"server {self.name}: {err}") from None

    def as_dict(self) -> dict:
        d = asdict(self)
        d["service"] = str(self.service) if self.service is not None else None
        return d


@dataclass
class Cluster:
    servers: list[ServerSpec] = field(default_factory=list)
    fwd: str = "nat"  # nat (replies through the director) | dr (requests only)

    def __post_init__(self) -> None:
        if self.fwd not in FWD_METHODS:
            raise ClusterError(f"forwarding method must be one of {', '.join(FWD_METHODS)}")
        names = [s.name for s in self.servers]
        addrs = [s.addr for s in self.servers]
        if len(set(names)) != len(names) or len(set(addrs)) != len(addrs):
            raise ClusterError("server names and addresses must be unique")

    def __len__(self) -> int:
        return len(self.servers)

    def by_name(self, name: str) -> ServerSpec:
        for s in self.servers:
            if s.name == name or s.addr == name:
                return s
        raise ClusterError(f"no server named {name!r} (known: "
                           f"{', '.join(s.name for s in self.servers)})")

    @classmethod
    def uniform(cls, n: int, weights: list[int] | None = None, capacity: int = 0,
                speeds: list[float] | None = None, queue: int | None = None,
                service: str | None = None, fwd: str = "nat") -> Cluster:
        """n servers rs1..rsN at 198.18.2.11..; per-server lists cycle if shorter."""
        if not 1 <= n <= 1000:
            raise ClusterError("1..1000 real servers")
        weights = weights or [1]
        speeds = speeds or [1.0]
        servers = [ServerSpec(f"rs{i + 1}", str(ipaddress.IPv4Address(SERVER_BASE + i)),
                              weight=weights[i % len(weights)], capacity=capacity,
                              speed=speeds[i % len(speeds)], service=service, queue=queue)
                   for i in range(n)]
        return cls(servers, fwd)

    @classmethod
    def from_json(cls, path: str | Path) -> Cluster:
        """``{"fwd": "nat", "servers": [{"name": "rs1", "addr": "198.18.2.11",
        "weight": 2, "capacity": 8, "speed": 1.5, "service": "exp:mean=0.05"}, ...]}``"""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise ClusterError(f"cannot read cluster file {path}: {err}") from None
        if not isinstance(data, dict) or not isinstance(data.get("servers"), list):
            raise ClusterError(f"{path}: expected {{\"servers\": [...]}}")
        known = set(ServerSpec.__dataclass_fields__)
        servers = []
        for i, item in enumerate(data["servers"]):
            if not isinstance(item, dict):
                raise ClusterError(f"{path}: server {i} is not an object")
            unknown = set(item) - known
            if unknown:
                raise ClusterError(f"{path}: server {i}: unknown fields {sorted(unknown)}")
            item = dict(item)
            item.setdefault("name", f"rs{i + 1}")
            if "addr" not in item:
                item["addr"] = str(ipaddress.IPv4Address(SERVER_BASE + i))
            try:
                servers.append(ServerSpec(**item))
            except TypeError as err:
                raise ClusterError(f"{path}: server {i}: {err}") from None
        return cls(servers, data.get("fwd", "nat"))

    def as_dict(self) -> dict:
        return {"fwd": self.fwd, "servers": [s.as_dict() for s in self.servers]}
