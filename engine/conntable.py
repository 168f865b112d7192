"""The connection table: entries, lookups in both directions, templates, expiry.

Mirrors ip_vs_conn.c.  Entries are indexed three ways:
  * in:       (protocol, caddr, cport, vaddr, vport)  -- client -> director packets
  * out:      (protocol, daddr, dport, caddr, cport)  -- NAT replies (MASQ entries only)
  * template: (protocol, masked caddr, vaddr, vport)  -- persistence templates
When a key is taken again (after a reschedule) the newest entry wins the index,
while the old one lives on until it expires, as in the kernel's hash chains.
Binding to a destination moves its active/inactive/persistent counters and the
OVERLOAD flag exactly as ip_vs_bind_dest()/ip_vs_unbind_dest() do.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from engine import tcpstate
from engine.clock import Clock, TimerWheel
from engine.service import (
    CONN_F_INACTIVE,
    CONN_F_NOOUTPUT,
    CONN_F_ONE_PACKET,
    DEST_F_OVERLOAD,
    FWD_MASK,
    FWD_MASQ,
    IPPROTO_UDP,
    Destination,
)

if TYPE_CHECKING:
    from engine.service import VirtualService

CONN_F_SYNC = 0x0020
CONN_F_HASHED = 0x0040
CONN_F_TEMPLATE = 0x1000

CTPL_NONE, CTPL_ASSURED = 0, 1
NEW_CONN_TIMEOUT = 3  # ip_vs_conn_new(): 3*HZ until the first state transition


class Conn:
    """struct ip_vs_conn."""

    __slots__ = (
        "af", "protocol", "caddr", "cport", "vaddr", "vport", "daddr", "dport", "fwmark",
        "flags", "state", "timeout", "expires", "dest", "control", "n_control", "in_pkts",
        "old_state",
    )

    def __init__(self, af: int, protocol: int, caddr: bytes, cport: int, vaddr: bytes,
                 vport: int, daddr: bytes, dport: int, flags: int, fwmark: int) -> None:
        self.af = af
        self.protocol = protocol
        self.caddr = caddr
        self.cport = cport
        self.vaddr = vaddr
        self.vport = vport
        self.daddr = daddr
        self.dport = dport
        self.fwmark = fwmark
        self.flags = flags
        self.state = 0
        self.old_state = 0
        self.timeout = NEW_CONN_TIMEOUT
        self.expires = 0.0
        self.dest: Destination | None = None
        self.control: Conn | None = None
        self.n_control = 0
        self.in_pkts = 0

    @property
    def is_template(self) -> bool:
        return bool(self.flags & CONN_F_TEMPLATE)

    @property
    def fwd(self) -> int:
        return self.flags & FWD_MASK

    @property
    def state_name(self) -> str:
        """ip_vs_state_name(): what ipvsadm -Lnc prints."""
        if self.flags & CONN_F_TEMPLATE:
            return "ASSURED" if self.state == CTPL_ASSURED else "NONE"
        if self.protocol == IPPROTO_UDP:
            return "UDP"
        if self.protocol == 6:
            return tcpstate.TCP_STATE_NAMES[self.state]
        return "NONE"

    def in_key(self) -> tuple:
        return (self.protocol, self.caddr, self.cport, self.vaddr, self.vport)

    def out_key(self) -> tuple:
        return (self.protocol, self.daddr, self.dport, self.caddr, self.cport)

    def __repr__(self) -> str:
        return (f"<Conn p={self.protocol} {self.caddr.hex()}:{self.cport} -> "
                f"{self.vaddr.hex()}:{self.vport} -> {self.daddr.hex()}:{self.dport} "
                f"{self.state_name}>")


def bind_dest(conn: Conn, dest: Destination) -> None:
    """ip_vs_bind_dest(): inherit the dest's flags and count the entry."""
    conn_flags = dest.conn_flags
    if conn.protocol != IPPROTO_UDP:
        conn_flags &= ~CONN_F_ONE_PACKET
    conn.flags |= conn_flags
    conn.dest = dest
    dest.refcnt += 1
    if conn.flags & CONN_F_TEMPLATE:
        dest.persistconns += 1
    elif conn.flags & CONN_F_INACTIVE:
        dest.inactconns += 1
    else:
        dest.activeconns += 1
    if dest.u_threshold and dest.activeconns + dest.inactconns >= dest.u_threshold:
        dest.flags |= DEST_F_OVERLOAD


def unbind_dest(conn: Conn) -> None:
    """ip_vs_unbind_dest(): uncount the entry and re-evaluate OVERLOAD."""
    dest = conn.dest
    if dest is None:
        return
    dest.refcnt -= 1
    if conn.flags & CONN_F_TEMPLATE:
        dest.persistconns -= 1
    elif conn.flags & CONN_F_INACTIVE:
        dest.inactconns -= 1
    else:
        dest.activeconns -= 1
    total = dest.activeconns + dest.inactconns
    if dest.l_threshold:
        if total < dest.l_threshold:
            dest.flags &= ~DEST_F_OVERLOAD
    elif dest.u_threshold:
        if total * 4 < dest.u_threshold * 3:
            dest.flags &= ~DEST_F_OVERLOAD
    else:
        dest.flags &= ~DEST_F_OVERLOAD
    conn.dest = None


