"""The director: lookup -> schedule -> bind -> forward -> count, one packet at a time.

This is ip_vs_core.c in Python.  A port hands in IP packets (bytearrays, with the
netfilter mark where the port knows it) and gets back one verdict per packet:
  ACCEPT  - not IPVS business: let the director's own stack have it unchanged;
  FORWARD - rewritten in place: send it on (the port reinjects or transmits it);
  DROP    - swallowed (counted); anything to send instead went through an outbox.

Only decisions live here.  What differs per protocol (may a packet create a
connection, the state machine) is behind engine/proto; what differs per forwarding
method (the rewrite, encapsulation, routing) is behind forwarders/, which see only
their small context; ICMP errors are engine/proto/icmp.py; the table is
engine/conntable.py.  docs/architecture.md draws how a packet goes through them.

``handle(info, buf)`` takes a packet already parsed; without ``buf`` it makes every
decision -- lookup, scheduling, templates, states, timers, counters -- and skips only
the bytes (rewrites and generated ICMP errors): the flow level of ``pyvs sim``.
"""

from __future__ import annotations

import logging
import random
import socket
import traceback

from pyvs.engine.accounting import unbind_dest
from pyvs.engine.clock import Clock, MonotonicClock
from pyvs.engine.conntable import Conn, ConnTable
from pyvs.engine.defense import Defense
from pyvs.engine.icmperror import build_icmp_unreachable, may_send_icmp_error
from pyvs.engine.model import (
    AF_INET,
    CONN_F_NOOUTPUT,
    CONN_F_ONE_PACKET,
    CONN_F_TEMPLATE,
    FWD_BYPASS,
    IPPROTO_TCP,
    IPPROTO_UDP,
    SVC_F_ONEPACKET,
    Destination,
    Flow,
    Stats,
    VirtualService,
)
from pyvs.engine.neigh import KernelRoutes
from pyvs.engine.packet import Malformed, PacketInfo, parse
from pyvs.engine.proto import INPUT, OUTPUT, PROTOCOLS, Timeouts
from pyvs.engine.proto import icmp as icmp_errors
from pyvs.engine.proto.tcp import CLOSE, FIN_WAIT, TIME_WAIT
from pyvs.engine.service import CONN_TAB_SIZE, ServiceTable
from pyvs.engine.stats import Estimator
from pyvs.engine.sysctl import Sysctl
from pyvs.engine.verdict import ACCEPT, DROP, FORWARD
from pyvs.forwarders import ForwardContext, default_forwarders
from pyvs.schedulers.base import SchedulerEnv

log = logging.getLogger("pyvs.director")

IPPROTO_ICMP = 1
IPPROTO_ICMPV6 = 58
FTPPORT = 21
FTPDATA = 20

# Scheduling outcomes (the kernel's *ignored)
SCHED_IGNORED, SCHED_NODEST, SCHED_FATAL = 1, 0, -1
SCHEDULER_FAILED = object()  # _pick: the scheduler raised (the packet is dropped)
SCHEDULER_LOG_INTERVAL = 10.0  # seconds between two reports of one failing scheduler


def route_source(dst: bytes) -> bytes | None:
    """The address the director's stack would send from toward dst (no packet is sent)."""
    family = socket.AF_INET if len(dst) == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((socket.inet_ntop(family, dst), 9))
        except OSError:
            return None
        return socket.inet_pton(family, probe.getsockname()[0])


def mask_addr(addr: bytes, netmask: int) -> bytes:
    """Template client part: IPv4 addr & mask (int), IPv6 first `netmask` bits."""
    if len(addr) == 4:
        return (int.from_bytes(addr, "big") & netmask).to_bytes(4, "big")
    bits = 128 - min(netmask, 128)  # a prefix length; the IPv4 default means /128
    return ((int.from_bytes(addr, "big") >> bits) << bits).to_bytes(16, "big")


