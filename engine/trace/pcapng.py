"""A small pcapng writer: IP packets and Ethernet frames in one file.

What the director takes in is an IP packet; what it sends may be an IP packet (NAT,
a tunnel, an ICMP error) or an Ethernet frame (direct routing: the new destination
MAC is the point).  Each kind gets its pcapng interface (raw IP, Ethernet) when its
first packet comes, so a trace of one forwarding method is a file with one link type,
which tcpdump reads as well as Wireshark and scapy's ``rdpcap``; a trace that mixes
them (a direct-routing service's ICMP errors) holds two interfaces, which Wireshark
and scapy read and libpcap (tcpdump) refuses.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

LINKTYPES = {"ip": 101, "eth": 1}  # LINKTYPE_RAW, LINKTYPE_ETHERNET
SNAPLEN = 262144


def _block(kind: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    size = 12 + len(body)
    return struct.pack("<II", kind, size) + body + struct.pack("<I", size)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


class PcapNgWriter:
    def __init__(self, path: str) -> None:
        self.file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.file.write(_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)))
        self.interfaces: dict[str, int] = {}  # link kind -> interface id, in first use

    def _interface(self, link: str) -> int:
        ifid = self.interfaces.get(link)
        if ifid is None:
            ifid = self.interfaces[link] = len(self.interfaces)
            opts = _option(2, link.encode()) + _option(0, b"")
            self.file.write(_block(1, struct.pack("<HHI", LINKTYPES[link], 0, SNAPLEN) + opts))
        return ifid

    def write(self, data: bytes, link: str, when: float) -> None:
        """One packet (``link``: "ip" or "eth") captured at ``when`` (seconds, epoch)."""
        us = int(when * 1_000_000)
        head = struct.pack("<IIIII", self._interface(link), us >> 32, us & 0xFFFFFFFF,
                           len(data), len(data))
        self.file.write(_block(6, head + data))

    def close(self) -> None:
        self.file.close()
