"""What a `pyvs trace` subscriber wants to see: clients, VIPs, real servers, services.

Criteria of one kind are alternatives (``--client A --client B``: either client);
different kinds must all hold (``--client A --vip V``: A's packets to or from V).
A packet is judged on its flow: the connection it was bound to (client, virtual
address, real server, service) or, without one, its own addresses and the service
it was looked up in.

The fast ports decide per batch which frames must take the per-packet path so the
tracer sees them (``necessary_addrs``): every frame a filter can match has one of
those addresses as its source or destination.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

PROTOCOLS = {"tcp": 6, "udp": 17}


class FilterError(ValueError):
    """A filter a user typed that cannot be understood (one clear line)."""


def parse_addr(text: str) -> bytes:
    try:
        return ipaddress.ip_address(text.strip("[]")).packed
    except ValueError:
        raise FilterError(f"not an IP address: {text!r}") from None


def parse_endpoint(text: str) -> tuple[bytes, int | None]:
    """ADDR, ADDR:PORT, [V6ADDR] or [V6ADDR]:PORT (a bare IPv6 address has no port)."""
    host, port = text, None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise FilterError(f"bad address:port {text!r}")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    addr = parse_addr(host)
    if port is None:
        return addr, None
    try:
        value = int(port)
    except ValueError:
        raise FilterError(f"bad port in {text!r}") from None
    if not 0 <= value <= 65535:
        raise FilterError(f"port out of range in {text!r}")
    return addr, value


def show_addr(addr: bytes) -> str:
    return str(ipaddress.ip_address(addr))


def show_endpoint(addr: bytes, port: int | None) -> str:
    a = show_addr(addr)
    if port is None:
        return a
    return f"[{a}]:{port}" if len(addr) == 16 else f"{a}:{port}"


@dataclass(frozen=True)
class ServiceSpec:
    """A service as ipvsadm names it: -t/-u ADDR:PORT or -f MARK."""

    protocol: int = 0  # 6, 17; 0 for a fwmark service
    addr: bytes = b""
    port: int = 0
    fwmark: int = 0

    @classmethod
    def parse(cls, kind: str, text: str) -> ServiceSpec:
        if kind == "fwm":
            try:
                mark = int(text, 0)
            except ValueError:
                raise FilterError(f"bad firewall mark {text!r}") from None
            if not 0 < mark < 1 << 32:
                raise FilterError(f"firewall mark out of range: {text!r}")
            return cls(fwmark=mark)
        addr, port = parse_endpoint(text)
        if port is None:
            raise FilterError(f"a service needs ADDR:PORT, not {text!r}")
        return cls(PROTOCOLS[kind], addr, port)

    def matches(self, svc) -> bool:
        if svc is None:
            return False
        if self.fwmark:
            return svc.fwmark == self.fwmark
        return (not svc.fwmark and svc.protocol == self.protocol and svc.addr == self.addr
                and svc.port == self.port)

    def __str__(self) -> str:
        if self.fwmark:
            return f"-f {self.fwmark}"
        kind = "-t" if self.protocol == 6 else "-u"
        return f"{kind} {show_endpoint(self.addr, self.port)}"


@dataclass
class FlowView:
    """What a filter looks at: the flow a packet belongs to (see the module doc)."""

    saddr: bytes
    sport: int
    daddr: bytes
    dport: int
    client: tuple[bytes, int] | None = None  # from the connection, when there is one
    vip: tuple[bytes, int] | None = None
    real_server: tuple[bytes, int] | None = None
    service: object = None


def _hit(want: tuple[bytes, int | None], have: tuple[bytes, int] | None) -> bool:
    return have is not None and want[0] == have[0] and (want[1] is None or want[1] == have[1])


@dataclass
class TraceFilter:
    clients: list[bytes] = field(default_factory=list)
    vips: list[tuple[bytes, int | None]] = field(default_factory=list)
    real_servers: list[tuple[bytes, int | None]] = field(default_factory=list)
    services: list[ServiceSpec] = field(default_factory=list)

    # -- transport (the control socket carries JSON) -------------------------------------
    def to_json(self) -> dict:
        return {"clients": [show_addr(a) for a in self.clients],
                "vips": [show_endpoint(*v) for v in self.vips],
                "real_servers": [show_endpoint(*r) for r in self.real_servers],
                "services": [str(s) for s in self.services]}

    @classmethod
    def from_json(cls, data: dict) -> TraceFilter:
        if not isinstance(data, dict):
            raise FilterError("the trace filter must be an object")
        services = []
        for text in data.get("services", []):
            flag, _, value = str(text).partition(" ")
            kind = {"-t": "tcp", "-u": "udp", "-f": "fwm"}.get(flag)
            if kind is None:
                raise FilterError(f"bad service {text!r}")
            services.append(ServiceSpec.parse(kind, value))
        return cls(clients=[parse_addr(str(a)) for a in data.get("clients", [])],
                   vips=[parse_endpoint(str(v)) for v in data.get("vips", [])],
                   real_servers=[parse_endpoint(str(r)) for r in data.get("real_servers", [])],
                   services=services)

    def describe(self) -> str:
        parts = [f"client {show_addr(a)}" for a in self.clients]
        parts += [f"VIP {show_endpoint(*v)}" for v in self.vips]
        parts += [f"real server {show_endpoint(*r)}" for r in self.real_servers]
        parts += [f"service {s}" for s in self.services]
        return " and ".join(" or ".join(p for p in group) for group in self._groups(parts)) \
            or "every packet"

    def _groups(self, parts: list[str]) -> list[list[str]]:
        groups: dict[str, list[str]] = {}
        for p in parts:
            groups.setdefault(p.split(" ")[0], []).append(p)
        return list(groups.values())

    # -- matching -------------------------------------------------------------------------
    def matches(self, v: FlowView) -> bool:
        src, dst = (v.saddr, v.sport), (v.daddr, v.dport)
        if self.clients:
            seen = [v.client[0]] if v.client is not None else [v.saddr, v.daddr]
            if not any(c in seen for c in self.clients):
                return False
        if self.vips:
            ends = [v.vip] if v.vip is not None else [dst, src]
            if not any(_hit(w, e) for w in self.vips for e in ends):
                return False
        if self.real_servers:
            ends = [v.real_server] if v.real_server is not None else [src, dst]
            if not any(_hit(w, e) for w in self.real_servers for e in ends):
                return False
        if self.services and not any(s.matches(v.service) for s in self.services):
            return False
        return True

    def necessary_addrs(self, services) -> set[bytes] | None:
        """Addresses one of which every matching packet carries as source or destination
        (None: any packet may match), from the service table ``services``: a VIP's
        replies come from its real servers, a real server's requests go to its VIPs."""
        if self.clients:
            return set(self.clients)
        if self.vips:
            out = {a for a, _ in self.vips}
            for svc in services:
                if not svc.fwmark and any(_hit(w, (svc.addr, svc.port)) for w in self.vips):
                    out.update(d.addr for d in svc.destinations)
            return out
        if self.real_servers:
            out = {a for a, _ in self.real_servers}
            for svc in services:
                if any(_hit(w, (d.addr, d.port)) for w in self.real_servers
                       for d in svc.destinations):
                    if svc.fwmark:
                        return None  # a fwmark service's requests go to any address
                    out.add(svc.addr)
            return out
        if self.services:
            out = set()
            for svc in services:
                if any(s.matches(svc) for s in self.services):
                    if svc.fwmark:
                        return None
                    out.add(svc.addr)
                    out.update(d.addr for d in svc.destinations)
            return out
        return None
