"""Virtual services and destinations, and the table that manages them.

Mirrors ip_vs_ctl.c: destinations are inserted at the *head* of a service's
list (newest first, list_add_rcu), deleted destinations go to a trash list from
which re-adding resurrects the same object with its counters, and every add,
edit or delete calls the scheduler's hooks.  Errors carry the kernel's errno so
pyvsadm can print ipvsadm's messages.

Addresses are packed bytes in network order (4 bytes IPv4, 16 bytes IPv6)
everywhere in the engine; only the display code turns them into text.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyvs.schedulers.base import Scheduler, SchedulerEnv

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
CONN_F_NOOUTPUT = 0x0080
CONN_F_INACTIVE = 0x0100
CONN_F_ONE_PACKET = 0x2000
CONN_F_DEST_MASK = FWD_MASK | CONN_F_ONE_PACKET

TUN_TYPE_IPIP = 0
TUN_TYPE_GUE = 1
TUN_TYPE_GRE = 2

PERSISTENT_TIMEOUT_DEFAULT = 360  # libipvs IPVS_SVC_PERSISTENT_TIMEOUT (6*60)
MAX_TIMEOUT = 31 * 24 * 60 * 60
DEST_TRASH_PERIOD = 120.0  # IP_VS_DEST_TRASH_PERIOD
CONN_TAB_SIZE = 4096  # 1 << CONFIG_IP_VS_TAB_BITS (12)


class IPVSError(Exception):
    """A refused control operation; .errno is what the kernel would return."""

    def __init__(self, err: int, message: str = "") -> None:
        super().__init__(message or errno.errorcode.get(err, str(err)))
        self.errno = err


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
        self.scheduler: Scheduler | None = None
        self.destinations: list[Destination] = []
        self.stats = Stats()
        self.sched_data: object = None

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


class ServiceTable:
    """The control plane of ip_vs_ctl.c: services, destinations, trash, timeouts."""

    def __init__(self, sched_env: SchedulerEnv) -> None:
        self.env = sched_env
        self.services: dict[tuple, VirtualService] = {}
        self.trash: list[Destination] = []
        self._port21 = 0  # number of TCP services on port 21 (FTP data fallback)
        self._port0 = 0  # number of port-0 services
        self.generation = 0  # bumped on every change (for the plumbing to resync)
        self.unlink_hooks: list = []  # called with each destination that is deleted

    # -- lookup (ip_vs_service_find) -------------------------------------------------
    def find(self, af: int, protocol: int, addr: bytes, port: int,
             fwmark: int = 0) -> VirtualService | None:
        """Service lookup in the kernel's order: fwmark, exact, FTP data, port 0."""
        services = self.services
        if fwmark:
            svc = services.get(("fwm", af, fwmark))
            if svc is not None:
                return svc
        svc = services.get((af, protocol, addr, port))
        if svc is not None:
            return svc
        if self._port21 and protocol == IPPROTO_TCP and (port == 20 or port >= 1024):
            svc = services.get((af, protocol, addr, 21))
            if svc is not None:
                return svc
        if self._port0:
            return services.get((af, protocol, addr, 0))
        return None

    def get(self, key: tuple) -> VirtualService:
        svc = self.services.get(key)
        if svc is None:
            raise IPVSError(errno.ESRCH, "No such service")
        return svc

    # -- services ----------------------------------------------------------------------
    def _bind_scheduler(self, svc: VirtualService, name: str) -> None:
        from pyvs.schedulers.registry import create

        svc.scheduler = create(name, svc, self.env)  # raises IPVSError(ENOENT)
        svc.sched_name = name

    def _check_service(self, spec: ServiceSpec) -> None:
        if spec.af == AF_INET6 and spec.flags & SVC_F_PERSISTENT:
            if not 1 <= spec.netmask <= 128:
                raise IPVSError(errno.EINVAL)
        if spec.timeout < 0 or spec.timeout > MAX_TIMEOUT:
            raise IPVSError(errno.EINVAL)

    def add_service(self, spec: ServiceSpec) -> VirtualService:
        self._check_service(spec)
        if spec.key in self.services:
            raise IPVSError(errno.EEXIST, "Service already exists")
        svc = VirtualService(spec)
        self._bind_scheduler(svc, spec.scheduler)
        self.services[spec.key] = svc
        self._count_special(svc, +1)
        self.generation += 1
        return svc

    def edit_service(self, spec: ServiceSpec) -> VirtualService:
        self._check_service(spec)
        svc = self.get(spec.key)
        if spec.scheduler != svc.sched_name:
            old = svc.scheduler
            self._bind_scheduler(svc, spec.scheduler)
            if old is not None:
                old.done_service(svc)
        svc.flags = spec.flags | SVC_F_HASHED
        svc.timeout = spec.timeout
        svc.netmask = spec.netmask
        svc.pe_name = spec.pe_name
        self.generation += 1
        return svc

    def del_service(self, key: tuple, now: float) -> None:
        svc = self.get(key)
        self._count_special(svc, -1)
        del self.services[key]
        for dest in list(svc.destinations):
            self._unlink_dest(svc, dest, now, sched_hook=False)
        if svc.scheduler is not None:
            svc.scheduler.done_service(svc)
        self.generation += 1

    def flush(self, now: float) -> None:
        for key in list(self.services):
            self.del_service(key, now)

    def _count_special(self, svc: VirtualService, delta: int) -> None:
        if svc.fwmark:
            return
        if svc.protocol == IPPROTO_TCP and svc.port == 21:
            self._port21 += delta
        if svc.port == 0:
            self._port0 += delta

    # -- destinations ------------------------------------------------------------------
    @staticmethod
    def _check_dest(spec: DestSpec) -> None:
        if spec.weight < 0:
            raise IPVSError(errno.ERANGE)
        if spec.l_threshold > spec.u_threshold:
            raise IPVSError(errno.ERANGE)
        if spec.tun_type == TUN_TYPE_GUE and spec.fwd == FWD_TUNNEL and spec.tun_port == 0:
            raise IPVSError(errno.EINVAL)

    def _update_dest(self, svc: VirtualService, dest: Destination, spec: DestSpec,
                     add: bool) -> None:
        """__ip_vs_update_dest()."""
        conn_flags = (spec.fwd & CONN_F_DEST_MASK) | CONN_F_INACTIVE
        if spec.fwd != FWD_MASQ:
            conn_flags |= CONN_F_NOOUTPUT
        dest.conn_flags = conn_flags
        dest.tun_type, dest.tun_port, dest.tun_flags = spec.tun_type, spec.tun_port, \
            spec.tun_flags
        dest.weight = spec.weight
        if add or spec.weight != 0:
            dest.last_weight = spec.weight
        if not spec.u_threshold or dest.u_threshold < spec.u_threshold:
            dest.flags &= ~DEST_F_OVERLOAD
        dest.u_threshold = spec.u_threshold
        dest.l_threshold = spec.l_threshold
        dest.flags |= DEST_F_AVAILABLE
        dest.service = svc
        if add:
            svc.destinations.insert(0, dest)  # list_add_rcu: at the head
            if svc.scheduler is not None:
                svc.scheduler.add_dest(svc, dest)
        elif svc.scheduler is not None:
            svc.scheduler.upd_dest(svc, dest)
        self.generation += 1

    def add_dest(self, key: tuple, spec: DestSpec) -> Destination:
        svc = self.get(key)
        self._check_dest(spec)
        if svc.find_dest(spec.af, spec.addr, spec.port) is not None:
            raise IPVSError(errno.EEXIST, "Destination already exists")
        dest = self._trash_get(svc, spec)
        if dest is None:
            dest = Destination(spec.af, spec.addr, spec.port)
        self._update_dest(svc, dest, spec, add=True)
        return dest

    def edit_dest(self, key: tuple, spec: DestSpec) -> Destination:
        svc = self.get(key)
        self._check_dest(spec)
        dest = svc.find_dest(spec.af, spec.addr, spec.port)
        if dest is None:
            raise IPVSError(errno.ENOENT, "No such destination")
        self._update_dest(svc, dest, spec, add=False)
        return dest

    def del_dest(self, key: tuple, af: int, addr: bytes, port: int, now: float) -> None:
        svc = self.get(key)
        dest = svc.find_dest(af, addr, port)
        if dest is None:
            raise IPVSError(errno.ENOENT, "No such destination")
        self._unlink_dest(svc, dest, now, sched_hook=True)

    def _unlink_dest(self, svc: VirtualService, dest: Destination, now: float,
                     sched_hook: bool) -> None:
        """__ip_vs_unlink_dest + __ip_vs_del_dest: unlink, then park in the trash."""
        dest.flags &= ~DEST_F_AVAILABLE
        index = svc.destinations.index(dest)
        del svc.destinations[index]
        if sched_hook and svc.scheduler is not None:
            svc.scheduler.del_dest(svc, dest, index)
        dest.idle_start = now
        self.trash.append(dest)
        self.generation += 1
        for hook in self.unlink_hooks:
            hook(dest)

    def _trash_get(self, svc: VirtualService, spec: DestSpec) -> Destination | None:
        for dest in self.trash:
            owner = dest.service
            if (owner is not None and owner.key == svc.key and dest.af == spec.af
                    and dest.addr == spec.addr and dest.port == spec.port):
                self.trash.remove(dest)
                return dest
        return None

    def expire_trash(self, now: float) -> None:
        """Free trashed destinations nobody uses after DEST_TRASH_PERIOD idle."""
        keep = []
        for dest in self.trash:
            if dest.refcnt > 0:
                dest.idle_start = now
                keep.append(dest)
            elif now - dest.idle_start < DEST_TRASH_PERIOD:
                keep.append(dest)
        self.trash = keep

    def has_real_service(self, af: int, protocol: int, addr: bytes, port: int) -> bool:
        """ip_vs_has_real_service(): a NAT destination with this address and port exists."""
        for svc in self.services.values():
            if svc.af != af or (svc.protocol != protocol and not svc.fwmark):
                continue
            for d in svc.destinations:
                if d.addr == addr and d.port == port and d.fwd == FWD_MASQ:
                    return True
        return False

    def has_tunnel_dest(self, addr: bytes) -> bool:
        """ip_vs_find_tunnel(): a tunnelling (IPIP) destination at this address."""
        for svc in self.services.values():
            for d in svc.destinations:
                if d.addr == addr and d.fwd == FWD_TUNNEL and d.tun_type == TUN_TYPE_IPIP:
                    return True
        return False

    def zero(self, key: tuple | None) -> None:
        """ipvsadm -Z: the kernel zeroes by snapshot; we keep plain counters."""
        services = [self.get(key)] if key is not None else list(self.services.values())
        for svc in services:
            svc.stats = Stats()
            for d in svc.destinations:
                d.stats = Stats()


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
