"""A small pcapng writer: IP packets and Ethernet frames in one file.

What the director takes in is an IP packet; what it sends may be an IP packet (NAT,
a tunnel, an ICMP error) or an Ethernet frame (direct routing: the new destination
MAC is the point).  Classic pcap has one link type per file, so `pyvs trace` writes
pcapng (two interfaces: raw IP and Ethernet), which tcpdump, Wireshark and scapy's
``rdpcap`` read.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

LINKTYPE_RAW = 101
LINKTYPE_ETHERNET = 1
INTERFACES = {"ip": 0, "eth": 1}
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
        for name, link in (("ip", LINKTYPE_RAW), ("eth", LINKTYPE_ETHERNET)):
            opts = _option(2, name.encode()) + _option(0, b"")
            self.file.write(_block(1, struct.pack("<HHI", link, 0, SNAPLEN) + opts))

    def write(self, data: bytes, link: str, when: float) -> None:
        """One packet (``link``: "ip" or "eth") captured at ``when`` (seconds, epoch)."""
        us = int(when * 1_000_000)
        head = struct.pack("<IIIII", INTERFACES[link], us >> 32, us & 0xFFFFFFFF,
                           len(data), len(data))
        self.file.write(_block(6, head + data))

    def close(self) -> None:
        self.file.close()
