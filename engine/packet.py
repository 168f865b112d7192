"""Header views over a buffer holding one IP packet, checksums, ICMP builders.

This module is on the data path: it uses only ``struct`` and integer
arithmetic over the buffer (a ``bytearray`` for in-place rewriting, or any
bytes-like object for reading).  Never import scapy here.

Layout conventions
------------------
* ``parse(buf, offset)`` reads the IP packet that starts at ``buf[offset]``
  (``offset`` = 14 for an Ethernet frame, 0 for a TUN read).  Every offset in
  the returned :class:`PacketInfo` is absolute, i.e. relative to ``buf[0]``.
* Bytes after the IP total length (Ethernet padding) are allowed and ignored;
  ``info.l3_off + info.ip_len`` is the end of the IP packet.
* Addresses are packed bytes in network order (4 or 16 bytes).

Checksum arithmetic: engine/csum.py.
"""

from __future__ import annotations

import socket
import struct

from pyvs.engine.csum import (
    TTL_DELTA,
    checksum,
    csum_adjust,
    csum_finish,
    pseudo_header_sum,
)

AF_INET = socket.AF_INET
AF_INET6 = socket.AF_INET6

IPPROTO_HOPOPTS = 0
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_AH = 51
IPPROTO_ICMPV6 = 58
IPPROTO_NONE = 59
IPPROTO_DSTOPTS = 60
IPPROTO_SCTP = 132

# Drop reasons (Malformed.reason) -- stable strings, used as counter keys.
R_TRUNCATED = "truncated"  # buffer too short for a fixed header (IP, ext hdr, L4)
R_BAD_VERSION = "bad-version"  # IP version not 4/6
R_BAD_IHL = "bad-ihl"  # IHL < 5, or the IPv4 header does not fit the buffer
R_BAD_LENGTH = "bad-length"  # IP total/payload length < header or beyond the buffer
R_BAD_TCP_DOFF = "bad-tcp-doff"  # TCP data offset < 5 or beyond the IP packet
R_BAD_UDP_LEN = "bad-udp-length"  # UDP length < 8 or beyond the IP packet
R_BAD_QUOTE = "bad-icmp-quote"  # ICMP error quoting something that is not IP of the same family

DROP_REASONS = (
    R_TRUNCATED,
    R_BAD_VERSION,
    R_BAD_IHL,
    R_BAD_LENGTH,
    R_BAD_TCP_DOFF,
    R_BAD_UDP_LEN,
    R_BAD_QUOTE,
)

_V6_EXT = frozenset((IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS, IPPROTO_AH))
_PORT_PROTOS = frozenset((IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP))
_ICMP4_ERRORS = frozenset((3, 4, 11))  # dest unreachable, source quench, time exceeded

_ip4_hdr = struct.Struct("!BBHHHBBH4s4s")
_ip6_hdr = struct.Struct("!IHBB16s16s")
_HH = struct.Struct("!HH")
_H = struct.Struct("!H")
_BB = struct.Struct("!BB")
_HHH = struct.Struct("!HHH")


