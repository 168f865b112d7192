"""The sync daemon's multicast sockets, set up as ip_vs_sync.c sets up its own.

Sender (make_send_sock): UDP, outgoing interface = the sync interface, multicast
loop off, TTL = mcast_ttl, fragmentation allowed (IP_PMTUDISC_DONT), SO_SNDBUF from
sync_sock_size, bound to the interface's primary IPv4 address, connected to
group:port+id.  Receiver (make_receive_sock): SO_REUSEADDR, SO_RCVBUF from
sync_sock_size, bound to the device and to group:port+id, member of the group on
that interface.  Both are non-blocking: the daemon's selector drives them.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

from pyvs.engine.sync.master import SyncConfig

SIOCGIFADDR = 0x8915
IP_MTU_DISCOVER, IP_PMTUDISC_DONT = 10, 0
IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DONT = 23, 0


def if_index(name: str) -> int:
    """The interface's index; OSError(ENODEV) if there is none of that name."""
    return socket.if_nametoindex(name)


def primary_ipv4(name: str) -> str:
    """inet_select_addr(dev, 0, RT_SCOPE_UNIVERSE): the interface's first address, or
    0.0.0.0 when it has none (the kernel then binds to no address too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            res = fcntl.ioctl(s.fileno(), SIOCGIFADDR,
                              struct.pack("256s", name.encode()[:15]))
        except OSError:
            return "0.0.0.0"
    return socket.inet_ntoa(res[20:24])


def _mreqn(group: str, ifindex: int) -> bytes:
    return struct.pack("4s4si", socket.inet_aton(group), bytes(4), ifindex)


def make_send_sock(cfg: SyncConfig, thread: int, sock_size: int) -> socket.socket:
    ifindex = if_index(cfg.mcast_ifn)
    port = cfg.mcast_port + thread
    if cfg.ipv6:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, cfg.mcast_ttl)
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DONT)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                     _mreqn("0.0.0.0", ifindex))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, cfg.mcast_ttl)
        s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
    try:
        if sock_size > 0:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sock_size)
        if not cfg.ipv6:
            s.bind((primary_ipv4(cfg.mcast_ifn), 0))
            s.connect((cfg.mcast_group, port))
        else:
            s.connect((cfg.mcast_group, port, 0, ifindex))
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


def make_receive_sock(cfg: SyncConfig, thread: int, sock_size: int) -> socket.socket:
    ifindex = if_index(cfg.mcast_ifn)
    port = cfg.mcast_port + thread
    family = socket.AF_INET6 if cfg.ipv6 else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sock_size > 0:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sock_size)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, cfg.mcast_ifn.encode())
        if cfg.ipv6:
            s.bind((cfg.mcast_group, port, 0, ifindex))
            mreq = socket.inet_pton(socket.AF_INET6, cfg.mcast_group) + struct.pack(
                "@I", ifindex)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        else:
            s.bind((cfg.mcast_group, port))
            s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                         _mreqn(cfg.mcast_group, ifindex))
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


def interface_neighbours(name: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The prefixes directly on the interface: where a peer director's messages come
    from (its own addresses are excluded by the caller)."""
    from pyroute2 import IPRoute

    nets = []
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            return nets
        for msg in ipr.get_addr(index=idx[0]):
            addr = msg.get_attr("IFA_ADDRESS")
            if addr:
                nets.append(ipaddress.ip_interface(f"{addr}/{msg['prefixlen']}"))
    return nets
