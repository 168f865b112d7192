"""The director's own IP stack as a port's way out: packets pyvs makes itself (ICMP
errors, tunnel packets) and packets that are not IPVS business are handed to the kernel
through raw sockets, which routes them, resolves neighbours and decrements nothing."""

from __future__ import annotations

import logging
import socket

from pyvs.engine.bufref import as_bytes

log = logging.getLogger("pyvs.raw")


class RawSender:
    """Sends the packets the director makes itself (ICMP errors) through the stack."""

    def __init__(self) -> None:
        self.v4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.v6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.l2 = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)

    def send_frame(self, ifname: str, frame: bytes) -> bool:
        """An Ethernet frame out of one interface (direct routing: only the MAC changed);
        False if the kernel refused it."""
        try:
            self.l2.sendto(frame, (ifname, 0))
        except OSError as err:
            log.debug("could not send a frame on %s: %s", ifname, err)
            return False
        return True

    def send(self, packet: bytes) -> bool:
        """An IP packet, routed by the director's stack; False if the kernel refused it
        (no route, larger than the route's MTU...)."""
        try:
            if packet[0] >> 4 == 4:
                dst = socket.inet_ntop(socket.AF_INET, packet[16:20])
                self.v4.sendto(packet, (dst, 0))
            else:
                dst = socket.inet_ntop(socket.AF_INET6, packet[24:40])
                self.v6.sendto(packet, (dst, 0))
        except OSError as err:
            log.debug("could not send a generated packet: %s", err)
            return False
        return True

    def flush(self, director) -> None:
        """Send both outboxes; what the kernel refuses is counted as ``send-error``."""
        failed = 0
        if director.outbox:
            for packet in director.outbox:
                failed += not self.send(as_bytes(packet))
            director.outbox.clear()
        if director.l2_outbox:
            for ifname, frame in director.l2_outbox:
                failed += not self.send_frame(ifname, as_bytes(frame))
            director.l2_outbox.clear()
        if failed:
            director.drops["send-error"] += failed

    def close(self) -> None:
        self.v4.close()
        self.v6.close()
        self.l2.close()
