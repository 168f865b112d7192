"""Masquerading (NAT, ``-m``) rewrites, in place on a bytearray.

Pure functions over ``(buf, info)`` where ``info`` is the
:class:`engine.packet.PacketInfo` of the packet in ``buf``.  See
docs/ipvs-semantics.md ("Masquerading", "ICMP errors") and the kernel's ``tcp_dnat_handler`` /
``udp_snat_handler`` / ``ip_vs_nat_icmp`` (ip_vs_proto_*.c, ip_vs_core.c).

* ``dnat`` / ``snat`` update every checksum incrementally (RFC 1624): the
  IPv4 header checksum, and the TCP/UDP/ICMPv6 checksum through the
  pseudo-header (plus the port).  A checksum that was wrong stays wrong by
  the same amount, as in the kernel's fast path.  A UDP checksum of 0 (none)
  is replaced by a full one, as udp_dnat_handler / udp_snat_handler do (their
  fast update needs ``udph->check != 0``); an updated UDP checksum of 0 is
  written as 0xFFFF.
* ``dnat_icmp`` / ``snat_icmp`` follow ``ip_vs_nat_icmp[_v6]``: outer address,
  quoted address and quoted port rewritten, quoted IPv4 header checksum
  recomputed, the whole ICMP checksum recomputed (ICMPv6 with its
  pseudo-header).  The quoted TCP/UDP checksum is left as it is, like the
  kernel.  Because the ICMP checksum is recomputed, the engine must verify it
  first (``packet.l4_checksum_ok``) -- the kernel drops on a bad one.
* TTL is not touched (``packet.dec_ttl`` does that).
* The ``info`` (and ``inner``) objects are kept in step: the rewritten
  address/port fields hold the new values afterwards; everything else in them
  (offsets, lengths, flags) is unchanged and still valid.

SCTP: the addresses are rewritten (CRC32c does not cover them); changing an
SCTP port needs a CRC32c recomputation, which is not implemented here
(NotImplementedError).
"""

from __future__ import annotations

import struct

from pyvs.engine.csum import csum_adjust
from pyvs.engine.packet import (
    IPPROTO_ICMP,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    PacketInfo,
    dec_ttl,
    set_ipv4_header_csum,
    set_l4_checksum,
)
from pyvs.engine.verdict import FORWARD
from pyvs.forwarders.base import Forwarder, time_exceeded

__all__ = ["dnat", "snat", "dnat_icmp", "snat_icmp"]

_H = struct.Struct("!H")
_unpack_H = _H.unpack_from
_pack_H = _H.pack_into
_from_bytes = int.from_bytes


def _l4_update(buf, info: PacketInfo, delta: int, port_off: int, oldport: int,
               newport: int) -> bool:  # fmt: skip
    """L4 part of dnat/snat: port, then the checksum through the pseudo-header.  True
    when the caller must compute the checksum in full once the addresses are set: a UDP
    checksum of 0, which udp_dnat_handler / udp_snat_handler replace with a full one."""
    proto = info.proto
    co = info.csum_off
    if proto == IPPROTO_TCP or proto == IPPROTO_UDP:
        if info.has_ports:
            _pack_H(buf, info.l4_off + port_off, newport)
            delta += newport - oldport
        if co >= 0:
            c = _unpack_H(buf, co)[0]
            if proto == IPPROTO_TCP:
                _pack_H(buf, co, csum_adjust(c, delta))
            elif c == 0:
                return True
            else:
                c = csum_adjust(c, delta)
                _pack_H(buf, co, c if c else 0xFFFF)
    elif co >= 0 and proto != IPPROTO_ICMP:
        # ICMPv6 (pseudo-header covers addresses); plain ICMP has none.
        c = _unpack_H(buf, co)[0]
        _pack_H(buf, co, csum_adjust(c, delta))
    elif proto == IPPROTO_SCTP and info.has_ports and newport != oldport:
        raise NotImplementedError("SCTP port rewrite needs CRC32c")
    return False


def dnat(buf, info: PacketInfo, daddr: bytes, dport: int) -> None:
    """Request direction (client -> RS): IP dst := daddr, L4 dst port := dport."""
    l3 = info.l3_off
    delta = _from_bytes(daddr, "big") - _from_bytes(info.daddr, "big")
    if info.version == 4:
        buf[l3 + 16 : l3 + 20] = daddr
        c = l3 + 10
        _pack_H(buf, c, csum_adjust(_unpack_H(buf, c)[0], delta))
    else:
        buf[l3 + 24 : l3 + 40] = daddr
    if info.proto == IPPROTO_TCP and info.csum_off >= 0:  # fast path: unfragmented TCP
        co = info.csum_off
        _pack_H(buf, info.l4_off + 2, dport)
        delta += dport - info.dport
        _pack_H(buf, co, csum_adjust(_unpack_H(buf, co)[0], delta))
        info.dport = dport
    else:
        full = _l4_update(buf, info, delta, 2, info.dport, dport)
        if info.has_ports:
            info.dport = dport
        info.daddr = bytes(daddr)
        if full:
            set_l4_checksum(buf, info)
        return
    info.daddr = bytes(daddr)


