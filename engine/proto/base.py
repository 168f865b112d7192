"""The protocol interface, as the kernel's ``struct ip_vs_protocol`` (include/net/ip_vs.h).

The director asks a packet's protocol whether the packet may create a connection
(``conn_schedule``), whether it starts a new one over an old entry
(``starts_connection``, for conn_reuse_mode), and to move the connection's state and
timeout (``state_transition``); ``-Lnc`` asks it for state names.  One module per
protocol (tcp.py, udp.py); ICMP errors are not a protocol of their own in IPVS and
are handled in icmp.py.
"""

from __future__ import annotations

# Directions (IP_VS_DIR_*)
INPUT, OUTPUT, INPUT_ONLY = 0, 1, 2


class Protocol:
    name = ""
    number = 0

    def conn_schedule(self, flags: int, sloppy_tcp: int) -> bool:
        """May this packet (TCP flags, 0 for other protocols) create a connection?"""
        return True

    def starts_connection(self, flags: int) -> bool:
        """Does this packet start a connection (a SYN over an old entry)?"""
        return False

    def state_transition(self, conn, direction: int, flags: int, timeouts, secure: bool
                         ) -> None:
        """Move conn's state for one packet in ``direction`` and set its timeout."""
        raise NotImplementedError

    def keep_state_many(self, conns: list, direction: int, timeouts) -> None:
        """``state_transition`` for packets known to leave each connection's state as it
        is (the batch path's ACKs and datagrams, engine/fastpath.py): what such a packet
        still changes -- the timeout, and marks it sets -- for many at once."""
        raise NotImplementedError

    def state_name(self, state: int) -> str:
        return "NONE"
