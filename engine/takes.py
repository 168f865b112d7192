"""What pyvs takes: one model of which packets are pyvs's, and which port serves each.

Kernel IPVS sees requests at LOCAL_IN (ip_vs_in: to a local address, after every
prerouting hook, so with any firewall mark set there) and NAT replies and ICMP errors
at FORWARD (ip_vs_out, ip_vs_forward_icmp).  pyvs has to pull the same packets out of
the kernel, and with a fast port (``--io ring`` / ``--io xdp``) it pulls some of them
earlier, at the interface.  This module says, from the service table alone, which
packets those are; every encoding is generated from it and tested against ``where``
(tests/test_takes_agreement.py):

  * engine/plumbing.py       nftables rules that queue to NFQUEUE (all of it);
  * engine/plumbing_ring.py  netdev rules that keep the ring's frames from the kernel;
  * engine/io/match.py       the Python and numpy classifiers of the batch pipeline;
  * engine/io/steer.py       the XDP program's targets map.

What is taken (``Takes.of``):
  requests, to a local address: TCP/UDP to a service's addr:port (port 0: every
    port); for a TCP port-21 service also destination port 20 or >= 1024 (the FTP data
    connections ip_vs_service_find gives to it); any packet carrying the mark of a
    fwmark service of its family; ICMP errors to a service's address, and to any local
    address when a fwmark service (whose address is unknown) or an IPv4 tunnel real
    server (errors about the tunnel packets come to the director's own address) exists;
  replies, forwarded: TCP/UDP from a NAT real server's addr:port (port 0, and every
    TCP/UDP port for fwmark services: any port), FTP data from the NAT real servers of
    port-21 services, and ICMP errors quoting a packet sent to a NAT real server.
Which port serves it (``where``): a fast port takes what it can read at the interface
as an exact key -- TCP/UDP, IPv4 or IPv6 without extension headers, to a service's
addr:port or addr (port 0), or from a NAT real server's with a TTL above 1 (the kernel
answers Time Exceeded for the others) -- of services that are not fwmark services;
NFQUEUE takes the rest: fwmark traffic, ICMP errors, FTP data, IPv6 with extension
headers.  With a fast port a packet matching an addr:port key is taken before any
prerouting rule could mark it (README: "Using pyvs in place of kernel IPVS").

Packets are read as netfilter reads them (``read``): an IPv4 header it accepts
(version 4, IHL >= 5, total length within the frame and not below the header), an IPv6
header whose payload length fits, the transport header found as ipv6_find_hdr finds it,
ports only in first fragments and only where the frame holds them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pyvs.engine.model import AF_INET, FWD_MASQ, FWD_TUNNEL, IPPROTO_TCP, IPPROTO_UDP

FAST, REQUESTS, REPLIES = "fast", "requests", "replies"  # where a packet goes
REQUEST, REPLY = 1, 2  # what a fast port took: to a service / from a NAT real server
FAST_PROTOCOLS = (IPPROTO_TCP, IPPROTO_UDP)
PORT_PROTOCOLS = (IPPROTO_TCP, IPPROTO_UDP)  # a service's protocols (engine/service.py)
ANY_PORT = (0, 65535)
# ip_vs_service_find: FTPDATA, or a port that needs no bind privilege (>= 1024)
FTP_PORT = 21
FTP_DATA = ((20, 20), (1024, 65535))
IPPROTO_ICMP, IPPROTO_ICMPV6 = 1, 58
ICMP4_ERRORS = (3, 4, 11)  # ip_vs_in_icmp: unreachable, source quench, time exceeded
ICMP6_ERRORS = range(128)  # ip_vs_in_icmp_v6: every type without ICMPV6_INFOMSG_MASK
ETH_IP, ETH_IP6 = 0x0800, 0x86DD
# ipv6_ext_hdr(): hop-by-hop, routing, fragment, authentication, no next header, dest opts
V6_EXT = frozenset((0, 43, 44, 51, 59, 60))
V6_FRAGMENT, V6_AUTH, V6_NONE = 44, 51, 59


@dataclass(frozen=True, order=True)
class PortKey:
    """Packets of ``proto`` to (requests) or from (replies) ``addr`` with a port in
    ``lo..hi``."""

    proto: int
    addr: bytes
    lo: int
    hi: int

    @property
    def family(self) -> int:
        return 4 if len(self.addr) == 4 else 6

    @property
    def port(self) -> int:
        """The port of an exact key, 0 for every port (the fast ports' encoding)."""
        return self.lo if self.lo == self.hi else 0

    def matches(self, proto: int, addr: bytes, port: int) -> bool:
        return proto == self.proto and addr == self.addr and self.lo <= port <= self.hi


def merged(keys: Iterable[PortKey]) -> list[PortKey]:
    """The same packets as ``keys`` with overlapping or adjacent port ranges of one
    protocol and address joined (an nftables interval set refuses overlaps), sorted."""
    out: list[PortKey] = []
    for k in sorted(keys):
        last = out[-1] if out else None
        if last and (last.proto, last.addr) == (k.proto, k.addr) and k.lo <= last.hi + 1:
            out[-1] = PortKey(k.proto, k.addr, last.lo, max(last.hi, k.hi))
        else:
            out.append(k)
    return out


def _key(proto: int, addr: bytes, port: int) -> PortKey:
    return PortKey(proto, bytes(addr), port, port) if port else PortKey(proto, bytes(addr),
                                                                        *ANY_PORT)


@dataclass(frozen=True)
class Packet:
    """A frame as netfilter reads it.  ``family`` is 0 unless netfilter accepts the IP
    header; ``proto`` is None when it finds no transport header (not IP, a header it
    refuses, an IPv6 extension header chain ipv6_find_hdr gives up on); ``exact``: a
    fast port can read it (and for IPv6: TCP/UDP right after the fixed header)."""

    family: int = 0
    proto: int | None = None
    exact: bool = False
    saddr: bytes = b""
    daddr: bytes = b""
    ttl: int = 0
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    quoted_daddr: bytes | None = None
    mark: int = 0
    local: bool = False  # the destination is one of the director's addresses
    forwarded: bool = False  # the kernel routes it on (FORWARD hook)


def _u16(b: bytes, at: int) -> int:
    return (b[at] << 8) | b[at + 1]


def _v6_transport(b: bytes) -> tuple[int, int, int] | None:
    """ipv6_find_hdr(skb, &thoff, -1, &fragoff, ...): (protocol, offset, fragment offset)
    or None where it fails."""
    nh, start = b[6], 40
    while nh in V6_EXT and nh != V6_NONE:
        if start + 2 > len(b):
            return None
        nxt, hlen = b[start], b[start + 1]
        if nh == V6_FRAGMENT:
            if start + 4 > len(b):
                return None
            frag = _u16(b, start + 2) & ~7
            if frag:
                if nxt not in V6_EXT or nxt == V6_NONE:
                    return nxt, start + 8, frag
                return None
            size = 8
        elif nh == V6_AUTH:
            size = (hlen + 2) << 2
        else:
            size = (hlen + 1) << 3
        nh, start = nxt, start + size
    return nh, start, 0


def read(frame: bytes, mark: int = 0, local: Iterable[bytes] = (),
         forwarded: bool | None = None) -> Packet:
    """The model's view of an Ethernet frame.  ``local``: the director's addresses;
    ``forwarded`` defaults to "not to a local address and TTL above 1"."""
    frame = bytes(frame)
    if len(frame) < 14:
        return Packet(mark=mark)
    ethertype, b = _u16(frame, 12), frame[14:]
    if ethertype == ETH_IP and len(b) >= 20:
        family, saddr, daddr, ttl = 4, b[12:16], b[16:20], b[8]
        ihl, total = (b[0] & 15) << 2, _u16(b, 2)
        if b[0] >> 4 != 4 or ihl < 20 or total > len(b) or total < ihl:
            return Packet(mark=mark)
        proto, thoff, frag, exact = b[9], ihl, _u16(b, 6) & 0x1FFF, True
    elif ethertype == ETH_IP6 and len(b) >= 40:
        family, saddr, daddr, ttl = 6, b[8:24], b[24:40], b[7]
        if b[0] >> 4 != 6 or 40 + _u16(b, 4) > len(b):
            return Packet(mark=mark)
        found = _v6_transport(b)
        if found is None:  # netfilter knows the family and the mark, nothing more
            return Packet(family, mark=mark)
        proto, thoff, frag = found
        exact = b[6] in FAST_PROTOCOLS
    else:
        return Packet(mark=mark)
    local_set = {bytes(a) for a in local}
    is_local = daddr in local_set
    if forwarded is None:
        forwarded = not is_local and ttl > 1
    sport = dport = icmp_type = quoted = None
    if not frag:
        if proto in PORT_PROTOCOLS and thoff + 4 <= len(b):
            sport, dport = _u16(b, thoff), _u16(b, thoff + 2)
        if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6) and thoff + 1 <= len(b):
            icmp_type = b[thoff]
            at = thoff + (24 if family == 4 else 32)  # the quoted header's destination
            size = len(saddr)
            if at + size <= len(b):
                quoted = b[at:at + size]
    return Packet(family, proto, exact, saddr, daddr, ttl, sport, dport, icmp_type, quoted,
                  mark, is_local, forwarded)