def snat(buf, info: PacketInfo, saddr: bytes, sport: int) -> None:
    """Reply direction (RS -> client): IP src := saddr (the VIP), L4 src port := sport."""
    l3 = info.l3_off
    delta = _from_bytes(saddr, "big") - _from_bytes(info.saddr, "big")
    if info.version == 4:
        buf[l3 + 12 : l3 + 16] = saddr
        c = l3 + 10
        _pack_H(buf, c, csum_adjust(_unpack_H(buf, c)[0], delta))
    else:
        buf[l3 + 8 : l3 + 24] = saddr
    if info.proto == IPPROTO_TCP and info.csum_off >= 0:
        co = info.csum_off
        _pack_H(buf, info.l4_off, sport)
        delta += sport - info.sport
        _pack_H(buf, co, csum_adjust(_unpack_H(buf, co)[0], delta))
        info.sport = sport
    else:
        full = _l4_update(buf, info, delta, 0, info.sport, sport)
        if info.has_ports:
            info.sport = sport
        info.saddr = bytes(saddr)
        if full:
            set_l4_checksum(buf, info)
        return
    info.saddr = bytes(saddr)


def _nat_icmp(buf, info: PacketInfo, inner: PacketInfo, addr: bytes, port: int,
              outer_dst: bool) -> None:  # fmt: skip
    addr = bytes(addr)
    l3 = info.l3_off
    il3 = inner.l3_off
    if info.version == 4:
        if outer_dst:
            old, a, ia = info.daddr, l3 + 16, il3 + 12
        else:
            old, a, ia = info.saddr, l3 + 12, il3 + 16
        buf[a : a + 4] = addr
        buf[ia : ia + 4] = addr
        c = l3 + 10
        delta = _from_bytes(addr, "big") - _from_bytes(old, "big")
        _pack_H(buf, c, csum_adjust(_unpack_H(buf, c)[0], delta))
        set_ipv4_header_csum(buf, il3)
    else:
        if outer_dst:
            a, ia = l3 + 24, il3 + 8
        else:
            a, ia = l3 + 8, il3 + 24
        buf[a : a + 16] = addr
        buf[ia : ia + 16] = addr
    if outer_dst:
        info.daddr = addr
        inner.saddr = addr
    else:
        info.saddr = addr
        inner.daddr = addr
    if inner.has_ports:
        if outer_dst:
            _pack_H(buf, inner.l4_off, port)
            inner.sport = port
        else:
            _pack_H(buf, inner.l4_off + 2, port)
            inner.dport = port
    set_l4_checksum(buf, info)


def dnat_icmp(buf, info: PacketInfo, inner: PacketInfo, daddr: bytes, dport: int) -> None:
    """ICMP error from the client about a reply (quoted VIP:vport -> client), to the RS.

    Outer IP dst := daddr, quoted src := daddr, quoted src port := dport.
    ``inner`` is ``packet.parse_icmp_error(buf, info)``.
    """
    _nat_icmp(buf, info, inner, daddr, dport, True)


def snat_icmp(buf, info: PacketInfo, inner: PacketInfo, saddr: bytes, sport: int) -> None:
    """ICMP error from the RS about a request (quoted client -> RS:dport), to the client.

    Outer IP src := saddr (VIP), quoted dst := saddr, quoted dst port := sport (vport).
    """
    _nat_icmp(buf, info, inner, saddr, sport, False)


class Masquerade(Forwarder):
    """ip_vs_nat_xmit: rewrite the destination to the real server; the stack routes it.
    Replies come back through the director and are rewritten back (handle_response)."""

    name = "Masq"

    def to_real(self, ctx, buf, info, conn) -> int:
        if not ctx.stack_forwards:  # __ip_vs_get_out_rt's decrement_ttl, before mangling
            if info.ttl <= 1:
                return time_exceeded(ctx, buf, info)
            dec_ttl(buf, info)
        dnat(buf, info, conn.daddr, conn.dport)
        return FORWARD

    def icmp_to_real(self, ctx, buf, info, inner, conn) -> int:
        dnat_icmp(buf, info, inner, conn.daddr, conn.dport)
        return FORWARD

    def to_client(self, ctx, buf, info, conn) -> int:
        snat(buf, info, conn.vaddr, conn.vport)
        return FORWARD

    def icmp_to_client(self, ctx, buf, info, inner, conn) -> int:
        snat_icmp(buf, info, inner, conn.vaddr, conn.vport)
        return FORWARD
