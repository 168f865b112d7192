"""TCP (ip_vs_proto_tcp.c): the state machine as data, and the protocol's operations.

Rows are events (syn, fin, ack, rst), columns the current state; three tables per
mode for the directions INPUT, OUTPUT and INPUT_ONLY (DR/TUN: no replies), the
normal ones (tcp_states) and the ones used while secure_tcp is in effect
(tcp_states_dos).  ``TCP`` holds the operations the director calls, as the kernel's
``struct ip_vs_protocol ip_vs_protocol_tcp`` does.
"""

from __future__ import annotations

from pyvs.engine.accounting import intern_flags, set_active
from pyvs.engine.model import CONN_F_NOOUTPUT, CTPL_ASSURED
from pyvs.engine.proto.base import INPUT_ONLY, OUTPUT, Protocol

# TCP states, in the kernel's index order (IP_VS_TCP_S_*)
NONE, ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT, TIME_WAIT, CLOSE, CLOSE_WAIT, \
    LAST_ACK, LISTEN, SYNACK = range(11)

TCP_STATE_NAMES = ("NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT",
                   "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK")

# tcp_timeouts[] (seconds)
TCP_TIMEOUTS = (2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120)

# States that count as "active" for lc/wlc (tcp_state_active_table)
TCP_ACTIVE = frozenset({ESTABLISHED, SYN_SENT, SYN_RECV, SYNACK})


# Events
EV_SYN, EV_FIN, EV_ACK, EV_RST = range(4)

_ABBR = {"NO": NONE, "ES": ESTABLISHED, "SS": SYN_SENT, "SR": SYN_RECV, "FW": FIN_WAIT,
         "TW": TIME_WAIT, "CL": CLOSE, "CW": CLOSE_WAIT, "LA": LAST_ACK, "LI": LISTEN,
         "SA": SYNACK}


def _table(text: str) -> tuple[tuple[int, ...], ...]:
    """Rows 'syn: SR ES ...' -> tuple indexed [event][state]."""
    rows = []
    for line in text.strip().splitlines():
        _, cells = line.split(":")
        rows.append(tuple(_ABBR[c] for c in cells.split()))
    return tuple(rows)


#            NO ES SS SR FW TW CL CW LA LI SA
_NORMAL = (
    _table("""
        syn: SR ES ES SR SR SR SR SR SR SR SR
        fin: CL CW SS TW TW TW CL CW LA LI TW
        ack: ES ES SS ES FW TW CL CW CL LI ES
        rst: CL CL CL SR CL CL CL CL LA LI SR"""),
    _table("""
        syn: SS ES SS SR SS SS SS SS SS LI SR
        fin: TW FW SS TW FW TW CL TW LA LI TW
        ack: ES ES SS ES FW TW CL CW LA ES ES
        rst: CL CL SS CL CL TW CL CL CL CL CL"""),
    _table("""
        syn: SR ES ES SR SR SR SR SR SR SR SR
        fin: CL FW SS TW FW TW CL CW LA LI TW
        ack: ES ES SS ES FW TW CL CW CL LI ES
        rst: CL CL CL SR CL CL CL CL LA LI CL"""),
)

# tcp_states_dos: used while secure_tcp is in effect
_DEFENSE = (
    _table("""
        syn: SR ES ES SR SR SR SR SR SR SR SA
        fin: CL CW SS TW TW TW CL CW LA LI SA
        ack: ES ES SS SR FW TW CL CW CL LI SA
        rst: CL CL CL SR CL CL CL CL LA LI CL"""),
    _table("""
        syn: SS ES SS SA SS SS SS SS SS LI SA
        fin: TW FW SS TW FW TW CL TW LA LI TW
        ack: ES ES SS ES FW TW CL CW LA ES ES
        rst: CL CL SS CL CL TW CL CL CL CL CL"""),
    _table("""
        syn: SA ES ES SR SA SA SA SA SA SA SA
        fin: CL FW SS TW FW TW CL CW LA LI TW
        ack: ES ES SS ES FW TW CL CW CL LI ES
        rst: CL CL CL SR CL CL CL CL LA LI CL"""),
)

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def tcp_event(flags: int) -> int:
    """tcp_state_idx(): RST, else SYN, else FIN, else ACK; -1 = no flag at all."""
    if flags & TCP_RST:
        return EV_RST
    if flags & TCP_SYN:
        return EV_SYN
    if flags & TCP_FIN:
        return EV_FIN
    if flags & TCP_ACK:
        return EV_ACK
    return -1


def tcp_next_state(state: int, direction: int, flags: int, secure: bool = False) -> int:
    """The new TCP state for a packet with these flags (set_tcp_state)."""
    event = tcp_event(flags)
    if event < 0:
        return CLOSE
    tables = _DEFENSE if secure else _NORMAL
    return tables[direction][event][state]


def ack_keeps_state(direction: int, secure: bool) -> frozenset[int]:
    """The states an ACK-only packet leaves unchanged in ``direction`` (what the batch
    fast path may handle without the state machine)."""
    row = (_DEFENSE if secure else _NORMAL)[direction][EV_ACK]
    return frozenset(s for s, new in enumerate(row) if new == s)


class TcpProtocol(Protocol):
    name = "TCP"
    number = 6

    def conn_schedule(self, flags: int, sloppy_tcp: int) -> bool:
        """tcp_conn_schedule(): a RST never creates a connection, and a packet without
        SYN only with sloppy_tcp (ACK is not required: SYN+ACK may schedule)."""
        if flags & TCP_RST:
            return False
        return bool(flags & TCP_SYN) or bool(sloppy_tcp)

    def starts_connection(self, flags: int) -> bool:
        """is_new_conn(): SYN set (SYN+ACK counts too)."""
        return bool(flags & TCP_SYN)

    def state_transition(self, conn, direction: int, flags: int, timeouts, secure: bool
                         ) -> None:
        """set_tcp_state(): the DR/TUN direction rule, the table, active/inactive
        accounting, the template's ASSURED mark, and the new state's timeout."""
        if conn.flags & CONN_F_NOOUTPUT:
            if direction == OUTPUT:
                conn.flags = intern_flags(conn.flags & ~CONN_F_NOOUTPUT)
            else:
                direction = INPUT_ONLY
        new = tcp_next_state(conn.state, direction, flags, secure)
        if new != conn.state:
            if conn.dest is not None:
                set_active(conn, new in TCP_ACTIVE)
            if new == ESTABLISHED and conn.control is not None:
                conn.control.state = CTPL_ASSURED
            conn.state = new
        conn.timeout = timeouts.tcp[new]

    def keep_state_many(self, conns: list, direction: int, timeouts) -> None:
        tcp = timeouts.tcp
        for conn in conns:
            conn.timeout = tcp[conn.state]

    def state_name(self, state: int) -> str:
        return TCP_STATE_NAMES[state]


TCP = TcpProtocol()
