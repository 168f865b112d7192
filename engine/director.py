"""The director: lookup -> schedule -> bind -> forward -> count, for a batch of packets.

This is ip_vs_core.c in Python.  A port hands in a batch of IP packets (bytearrays,
with the netfilter mark where the port knows it) and gets back one verdict per
packet:
  ACCEPT  - not IPVS business: let the director's own stack have it unchanged;
  FORWARD - rewritten in place: send it on (the port reinjects or transmits it);
  DROP    - swallowed (counted).
Packets IPVS generates itself (ICMP errors) are queued in `outbox`.

Only decisions live here; header surgery is in engine/packet.py and the
forwarders, state tables in engine/tcpstate.py, the table in engine/conntable.py.
"""

from __future__ import annotations

import logging
import socket
from collections import Counter

from pyvs.engine import tcpstate
from pyvs.engine.clock import Clock, MonotonicClock
from pyvs.engine.conntable import (
    CONN_F_TEMPLATE,
    CTPL_ASSURED,
    Conn,
    ConnTable,
    set_active,
    unbind_dest,
)
from pyvs.engine.packet import (
    Malformed,
    PacketInfo,
    build_icmp_error,
    build_icmp_unreachable,
    l4_checksum_ok,
    may_send_icmp_error,
    parse,
    parse_icmp_error,
    parse_quoted,
)
from pyvs.engine.service import (
    AF_INET,
    CONN_F_NOOUTPUT,
    CONN_F_ONE_PACKET,
    CONN_TAB_SIZE,
    FWD_MASQ,
    FWD_TUNNEL,
    IPPROTO_TCP,
    IPPROTO_UDP,
    SVC_F_ONEPACKET,
    Flow,
    ServiceTable,
    Stats,
    VirtualService,
)
from pyvs.engine.stats import Estimator
from pyvs.engine.sysctl import Sysctl
from pyvs.engine.verdict import ACCEPT, DROP, FORWARD
from pyvs.forwarders import default_forwarders, nat
from pyvs.forwarders.tun import Tunnel
from pyvs.schedulers.base import SchedulerEnv

log = logging.getLogger("pyvs.director")


IPPROTO_ICMP = 1
IPPROTO_ICMPV6 = 58
IPPROTO_IPIP = 4
IPPROTO_IPV6 = 41
FTPPORT = 21
FTPDATA = 20
TCP_SYN, TCP_RST = tcpstate.TCP_SYN, tcpstate.TCP_RST

# Scheduling outcomes (the kernel's *ignored)
SCHED_IGNORED, SCHED_NODEST, SCHED_FATAL = 1, 0, -1


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


