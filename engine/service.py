"""The control plane: the table of virtual services and their destinations.

Mirrors ip_vs_ctl.c: destinations are inserted at the *head* of a service's
list (newest first, list_add_rcu), deleted destinations go to a trash list from
which re-adding resurrects the same object with its counters, and every add,
edit or delete calls the scheduler's hooks.  Errors carry the kernel's errno so
pyvsadm can print ipvsadm's messages.
The objects themselves (VirtualService, Destination, the specs) are in
engine/model.py, which schedulers and plugins import.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from pyvs.engine.model import (
    AF_INET6,
    CONN_F_DEST_MASK,
    CONN_F_INACTIVE,
    CONN_F_NOOUTPUT,
    DEST_F_AVAILABLE,
    DEST_F_OVERLOAD,
    FWD_MASQ,
    FWD_TUNNEL,
    IPPROTO_TCP,
    SVC_F_HASHED,
    SVC_F_PERSISTENT,
    TUN_TYPE_GUE,
    Destination,
    DestSpec,
    ServiceSpec,
    Stats,
    VirtualService,
)
from pyvs.engine.proto import PROTOCOLS
from pyvs.schedulers.registry import PluginError, SchedulerNotFound, plugin_source
from pyvs.schedulers.registry import create as create_scheduler

if TYPE_CHECKING:
    from pyvs.schedulers.base import SchedulerEnv

PERSISTENT_TIMEOUT_DEFAULT = 360  # libipvs IPVS_SVC_PERSISTENT_TIMEOUT (6*60)
MAX_TIMEOUT = 31 * 24 * 60 * 60
DEST_TRASH_PERIOD = 120.0  # IP_VS_DEST_TRASH_PERIOD
CONN_TAB_SIZE = 4096  # 1 << CONFIG_IP_VS_TAB_BITS (12)


class IPVSError(Exception):
    """A refused control operation; .errno is what the kernel would return; .detail,
    when set, is what pyvsadm prints instead of libipvs' text (a plugin's problem)."""

    def __init__(self, err: int, message: str = "", detail: str | None = None) -> None:
        super().__init__(message or errno.errorcode.get(err, str(err)))
        self.errno = err
        self.detail = detail


class ServiceTable:
    """The control plane of ip_vs_ctl.c: services, destinations, trash, timeouts."""

    def __init__(self, sched_env: SchedulerEnv) -> None:
        self.env = sched_env
        self.services: dict[tuple, VirtualService] = {}
        self.trash: list[Destination] = []
        self._port21 = 0  # number of TCP services on port 21 (FTP data fallback)
        self._port0 = 0  # number of port-0 services
        self.generation = 0  # bumped on every change (for the plumbing to resync)
        self.total = Stats()  # ipvs->tot_stats: every service's traffic
        self.unlink_hooks: list = []  # called with the destinations each operation deleted
        self.plugin_sources: dict[tuple, bytes | None] = {}  # service key -> plugin file

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
        """A new scheduler instance for svc; a plugin file is read again (registry)."""
        source = plugin_source(name)
        try:
            svc.scheduler = create_scheduler(name, svc, self.env)
        except PluginError as err:
            raise IPVSError(errno.ENOENT, detail=f"Cannot load scheduler {err}") from None
        except SchedulerNotFound:
            raise IPVSError(errno.ENOENT, "Scheduler or persistence engine not found") from None
        svc.sched_name = name
        self.plugin_sources[svc.key] = source

    def _check_service(self, spec: ServiceSpec) -> None:
        if spec.af == AF_INET6 and spec.flags & SVC_F_PERSISTENT:
            if not 1 <= spec.netmask <= 128:
                raise IPVSError(errno.EINVAL)
        if spec.timeout < 0 or spec.timeout > MAX_TIMEOUT:
            raise IPVSError(errno.EINVAL)
        if not spec.fwmark and spec.protocol not in PROTOCOLS:
            # a kernel built without CONFIG_IP_VS_PROTO_SCTP answers the same; pyvs
            # forwards TCP and UDP only (engine/proto)
            raise IPVSError(errno.EPROTONOSUPPORT)

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
        if (spec.scheduler != svc.sched_name  # or an edited plugin file: read it again
                or plugin_source(spec.scheduler) != self.plugin_sources.get(svc.key)):
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
        self._deleted(self._del_service(key, now))

    def _del_service(self, key: tuple, now: float) -> list[Destination]:
        svc = self.get(key)
        self._count_special(svc, -1)
        del self.services[key]
        self.plugin_sources.pop(key, None)
        gone = list(svc.destinations)
        for dest in gone:
            self._unlink_dest(svc, dest, now, sched_hook=False)
        if svc.scheduler is not None:
            svc.scheduler.done_service(svc)
        self.generation += 1
        return gone

    def flush(self, now: float) -> None:
        gone: list[Destination] = []
        for key in list(self.services):
            gone += self._del_service(key, now)
        self._deleted(gone)

    def _deleted(self, dests: list[Destination]) -> None:
        """Tell the hooks, once per operation (the kernel queues one sweep per deletion,
        ip_vs_enqueue_expire_nodest_conns, and a sweep covers every deleted dest)."""
        if dests:
            for hook in self.unlink_hooks:
                hook(dests)

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
        self._deleted([dest])

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

    def find_tunnel(self, addr: bytes, tun_port: int) -> Destination | None:
        """ip_vs_find_tunnel(): the first tunnelling destination at this address whose
        tunnel port is ``tun_port`` (0 for IPIP and GRE), whatever its tunnel type."""
        for svc in self.services.values():
            for d in svc.destinations:
                if d.addr == addr and d.fwd == FWD_TUNNEL and d.tun_port == tun_port:
                    return d
        return None

    def zero(self, key: tuple | None) -> None:
        """ipvsadm -Z (ip_vs_zero_service / ip_vs_zero_all, which also zeroes the totals):
        the kernel zeroes by snapshot; pyvs keeps plain counters and resets them."""
        services = [self.get(key)] if key is not None else list(self.services.values())
        for svc in services:
            svc.stats = Stats()
            for d in svc.destinations:
                d.stats = Stats()
        if key is None:
            self.total.__init__()