def is_icmp_error(pkt: Packet) -> bool:
    if pkt.icmp_type is None:
        return False
    if pkt.family == 4:
        return pkt.proto == IPPROTO_ICMP and pkt.icmp_type in ICMP4_ERRORS
    return pkt.proto == IPPROTO_ICMPV6 and pkt.icmp_type in ICMP6_ERRORS


@dataclass(frozen=True)
class Takes:
    """What pyvs takes, for one service table; ``fast_*`` are the subsets a fast port
    takes at the interface (they are in ``requests`` / ``replies`` too: NFQUEUE has
    them when no fast port runs, or when one passed a frame on)."""

    requests: frozenset[PortKey] = frozenset()
    replies: frozenset[PortKey] = frozenset()
    fast_requests: frozenset[PortKey] = frozenset()
    fast_replies: frozenset[PortKey] = frozenset()
    marks: frozenset[tuple[int, int]] = frozenset()  # (family 4|6, firewall mark)
    icmp_to: frozenset[bytes] = frozenset()  # ICMP errors to these addresses
    icmp_local: frozenset[int] = frozenset()  # families: ICMP errors to any local address
    icmp_about: frozenset[bytes] = frozenset()  # forwarded errors quoting a packet to these

    @classmethod
    def of(cls, services: Iterable) -> Takes:
        """The model of a service table (VirtualService objects, engine/model.py)."""
        sets: dict[str, set] = {name: set() for name in (
            "requests", "replies", "fast_requests", "fast_replies", "marks", "icmp_to",
            "icmp_local", "icmp_about")}
        for svc in services:
            family = 4 if svc.af == AF_INET else 6
            nat = [d for d in svc.destinations if d.fwd == FWD_MASQ]
            sets["icmp_about"].update(bytes(d.addr) for d in nat)
            if any(d.fwd == FWD_TUNNEL and len(d.addr) == 4 for d in svc.destinations):
                sets["icmp_local"].add(4)
            if svc.fwmark:
                sets["marks"].add((family, svc.fwmark))
                sets["icmp_local"].add(family)
                for d in nat:
                    for proto in FAST_PROTOCOLS:
                        sets["replies"].add(PortKey(proto, bytes(d.addr), *ANY_PORT))
                continue
            if svc.protocol not in PORT_PROTOCOLS:
                continue
            fast = svc.protocol in FAST_PROTOCOLS
            ftp = svc.protocol == IPPROTO_TCP and svc.port == FTP_PORT
            sets["icmp_to"].add(bytes(svc.addr))
            _add(sets, "requests", _key(svc.protocol, svc.addr, svc.port), fast)
            if ftp:
                sets["requests"].update(PortKey(IPPROTO_TCP, bytes(svc.addr), lo, hi)
                                        for lo, hi in FTP_DATA)
            for d in nat:
                _add(sets, "replies", _key(svc.protocol, d.addr, d.port), fast)
                if ftp:
                    sets["replies"].update(PortKey(IPPROTO_TCP, bytes(d.addr), lo, hi)
                                           for lo, hi in FTP_DATA)
        return cls(**{name: frozenset(s) for name, s in sets.items()})

    @property
    def empty(self) -> bool:
        return not (self.requests or self.replies or self.marks or self.icmp_local)

    def fast_targets(self) -> tuple[list[tuple[int, bytes, int]], list[tuple[int, bytes, int]]]:
        """([(proto, addr, port)] of requests, [...] of replies) a fast port takes; port 0
        means every port."""
        return ([(k.proto, k.addr, k.port) for k in sorted(self.fast_requests)],
                [(k.proto, k.addr, k.port) for k in sorted(self.fast_replies)])

    # -- per packet ---------------------------------------------------------------------
    def fast_kind(self, pkt: Packet) -> int:
        """REQUEST or REPLY if a fast port takes ``pkt`` at the interface, else 0."""
        if not pkt.exact or pkt.proto not in FAST_PROTOCOLS or pkt.dport is None:
            return 0
        if any(k.matches(pkt.proto, pkt.daddr, pkt.dport) for k in self.fast_requests):
            return REQUEST
        if pkt.ttl > 1 and any(k.matches(pkt.proto, pkt.saddr, pkt.sport)
                               for k in self.fast_replies):
            return REPLY
        return 0

    def queued_request(self, pkt: Packet) -> bool:
        """NFQUEUE takes it at prerouting (after every other prerouting hook)."""
        if (pkt.family, pkt.mark) in self.marks:
            return True
        if pkt.proto is None:
            return False
        if pkt.dport is not None and pkt.local and any(
                k.matches(pkt.proto, pkt.daddr, pkt.dport) for k in self.requests):
            return True
        return is_icmp_error(pkt) and (pkt.daddr in self.icmp_to
                                       or (pkt.local and pkt.family in self.icmp_local))

    def queued_reply(self, pkt: Packet) -> bool:
        """NFQUEUE takes it in FORWARD (where IPVS's ip_vs_reply4 sits)."""
        if pkt.proto is None or not pkt.forwarded:
            return False
        if pkt.sport is not None and any(
                k.matches(pkt.proto, pkt.saddr, pkt.sport) for k in self.replies):
            return True
        return is_icmp_error(pkt) and pkt.quoted_daddr in self.icmp_about

    def where(self, pkt: Packet, fast: bool) -> str | None:
        """FAST, REQUESTS or REPLIES (NFQUEUE at prerouting / forward), or None: the
        kernel keeps it.  ``fast``: a fast port runs."""
        if fast and self.fast_kind(pkt):
            return FAST
        if self.queued_request(pkt):
            return REQUESTS
        if self.queued_reply(pkt):
            return REPLIES
        return None


def _add(sets: dict[str, set], name: str, key: PortKey, fast: bool) -> None:
    sets[name].add(key)
    if fast:
        sets["fast_" + name].add(key)

