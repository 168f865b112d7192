"""The shared types: what schedulers, forwarders and plugins may import.

Destinations and virtual services as a scheduler sees them (struct ip_vs_dest,
struct ip_vs_service), the flow being scheduled, the counters, the flag bits of
include/uapi/linux/ip_vs.h, and address helpers.  This module imports nothing of
pyvs, so a plugin that imports it pulls in no control plane and no packet path.

Addresses are packed bytes in network order (4 bytes IPv4, 16 bytes IPv6)
everywhere in the engine; only the display code turns them into text.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any

AF_INET = socket.AF_INET
AF_INET6 = socket.AF_INET6
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_SCTP = 132

# Service flags  [include/uapi/linux/ip_vs.h]
SVC_F_PERSISTENT = 0x0001
SVC_F_HASHED = 0x0002
SVC_F_ONEPACKET = 0x0004
SVC_F_SCHED1 = 0x0008
SVC_F_SCHED2 = 0x0010
SVC_F_SCHED3 = 0x0020
SVC_F_SCHED_SH_FALLBACK = SVC_F_SCHED1
SVC_F_SCHED_SH_PORT = SVC_F_SCHED2
SVC_F_SCHED_MH_FALLBACK = SVC_F_SCHED1
SVC_F_SCHED_MH_PORT = SVC_F_SCHED2

# Destination flags
DEST_F_AVAILABLE = 0x0001
DEST_F_OVERLOAD = 0x0002

# Forwarding methods (low bits of the connection flags)
FWD_MASQ = 0
FWD_LOCALNODE = 1
FWD_TUNNEL = 2
FWD_DROUTE = 3
FWD_BYPASS = 4
FWD_MASK = 0x7

# Connection flags a destination hands to every connection bound to it
CONN_F_SYNC = 0x0020
CONN_F_HASHED = 0x0040
CONN_F_NOOUTPUT = 0x0080
CONN_F_INACTIVE = 0x0100
CONN_F_TEMPLATE = 0x1000
CONN_F_ONE_PACKET = 0x2000
CONN_F_DEST_MASK = FWD_MASK | CONN_F_ONE_PACKET

# Template states (ipvsadm -Lnc shows NONE or ASSURED)
CTPL_NONE, CTPL_ASSURED = 0, 1

TUN_TYPE_IPIP = 0
TUN_TYPE_GUE = 1
TUN_TYPE_GRE = 2


@dataclass(eq=False)
class Stats:
    """ip_vs_stats counters (64-bit in the kernel)."""

    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (self.conns, self.inpkts, self.outpkts, self.inbytes, self.outbytes)


def addr_family(addr: bytes) -> int:
    return AF_INET if len(addr) == 4 else AF_INET6


def pack_addr(text: str) -> bytes:
    """'198.18.1.1' or '2001:db8::1' -> packed bytes."""
    return ipaddress.ip_address(text).packed


def format_addr(addr: bytes) -> str:
    return str(ipaddress.ip_address(addr))


class Destination:
    """A real server inside one service (struct ip_vs_dest)."""

    __slots__ = (
        "af", "addr", "port", "weight", "last_weight", "u_threshold", "l_threshold",
        "conn_flags", "tun_type", "tun_port", "tun_flags", "flags",
        "activeconns", "inactconns", "persistconns", "stats", "service",
        "idle_start", "refcnt", "sched_data", "__weakref__",
    )

    def __init__(self, af: int, addr: bytes, port: int) -> None:
        self.af = af
        self.addr = addr
        self.port = port
        self.weight = 0
        self.last_weight = 0
        self.u_threshold = 0
        self.l_threshold = 0
        self.conn_flags = CONN_F_INACTIVE
        self.tun_type = TUN_TYPE_IPIP
        self.tun_port = 0
        self.tun_flags = 0
        self.flags = 0
        self.activeconns = 0
        self.inactconns = 0
        self.persistconns = 0
        self.stats = Stats()
        self.service: VirtualService | None = None
        self.idle_start = 0.0
        self.refcnt = 0  # connections and templates still pointing here
        self.sched_data: object = None  # free for the scheduler's per-dest state

    @property
    def fwd(self) -> int:
        return self.conn_flags & FWD_MASK

    @property
    def available(self) -> bool:
        return bool(self.flags & DEST_F_AVAILABLE)

    @property
    def overloaded(self) -> bool:
        return bool(self.flags & DEST_F_OVERLOAD)

    def conn_overhead(self) -> int:
        """ip_vs_dest_conn_overhead() in include/net/ip_vs.h."""
        return (self.activeconns << 8) + self.inactconns

    def __repr__(self) -> str:
        return f"<Destination {format_addr(self.addr)}:{self.port} w={self.weight}>"


@dataclass
class DestSpec:
    """What ipvsadm -a/-e carries (struct ip_vs_dest_user_kern)."""

    addr: bytes
    port: int
    fwd: int = FWD_DROUTE
    weight: int = 1
    u_threshold: int = 0
    l_threshold: int = 0
    tun_type: int = TUN_TYPE_IPIP
    tun_port: int = 0
    tun_flags: int = 0

    @property
    def af(self) -> int:
        return addr_family(self.addr)


@dataclass
class ServiceSpec:
    """What ipvsadm -A/-E carries (struct ip_vs_service_user_kern)."""

    af: int
    protocol: int
    addr: bytes
    port: int
    fwmark: int = 0
    scheduler: str = "wlc"
    flags: int = 0
    timeout: int = 0
    netmask: int = 0xFFFFFFFF  # IPv4 mask as an int; IPv6 prefix length
    pe_name: str = ""

    @property
    def key(self) -> tuple:
        if self.fwmark:
            return ("fwm", self.af, self.fwmark)
        return (self.af, self.protocol, self.addr, self.port)


SCHED_OUTCOMES = ("scheduled", "no-destination", "error")


class VirtualService:
    """struct ip_vs_service.  destinations[0] is the kernel list head (newest)."""

    def __init__(self, spec: ServiceSpec) -> None:
        self.af = spec.af
        self.protocol = spec.protocol
        self.addr = spec.addr
        self.port = spec.port
        self.fwmark = spec.fwmark
        self.flags = spec.flags | SVC_F_HASHED
        self.timeout = spec.timeout
        self.netmask = spec.netmask
        self.pe_name = spec.pe_name
        self.sched_name = spec.scheduler
        self.scheduler: Any = None  # the bound scheduler (schedulers/base.py)
        self.destinations: list[Destination] = []
        self.stats = Stats()
        self.sched_data: object = None
        # the scheduler's answers (Director._pick), by outcome: `pyvs run --metrics`
        self.sched_decisions: dict[str, int] = dict.fromkeys(SCHED_OUTCOMES, 0)

    @property
    def key(self) -> tuple:
        if self.fwmark:
            return ("fwm", self.af, self.fwmark)
        return (self.af, self.protocol, self.addr, self.port)

    @property
    def persistent(self) -> bool:
        return bool(self.flags & SVC_F_PERSISTENT)

    def find_dest(self, af: int, addr: bytes, port: int) -> Destination | None:
        for d in self.destinations:
            if d.af == af and d.addr == addr and d.port == port:
                return d
        return None

    def __repr__(self) -> str:
        if self.fwmark:
            return f"<VirtualService FWM {self.fwmark}>"
        return f"<VirtualService {self.protocol} {format_addr(self.addr)}:{self.port}>"


@dataclass
class Flow:
    """What a scheduler may know about the packet being scheduled."""

    af: int
    protocol: int
    saddr: bytes
    sport: int
    daddr: bytes
    dport: int
    fwmark: int = 0
    extra: dict = field(default_factory=dict)
