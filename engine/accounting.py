"""A connection's place in its destination's counters (ip_vs_bind_dest / ip_vs_unbind_dest).

Binding inherits the destination's connection flags and counts the entry as active,
inactive or persistent; unbinding uncounts it; state changes move it between active
and inactive.  The OVERLOAD flag follows the thresholds as in ip_vs_conn.c.  Both
the connection table and the protocols' state machines use these.
"""

from __future__ import annotations

from typing import Any

from pyvs.engine.model import (
    CONN_F_INACTIVE,
    CONN_F_NOOUTPUT,
    CONN_F_ONE_PACKET,
    CONN_F_SYNC,
    CONN_F_TEMPLATE,
    DEST_F_OVERLOAD,
    FWD_MASK,
    IPPROTO_UDP,
    Destination,
)

_FLAGS: dict[int, int] = {}  # interned flag values: a million entries share a few ints


def intern_flags(flags: int) -> int:
    return _FLAGS.setdefault(flags, flags)


def bind_dest(conn: Any, dest: Destination) -> None:
    """ip_vs_bind_dest(): inherit the dest's flags and count the entry.  An entry made
    by the sync daemon keeps the activity it was sent with and takes its forwarding
    method (and NOOUTPUT) from the destination."""
    conn_flags = dest.conn_flags
    if conn.protocol != IPPROTO_UDP:
        conn_flags &= ~CONN_F_ONE_PACKET
    flags = conn.flags
    if flags & CONN_F_SYNC:
        if not flags & CONN_F_TEMPLATE:
            conn_flags &= ~CONN_F_INACTIVE
        flags &= ~(FWD_MASK | CONN_F_NOOUTPUT)
    conn.flags = intern_flags(flags | conn_flags)
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


def unbind_dest(conn: Any) -> None:
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


def set_active(conn: Any, active: bool) -> None:
    """Move the entry between its dest's active and inactive counters."""
    dest = conn.dest
    inactive = bool(conn.flags & CONN_F_INACTIVE)
    if active and inactive:
        conn.flags = intern_flags(conn.flags & ~CONN_F_INACTIVE)
        if dest is not None:
            dest.activeconns += 1
            dest.inactconns -= 1
    elif not active and not inactive:
        conn.flags = intern_flags(conn.flags | CONN_F_INACTIVE)
        if dest is not None:
            dest.activeconns -= 1
            dest.inactconns += 1
