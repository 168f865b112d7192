"""UDP (ip_vs_proto_udp.c): one state, shown as "UDP", 300 s, refreshed by every packet;
any datagram may create a connection; a reply marks the template ASSURED."""

from __future__ import annotations

from pyvs.engine.model import CTPL_ASSURED
from pyvs.engine.proto.base import OUTPUT, Protocol

UDP_STATE = 0  # IP_VS_UDP_S_NORMAL
UDP_TIMEOUT = 300


class UdpProtocol(Protocol):
    name = "UDP"
    number = 17

    def state_transition(self, conn, direction: int, flags: int, timeouts, secure: bool
                         ) -> None:
        """udp_state_transition(): the timeout only (UDP entries never become active)."""
        if direction == OUTPUT and conn.control is not None:
            conn.control.state = CTPL_ASSURED
        conn.timeout = timeouts.udp

    def keep_state_many(self, conns: list, direction: int, timeouts) -> None:
        t = timeouts.udp
        for conn in conns:
            conn.timeout = t
            if direction == OUTPUT and conn.control is not None:
                conn.control.state = CTPL_ASSURED

    def state_name(self, state: int) -> str:
        return "UDP"


UDP = UdpProtocol()
