"""The connection table: entries, lookups in both directions, templates, expiry.

Mirrors ip_vs_conn.c.  Entries are indexed three ways:
  * in:       (protocol, caddr, cport, vaddr, vport)  -- client -> director packets
  * out:      (protocol, daddr, dport, caddr, cport)  -- NAT replies (MASQ entries only)
  * template: (protocol, masked caddr, vaddr, vport)  -- persistence templates
When a key is taken again (after a reschedule) the newest entry wins the index,
while the old one lives on until it expires, as in the kernel's hash chains.
Binding to a destination moves its active/inactive/persistent counters and the
OVERLOAD flag exactly as ip_vs_bind_dest()/ip_vs_unbind_dest() do.

Compact storage (a million entries in about 200 bytes each):
  * the in index is keyed by one packed integer (``pack_key``: protocol, source
    addr:port, destination addr:port -- the fields of the packet that looks the
    entry up, so the batch fast path in engine/fastpath.py builds the same integers
    from header bytes);
  * a connection stores its in key and nothing else of the client/virtual side:
    ``caddr``, ``cport``, ``vaddr``, ``vport``, ``protocol`` and ``af`` are decoded
    from it on demand; templates (few, and rewritten by neutralize_template) keep
    plain attributes;
  * there is no out index: a NAT reply (real server rs:rport -> client c:cport) is
    found through ``rs_vips``, which maps (protocol, rs, rport) to the virtual
    addr:port pairs that currently have MASQ entries toward it (refcounted, usually
    one), by looking up the in key (c, cport, vip, vport) and checking that entry's
    real server; when two live entries share one reply tuple (one client port
    talking to two VIPs served by the same rs:port) the newest is recorded in
    ``out_override``, so the newest wins as in the kernel's hash chain;
  * membership is the CONN_F_HASHED flag, not a fourth dict; entries that lost their
    index slot (rescheduled with controlled entries, neutralized templates) sit in a
    small side dict until they expire;
  * flag values are interned and expiry deadlines of one batch share one float, so
    an entry owns no small objects besides its two keys;
  * the timer wheel files an entry once and re-files it only when its deadline moves
    earlier (or its slot comes up), so a busy entry costs nothing per packet there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from pyvs.engine.accounting import bind_dest, intern_flags, unbind_dest
from pyvs.engine.clock import Clock, TimerWheel
from pyvs.engine.model import (
    AF_INET,
    AF_INET6,
    CONN_F_HASHED,
    CONN_F_ONE_PACKET,
    CONN_F_TEMPLATE,
    FWD_MASK,
    FWD_MASQ,
    Destination,
)
from pyvs.engine.proto import state_name

if TYPE_CHECKING:
    pass

NEW_CONN_TIMEOUT = 3  # ip_vs_conn_new(): 3*HZ until the first state transition

V6_KEY = 1 << 304  # marks an IPv6 key: no IPv4 key reaches this bit
_M32 = 0xFFFFFFFF
_M128 = (1 << 128) - 1
_M48, _M144 = (1 << 48) - 1, (1 << 144) - 1
_MISSING = object()
TEMPLATE_KEEPALIVE = 60  # a template still controlling connections is re-armed by 60 s


def pack_key(protocol: int, saddr: bytes, sport: int, daddr: bytes, dport: int) -> int:
    """One integer for (protocol, saddr, sport, daddr, dport), as a packet carries them.

    IPv4: protocol<<96 | saddr<<64 | sport<<48 | daddr<<16 | dport (104 bits).
    IPv6: V6_KEY | protocol<<288 | saddr<<160 | sport<<144 | daddr<<16 | dport.
    """
    if len(saddr) == 4:
        return ((protocol << 96) | (int.from_bytes(saddr, "big") << 64) | (sport << 48)
                | (int.from_bytes(daddr, "big") << 16) | dport)
    return (V6_KEY | (protocol << 288) | (int.from_bytes(saddr, "big") << 160)
            | (sport << 144) | (int.from_bytes(daddr, "big") << 16) | dport)


def rs_key(protocol: int, addr: bytes, port: int) -> int:
    """(protocol, real server addr, port) as one integer (rs_vips keys).
    IPv4: protocol<<48 | addr<<16 | port (fits 64 bits, for numpy)."""
    if len(addr) == 4:
        return (protocol << 48) | (int.from_bytes(addr, "big") << 16) | port
    return (1 << 160) | (protocol << 144) | (int.from_bytes(addr, "big") << 16) | port


def source_rs_key(key: int) -> int:
    """rs_key(protocol, saddr, sport) of a packet given by its pack_key: the key's top bits
    shifted down (IPv6: V6_KEY lands on rs_key's 1 << 160)."""
    return key >> 144 if key & V6_KEY else key >> 48


def vip_part(addr: bytes, port: int) -> int:
    """The low part of an in key: vaddr<<16 | vport."""
    return (int.from_bytes(addr, "big") << 16) | port


def client_part(protocol: int, addr: bytes, port: int) -> int:
    """The high part of an in key: everything but vaddr:vport."""
    if len(addr) == 4:
        return (protocol << 96) | (int.from_bytes(addr, "big") << 64) | (port << 48)
    return V6_KEY | (protocol << 288) | (int.from_bytes(addr, "big") << 160) | (port << 144)


class Conn:
    """struct ip_vs_conn (a regular entry; templates are TemplateConn)."""

    __slots__ = ("ikey", "daddr", "dport", "fwmark", "flags", "state", "timeout", "expires",
                 "dest", "control", "in_pkts", "sync")

    n_control = 0  # only templates control other entries

    def __init__(self, af: int, protocol: int, caddr: bytes, cport: int, vaddr: bytes,
                 vport: int, daddr: bytes, dport: int, flags: int, fwmark: int) -> None:
        self.ikey = pack_key(protocol, caddr, cport, vaddr, vport)
        self.daddr = daddr
        self.dport = dport
        self.fwmark = fwmark
        self.flags = flags
        self.state = 0
        self.timeout = NEW_CONN_TIMEOUT
        self.expires = 0.0
        self.dest: Destination | None = None
        self.control: TemplateConn | None = None
        self.in_pkts = 0
        self.sync: tuple | None = None  # the sync master's (old_state, endtime, retries)

    # -- the client/virtual side, decoded from the in key ------------------------------
    @property
    def af(self) -> int:
        return AF_INET6 if self.ikey & V6_KEY else AF_INET

    @property
    def protocol(self) -> int:
        k = self.ikey
        return (k >> 288) & 0xFF if k & V6_KEY else k >> 96

    @property
    def caddr(self) -> bytes:
        k = self.ikey
        if k & V6_KEY:
            return ((k >> 160) & _M128).to_bytes(16, "big")
        return ((k >> 64) & _M32).to_bytes(4, "big")

    @property
    def cport(self) -> int:
        k = self.ikey
        return (k >> 144) & 0xFFFF if k & V6_KEY else (k >> 48) & 0xFFFF

    @property
    def vaddr(self) -> bytes:
        k = self.ikey
        if k & V6_KEY:
            return ((k >> 16) & _M128).to_bytes(16, "big")
        return ((k >> 16) & _M32).to_bytes(4, "big")

    @property
    def vport(self) -> int:
        return self.ikey & 0xFFFF

    # -----------------------------------------------------------------------------------
    @property
    def is_template(self) -> bool:
        return bool(self.flags & CONN_F_TEMPLATE)

    @property
    def fwd(self) -> int:
        return self.flags & FWD_MASK

    @property
    def state_name(self) -> str:
        """ip_vs_state_name(): what ipvsadm -Lnc prints."""
        return state_name(self.protocol, self.state, bool(self.flags & CONN_F_TEMPLATE))

    def out_key(self) -> int:
        return pack_key(self.protocol, self.daddr, self.dport, self.caddr, self.cport)

    def __repr__(self) -> str:
        return (f"<Conn p={self.protocol} {self.caddr.hex()}:{self.cport} -> "
                f"{self.vaddr.hex()}:{self.vport} -> {self.daddr.hex()}:{self.dport} "
                f"{self.state_name}>")


class TemplateConn(Conn):
    """A persistence template: plain attributes (neutralize_template rewrites them)."""

    __slots__ = ("af", "protocol", "caddr", "cport", "vaddr", "vport", "n_control")

    def __init__(self, af: int, protocol: int, caddr: bytes, cport: int, vaddr: bytes,
                 vport: int, daddr: bytes, dport: int, flags: int, fwmark: int) -> None:
        super().__init__(af, protocol, caddr, cport, vaddr, vport, daddr, dport, flags, fwmark)
        self.af = af
        self.protocol = protocol
        self.caddr = caddr
        self.cport = cport
        self.vaddr = vaddr
        self.vport = vport
        self.n_control = 0


class ConnTable:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.by_in: dict[int, Conn] = {}
        self.rs_vips: dict[int, dict[int, int]] = {}  # rs_key -> {vip_part: entries}
        self.out_override: dict[int, Conn] = {}  # reply key -> newest of several
        self.templates: dict[tuple, TemplateConn] = {}
        self.loose: dict[Conn, None] = {}  # live entries that lost their index slot
        self.wheel = TimerWheel(clock, granularity=0.1)
        self.expire_budget: int | None = None  # max entries looked at per run_timers()
        self._dl_now: float | None = None
        self._dl: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self.by_in) + len(self.templates) + len(self.loose)

    def entries(self) -> Iterator[Conn]:
        """Templates, then connections (creation order), then unindexed entries."""
        return iter([*self.templates.values(), *self.by_in.values(), *self.loose])

    # -- creation ---------------------------------------------------------------------------
    def new(self, af: int, protocol: int, caddr: bytes, cport: int, vaddr: bytes, vport: int,
            daddr: bytes, dport: int, flags: int, dest: Destination | None,
            fwmark: int = 0) -> Conn:
        """ip_vs_conn_new(): bind to dest and hash (unless it is a one-packet entry)."""
        cls = TemplateConn if flags & CONN_F_TEMPLATE else Conn
        conn = cls(af, protocol, caddr, cport, vaddr, vport, daddr, dport, flags, fwmark)
        if dest is not None:
            bind_dest(conn, dest)
        if conn.flags & CONN_F_ONE_PACKET:
            return conn
        conn.flags = intern_flags(conn.flags | CONN_F_HASHED)
        if cls is TemplateConn:
            key = (protocol, caddr, vaddr, vport)
            old = self.templates.pop(key, None)
            if old is not None:
                self.loose[old] = None
            self.templates[key] = conn
        else:
            key = conn.ikey
            old = self.by_in.pop(key, None)
            if old is not None:
                self.loose[old] = None
            if conn.flags & FWD_MASK == FWD_MASQ:
                self._index_out(conn, protocol, caddr, cport, vaddr, vport, daddr, dport)
            self.by_in[key] = conn
        return conn

    def _index_out(self, conn: Conn, protocol: int, caddr: bytes, cport: int, vaddr: bytes,
                   vport: int, daddr: bytes, dport: int) -> None:
        """Make a masquerading entry findable by its replies (out_get)."""
        rk = rs_key(protocol, daddr, dport)
        vips = self.rs_vips.get(rk)
        vp = vip_part(vaddr, vport)
        if vips is None:
            vips = self.rs_vips[rk] = {}
        elif (len(vips) > 1 or vp not in vips) and self.out_get(
                protocol, daddr, dport, caddr, cport) is not None:
            # another VIP's entry answers to the same reply tuple: newest wins
            self.out_override[pack_key(protocol, daddr, dport, caddr, cport)] = conn
        vips[vp] = vips.get(vp, 0) + 1

    # -- entries made by the sync daemon (ip_vs_sync.c ip_vs_proc_conn) ----------------------
    def insert(self, af: int, protocol: int, caddr: bytes, cport: int, vaddr: bytes,
               vport: int, daddr: bytes, dport: int, flags: int, dest: Destination | None,
               fwmark: int, state: int, timeout: int, in_pkts: int, now: float) -> Conn:
        """An entry with a given state and timeout (a backup's copy of the master's):
        ip_vs_conn_new() with the record's flags, then its state, timeout and packet
        count, and the timer armed (ip_vs_conn_put).  Binding counts it as active or
        inactive by its INACTIVE flag (engine/accounting.py bind_dest, SYNC entries)."""
        conn = self.new(af, protocol, caddr, cport, vaddr, vport, daddr, dport, flags, dest,
                        fwmark)
        self.refresh(conn, state, timeout, in_pkts, now)
        return conn

    def refresh(self, conn: Conn, state: int, timeout: int, in_pkts: int,
                now: float) -> None:
        """Set an entry's state, timeout and packet count as a sync record says (no state
        machine: the record carries the master's result) and re-arm its timer."""
        conn.state = state
        conn.timeout = timeout
        conn.in_pkts = in_pkts
        conn.sync = (state, conn.sync[1] if conn.sync else now, 0)  # old_state = state
        self.put(conn, now)

    def bind(self, conn: Conn, dest: Destination) -> None:
        """ip_vs_try_bind_dest(): bind an entry made while its destination was unknown.
        A synced entry takes its destination's forwarding method, so the reply index is
        brought up to date."""
        if conn.dest is not None:
            return
        hashed = conn.flags & CONN_F_HASHED and not conn.flags & CONN_F_TEMPLATE
        if hashed and not conn.flags & (CONN_F_ONE_PACKET | FWD_MASK):
            self._unindex_out(conn)
        bind_dest(conn, dest)
        if hashed and not conn.flags & (CONN_F_ONE_PACKET | FWD_MASK):
            self._index_out(conn, conn.protocol, conn.caddr, conn.cport, conn.vaddr,
                            conn.vport, conn.daddr, conn.dport)

    # -- lookups ----------------------------------------------------------------------------
    def in_get(self, protocol: int, saddr: bytes, sport: int, daddr: bytes,
               dport: int) -> Conn | None:
        return self.by_in.get(pack_key(protocol, saddr, sport, daddr, dport))

    def out_get(self, protocol: int, saddr: bytes, sport: int, daddr: bytes,
                dport: int) -> Conn | None:
        """A NAT reply saddr:sport -> daddr:dport (real server -> client)."""
        rk = rs_key(protocol, saddr, sport)
        if rk not in self.rs_vips:
            return None
        return self.out_get_packed(rk, pack_key(protocol, saddr, sport, daddr, dport),
                                   client_part(protocol, daddr, dport), saddr, sport)

    def out_get_packed(self, rk: int, key: int, base: int, saddr: bytes,
                       sport: int) -> Conn | None:
        """out_get() with the packet's integers already packed (the batch path builds them
        from header bytes): ``rk`` = rs_key of the source, ``key`` = pack_key of the
        packet, ``base`` = client_part of its destination."""
        vips = self.rs_vips.get(rk)
        if vips is None:
            return None
        if self.out_override:
            conn = self.out_override.get(key)
            if conn is not None:
                return conn
        by_in = self.by_in
        for vp in vips:
            conn = by_in.get(base | vp)
            if (conn is not None and conn.dport == sport and conn.daddr == saddr
                    and conn.flags & FWD_MASK == FWD_MASQ):
                return conn
        return None

    def out_get_key(self, key: int) -> Conn | None:
        """out_get() for a packet given by its pack_key (the batch path builds those from
        header bytes, IPv4 and IPv6): the reply's rs_key, its destination's client_part
        and its source address are all parts of the key."""
        rk = source_rs_key(key)
        if key & V6_KEY:
            base = (key >> 288 << 288) | ((key & _M144) << 144)
            saddr = ((rk >> 16) & _M128).to_bytes(16, "big")
        else:
            base = (key >> 96 << 96) | ((key & _M48) << 48)
            saddr = ((rk >> 16) & _M32).to_bytes(4, "big")
        return self.out_get_packed(rk, key, base, saddr, rk & 0xFFFF)

    def replies_possible(self, rks: list[int]) -> list[bool]:
        """For each rs_key, whether a NAT entry toward that real server exists (a packet
        from elsewhere cannot be a NAT reply): one C-level pass for a whole batch."""
        return list(map(self.rs_vips.__contains__, rks))

    def in_get_many(self, keys: list[int]) -> list[Conn | None]:
        """in_get() for a batch of packed in keys (pack_key), in one C-level pass."""
        return list(map(self.by_in.get, keys))

    def template_get(self, protocol: int, caddr: bytes, vaddr: bytes,
                     vport: int) -> TemplateConn | None:
        return self.templates.get((protocol, caddr, vaddr, vport))

    # -- timers -----------------------------------------------------------------------------
    def deadline(self, now: float, timeout: int) -> float:
        """now + timeout; one shared float per (batch time, timeout)."""
        if now is not self._dl_now:
            self._dl_now = now
            self._dl = {}
        dl = self._dl.get(timeout)
        if dl is None:
            dl = self._dl[timeout] = now + timeout
        return dl

    def put(self, conn: Conn, now: float) -> None:
        """ip_vs_conn_put(): re-arm the expiry timer to now + timeout."""
        old = conn.expires
        conn.expires = dl = self.deadline(now, conn.timeout)
        if conn.flags & CONN_F_HASHED and (dl < old or old == 0.0):
            self.wheel.schedule(conn, dl)

    def put_many(self, conns: list[Conn], now: float) -> None:
        """put() for every entry of a batch (the batch path's timer re-arming)."""
        dl_of = self.deadline
        schedule = self.wheel.schedule
        dls: dict[int, float] = {}
        for conn in conns:
            old = conn.expires
            t = conn.timeout
            dl = dls.get(t)
            if dl is None:
                dl = dls[t] = dl_of(now, t)
            conn.expires = dl
            if conn.flags & CONN_F_HASHED and (dl < old or old == 0.0):
                schedule(conn, dl)

    def neutralize_template(self, tmpl: TemplateConn) -> None:
        """ip_vs_check_template() on an unusable template: make it match nothing."""
        key = (tmpl.protocol, tmpl.caddr, tmpl.vaddr, tmpl.vport)
        if self.templates.get(key) is tmpl:
            del self.templates[key]
            if tmpl.flags & CONN_F_HASHED:
                self.loose[tmpl] = None
        tmpl.vport = 0xFFFF
        tmpl.dport = 0xFFFF
        tmpl.cport = 0

    def control_add(self, conn: Conn, tmpl: TemplateConn) -> None:
        conn.control = tmpl
        tmpl.n_control += 1

    def _deadline(self, conn: Conn) -> float | None:
        return conn.expires if conn.flags & CONN_F_HASHED else None

    def _expire(self, conn: Conn) -> float | None:
        """ip_vs_conn_expire(): keep controllers 60 s more, else unhash and unbind."""
        if conn.n_control:
            conn.timeout = TEMPLATE_KEEPALIVE
            conn.expires = self.clock.now() + conn.timeout
            return conn.expires
        self.remove(conn)
        return None

    def remove(self, conn: Conn) -> None:
        if not conn.flags & CONN_F_HASHED:
            return
        conn.flags = intern_flags(conn.flags & ~CONN_F_HASHED)
        if self.loose.pop(conn, _MISSING) is _MISSING:  # it held its index slot
            if conn.flags & CONN_F_TEMPLATE:
                key = (conn.protocol, conn.caddr, conn.vaddr, conn.vport)
                if self.templates.get(key) is conn:
                    del self.templates[key]
            else:
                key = conn.ikey
                if self.by_in.get(key) is conn:
                    del self.by_in[key]
        if not conn.flags & (CONN_F_TEMPLATE | CONN_F_ONE_PACKET | FWD_MASK):  # MASQ
            self._unindex_out(conn)
        if conn.control is not None:
            conn.control.n_control -= 1
            conn.control = None
        unbind_dest(conn)

    def _unindex_out(self, conn: Conn) -> None:
        daddr, dport = conn.daddr, conn.dport
        rk = rs_key(conn.protocol, daddr, dport)
        vips = self.rs_vips.get(rk)
        if vips is not None:
            k = conn.ikey
            vp = k & ((1 << 144) - 1) if k & V6_KEY else k & ((1 << 48) - 1)
            n = vips.get(vp, 0) - 1
            if n > 0:
                vips[vp] = n
            else:
                vips.pop(vp, None)
                if not vips:
                    del self.rs_vips[rk]
        if self.out_override:
            key = conn.out_key()
            if self.out_override.get(key) is conn:
                del self.out_override[key]

    def run_timers(self) -> int:
        return self.wheel.run(self._deadline, self._expire, self.expire_budget)

    def flush(self) -> None:
        """Drop every entry (pyvs shutdown / tests)."""
        for conn in list(self.entries()):
            if isinstance(conn, TemplateConn):
                conn.n_control = 0
            self.remove(conn)
