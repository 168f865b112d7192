"""ICMP errors the director sends itself: port unreachable (no service, or a closed
connection when expire_nodest_conn drops it), fragmentation needed / packet too big (the
tunnel and DR path MTU, ip_vs_xmit.c's __mtu_check_toobig_v6 and ensure_mtu_is_adequate),
time exceeded (the TTL the director decrements).  Pure functions over the offending packet;
the guards are the kernel's icmp_send / icmpv6_send ones.  Parsing ICMP errors that arrive
is engine/packet.py's and engine/proto/icmp.py's."""

from __future__ import annotations

import struct

from pyvs.engine.csum import checksum, pseudo_header_sum
from pyvs.engine.packet import IPPROTO_ICMP, IPPROTO_ICMPV6, PacketInfo

_H = struct.Struct("!H")
_IP4_HDR = struct.Struct("!BBHHHBBH4s4s")
_IP6_HDR = struct.Struct("!IHBB16s16s")


def may_send_icmp_error(buf, info: PacketInfo) -> bool:
    """The kernel's icmp_send / icmpv6_send guards about the offending packet.

    No error about: non-first fragments, ICMP errors (ICMPv6 errors), and
    packets to or from multicast / broadcast / unspecified addresses
    (the IPv4 limited broadcast; subnet broadcasts need routing knowledge).
    """
    if info.is_frag and not info.first_frag:
        return False
    if info.proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        if info.proto == IPPROTO_ICMP:
            if info.icmp_type > 18 or info.icmp_type in (3, 4, 5, 11, 12):  # error types
                return False
        elif 0 <= info.icmp_type < 128:
            return False
    if info.version == 4:
        d0 = info.daddr[0]
        if 224 <= d0 <= 239 or info.daddr == b"\xff\xff\xff\xff":
            return False
        if info.saddr == b"\x00\x00\x00\x00" or 224 <= info.saddr[0]:
            return False
    else:
        if info.daddr[0] == 0xFF:
            return False
        if info.saddr == bytes(16) or info.saddr[0] == 0xFF:
            return False
    return True


_IP4_ICMP_QUOTE = 576 - 20 - 8  # icmp_send: room = min(mtu, 576) - iphdr - icmphdr
_IP6_ICMP_QUOTE = 1280 - 40 - 8  # icmpv6_send: IPV6_MIN_MTU - ipv6hdr - icmp6hdr


def _build_icmp_error(
    orig_buf, info: PacketInfo, src_addr: bytes, type4: int, code4: int, type6: int, code6: int,
    word: bytes, ttl: int, ident: int,
) -> bytes:
    l3 = info.l3_off
    end = l3 + info.ip_len
    if info.version == 4:
        quote = bytes(orig_buf[l3 : min(end, l3 + _IP4_ICMP_QUOTE)])
        icmp = bytearray(struct.pack("!BBH", type4, code4, 0) + word + quote)
        _H.pack_into(icmp, 2, checksum(icmp))
        tos = (orig_buf[l3 + 1] & 0x1E) | 0xC0  # IPTOS_TOS_MASK | PREC_INTERNETCONTROL
        hdr = bytearray(
            _IP4_HDR.pack(0x45, tos, 20 + len(icmp), ident & 0xFFFF, 0, ttl, IPPROTO_ICMP, 0,
                          bytes(src_addr), info.saddr)  # fmt: skip
        )
        _H.pack_into(hdr, 10, checksum(hdr))
        return bytes(hdr + icmp)
    quote = bytes(orig_buf[l3 : min(end, l3 + _IP6_ICMP_QUOTE)])
    icmp = bytearray(struct.pack("!BBH", type6, code6, 0) + word + quote)
    ph = pseudo_header_sum(src_addr, info.saddr, IPPROTO_ICMPV6, len(icmp))
    _H.pack_into(icmp, 2, checksum(icmp, ph))
    hdr = _IP6_HDR.pack(0x60000000, len(icmp), IPPROTO_ICMPV6, ttl, bytes(src_addr), info.saddr)
    return hdr + bytes(icmp)


def build_icmp_error(orig_buf, info: PacketInfo, src_addr: bytes, icmp_type: int,
                     icmp_code: int, word: bytes, *, ttl: int = 64, ident: int = 0) -> bytes:
    """An IPv4 ICMP error of any type/code with the given 4-byte rest-of-header."""
    return _build_icmp_error(orig_buf, info, src_addr, icmp_type, icmp_code, 0, 0, word, ttl,
                             ident)


def build_icmp_unreachable(orig_buf, info: PacketInfo, src_addr: bytes, *, ttl: int = 64,
                           ident: int = 0) -> bytes:  # fmt: skip
    """ICMP port unreachable (v4 3/3, v6 1/4) from src_addr (the VIP) to info.saddr.

    Quotes the original IP packet from its IP header, cut as the kernel's
    icmp_send (576-byte reply) / icmpv6_send (1280-byte reply) do.  No IP
    options, DF clear, TOS = (orig TOS & 0x1E) | 0xC0, TTL / hop limit 64.
    Returns an IP packet (no link-layer header).
    """
    return _build_icmp_error(orig_buf, info, src_addr, 3, 3, 1, 4, b"\0\0\0\0", ttl, ident)


def build_icmp_frag_needed(orig_buf, info: PacketInfo, src_addr: bytes, mtu: int, *,
                           ttl: int = 64, ident: int = 0) -> bytes:  # fmt: skip
    """ICMP Fragmentation Needed (3/4, next-hop MTU) or ICMPv6 Packet Too Big (2/0)."""
    if info.version == 4:
        word = struct.pack("!HH", 0, mtu & 0xFFFF)
    else:
        word = struct.pack("!I", mtu)
    return _build_icmp_error(orig_buf, info, src_addr, 3, 4, 2, 0, word, ttl, ident)


def build_icmp_time_exceeded(orig_buf, info: PacketInfo, src_addr: bytes, *, ttl: int = 64,
                             ident: int = 0) -> bytes:  # fmt: skip
    """ICMP Time Exceeded in transit (11/0) or ICMPv6 Hop Limit Exceeded (3/0)."""
    return _build_icmp_error(orig_buf, info, src_addr, 11, 0, 3, 0, b"\0\0\0\0", ttl, ident)
