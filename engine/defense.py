"""A bounded connection table and IPVS's defenses against floods of new connections.

The kernel's table is bounded only by memory, and its defenses (ip_vs_ctl.c
update_defense_level, run every second and on every write of their sysctls) start
when free memory falls under ``amemthresh`` pages.  pyvs bounds its table by a
number of entries (``pyvs run --conn-limit N``, default 1,048,576) and measures
pressure on that bound instead: the memory still available is the free entries
times what one entry costs (ENTRY_BYTES), in 4 KiB pages, so ``amemthresh``
(default 1024 pages = 16,384 entries) keeps its meaning and unit.

* The bound: a packet that would create an entry (or a template and an entry) in a
  full table takes the place of the oldest half-open TCP entry (SYN_RECV or SYNACK:
  what drop_entry removes first; counted as ``half-open-reclaimed``), or, when there
  is none, is dropped and counted as ``conn-limit``.  Established entries are never
  evicted to make room, so a flood of spoofed SYNs cannot cut a connection, and a
  legitimate handshake, which leaves SYN_RECV within a round trip, outlives the
  flood's entries.
* ``drop_packet`` (ip_vs_todrop): 1 = automatic (2 while under pressure), 3 =
  always; drops one of every ``rate`` new-connection packets, ``rate = amemthresh /
  (amemthresh - available)`` or ``am_droprate`` in mode 3; counted as
  ``defense-drop-packet``.
* ``drop_entry`` (ip_vs_random_dropentry): the same modes; every second 1/32 of the
  table, picked at random, is looked at and half-open TCP entries (SYN_RECV,
  SYNACK), non-assured templates and, more rarely, entries idle for 60 s with 1-8
  packets are removed (todrop_entry); counted in ``entries-dropped``.
* ``secure_tcp``: the same modes; the TCP state tables of engine/proto/tcp.py's
  defense set are used while the value is 2 or 3 (ip_vs_protocol_timeout_change).
"""

from __future__ import annotations

import random
from collections import Counter, deque

from pyvs.engine.model import (
    CONN_F_HASHED,
    CONN_F_TEMPLATE,
    CTPL_ASSURED,
    IPPROTO_TCP,
    SVC_F_ONEPACKET,
)
from pyvs.engine.proto.tcp import ESTABLISHED, SYN_RECV, SYNACK

ENTRY_BYTES = 256  # one entry, indexes included (227 B measured, see bench/conn_memory.py)
PAGE = 4096
ENTRIES_PER_PAGE = PAGE // ENTRY_BYTES
DEFAULT_CONN_LIMIT = 1 << 20
DEFENSE_PERIOD = 1.0  # DEFENSE_TIMER_PERIOD
DROPENTRY_IDLE = 60  # todrop_entry: entries touched within 60 s are kept
DEFENSE_SYSCTLS = ("drop_entry", "drop_packet", "secure_tcp")


