"""IPVS protocol state machines and timeouts, as data.

TCP: ip_vs_proto_tcp.c (tcp_states, tcp_states_dos, tcp_timeouts, set_tcp_state).
UDP: ip_vs_proto_udp.c (one state "UDP", 300 s).
Rows are events (syn, fin, ack, rst), columns the current state; three tables
per mode for the directions INPUT, OUTPUT and INPUT_ONLY (DR/TUN: no replies).
"""

from __future__ import annotations

# TCP states, in the kernel's index order (IP_VS_TCP_S_*)
NONE, ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT, TIME_WAIT, CLOSE, CLOSE_WAIT, \
    LAST_ACK, LISTEN, SYNACK = range(11)

TCP_STATE_NAMES = ("NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT",
                   "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK")

# tcp_timeouts[] (seconds)
TCP_TIMEOUTS = (2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120)

# States that count as "active" for lc/wlc (tcp_state_active_table)
TCP_ACTIVE = frozenset({ESTABLISHED, SYN_SENT, SYN_RECV, SYNACK})

UDP_STATE = 0  # IP_VS_UDP_S_NORMAL, shown as "UDP"
UDP_TIMEOUT = 300
ICMP_TIMEOUT = 60  # entries for ICMP (kept for completeness; ICMP is handled as errors)
TEMPLATE_KEEPALIVE = 60  # a template still controlling connections is re-armed by 60 s

# Directions
INPUT, OUTPUT, INPUT_ONLY = 0, 1, 2

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


class Timeouts:
    """Per-state timeouts of one director; --set changes ESTABLISHED, FIN_WAIT, UDP."""

    def __init__(self) -> None:
        self.tcp = list(TCP_TIMEOUTS)
        self.udp = UDP_TIMEOUT

    def get_set_values(self) -> tuple[int, int, int]:
        return (self.tcp[ESTABLISHED], self.tcp[FIN_WAIT], self.udp)

    def set_values(self, tcp: int, tcpfin: int, udp: int) -> None:
        """ip_vs_set_timeout(): 0 leaves a value unchanged."""
        if tcp:
            self.tcp[ESTABLISHED] = tcp
        if tcpfin:
            self.tcp[FIN_WAIT] = tcpfin
        if udp:
            self.udp = udp