def set_active(conn: Conn, active: bool) -> None:
    """Move the entry between its dest's active and inactive counters."""
    dest = conn.dest
    inactive = bool(conn.flags & CONN_F_INACTIVE)
    if active and inactive:
        conn.flags &= ~CONN_F_INACTIVE
        if dest is not None:
            dest.activeconns += 1
            dest.inactconns -= 1
    elif not active and not inactive:
        conn.flags |= CONN_F_INACTIVE
        if dest is not None:
            dest.activeconns -= 1
            dest.inactconns += 1


class ConnTable:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.by_in: dict[tuple, Conn] = {}
        self.by_out: dict[tuple, Conn] = {}
        self.templates: dict[tuple, Conn] = {}
        self.all: dict[Conn, None] = {}  # insertion order = table order
        self.wheel = TimerWheel(clock, granularity=0.1)

    def __len__(self) -> int:
        return len(self.all)

    def entries(self) -> Iterator[Conn]:
        return iter(list(self.all))

    # -- creation ---------------------------------------------------------------------------
    def new(self, af: int, protocol: int, caddr: bytes, cport: int, vaddr: bytes, vport: int,
            daddr: bytes, dport: int, flags: int, dest: Destination | None,
            fwmark: int = 0) -> Conn:
        """ip_vs_conn_new(): bind to dest and hash (unless it is a one-packet entry)."""
        conn = Conn(af, protocol, caddr, cport, vaddr, vport, daddr, dport, flags, fwmark)
        if dest is not None:
            bind_dest(conn, dest)
        if conn.flags & CONN_F_ONE_PACKET:
            return conn
        self.all[conn] = None
        conn.flags |= CONN_F_HASHED
        if conn.flags & CONN_F_TEMPLATE:
            self.templates[(protocol, caddr, vaddr, vport)] = conn
        else:
            self.by_in[conn.in_key()] = conn
            if conn.fwd == FWD_MASQ:
                self.by_out[conn.out_key()] = conn
        return conn

    # -- lookups ----------------------------------------------------------------------------
    def in_get(self, protocol: int, saddr: bytes, sport: int, daddr: bytes,
               dport: int) -> Conn | None:
        return self.by_in.get((protocol, saddr, sport, daddr, dport))

    def out_get(self, protocol: int, saddr: bytes, sport: int, daddr: bytes,
                dport: int) -> Conn | None:
        """A NAT reply saddr:sport -> daddr:dport (real server -> client)."""
        return self.by_out.get((protocol, saddr, sport, daddr, dport))

    def template_get(self, protocol: int, caddr: bytes, vaddr: bytes, vport: int) -> Conn | None:
        return self.templates.get((protocol, caddr, vaddr, vport))

    # -- timers -----------------------------------------------------------------------------
    def put(self, conn: Conn, now: float) -> None:
        """ip_vs_conn_put(): re-arm the expiry timer to now + timeout."""
        conn.expires = now + conn.timeout
        if conn in self.all:
            self.wheel.schedule(conn, conn.expires)

    def expire_now(self, conn: Conn) -> None:
        """ip_vs_conn_expire_now(): make the entry due at once."""
        conn.expires = self.clock.now()
        if conn in self.all:
            self.wheel.schedule(conn, conn.expires)

    def neutralize_template(self, tmpl: Conn) -> None:
        """ip_vs_check_template() on an unusable template: make it match nothing."""
        key = (tmpl.protocol, tmpl.caddr, tmpl.vaddr, tmpl.vport)
        if self.templates.get(key) is tmpl:
            del self.templates[key]
        tmpl.vport = 0xFFFF
        tmpl.dport = 0xFFFF
        tmpl.cport = 0

    def control_add(self, conn: Conn, tmpl: Conn) -> None:
        conn.control = tmpl
        tmpl.n_control += 1

    def _deadline(self, conn: Conn) -> float | None:
        return conn.expires if conn in self.all else None

    def _expire(self, conn: Conn) -> float | None:
        """ip_vs_conn_expire(): keep controllers 60 s more, else unhash and unbind."""
        if conn.n_control:
            conn.timeout = tcpstate.TEMPLATE_KEEPALIVE
            conn.expires = self.clock.now() + conn.timeout
            return conn.expires
        self.remove(conn)
        return None

    def remove(self, conn: Conn) -> None:
        if conn not in self.all:
            return
        del self.all[conn]
        if conn.flags & CONN_F_TEMPLATE:
            key = (conn.protocol, conn.caddr, conn.vaddr, conn.vport)
            if self.templates.get(key) is conn:
                del self.templates[key]
        else:
            key = conn.in_key()
            if self.by_in.get(key) is conn:
                del self.by_in[key]
            key = conn.out_key()
            if self.by_out.get(key) is conn:
                del self.by_out[key]
        if conn.control is not None:
            conn.control.n_control -= 1
            conn.control = None
        unbind_dest(conn)

    def run_timers(self) -> int:
        return self.wheel.run(self._deadline, self._expire)

    def flush(self) -> None:
        """Drop every entry (pyvs shutdown / tests)."""
        for conn in list(self.all):
            conn.n_control = 0
            self.remove(conn)


def is_noutput(conn: Conn) -> bool:
    return bool(conn.flags & CONN_F_NOOUTPUT)


def service_of(conn: Conn) -> VirtualService | None:
    return conn.dest.service if conn.dest is not None else None
