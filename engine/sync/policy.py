"""When the master syncs a connection, and what record it sends (ip_vs_sync.c).

``sync_conn_needed`` is ip_vs_sync_conn_needed() over the sysctls of the same names:
TCP entries only in ESTABLISHED, FIN_WAIT, CLOSE, CLOSE_WAIT or TIME_WAIT; a change
to any of those but ESTABLISHED is sent at once; otherwise an entry is sent when its
incoming packet count ``pkts % sync_period == sync_threshold`` (the 3rd, 53rd, 103rd
... packet with the defaults ``3 50``), or only once, at ``pkts == sync_threshold``,
with ``sync_period=0``.  ``sync_refresh_period`` (with ``sync_retries``) sends an
unchanged entry again only when its expiry moved by that much or half its timeout.
Templates go with every connection they control that is sent; with
``sync_persist_mode=1`` the connections under a template are left out.

The per-entry state the kernel keeps in ``cp->old_state`` and ``cp->sync_endtime``
is the entry's ``sync`` slot: ``(old_state, endtime, retries)``, None until the
first decision (then the entry's creation is taken as now: the first decision is
made on its first packet).
"""

from __future__ import annotations

from pyvs.engine.model import CONN_F_TEMPLATE, IPPROTO_TCP
from pyvs.engine.proto.tcp import CLOSE, CLOSE_WAIT, ESTABLISHED, FIN_WAIT, TIME_WAIT
from pyvs.engine.sync.codec import SyncRecord

SYNC_TCP_STATES = frozenset({ESTABLISHED, FIN_WAIT, CLOSE, CLOSE_WAIT, TIME_WAIT})
MIN_REFRESH_DIFF = 10  # seconds: max(cp->timeout >> 1, 10 * HZ)


def in_persistence(conn) -> bool:
    """Is the entry controlled by a template (possibly through another entry)?"""
    ctl = conn.control
    while ctl is not None:
        if ctl.flags & CONN_F_TEMPLATE:
            return True
        ctl = ctl.control
    return False


def sync_conn_needed(conn, pkts: int, sysctl, now: float) -> bool:
    """ip_vs_sync_conn_needed(); records the decision in ``conn.sync`` when it says yes
    (the kernel's ``old_state`` and ``sync_endtime``)."""
    old_state, orig, retries = conn.sync or (0, now, 0)
    timeout = conn.timeout
    state = conn.state
    n = now + timeout
    new_retries = 0
    force = False
    if conn.flags & CONN_F_TEMPLATE:
        pass
    elif sysctl.sync_persist_mode and in_persistence(conn):
        return False
    elif conn.protocol == IPPROTO_TCP:
        if state not in SYNC_TCP_STATES:
            return False
        force = state != old_state
        if force and state != ESTABLISHED:
            conn.sync = (state, n, 0)
            return True
    refresh = sysctl.sync_refresh_period
    if refresh > 0:
        if abs(n - orig) < min(refresh, max(timeout / 2, MIN_REFRESH_DIFF)):
            if retries >= sysctl.sync_retries:
                return False
            if now < orig - timeout + refresh / 8:
                return False
            new_retries = retries + 1
    threshold, period = sysctl.sync_threshold
    if period > 0:
        if not conn.flags & CONN_F_TEMPLATE and pkts % period != threshold:
            return False
    elif not refresh and pkts != threshold:
        return False
    conn.sync = (state, n, new_retries)
    return True


def record_of(conn) -> SyncRecord:
    """What ip_vs_sync_conn() copies from an entry (pyvs keeps no sequence adjustment
    or persistence-engine data, so no options are sent)."""
    return SyncRecord(conn.af, conn.protocol, conn.flags, conn.state, conn.cport,
                      conn.vport, conn.dport, conn.fwmark, int(conn.timeout), conn.caddr,
                      conn.vaddr, conn.daddr)