class Malformed(Exception):
    """A packet the engine must drop; ``reason`` is one of DROP_REASONS."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class PacketInfo:
    """Parsed view of one IP packet (or of the IP packet quoted in an ICMP error).

    Offsets are absolute positions in the buffer.  ``csum_off`` is the absolute
    offset of the L4 checksum field (TCP, UDP, ICMP, ICMPv6) or -1 when the L4
    header was not parsed (other protocols, non-first fragments, quoted packets).
    """

    __slots__ = (
        "af",
        "version",
        "l3_off",
        "l4_off",
        "proto",
        "saddr",
        "daddr",
        "sport",
        "dport",
        "has_ports",
        "tcp_flags",
        "ip_len",
        "ttl",
        "df",
        "is_frag",
        "first_frag",
        "more_frags",
        "icmp_type",
        "icmp_code",
        "payload_len",
        "csum_off",
    )

    def __init__(self, af, version, l3_off, l4_off, proto, saddr, daddr, ip_len, ttl, df,
                 is_frag, first_frag, more_frags):  # fmt: skip
        self.af = af
        self.version = version
        self.l3_off = l3_off
        self.l4_off = l4_off
        self.proto = proto
        self.saddr = saddr
        self.daddr = daddr
        self.ip_len = ip_len
        self.ttl = ttl
        self.df = df
        self.is_frag = is_frag
        self.first_frag = first_frag
        self.more_frags = more_frags
        self.sport = 0
        self.dport = 0
        self.has_ports = False
        self.tcp_flags = 0
        self.icmp_type = -1
        self.icmp_code = -1
        self.payload_len = 0
        self.csum_off = -1

    @property
    def ip_end(self) -> int:
        """Absolute offset just past the IP packet (before any link padding)."""
        return self.l3_off + self.ip_len

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"PacketInfo({fields})"


# --------------------------------------------------------------------------- parsing


def parse(buf, offset: int = 0) -> PacketInfo:
    """Parse and validate the IP packet at ``buf[offset:]``; raise Malformed."""
    n = len(buf)
    if offset >= n:
        raise Malformed(R_TRUNCATED, "empty")
    v = buf[offset] >> 4
    if v == 4:
        if n - offset < 20:
            raise Malformed(R_TRUNCATED, "ipv4 header")
        vihl, _tos, tot, _ident, frag, ttl, proto, _csum, saddr, daddr = _ip4_hdr.unpack_from(
            buf, offset
        )
        ihl = (vihl & 15) << 2
        if ihl < 20:
            raise Malformed(R_BAD_IHL, "ihl < 5")
        if offset + ihl > n:
            raise Malformed(R_BAD_IHL, "ihl beyond buffer")
        if tot < ihl:
            raise Malformed(R_BAD_LENGTH, "total length < header")
        end = offset + tot
        if end > n:
            raise Malformed(R_BAD_LENGTH, "total length beyond buffer")
        fragoff = frag & 0x1FFF
        mf = (frag & 0x2000) != 0
        info = PacketInfo(AF_INET, 4, offset, offset + ihl, proto, saddr, daddr, tot, ttl,
                          (frag & 0x4000) != 0, mf or fragoff != 0, fragoff == 0, mf)  # fmt: skip
        if fragoff == 0:
            _parse_l4(buf, info, end)
        return info
    if v == 6:
        if n - offset < 40:
            raise Malformed(R_TRUNCATED, "ipv6 header")
        _vtcfl, plen, nh, hlim, saddr, daddr = _ip6_hdr.unpack_from(buf, offset)
        tot = 40 + plen
        end = offset + tot
        if end > n:
            raise Malformed(R_BAD_LENGTH, "payload length beyond buffer")
        info = PacketInfo(AF_INET6, 6, offset, offset + 40, nh, saddr, daddr, tot, hlim,
                          False, False, True, False)  # fmt: skip
        if nh in _V6_EXT or nh == IPPROTO_FRAGMENT:
            if not _skip_v6_ext(buf, info, end):
                return info  # non-first fragment: no L4
        _parse_l4(buf, info, end)
        return info
    raise Malformed(R_BAD_VERSION, f"version {v}")


def _skip_v6_ext(buf, info: PacketInfo, end: int) -> bool:
    """Walk IPv6 extension headers; set info.proto/l4_off and fragment flags.

    Returns False for a non-first fragment (L4 header absent).
    """
    nh = info.proto
    off = info.l4_off
    while True:
        if nh == IPPROTO_FRAGMENT:
            if off + 8 > end:
                raise Malformed(R_TRUNCATED, "ipv6 fragment header")
            nxt = buf[off]
            fo = _H.unpack_from(buf, off + 2)[0]
            info.is_frag = True
            info.more_frags = (fo & 1) != 0
            info.first_frag = (fo & 0xFFF8) == 0
            off += 8
            nh = nxt
            if not info.first_frag:
                info.proto = nh
                info.l4_off = off
                return False
        elif nh in _V6_EXT:
            if off + 2 > end:
                raise Malformed(R_TRUNCATED, "ipv6 extension header")
            nxt, hl = _BB.unpack_from(buf, off)
            size = (hl + 2) << 2 if nh == IPPROTO_AH else (hl + 1) << 3
            if off + size > end:
                raise Malformed(R_TRUNCATED, "ipv6 extension header")
            off += size
            nh = nxt
        else:
            info.proto = nh
            info.l4_off = off
            return True


def _parse_l4(buf, info: PacketInfo, end: int) -> None:
    """Parse the L4 header of an unfragmented packet or first fragment."""
    proto = info.proto
    l4 = info.l4_off
    avail = end - l4
    if proto == IPPROTO_TCP:
        if avail < 20:
            raise Malformed(R_TRUNCATED, "tcp header")
        info.sport, info.dport = _HH.unpack_from(buf, l4)
        doff = (buf[l4 + 12] >> 4) << 2
        if doff < 20 or doff > avail:
            raise Malformed(R_BAD_TCP_DOFF, f"data offset {doff >> 2}")
        info.has_ports = True
        info.tcp_flags = buf[l4 + 13]
        info.payload_len = avail - doff
        info.csum_off = l4 + 16
    elif proto == IPPROTO_UDP:
        if avail < 8:
            raise Malformed(R_TRUNCATED, "udp header")
        info.sport, info.dport, ulen = _HHH.unpack_from(buf, l4)
        if ulen < 8 or (ulen > avail and not info.more_frags):
            raise Malformed(R_BAD_UDP_LEN, f"udp length {ulen}")
        info.has_ports = True
        info.payload_len = ulen - 8 if not info.is_frag else avail - 8
        info.csum_off = l4 + 6
    elif proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6:
        if avail < 8:
            raise Malformed(R_TRUNCATED, "icmp header")
        info.icmp_type, info.icmp_code = _BB.unpack_from(buf, l4)
        info.payload_len = avail - 8
        info.csum_off = l4 + 2
    elif proto == IPPROTO_SCTP:
        if avail < 12:
            raise Malformed(R_TRUNCATED, "sctp header")
        info.sport, info.dport = _HH.unpack_from(buf, l4)
        info.has_ports = True
        info.payload_len = avail - 12
    else:
        info.payload_len = avail


def is_icmp_error(info: PacketInfo) -> bool:
    """The ICMP errors IPVS relates to connections (docs/ipvs-semantics.md, "ICMP errors")."""
    if info.proto == IPPROTO_ICMP:
        return info.icmp_type in _ICMP4_ERRORS
    if info.proto == IPPROTO_ICMPV6:
        return 0 <= info.icmp_type < 128
    return False


def parse_icmp_error(buf, info: PacketInfo) -> PacketInfo | None:
    """Parse the packet quoted by an ICMP/ICMPv6 error.

    Returns None if ``info`` is not an ICMP error IPVS cares about (IPv4 types
    3, 4, 11; ICMPv6 types < 128).  The quoted packet's offsets are absolute in
    ``buf``; its ``ip_len`` is the length its header claims (the quote is
    usually shorter) and ``payload_len`` is the number of quoted bytes from its
    ``l4_off`` to the end of the outer packet.  Ports are read when the quote
    is a TCP/UDP/SCTP first fragment; at least 4 bytes of L4 header (the ports)
    must be present.  ``csum_off`` is -1 (the quoted L4 checksum is never
    touched).  ICMP inside ICMP gets icmp_type/icmp_code when 2 bytes are quoted.
    """
    if not is_icmp_error(info) or info.csum_off < 0:
        return None
    end = info.l3_off + info.ip_len
    off = info.l4_off + 8
    if off >= end:
        raise Malformed(R_TRUNCATED, "icmp quote empty")
    v = buf[off] >> 4
    if v != info.version:
        raise Malformed(R_BAD_QUOTE, f"quoted version {v}")
    return parse_quoted(buf, off, end)


def parse_quoted(buf, off: int, end: int) -> PacketInfo:
    """Parse a quoted (usually truncated) IP packet at buf[off:end]; see parse_icmp_error.

    Also used for the packet inside a quoted IPIP header (errors about tunnel packets).
    """
    if off >= end:
        raise Malformed(R_TRUNCATED, "quote empty")
    v = buf[off] >> 4
    if v == 4:
        if end - off < 20:
            raise Malformed(R_TRUNCATED, "quoted ipv4 header")
        vihl, _tos, tot, _ident, frag, ttl, proto, _csum, saddr, daddr = _ip4_hdr.unpack_from(
            buf, off
        )
        ihl = (vihl & 15) << 2
        if ihl < 20:
            raise Malformed(R_BAD_QUOTE, "quoted ihl < 5")
        if off + ihl > end:
            raise Malformed(R_TRUNCATED, "quoted ipv4 header")
        fragoff = frag & 0x1FFF
        mf = (frag & 0x2000) != 0
        inner = PacketInfo(AF_INET, 4, off, off + ihl, proto, saddr, daddr, tot, ttl,
                           (frag & 0x4000) != 0, mf or fragoff != 0, fragoff == 0, mf)  # fmt: skip
    elif v == 6:
        if end - off < 40:
            raise Malformed(R_TRUNCATED, "quoted ipv6 header")
        _vtcfl, plen, nh, hlim, saddr, daddr = _ip6_hdr.unpack_from(buf, off)
        inner = PacketInfo(AF_INET6, 6, off, off + 40, nh, saddr, daddr, 40 + plen, hlim,
                           False, False, True, False)  # fmt: skip
        if (nh in _V6_EXT or nh == IPPROTO_FRAGMENT) and not _skip_v6_ext(buf, inner, end):
            inner.payload_len = end - inner.l4_off
            return inner
    else:
        raise Malformed(R_BAD_QUOTE, f"quoted version {v}")
    l4 = inner.l4_off
    inner.payload_len = end - l4
    if inner.first_frag:
        proto = inner.proto
        if proto in _PORT_PROTOS:
            if end - l4 < 4:
                raise Malformed(R_TRUNCATED, "quoted ports")
            inner.sport, inner.dport = _HH.unpack_from(buf, l4)
            inner.has_ports = True
            if proto == IPPROTO_TCP and end - l4 >= 14:
                inner.tcp_flags = buf[l4 + 13]
        elif (proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6) and end - l4 >= 2:
            inner.icmp_type, inner.icmp_code = _BB.unpack_from(buf, l4)
    return inner


# --------------------------------------------------------------------------- checksums


def ipv4_header_csum(buf, l3_off: int = 0) -> int:
    """Correct IPv4 header checksum for the header at l3_off (field taken as zero)."""
    ihl = (buf[l3_off] & 15) << 2
    v = int.from_bytes(buf[l3_off : l3_off + ihl], "big")
    v -= buf[l3_off + 10] << ((ihl - 11) << 3)
    v -= buf[l3_off + 11] << ((ihl - 12) << 3)
    return checksum(b"", v)


def ipv4_header_ok(buf, info: PacketInfo) -> bool:
    """True when the IPv4 header checksum verifies (always True for IPv6)."""
    if info.version != 4:
        return True
    l3 = info.l3_off
    return checksum(buf[l3 : info.l4_off]) == 0


def set_ipv4_header_csum(buf, l3_off: int = 0) -> None:
    """Recompute the IPv4 header checksum in place (the kernel's ip_send_check)."""
    _H.pack_into(buf, l3_off + 10, ipv4_header_csum(buf, l3_off))


def l4_checksum(buf, info: PacketInfo) -> int:
    """Correct TCP/UDP/ICMP/ICMPv6 checksum for the packet, field taken as zero.

    Covers the whole L4 segment to the end of the IP packet (for UDP: to the
    UDP length).  UDP: a computed 0 is returned as 0xFFFF.  ICMP over IPv4 has
    no pseudo-header.
    """
    proto = info.proto
    l4 = info.l4_off
    end = info.l3_off + info.ip_len
    if proto == IPPROTO_UDP:
        end = l4 + _H.unpack_from(buf, l4 + 4)[0]
    length = end - l4
    co = info.csum_off
    acc = (int.from_bytes(buf[l4:co], "big") << ((end - co) << 3)) + int.from_bytes(
        buf[co + 2 : end], "big"
    )
    if length & 1:
        acc <<= 8
    if proto != IPPROTO_ICMP:
        acc += pseudo_header_sum(info.saddr, info.daddr, proto, length)
    c = csum_finish(acc)
    if proto == IPPROTO_UDP and c == 0:
        c = 0xFFFF
    return c


def set_l4_checksum(buf, info: PacketInfo) -> None:
    """Recompute the L4 checksum fully (payload changed, or building a packet)."""
    _H.pack_into(buf, info.csum_off, l4_checksum(buf, info))


def l4_checksum_ok(buf, info: PacketInfo) -> bool:
    """True when the L4 checksum verifies; UDP over IPv4 with checksum 0 passes."""
    if info.csum_off < 0:
        return True
    cur = _H.unpack_from(buf, info.csum_off)[0]
    if info.proto == IPPROTO_UDP:
        if cur == 0:
            return info.version == 4
        return l4_checksum(buf, info) == (cur if cur != 0 else 0xFFFF)
    if cur == 0xFFFF:
        cur = 0  # non-canonical zero is still a valid one's-complement value
    return l4_checksum(buf, info) == cur


# --------------------------------------------------------------------------- helpers


def dec_ttl(buf, info: PacketInfo) -> int:
    """Decrement TTL / hop limit in place (IPv4 checksum updated); return the new value.

    The caller checks ``info.ttl <= 1`` first (send Time Exceeded and drop).
    ``info.ttl`` is updated.
    """
    l3 = info.l3_off
    if info.version == 4:
        ttl = buf[l3 + 8] - 1
        buf[l3 + 8] = ttl
        c = _H.unpack_from(buf, l3 + 10)[0]
        _H.pack_into(buf, l3 + 10, csum_adjust(c, TTL_DELTA))
    else:
        ttl = buf[l3 + 7] - 1
        buf[l3 + 7] = ttl
    info.ttl = ttl
    return ttl
