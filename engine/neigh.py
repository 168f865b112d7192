"""Routes and neighbours toward real servers, from the kernel's own tables (pyroute2).

Direct routing and tunnelling need what the kernel's ``__ip_vs_get_out_rt`` gets from
a route lookup: the egress interface, the source address the stack would choose, the
path MTU, whether the destination is local or behind a gateway -- and, for direct
routing, the real server's link-layer address from the neighbour table.

``KernelRoutes`` keeps a small cache of both:

* a route entry is re-read after ``ROUTE_TTL`` seconds, and at once when the kernel
  announces a route, address or link change (an rtnetlink multicast socket, drained
  without blocking from ``poll()``);
* a neighbour entry is re-read after ``NEIGH_TTL`` seconds and whenever the kernel
  announces a change for it.  A STALE entry is used (as the kernel does) and the
  kernel is told it is in use (``NTF_USE``: STALE -> DELAY -> PROBE), so the kernel
  revalidates it although pyvs sends around its neighbour layer;
* with no usable entry, the kernel is asked to resolve it (``NTF_USE`` creates the
  entry and sends the ARP request / neighbour solicitation) and ``mac()`` returns
  None: the caller queues the packet (``Pending``), as the kernel's neighbour layer
  does while INCOMPLETE, bounded in packets, bytes and time.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

log = logging.getLogger("pyvs.neigh")

ROUTE_TTL = 1.0
NEIGH_TTL = 1.0
RESOLVE_TIMEOUT = 3.0  # ucast/mcast probes x retrans_time: then the queue is dropped
QUEUE_PACKETS = 100  # neigh unres_qlen (packets)
QUEUE_BYTES = 212992  # neigh unres_qlen_bytes default (SK_WMEM_MAX)

RTN_UNICAST, RTN_LOCAL = 1, 2
NUD_INCOMPLETE, NUD_REACHABLE, NUD_STALE, NUD_DELAY = 0x01, 0x02, 0x04, 0x08
NUD_PROBE, NUD_FAILED, NUD_NOARP, NUD_PERMANENT = 0x10, 0x20, 0x40, 0x80
NUD_VALID = NUD_PERMANENT | NUD_NOARP | NUD_REACHABLE | NUD_PROBE | NUD_STALE | NUD_DELAY
NTF_USE = 0x01

# rtnetlink multicast groups (linux/rtnetlink.h, legacy bitmask form)
RTMGRP_LINK, RTMGRP_NEIGH = 0x1, 0x4
RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE = 0x10, 0x40
RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE = 0x100, 0x400
RTM_NEWNEIGH, RTM_DELNEIGH = 28, 29
NDA_DST = 1
_NLMSG = struct.Struct("=IHHII")


class Route:
    """What a route lookup toward one address gave."""

    __slots__ = ("addr", "local", "ifindex", "ifname", "src", "gateway", "mtu", "lladdr",
                 "expires")

    def __init__(self, addr: bytes, local: bool, ifindex: int, ifname: str, src: bytes | None,
                 gateway: bytes | None, mtu: int, lladdr: bytes, expires: float) -> None:
        self.addr = addr
        self.local = local
        self.ifindex = ifindex
        self.ifname = ifname
        self.src = src
        self.gateway = gateway
        self.mtu = mtu
        self.lladdr = lladdr  # the egress interface's own MAC
        self.expires = expires

    def __repr__(self) -> str:
        return (f"Route({ipaddress.ip_address(self.addr)} dev {self.ifname} mtu {self.mtu}"
                f"{' local' if self.local else ''}{' via gw' if self.gateway else ''})")


class ReadyHop(NamedTuple):
    """One frame's way out, ready now: interface, next hop's MAC, own MAC, route MTU."""

    ifindex: int
    ifname: str
    dst_mac: bytes
    src_mac: bytes
    mtu: int


def ready_l2_hop(routes, route: Route, nexthop: bytes) -> ReadyHop | None:
    """The Ethernet header's ingredients for a frame to ``nexthop`` behind ``route``
    (on-link neighbour or gateway), or None while the neighbour is not resolved (the
    lookup has then started resolution in the kernel, see ``KernelRoutes.mac``)."""
    mac = routes.mac(route, nexthop)
    if mac is None:
        return None
    return ReadyHop(route.ifindex, route.ifname, mac, route.lladdr, route.mtu)


class Pending:
    """Packets waiting for one neighbour to resolve (bounded like unres_qlen)."""

    __slots__ = ("frames", "nbytes", "since", "asked")

    def __init__(self, now: float) -> None:
        self.frames: deque[tuple[bytes, object]] = deque()
        self.nbytes = 0
        self.since = now
        self.asked = now

    def push(self, packet: bytes, ctx: object) -> bool:
        """Queue; the oldest packets go first when full (__neigh_event_send). False if
        something had to be dropped."""
        self.frames.append((packet, ctx))
        self.nbytes += len(packet)
        dropped = False
        while len(self.frames) > QUEUE_PACKETS or self.nbytes > QUEUE_BYTES:
            old, _ = self.frames.popleft()
            self.nbytes -= len(old)
            dropped = True
        return not dropped


def _mac_bytes(text: str | None) -> bytes | None:
    if not text:
        return None
    return bytes(int(x, 16) for x in text.split(":"))


class KernelRoutes:
    """Route + neighbour lookups through rtnetlink, cached (see the module doc)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._ipr = None
        self._events: socket.socket | None = None
        self.routes: dict[bytes, Route] = {}
        self.neighs: dict[tuple[int, bytes], tuple[bytes | None, int, float]] = {}
        self.pending: dict[tuple[int, bytes], Pending] = {}
        self.lookups = 0  # netlink queries made (for tests and `status`)

    # -- netlink plumbing ---------------------------------------------------------------
    @property
    def ipr(self):
        if self._ipr is None:
            from pyroute2 import IPRoute

            self._ipr = IPRoute()
            try:
                s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # NETLINK_ROUTE
                s.bind((0, RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE
                        | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE))
                s.setblocking(False)
                self._events = s
            except OSError as err:  # no events: the TTLs alone keep the cache fresh
                log.warning("no rtnetlink event socket (%s); relying on cache TTLs", err)
        return self._ipr

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    def poll(self) -> set[tuple[int, bytes]]:
        """Drain kernel change notifications without blocking; invalidate what changed.
        Returns the neighbour keys (ifindex, addr) the kernel reported about."""
        touched: set[tuple[int, bytes]] = set()
        s = self._events
        if s is None:
            return touched
        for _ in range(256):  # bounded
            try:
                data = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as err:
                if err.errno == errno.ENOBUFS:  # overrun: forget everything
                    self.routes.clear()
                    self.neighs.clear()
                    continue
                break
            off = 0
            while off + 16 <= len(data):
                length, mtype, _flags, _seq, _pid = _NLMSG.unpack_from(data, off)
                if length < 16:
                    break
                if mtype in (RTM_NEWNEIGH, RTM_DELNEIGH):
                    key = self._neigh_key(data, off + 16, off + length)
                    if key is not None:
                        self.neighs.pop(key, None)
                        touched.add(key)
                else:  # link, address or route change: routes are re-read
                    self.routes.clear()
                off += (length + 3) & ~3
        return touched

    @staticmethod
    def _neigh_key(data: bytes, start: int, end: int) -> tuple[int, bytes] | None:
        if start + 12 > end:
            return None
        ifindex = struct.unpack_from("=i", data, start + 4)[0]
        off = start + 12
        while off + 4 <= end:
            alen, atype = struct.unpack_from("=HH", data, off)
            if alen < 4:
                return None
            if atype == NDA_DST:
                return ifindex, bytes(data[off + 4 : off + alen])
            off += (alen + 3) & ~3
        return None

    # -- routes ---------------------------------------------------------------------------
    def route(self, addr: bytes) -> Route | None:
        """The route toward ``addr`` (packed), or None when there is none."""
        now = self.clock()
        r = self.routes.get(addr)
        if r is not None and r.expires > now:
            return r
        ipr = self.ipr
        self.lookups += 1
        text = str(ipaddress.ip_address(addr))
        try:
            msg = ipr.route("get", dst=text)[0]
        except Exception as err:  # noqa: BLE001 - unreachable, no route: pyroute2 errors
            log.debug("no route to %s: %s", text, err)
            self.routes.pop(addr, None)
            return None
        oif = msg.get_attr("RTA_OIF") or 0
        src = msg.get_attr("RTA_PREFSRC")
        gw = msg.get_attr("RTA_GATEWAY")
        mtu = 0
        metrics = msg.get_attr("RTA_METRICS")
        if metrics is not None:
            mtu = metrics.get_attr("RTAX_MTU") or 0
        ifname, lladdr, link_mtu = "", b"", 1500
        if oif:
            link = ipr.get_links(oif)[0]
            ifname = link.get_attr("IFLA_IFNAME") or ""
            lladdr = _mac_bytes(link.get_attr("IFLA_ADDRESS")) or b""
            link_mtu = link.get_attr("IFLA_MTU") or 1500
        r = Route(addr, msg["type"] == RTN_LOCAL, oif, ifname,
                  ipaddress.ip_address(src).packed if src else None,
                  ipaddress.ip_address(gw).packed if gw else None,
                  mtu or link_mtu, lladdr, now + ROUTE_TTL)
        self.routes[addr] = r
        return r

    # -- neighbours -----------------------------------------------------------------------
    def mac(self, route: Route, addr: bytes) -> bytes | None:
        """Link-layer address of on-link ``addr`` behind ``route``; None while unresolved
        (resolution has been started in the kernel)."""
        key = (route.ifindex, addr)
        now = self.clock()
        cached = self.neighs.get(key)
        if cached is not None and cached[2] > now:
            return cached[0]
        ipr = self.ipr
        self.lookups += 1
        text = str(ipaddress.ip_address(addr))
        mac, state = None, 0
        try:
            msg = ipr.neigh("get", dst=text, ifindex=route.ifindex)[0]
            state = msg["state"]
            mac = _mac_bytes(msg.get_attr("NDA_LLADDR"))
        except Exception:  # noqa: BLE001 - ENOENT: no entry yet
            pass
        if state & (NUD_NOARP | NUD_PERMANENT) and mac is None:
            mac = b"\xff" * 6  # a NOARP device (point-to-point): any address does
        if not state & NUD_VALID or mac is None:
            self._use(route.ifindex, text)  # start (or restart) resolution
            mac = None
        elif state & NUD_STALE:
            self._use(route.ifindex, text)  # in use again: let the kernel revalidate it
        self.neighs[key] = (mac, state, now + (NEIGH_TTL if mac is not None else 0.0))
        return mac

    def _use(self, ifindex: int, text: str) -> None:
        try:
            self.ipr.neigh("replace", dst=text, ifindex=ifindex, flags=NTF_USE, state=0)
        except Exception as err:  # noqa: BLE001
            log.debug("could not trigger neighbour resolution of %s: %s", text, err)
