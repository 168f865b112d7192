"""The protocols IPVS handles, by IP protocol number, and their timeouts.

``PROTOCOLS`` is the registry (ip_vs_proto.c ip_vs_proto_get): a protocol is one
module (tcp.py, udp.py) with the operations of engine/proto/base.py.
"""

from __future__ import annotations

from pyvs.engine.proto.base import INPUT, INPUT_ONLY, OUTPUT, Protocol
from pyvs.engine.proto.tcp import ESTABLISHED, FIN_WAIT, TCP, TCP_TIMEOUTS
from pyvs.engine.proto.udp import UDP, UDP_TIMEOUT

PROTOCOLS: dict[int, Protocol] = {TCP.number: TCP, UDP.number: UDP}


def state_name(protocol: int, state: int, template: bool = False) -> str:
    """ip_vs_state_name(): what ipvsadm -Lnc prints for an entry."""
    if template:
        return "ASSURED" if state else "NONE"
    proto = PROTOCOLS.get(protocol)
    return proto.state_name(state) if proto is not None else "NONE"


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


__all__ = ["INPUT", "INPUT_ONLY", "OUTPUT", "PROTOCOLS", "Protocol", "Timeouts", "state_name"]