class Defense:
    def __init__(self, sysctl, table, clock, drops: Counter, rng: random.Random | None = None,
                 limit: int = DEFAULT_CONN_LIMIT) -> None:
        self.sysctl = sysctl
        self.table = table
        self.clock = clock
        self.drops = drops  # the director's per-reason packet drop counters
        self.rng = rng or random.Random()
        self.limit = limit  # entries; 0 = no bound
        self.counters: Counter[str] = Counter()
        self.drop_rate = 0
        self.drop_counter = 0
        self.dropentry = False
        self.old_secure_tcp = 0
        self.dropentry_counters = [0] * 9
        self.next_update = 0.0
        self.reclaimable: deque = deque()  # entries in creation order, oldest first
        self.next_refill = 0.0
        sysctl.watch(self._sysctl_written)

    # -- pressure ----------------------------------------------------------------------------
    def available_pages(self) -> int:
        """What the kernel calls availmem: here the table's free entries, in pages."""
        if not self.limit:
            return 2**31 - 1
        return max(0, self.limit - len(self.table)) // ENTRIES_PER_PAGE

    def _sysctl_written(self, name: str) -> None:
        if name in DEFENSE_SYSCTLS:  # proc_do_defense_mode
            self.update_level()

    def update_level(self) -> None:
        """update_defense_level(): the three strategies' states from the pressure;
        modes 1 and 2 flip to each other as pressure comes and goes."""
        sysctl = self.sysctl
        avail = self.available_pages()
        thresh = max(sysctl.amemthresh, 0)
        nomem = avail < thresh
        mode = sysctl.drop_entry
        if mode in (1, 2):
            self.dropentry = nomem
            sysctl.store("drop_entry", 2 if nomem else 1)
        else:
            self.dropentry = mode == 3
        mode = sysctl.drop_packet
        if mode in (1, 2):
            if nomem:
                self.drop_rate = self.drop_counter = thresh // (thresh - avail)
            else:
                self.drop_rate = 0
            sysctl.store("drop_packet", 2 if nomem else 1)
        elif mode == 3:
            self.drop_rate = sysctl.am_droprate
        else:
            self.drop_rate = 0
        mode = sysctl.secure_tcp
        if mode in (1, 2):
            sysctl.store("secure_tcp", 2 if nomem else 1)
        self.old_secure_tcp = sysctl.secure_tcp  # the director uses the defense tables at >= 2
        self.counters["level-updates"] += 1

    def tick(self, now: float) -> None:
        """defense_work_handler(): once a second."""
        if now < self.next_update:
            return
        self.next_update = now + DEFENSE_PERIOD
        self.update_level()
        if self.dropentry:
            self.random_dropentry(now)

    # -- new connections ---------------------------------------------------------------------
    def refuse_new(self, entries: int) -> str | None:
        """Before a packet creates ``entries`` entries: the reason it is dropped, if it
        is (ip_vs_todrop first, as tcp_conn_schedule / udp_conn_schedule do)."""
        if self.drop_rate:
            self.drop_counter -= 1
            if self.drop_counter <= 0:
                self.drop_counter = self.drop_rate
                return "defense-drop-packet"
        if self.limit:
            while len(self.table) + entries > self.limit:
                if not self.reclaim_half_open():
                    return "conn-limit"
        return None

    def reclaim_half_open(self) -> bool:
        """Remove the oldest half-open TCP entry (and a template it leaves unused).
        Candidates are taken from the table in creation order when the list runs out,
        so each entry is looked at about once per refill: O(1) per reclaimed entry."""
        pending = self.reclaimable
        for refilled in (False, True):
            while pending:
                conn = pending.popleft()
                if (conn.flags & CONN_F_HASHED and conn.protocol == IPPROTO_TCP
                        and conn.state in (SYN_RECV, SYNACK) and not conn.n_control):
                    self._drop(conn)
                    self.counters["half-open-reclaimed"] += 1
                    return True
            now = self.clock.now()
            if refilled or now < self.next_refill:
                return False
            pending.extend(c for c in self.table.by_in.values()
                           if c.state == SYN_RECV or c.state == SYNACK)
            if not pending:  # a table without half-open entries is not rescanned for 1 s
                self.next_refill = now + 1.0
        return False

    def _drop(self, conn) -> int:
        """Remove an entry, and its controller if nothing else uses it and it is not an
        assured template (ip_vs_conn_expire with a zero timeout)."""
        ctl = conn.control
        self.table.remove(conn)
        if (ctl is not None and not ctl.n_control
                and (not ctl.flags & CONN_F_TEMPLATE or not ctl.state & CTPL_ASSURED)):
            self.table.remove(ctl)
            return 2
        return 1

    # -- drop_entry ---------------------------------------------------------------------------
    def random_dropentry(self, now: float) -> int:
        """ip_vs_random_dropentry(): look at 1/32 of the entries, chosen at random."""
        table = self.table
        entries = list(table.entries())
        k = len(entries) >> 5
        if not k:
            return 0
        dropped = 0
        for conn in self.rng.sample(entries, k):
            if conn.n_control or not conn.flags & CONN_F_HASHED:
                continue
            if conn.flags & CONN_F_TEMPLATE:
                svc = conn.dest.service if conn.dest is not None else None
                if svc is not None and svc.flags & SVC_F_ONEPACKET:
                    if not self._todrop_entry(conn, now):
                        continue
                elif conn.state & CTPL_ASSURED:
                    continue
            elif conn.protocol == IPPROTO_TCP:
                if conn.state == ESTABLISHED:
                    if not self._todrop_entry(conn, now):
                        continue
                elif conn.state not in (SYN_RECV, SYNACK):
                    continue
            elif not self._todrop_entry(conn, now):
                continue
            dropped += self._drop(conn)
        self.counters["entries-dropped"] += dropped
        return dropped

    def _todrop_entry(self, conn, now: float) -> bool:
        """todrop_entry(): idle for 60 s, and 1..8 incoming packets, of which entries
        with i packets are dropped one in i (fewer packets, more likely)."""
        if now < conn.expires - conn.timeout + DROPENTRY_IDLE:
            return False
        i = conn.in_pkts
        if i > 8 or i < 1:
            return False
        self.dropentry_counters[i] -= 1
        if self.dropentry_counters[i] > 0:
            return False
        self.dropentry_counters[i] = i
        return True

    def status(self) -> dict:
        sysctl = self.sysctl
        return {"conn_limit": self.limit, "entries": len(self.table),
                "available_pages": self.available_pages(), "amemthresh": sysctl.amemthresh,
                "drop_entry": sysctl.drop_entry, "drop_packet": sysctl.drop_packet,
                "secure_tcp": sysctl.secure_tcp, "drop_rate": self.drop_rate,
                **dict(self.counters)}
