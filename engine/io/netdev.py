"""What the fast ports need to know about the director's interfaces: MTU, which
interfaces hold addresses, receive queues, and turning segmentation/receive offloads
off."""

from __future__ import annotations

import ctypes
import fcntl
import logging
import socket
import struct

log = logging.getLogger("pyvs.netdev")

SIOCGIFMTU = 0x8921
def interface_mtu(ifname: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = fcntl.ioctl(s.fileno(), SIOCGIFMTU, struct.pack("16si20x", ifname.encode(), 0))
    return struct.unpack_from("i", ifreq, 16)[0]


def director_interfaces() -> list[str]:
    """Interfaces of this namespace with a global IP address (not loopback, not ports
    enslaved to a bridge or bond: the ring listens where the IP stack does)."""
    from pyroute2 import IPRoute

    names: dict[str, None] = {}
    with IPRoute() as ipr:
        index = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()
                 if not link.get_attr("IFLA_MASTER")}
        for addr in ipr.get_addr():
            name = index.get(addr["index"])
            if name and name != "lo" and addr["scope"] == 0:
                names[name] = None
    return list(names)


SIOCETHTOOL = 0x8946
ETHTOOL_GCHANNELS = 0x3C


def rx_queues(ifname: str) -> int:
    """The receive queues in use on ``ifname`` (``ethtool -l``: rx or combined channels,
    the device's real_num_rx_queues for veth); a device without channels (a bridge):
    its configured queues (``numrxqueues``, IFLA_NUM_RX_QUEUES)."""
    val = ctypes.create_string_buffer(struct.pack("<9I", ETHTOOL_GCHANNELS, *([0] * 8)), 36)
    ifr = struct.pack("16sP", ifname.encode(), ctypes.addressof(val))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifr)
            ch = struct.unpack("<9I", val.raw)
            if max(ch[5], ch[8]):
                return max(ch[5], ch[8])
        except OSError:
            pass
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        link = ipr.get_links(socket.if_nametoindex(ifname))[0]
        return int(link.get_attr("IFLA_NUM_RX_QUEUES") or 1)


_ETHTOOL_SET = {"tx": 0x17, "sg": 0x19, "tso": 0x1F, "gso": 0x24, "gro": 0x2C}


def set_offloads(ifname: str, enable: bool = False,
                 features: tuple[str, ...] = ("gro", "gso", "tso", "tx")) -> None:
    """`ethtool -K IF gro off gso off tso off tx off` (legacy ethtool ioctls).

    The ring cannot serve GSO/GRO super-frames (they exceed a ring frame) and pays a
    software checksum for CHECKSUM_PARTIAL frames; a director turns GRO off on its
    ring interfaces, and lab peers turn segmentation/checksum offload off."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for feat in features:
            val = ctypes.create_string_buffer(struct.pack("<II", _ETHTOOL_SET[feat],
                                                          int(enable)), 8)
            ifr = struct.pack("16sP", ifname.encode(), ctypes.addressof(val))
            try:
                fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifr)
            except OSError as err:
                log.debug("ethtool %s %s on %s: %s", feat, enable, ifname, err)