def fwmark_vaddr(fwmark: int, af: int) -> bytes:
    """A fwmark template's virtual address: the mark in the first 4 bytes of the
    address union (ip_vs_sched_persist: vaddr = { .ip = htonl(svc->fwmark) })."""
    raw = fwmark.to_bytes(4, "big")
    return raw if af == AF_INET else raw + bytes(12)


def is_unicast(addr: bytes) -> bool:
    """Not multicast and not the IPv4 limited broadcast (ip_vs_addr_is_unicast, with the
    route type checked by the caller)."""
    if len(addr) == 4:
        return not (224 <= addr[0] <= 239) and addr != b"\xff\xff\xff\xff"
    return addr[0] != 0xFF


class Director:
    conn_tab_size = CONN_TAB_SIZE

    def __init__(self, clock: Clock | None = None, sysctl: Sysctl | None = None,
                 routes=None, seed: int | None = None) -> None:
        """``routes``: the kernel's route and neighbour tables (engine/neigh.py) or a
        stand-in with the same methods; ``seed`` makes the schedulers' random choices
        reproducible (``pyvs run --seed``, ``pyvs sim``)."""
        self.clock = clock or MonotonicClock()
        self.sysctl = sysctl or Sysctl()
        self.env = SchedulerEnv(clock=self.clock, sysctl=self.sysctl,
                                random=random.Random(seed))
        self.services = ServiceTable(self.env)
        self.conntable = ConnTable(self.clock)
        self.timeouts = Timeouts()
        self.total = self.services.total
        self.estimator = Estimator()
        self.ctx = ForwardContext(self.clock, self.sysctl,
                                  routes if routes is not None else KernelRoutes())
        self.drops = self.ctx.drops  # reason -> count
        self.outbox = self.ctx.outbox  # IP packets to route through the director's stack
        self.l2_outbox = self.ctx.l2_outbox  # (interface, Ethernet frame)
        self.forwarders = default_forwarders()
        self.last: Conn | None = None  # the connection the last handled packet was bound to
        # called with the entry after each incoming packet it handled, where the kernel
        # calls ip_vs_sync_conn (set by a sync master, engine/sync; None: no cost)
        self.sync_observer = None
        # the table's bound and the flood defenses (engine/defense.py)
        self.defense = Defense(self.sysctl, self.conntable, self.clock, self.drops,
                               random.Random(seed))
        self.tracer = None  # `pyvs trace` attached (engine/trace/hook.py); None: nobody traces
        self.services.unlink_hooks.append(self._expire_nodest_conns)
        self._sched_quiet: dict[str, tuple[float, int]] = {}  # see _pick

    # -- the control surface used by pyvsadm --------------------------------------------------
    def now(self) -> float:
        return self.clock.now()

    def get_timeouts(self) -> tuple[int, int, int]:
        return self.timeouts.get_set_values()

    def set_timeouts(self, tcp: int, tcpfin: int, udp: int) -> None:
        self.timeouts.set_values(tcp, tcpfin, udp)

    def rates(self, stats: Stats) -> tuple[int, int, int, int, int]:
        return self.estimator.rates(stats)

    def all_stats(self) -> list[Stats]:
        out = [self.total]
        for svc in self.services.services.values():
            out.append(svc.stats)
            out.extend(d.stats for d in svc.destinations)
        return out

    def tick(self) -> None:
        """Periodic work: expiry, trash, rate estimation, scheduler caches, neighbours."""
        now = self.clock.now()
        self.conntable.run_timers()
        self.defense.tick(now)
        self.services.expire_trash(now)
        if self.estimator.due(now) and self.sysctl.run_estimation:
            self.estimator.sample(self.all_stats())
        for svc in self.services.services.values():
            expire = getattr(svc.scheduler, "expire", None)
            if expire is not None:
                expire(now)
        self.ctx.routes.poll()  # the kernel's route and neighbour changes
        for fwd in {id(f): f for f in self.forwarders.values()}.values():
            fwd.tick(self.ctx)  # e.g. DR: packets waiting for a neighbour (l2_outbox)

    # -- tracing (`pyvs trace`, engine/trace/) ----------------------------------------------
    def attach_tracer(self, tracer) -> None:
        """Send every packet through ``tracer.handle(untraced_handle, info, buf, mark, now)``
        until ``detach_tracer``.  The hook is an instance attribute that shadows ``handle``
        only while someone traces, so the untraced path pays nothing per packet; the batch
        fast path looks at ``self.tracer`` once per batch (bench/trace_bench.py)."""
        untraced = type(self).handle.__get__(self)
        self.tracer = tracer

        def traced_handle(info: PacketInfo, buf: bytearray | None = None, mark: int = 0,
                          now: float | None = None) -> int:
            return tracer.handle(untraced, info, buf, mark, now)

        self.handle = traced_handle

    def detach_tracer(self) -> None:
        self.tracer = None
        self.__dict__.pop("handle", None)

    # -- the packet path ------------------------------------------------------------------------
    def process(self, batch: list[bytearray], marks: list[int] | None = None,
                stack_forwards: bool = True) -> list[int]:
        """One verdict per packet; FORWARD packets have been rewritten in place.
        ``stack_forwards``: the director's stack routes FORWARD packets on (NFQUEUE: its
        ip_forward decrements the TTL); a port that transmits them itself says False."""
        now = self.clock.now()
        verdicts = []
        self.ctx.stack_forwards = stack_forwards
        for i, buf in enumerate(batch):
            mark = marks[i] if marks is not None else 0
            try:
                verdicts.append(self.handle(parse(buf), buf, mark, now))
            except Malformed as err:
                self.drops[err.reason] += 1
                verdicts.append(DROP)
        self.ctx.stack_forwards = True
        return verdicts

    def handle(self, info: PacketInfo, buf: bytearray | None = None, mark: int = 0,
               now: float | None = None) -> int:
        """The verdict for one parsed packet (``buf`` None: decisions only, no bytes).  The
        port says through ``ctx.stack_forwards`` who forwards it (see ``process``)."""
        if now is None:
            now = self.clock.now()
        self.last = None
        proto = info.proto
        if proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6:
            return icmp_errors.handle(self, buf, info, now) if buf is not None else ACCEPT
        if proto != IPPROTO_TCP and proto != IPPROTO_UDP:
            return ACCEPT  # no IPVS support for this protocol here (ip_vs_in_hook)
        if info.is_frag and not info.first_frag:
            self.drops["fragment"] += 1
            return DROP
        conn = self.conntable.out_get(proto, info.saddr, info.sport, info.daddr, info.dport)
        if conn is not None:
            return self._reply(buf, info, conn, now)
        return self._request(buf, info, mark, now)

    # ip_vs_in_hook ---------------------------------------------------------------------------
    def _request(self, buf: bytearray | None, info: PacketInfo, mark: int, now: float) -> int:
        proto = info.proto
        protocol = PROTOCOLS[proto]
        sysctl = self.sysctl
        conn = self.conntable.in_get(proto, info.saddr, info.sport, info.daddr, info.dport)
        if (conn is not None and sysctl.conn_reuse_mode
                and protocol.starts_connection(info.tcp_flags)):
            dest = conn.dest
            if ((sysctl.expire_nodest_conn and dest is not None and dest.weight == 0)
                    or self._new_conn_expected(conn, sysctl.conn_reuse_mode)):
                if not conn.n_control:  # no conntrack in pyvs: never the "old_ct" drop
                    self.conntable.remove(conn)
                conn = None
        if conn is not None and conn.dest is not None and not conn.dest.available:
            if not sysctl.expire_nodest_conn:
                self.drops["dest-unavailable"] += 1
                return DROP
            self.conntable.remove(conn)
            conn = None
        if conn is None:
            svc = self.services.find(info.af, proto, info.daddr, info.dport, mark)
            if svc is None:
                return self._unmatched(buf, info)
            if not protocol.conn_schedule(info.tcp_flags, sysctl.sloppy_tcp):
                return ACCEPT  # tcp_conn_schedule(): not a connection's first packet
            refused = self.defense.refuse_new(2 if svc.persistent else 1)
            if refused is not None:  # ip_vs_todrop(), or a full table
                self.drops[refused] += 1
                return DROP
            conn, outcome = self._schedule(svc, info, mark, now)
            if conn is None:
                if outcome == SCHED_IGNORED:
                    return ACCEPT
                if outcome == SCHED_FATAL:
                    return DROP
                return self._leave(svc, buf, info, mark, now)
        self.last = conn
        self.count_in(conn.dest, 1, info.ip_len)
        self._set_state(conn, INPUT, info.tcp_flags)
        verdict = (self.forwarders[conn.fwd].to_real(self.ctx, buf, info, conn)
                   if buf is not None else FORWARD)
        conn.in_pkts += 1
        if self.sync_observer is not None:
            self.sync_observer(conn)
        self.release(conn, now)
        return verdict

    def _unmatched(self, buf: bytearray | None, info: PacketInfo) -> int:
        """No service: pass, except a NAT reply with no entry under nat_icmp_send=1
        (ip_vs_out_hook: ICMP port unreachable to the real server, not for a TCP RST)."""
        if (self.sysctl.nat_icmp_send
                and not (info.proto == IPPROTO_TCP and info.tcp_flags & 0x04)
                and self.services.has_real_service(info.af, info.proto, info.saddr,
                                                   info.sport)):
            if buf is not None:
                source = route_source(info.saddr)
                if source is not None and may_send_icmp_error(buf, info):
                    self.outbox.append(build_icmp_unreachable(buf, info, source))
            self.drops["nat-reply-without-entry"] += 1
            return DROP
        return ACCEPT

    def _expire_nodest_conns(self, dests: list[Destination]) -> None:
        """ip_vs_expire_nodest_conn_flush(): with expire_nodest_conn=1, deleting
        destinations walks the whole table and expires every entry whose destination is
        no longer available -- also those of destinations deleted earlier while the
        setting was 0 -- except entries that still control others; a template left
        controlling nothing goes with its last connection."""
        if not self.sysctl.expire_nodest_conn:
            return
        table = self.conntable
        for conn in table.entries():
            dest = conn.dest
            if dest is None or dest.available or conn.n_control:
                continue
            control = conn.control
            table.remove(conn)
            if control is not None and not control.n_control:
                table.remove(control)

    @staticmethod
    def _new_conn_expected(conn: Conn, reuse_mode: int) -> bool:
        """is_new_conn_expected() in ip_vs_core.c."""
        if conn.control is not None:
            return False
        if conn.protocol == IPPROTO_TCP:
            s = conn.state
            return (s == TIME_WAIT or s == CLOSE
                    or (bool(reuse_mode & 2) and s == FIN_WAIT
                        and bool(conn.flags & CONN_F_NOOUTPUT)))
        return False

    # ip_vs_schedule / ip_vs_sched_persist ---------------------------------------------------
    def _schedule(self, svc: VirtualService, info: PacketInfo, mark: int,
                  now: float) -> tuple[Conn | None, int]:
        if info.sport == FTPDATA:
            return None, SCHED_IGNORED
        flow = Flow(info.af, info.proto, info.saddr, info.sport, info.daddr, info.dport, mark)
        if svc.persistent:
            return self._schedule_persist(svc, info, flow, mark, now)
        if not svc.fwmark and info.dport != svc.port:
            return None, SCHED_NODEST
        dest = self._pick(svc, flow, now)
        if dest is None:
            return None, SCHED_NODEST
        if dest is SCHEDULER_FAILED:
            return None, SCHED_FATAL
        conn = self.conntable.new(info.af, info.proto, info.saddr, info.sport, info.daddr,
                                  info.dport, dest.addr, dest.port or info.dport,
                                  self._ops_flag(svc, info), dest, mark)
        self.count_conn(svc, dest)
        return conn, SCHED_NODEST

    def _pick(self, svc: VirtualService, flow: Flow, now: float):
        """The scheduler's choice.  A scheduler that raises (a plugin's bug: no kernel
        scheduler does) costs only the packet it was called for: SCHEDULER_FAILED (the
        packet is dropped), counted as ``scheduler-error``, logged at most once per
        SCHEDULER_LOG_INTERVAL per scheduler with the number left unsaid."""
        if svc.scheduler is None:
            return None
        try:
            dest = svc.scheduler.schedule(svc, flow)
        except Exception as err:  # noqa: BLE001 - the user's code: one packet, not the batch
            svc.sched_decisions["error"] += 1
            self.drops["scheduler-error"] += 1
            quiet = self._sched_quiet.get(svc.sched_name)
            if quiet is not None and now < quiet[0]:
                self._sched_quiet[svc.sched_name] = (quiet[0], quiet[1] + 1)
                return SCHEDULER_FAILED
            frame = traceback.extract_tb(err.__traceback__)[-1]
            log.warning("scheduler %s raised %s: %s (%s line %s); the packet was dropped%s",
                        svc.sched_name, type(err).__name__, err, frame.filename, frame.lineno,
                        f" ({quiet[1]} more since the last report)" if quiet else "")
            self._sched_quiet[svc.sched_name] = (now + SCHEDULER_LOG_INTERVAL, 0)
            return SCHEDULER_FAILED
        svc.sched_decisions["scheduled" if dest is not None else "no-destination"] += 1
        return dest

    @staticmethod
    def _ops_flag(svc: VirtualService, info: PacketInfo) -> int:
        """One-packet scheduling applies to UDP only (ip_vs_schedule)."""
        return CONN_F_ONE_PACKET if (svc.flags & SVC_F_ONEPACKET
                                     and info.proto == IPPROTO_UDP) else 0

    def _schedule_persist(self, svc: VirtualService, info: PacketInfo, flow: Flow, mark: int,
                          now: float) -> tuple[Conn | None, int]:
        table = self.conntable
        snet = mask_addr(info.saddr, svc.netmask)
        dst_port = info.dport
        protocol = info.proto
        vaddr = info.daddr
        vport = 0
        if dst_port == svc.port:
            if svc.port != FTPPORT:
                vport = dst_port
        elif svc.fwmark:
            protocol = 0
            vaddr = fwmark_vaddr(svc.fwmark, info.af)
        tmpl = table.template_get(protocol, snet, vaddr, vport)
        if tmpl is not None and not self._template_usable(tmpl):
            table.neutralize_template(tmpl)
            tmpl = None
        if tmpl is None:
            dest = self._pick(svc, flow, now)
            if dest is None:
                return None, SCHED_NODEST
            if dest is SCHEDULER_FAILED:
                return None, SCHED_FATAL
            tdport = dest.port if (dst_port == svc.port and svc.port != FTPPORT) else 0
            tmpl = table.new(info.af, protocol, snet, 0, vaddr, vport, dest.addr, tdport,
                             CONN_F_TEMPLATE, dest, mark)
            tmpl.timeout = svc.timeout
        else:
            dest = tmpl.dest
        dport = dst_port
        if dport == svc.port and dest.port:
            dport = dest.port
        conn = table.new(info.af, info.proto, info.saddr, info.sport, info.daddr, info.dport,
                         dest.addr, dport, self._ops_flag(svc, info), dest, mark)
        table.control_add(conn, tmpl)
        table.put(tmpl, now)
        self.count_conn(svc, dest)
        return conn, SCHED_NODEST

    def _template_usable(self, tmpl: Conn) -> bool:
        """ip_vs_check_template(ct, NULL)."""
        dest = tmpl.dest
        if dest is None or not dest.available:
            return False
        if self.sysctl.expire_quiescent_template and dest.weight == 0:
            return False
        return True

    def _leave(self, svc: VirtualService, buf: bytearray | None, info: PacketInfo, mark: int,
               now: float) -> int:
        """ip_vs_leave(): no destination.  With cache_bypass, a fwmark service's packet to a
        non-local unicast address goes on to that address (a BYPASS entry remembers the
        flow); otherwise ICMP port unreachable to the client (IPVS never sends a RST)."""
        if self.sysctl.cache_bypass and svc.fwmark and self._routed_unicast(info.daddr):
            conn = self.conntable.new(info.af, info.proto, info.saddr, info.sport, info.daddr,
                                      info.dport, bytes(len(info.daddr)), 0,
                                      FWD_BYPASS | self._ops_flag(svc, info), None, mark)
            self.last = conn
            self._set_state(conn, INPUT, info.tcp_flags)
            conn.in_pkts += 1
            self.release(conn, now)
            return ACCEPT  # ip_vs_bypass_xmit: the stack routes it to its own destination
        if svc.port == FTPPORT and info.dport != FTPPORT:
            return ACCEPT
        if buf is not None and may_send_icmp_error(buf, info):
            self.outbox.append(build_icmp_unreachable(buf, info, info.daddr))
        self.drops["no-destination"] += 1
        return DROP

    def _routed_unicast(self, addr: bytes) -> bool:
        """ip_vs_addr_is_unicast(): routed (not local) and not multicast/broadcast."""
        if not is_unicast(addr):
            return False
        route = self.ctx.routes.route(addr)
        return route is not None and not route.local

    # ip_vs_out_hook (NAT replies) ----------------------------------------------------------
    def _reply(self, buf: bytearray | None, info: PacketInfo, conn: Conn, now: float) -> int:
        self.last = conn
        self.count_out(conn.dest, 1, info.ip_len)
        verdict = (self.forwarders[conn.fwd].to_client(self.ctx, buf, info, conn)
                   if buf is not None else FORWARD)
        self._set_state(conn, OUTPUT, info.tcp_flags)
        self.release(conn, now)
        return verdict

    # state, accounting, release (also used by engine/proto/icmp.py and the fast path) ------
    def _set_state(self, conn: Conn, direction: int, flags: int) -> None:
        """ip_vs_set_state(): the protocol's state transition."""
        PROTOCOLS[conn.protocol].state_transition(conn, direction, flags, self.timeouts,
                                                  self.sysctl.secure_tcp >= 2)

    def release(self, conn: Conn, now: float) -> None:
        """ip_vs_conn_put(): re-arm the timer; one-packet entries die here."""
        if conn.flags & CONN_F_ONE_PACKET:
            if conn.control is not None:
                conn.control.n_control -= 1
                conn.control = None
            unbind_dest(conn)
            return
        self.conntable.put(conn, now)

    def count_conn(self, svc: VirtualService, dest: Destination) -> None:
        """A connection created by scheduling (ip_vs_conn_stats)."""
        dest.stats.conns += 1
        svc.stats.conns += 1
        self.total.conns += 1

    def count_in(self, dest: Destination | None, packets: int, nbytes: int) -> None:
        """ip_vs_in_stats(): only for an available destination."""
        if dest is None or not dest.available:
            return
        for st in (dest.stats, dest.service.stats, self.total):
            st.inpkts += packets
            st.inbytes += nbytes

    def count_out(self, dest: Destination | None, packets: int, nbytes: int) -> None:
        """ip_vs_out_stats(): only for an available destination."""
        if dest is None or not dest.available:
            return
        for st in (dest.stats, dest.service.stats, self.total):
            st.outpkts += packets
            st.outbytes += nbytes
