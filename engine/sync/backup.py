"""The backup side of the sync daemon: messages into the connection table.

``receive(datagram, source)`` decodes one message (engine/sync/codec.py) and applies
each record as ip_vs_proc_conn() does: an existing entry takes the record's state,
timeout and INACTIVE/SEQ bits (moving the destination's active/inactive counters);
an entry for the same client that points at another real server is expired and
replaced (unless the record is the old one's INACTIVE last word); a new entry is
bound to the matching service's real server if there is one (ip_vs_find_dest), else
kept unbound until one is configured (ip_vs_try_bind_dest).  Every entry carries the
SYNC flag and its packet count is set to ``sync_threshold``.  When keepalived
promotes this director, the entries are looked up like any other: packets go to
their real server without scheduling, replies are found for NAT.

Nothing in a message can stop the daemon: malformed messages and records are
counted by reason and dropped, as are messages with a wrong syncid or from a source
that is not a neighbour on the sync interface (``allowed``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from pyvs.engine.accounting import intern_flags, set_active
from pyvs.engine.model import (
    CONN_F_HASHED,
    CONN_F_INACTIVE,
    CONN_F_TEMPLATE,
    FWD_MASK,
    FWD_MASQ,
    Destination,
)
from pyvs.engine.proto import PROTOCOLS
from pyvs.engine.proto.tcp import TCP_STATE_NAMES
from pyvs.engine.sync.codec import BACKUP_UPD_MASK, SyncRecord, decode_message

TEMPLATE_V0_TIMEOUT = 180  # a version 0 template's timeout: 3*60*HZ
# states per protocol, for the record checks (pp->num_states)
NUM_STATES = {6: len(TCP_STATE_NAMES), 17: 1}


class SyncBackup:
    def __init__(self, director, syncid: int,
                 allowed: Callable[[str], bool] | None = None) -> None:
        self.director = director
        self.syncid = syncid
        self.allowed = allowed
        self.counters: Counter[str] = Counter()
        self.protocols = {p: n for p, n in NUM_STATES.items() if p in PROTOCOLS}

    def receive(self, data: bytes, source: str | None = None) -> int:
        """One datagram; returns how many records were applied."""
        c = self.counters
        c["messages"] += 1
        if source is not None and self.allowed is not None and not self.allowed(source):
            c["dropped:unexpected-source"] += 1
            return 0
        decoded = decode_message(data, self.syncid, self.protocols)
        if decoded.error == "wrong-syncid":
            c["dropped:wrong-syncid"] += 1
            return 0
        for reason in decoded.skipped:
            c[f"record-dropped:{reason}"] += 1
        if decoded.error is not None:
            c[f"malformed:{decoded.error}"] += 1
        now = self.director.clock.now()
        applied = 0
        for rec in decoded.records:
            if self.apply(rec, now):
                applied += 1
        c["records"] += applied
        return applied

    # ip_vs_proc_conn ---------------------------------------------------------------------
    def apply(self, rec: SyncRecord, now: float) -> bool:
        d = self.director
        table = d.conntable
        flags = rec.flags
        template = bool(flags & CONN_F_TEMPLATE)
        if template:
            conn = table.template_get(rec.protocol, rec.caddr, rec.vaddr, rec.vport)
        else:
            conn = table.in_get(rec.protocol, rec.caddr, rec.cport, rec.vaddr, rec.vport)
            if conn is not None and (conn.dport != rec.dport or conn.daddr != rec.daddr):
                if flags & CONN_F_INACTIVE:
                    # the expiry of the connection that was already replaced
                    self.counters["record-ignored:replaced"] += 1
                    return False
                table.remove(conn)  # ip_vs_conn_expire_now
                conn = None
        if conn is not None:
            dest = conn.dest
            if not template and dest is not None and (conn.flags ^ flags) & CONN_F_INACTIVE:
                set_active(conn, not flags & CONN_F_INACTIVE)
            conn.flags = intern_flags((flags & BACKUP_UPD_MASK)
                                      | (conn.flags & ~BACKUP_UPD_MASK))
            if dest is None:
                dest = self.find_dest(rec)
                if dest is not None:
                    table.bind(conn, dest)
        else:
            dest = self.find_dest(rec)
            if dest is None and flags & FWD_MASK not in d.forwarders:
                self.counters["record-dropped:forwarding-method"] += 1
                return False
            conn = table.new(rec.af, rec.protocol, rec.caddr, rec.cport, rec.vaddr,
                             rec.vport, rec.daddr, rec.dport, flags, dest, rec.fwmark)
            if not conn.flags & CONN_F_HASHED:  # a one-packet entry lives for no packet
                d.release(conn, now)
                return False
        table.refresh(conn, rec.state, self.timeout_of(rec), d.sysctl.sync_threshold[0],
                      now)
        return True

    def timeout_of(self, rec: SyncRecord) -> int:
        """The record's timeout; a version 0 record has none: the state's timeout
        (a template: 180 s)."""
        if rec.timeout:
            return rec.timeout
        timeouts = self.director.timeouts
        if rec.is_template:
            return TEMPLATE_V0_TIMEOUT
        if rec.protocol == 6:
            return timeouts.tcp[rec.state]
        return timeouts.udp

    def find_dest(self, rec: SyncRecord) -> Destination | None:
        """ip_vs_find_dest(): the service the record's virtual side (or fwmark) selects,
        and its real server daddr:dport (port 0 for a non-NAT fwmark service)."""
        svc = self.director.services.find(rec.af, rec.protocol, rec.vaddr, rec.vport,
                                          rec.fwmark)
        if svc is None:
            return None
        port = rec.dport
        if rec.fwmark and rec.flags & FWD_MASK != FWD_MASQ:
            port = 0
        dest = svc.find_dest(rec.af, rec.daddr, port)
        if dest is None:
            dest = svc.find_dest(rec.af, rec.daddr, port ^ rec.dport)
        return dest