class Director:
    conn_tab_size = CONN_TAB_SIZE

    def __init__(self, clock: Clock | None = None, sysctl: Sysctl | None = None) -> None:
        self.clock = clock or MonotonicClock()
        self.sysctl = sysctl or Sysctl()
        self.env = SchedulerEnv(clock=self.clock, sysctl=self.sysctl)
        self.services = ServiceTable(self.env)
        self.conntable = ConnTable(self.clock)
        self.timeouts = tcpstate.Timeouts()
        self.total = Stats()
        self.estimator = Estimator()
        self.drops: Counter[str] = Counter()
        self.outbox: list[bytes] = []  # IP packets to route through the director's stack
        self.l2_outbox: list[tuple[str, bytes]] = []  # (interface, Ethernet frame)
        self.forwarders = default_forwarders()
        self.services.unlink_hooks.append(self._expire_nodest_conns)

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
        """Periodic work: expiry, trash, rate estimation, scheduler caches."""
        now = self.clock.now()
        self.conntable.run_timers()
        self.services.expire_trash(now)
        if self.estimator.due(now) and self.sysctl.run_estimation:
            self.estimator.sample(self.all_stats())
        for svc in self.services.services.values():
            expire = getattr(svc.scheduler, "expire", None)
            if expire is not None:
                expire(now)
        for fwd in {id(f): f for f in self.forwarders.values()}.values():
            fwd_tick = getattr(fwd, "tick", None)
            if fwd_tick is not None:
                fwd_tick(self)  # e.g. DR: packets waiting for a neighbour (l2_outbox)

    # -- the packet path ------------------------------------------------------------------------
    def process(self, batch: list[bytearray], marks: list[int] | None = None) -> list[int]:
        """One verdict per packet; FORWARD packets have been rewritten in place."""
        now = self.clock.now()
        verdicts = []
        for i, buf in enumerate(batch):
            mark = marks[i] if marks is not None else 0
            try:
                verdicts.append(self._packet(buf, mark, now))
            except Malformed as err:
                self.drops[err.reason] += 1
                verdicts.append(DROP)
        return verdicts

    def _packet(self, buf: bytearray, mark: int, now: float) -> int:
        info = parse(buf)
        proto = info.proto
        if proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6:
            return self._icmp(buf, info, now)
        if proto != IPPROTO_TCP and proto != IPPROTO_UDP:
            return ACCEPT  # no IPVS support for this protocol here (2.3 step 2)
        if info.is_frag and not info.first_frag:
            self.drops["fragment"] += 1
            return DROP
        conn = self.conntable.out_get(proto, info.saddr, info.sport, info.daddr, info.dport)
        if conn is not None:
            return self._reply(buf, info, conn, now)
        return self._request(buf, info, mark, now)

    # ip_vs_in_hook ---------------------------------------------------------------------------
    def _request(self, buf: bytearray, info: PacketInfo, mark: int, now: float) -> int:
        proto = info.proto
        sysctl = self.sysctl
        conn = self.conntable.in_get(proto, info.saddr, info.sport, info.daddr, info.dport)
        starts = proto == IPPROTO_TCP and bool(info.tcp_flags & TCP_SYN)
        if conn is not None and starts and sysctl.conn_reuse_mode:
            dest = conn.dest
            resched = False
            if sysctl.expire_nodest_conn and dest is not None and dest.weight == 0:
                resched = True
            elif self._new_conn_expected(conn, sysctl.conn_reuse_mode):
                resched = True  # no conntrack in pyvs: never the "old_ct" drop
            if resched:
                if not conn.n_control:
                    self.conntable.remove(conn)
                conn = None
        if conn is not None and conn.dest is not None and not conn.dest.available:
            if sysctl.expire_nodest_conn:
                self.conntable.remove(conn)
                conn = None
            else:
                self.drops["dest-unavailable"] += 1
                return DROP
        if conn is None:
            svc = self.services.find(info.af, proto, info.daddr, info.dport, mark)
            if svc is None:
                return self._unmatched(buf, info)
            if proto == IPPROTO_TCP:
                # tcp_conn_schedule(): RST never creates; no SYN only with sloppy_tcp
                if info.tcp_flags & TCP_RST:
                    return ACCEPT
                if not info.tcp_flags & TCP_SYN and not sysctl.sloppy_tcp:
                    return ACCEPT
            conn, outcome = self._schedule(svc, info, mark, now)
            if conn is None:
                if outcome == SCHED_IGNORED:
                    return ACCEPT
                if outcome == SCHED_FATAL:
                    return DROP
                return self._leave(svc, buf, info)
        self._in_stats(conn, info.ip_len)
        self._set_state(conn, tcpstate.INPUT, info)
        verdict = self._xmit_to_real(buf, info, conn)
        conn.in_pkts += 1
        self._release(conn, now)
        return verdict

    def _unmatched(self, buf: bytearray, info: PacketInfo) -> int:
        """No service: pass, except a NAT reply with no entry under nat_icmp_send=1
        (ip_vs_out_hook: ICMP port unreachable to the real server, not for a TCP RST)."""
        if (self.sysctl.nat_icmp_send
                and not (info.proto == IPPROTO_TCP and info.tcp_flags & TCP_RST)
                and self.services.has_real_service(info.af, info.proto, info.saddr,
                                                   info.sport)):
            source = route_source(info.saddr)
            if source is not None and may_send_icmp_error(buf, info):
                self.outbox.append(build_icmp_unreachable(buf, info, source))
            self.drops["nat-reply-without-entry"] += 1
            return DROP
        return ACCEPT

    def _expire_nodest_conns(self, dest) -> None:
        """ip_vs_expire_nodest_conn_flush(): with expire_nodest_conn=1, deleting a
        destination expires its connections (and templates left controlling nothing)."""
        if not self.sysctl.expire_nodest_conn:
            return
        table = self.conntable
        for conn in table.entries():
            if conn.dest is not dest or conn.n_control:
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
            return (s == tcpstate.TIME_WAIT or s == tcpstate.CLOSE
                    or (bool(reuse_mode & 2) and s == tcpstate.FIN_WAIT
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
        dest = svc.scheduler.schedule(svc, flow) if svc.scheduler is not None else None
        if dest is None:
            return None, SCHED_NODEST
        flags = CONN_F_ONE_PACKET if (svc.flags & SVC_F_ONEPACKET
                                      and info.proto == IPPROTO_UDP) else 0
        conn = self.conntable.new(info.af, info.proto, info.saddr, info.sport, info.daddr,
                                  info.dport, dest.addr, dest.port or info.dport, flags, dest,
                                  mark)
        self._conn_stats(svc, conn)
        return conn, SCHED_NODEST

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
            vaddr = svc.fwmark.to_bytes(4, "big")
            if info.af != AF_INET:
                vaddr = vaddr + bytes(12)
        tmpl = table.template_get(protocol, snet, vaddr, vport)
        if tmpl is not None and not self._template_usable(tmpl):
            table.neutralize_template(tmpl)
            tmpl = None
        if tmpl is None:
            dest = svc.scheduler.schedule(svc, flow) if svc.scheduler is not None else None
            if dest is None:
                return None, SCHED_NODEST
            tdport = dest.port if (dst_port == svc.port and svc.port != FTPPORT) else 0
            tmpl = table.new(info.af, protocol, snet, 0, vaddr, vport, dest.addr, tdport,
                             CONN_F_TEMPLATE, dest, mark)
            tmpl.timeout = svc.timeout
        else:
            dest = tmpl.dest
        dport = dst_port
        if dport == svc.port and dest.port:
            dport = dest.port
        flags = CONN_F_ONE_PACKET if (svc.flags & SVC_F_ONEPACKET
                                      and info.proto == IPPROTO_UDP) else 0
        conn = table.new(info.af, info.proto, info.saddr, info.sport, info.daddr, info.dport,
                         dest.addr, dport, flags, dest, mark)
        table.control_add(conn, tmpl)
        table.put(tmpl, now)
        self._conn_stats(svc, conn)
        return conn, SCHED_NODEST

    def _template_usable(self, tmpl: Conn) -> bool:
        """ip_vs_check_template(ct, NULL)."""
        dest = tmpl.dest
        if dest is None or not dest.available:
            return False
        if self.sysctl.expire_quiescent_template and dest.weight == 0:
            return False
        return True

    def _leave(self, svc: VirtualService, buf: bytearray, info: PacketInfo) -> int:
        """ip_vs_leave(): no destination -> ICMP port unreachable (never a TCP RST)."""
        if svc.port == FTPPORT and info.dport != FTPPORT:
            return ACCEPT
        log.debug("no destination available for %r", svc)
        if may_send_icmp_error(buf, info):
            self.outbox.append(build_icmp_unreachable(buf, info, info.daddr))
        self.drops["no-destination"] += 1
        return DROP

    # ip_vs_out_hook (NAT replies) ----------------------------------------------------------
    def _reply(self, buf: bytearray, info: PacketInfo, conn: Conn, now: float) -> int:
        self._out_stats(conn, info.ip_len)
        nat.snat(buf, info, conn.vaddr, conn.vport)
        self._set_state(conn, tcpstate.OUTPUT, info)
        self._release(conn, now)
        return FORWARD

    # state, transmit, accounting --------------------------------------------------------------
    def _set_state(self, conn: Conn, direction: int, info: PacketInfo) -> None:
        """ip_vs_set_state(): tcp/udp_state_transition."""
        if conn.protocol == IPPROTO_TCP:
            if conn.flags & CONN_F_NOOUTPUT:
                if direction == tcpstate.OUTPUT:
                    conn.flags &= ~CONN_F_NOOUTPUT
                else:
                    direction = tcpstate.INPUT_ONLY
            new = tcpstate.tcp_next_state(conn.state, direction, info.tcp_flags,
                                          self.sysctl.secure_tcp == 3)
            if new != conn.state:
                if conn.dest is not None:
                    set_active(conn, new in tcpstate.TCP_ACTIVE)
                if new == tcpstate.ESTABLISHED and conn.control is not None:
                    conn.control.state = CTPL_ASSURED
                conn.state = new
            conn.timeout = self.timeouts.tcp[new]
        else:
            if direction == tcpstate.OUTPUT and conn.control is not None:
                conn.control.state = CTPL_ASSURED
            conn.timeout = self.timeouts.udp

    def _xmit_to_real(self, buf: bytearray, info: PacketInfo, conn: Conn) -> int:
        forwarder = self.forwarders.get(conn.fwd)
        if forwarder is None:
            self.drops["fwd-method-unsupported"] += 1
            return DROP
        return forwarder.to_real(self, buf, info, conn)

    def _release(self, conn: Conn, now: float) -> None:
        """ip_vs_conn_put(): re-arm the timer; one-packet entries die here."""
        if conn.flags & CONN_F_ONE_PACKET:
            if conn.control is not None:
                conn.control.n_control -= 1
                conn.control = None
            unbind_dest(conn)
            return
        self.conntable.put(conn, now)

    def _conn_stats(self, svc: VirtualService, conn: Conn) -> None:
        dest = conn.dest
        if dest is not None:
            dest.stats.conns += 1
        svc.stats.conns += 1
        self.total.conns += 1

    def _in_stats(self, conn: Conn, nbytes: int) -> None:
        dest = conn.dest
        if dest is None or not dest.available:
            return
        for st in (dest.stats, dest.service.stats, self.total):
            st.inpkts += 1
            st.inbytes += nbytes

    def _out_stats(self, conn: Conn, nbytes: int) -> None:
        dest = conn.dest
        if dest is None or not dest.available:
            return
        for st in (dest.stats, dest.service.stats, self.total):
            st.outpkts += 1
            st.outbytes += nbytes

    def _tunnel_icmp(self, buf: bytearray, info: PacketInfo, outer: PacketInfo,
                     now: float) -> int:
        """An error about one of our IPIP packets (ip_vs_in_icmp, "tunnel" case): learn the
        path MTU and tell the client, from the VIP, about its original request."""
        if outer.is_frag and not outer.first_frag:
            return ACCEPT
        if not self.services.has_tunnel_dest(outer.daddr):
            return ACCEPT  # only for a known tunnel
        end = info.l3_off + info.ip_len
        try:
            orig = parse_quoted(buf, outer.l4_off, end)
        except Malformed:
            return ACCEPT
        if orig.proto != IPPROTO_TCP and orig.proto != IPPROTO_UDP:
            return ACCEPT
        conn = self.conntable.in_get(orig.proto, orig.saddr, orig.sport, orig.daddr, orig.dport)
        if conn is None:
            return ACCEPT
        if not l4_checksum_ok(buf, info):
            self.drops["bad-icmp-checksum"] += 1
            return DROP
        icmp_off = info.l4_off
        word = bytes(buf[icmp_off + 4:icmp_off + 8])  # ic->un.gateway
        if info.icmp_type == 3 and info.icmp_code == 4:
            mtu = int.from_bytes(word[2:4], "big")
            tunnel = self.forwarders.get(FWD_TUNNEL)
            if isinstance(tunnel, Tunnel):
                tunnel.learn_pmtu(outer.daddr, mtu, now)
                mtu = tunnel.path_mtu(outer.daddr, now) or mtu
            if not outer.df:  # client uses PMTUD?
                return DROP
            if mtu > 68 + 20:
                mtu -= 20
            word = mtu.to_bytes(4, "big")
        quote = bytearray(buf[orig.l3_off:end])
        qinfo = parse_quoted(quote, 0, len(quote))
        if may_send_icmp_error(quote, qinfo):
            self.outbox.append(build_icmp_error(quote, qinfo, orig.daddr, info.icmp_type,
                                                info.icmp_code, word))
        self._out_stats(conn, len(quote))
        return DROP

    # ICMP errors (ip_vs_in_icmp / ip_vs_out_icmp) ----------------------------------------------
    def _icmp(self, buf: bytearray, info: PacketInfo, now: float) -> int:
        try:
            inner = parse_icmp_error(buf, info)
        except Malformed:
            return ACCEPT  # "The packet looks wrong, ignore" (ip_vs_in_icmp)
        if inner is None:
            return ACCEPT  # echo and friends: not IPVS business
        if info.version == 4 and (inner.proto == IPPROTO_IPIP or inner.proto == IPPROTO_IPV6):
            return self._tunnel_icmp(buf, info, inner, now)
        if inner.proto != IPPROTO_TCP and inner.proto != IPPROTO_UDP:
            return ACCEPT
        if inner.is_frag and not inner.first_frag:
            return ACCEPT
        table = self.conntable
        if not l4_checksum_ok(buf, info):
            self.drops["bad-icmp-checksum"] += 1
            return DROP
        # From a real server about a request it got (embedded client -> RS): NAT out.
        conn = table.out_get(inner.proto, inner.daddr, inner.dport, inner.saddr, inner.sport)
        if conn is not None and conn.fwd == FWD_MASQ:
            self._out_stats(conn, info.ip_len)
            nat.snat_icmp(buf, info, inner, conn.vaddr, conn.vport)
            self._release(conn, now)
            return FORWARD
        # From a client about a reply it got (embedded VIP -> client): in, swapped.
        conn = table.in_get(inner.proto, inner.daddr, inner.dport, inner.saddr, inner.sport)
        if conn is None:
            return ACCEPT
        self._in_stats(conn, info.ip_len)
        forwarder = self.forwarders.get(conn.fwd)
        if forwarder is None:
            self.drops["fwd-method-unsupported"] += 1
            return DROP
        verdict = forwarder.icmp_to_real(self, buf, info, inner, conn)
        self._release(conn, now)
        return verdict
