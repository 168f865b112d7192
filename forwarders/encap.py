"""Tunnel encapsulation as pure functions: IPIP / IPv6 outer headers, GUE, GRE, and IPv4
fragmentation of the outer packet (ip_vs_prepare_tunneled_skb, ip_vs_tunnel_xmit[_v6]).

No I/O, so the property tests can check every header field.  See forwarders/tun.py
for the forwarder that uses them and docs/ipvs-semantics.md for the header rules.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from pyvs.engine.csum import checksum, csum_finish, ipv4_header_sums, pseudo_header_sum
from pyvs.engine.model import TUN_TYPE_GRE, TUN_TYPE_GUE, TUN_TYPE_IPIP
from pyvs.engine.packet import IPPROTO_UDP, set_ipv4_header_csum

IPPROTO_IPIP = 4
IPPROTO_IPV6 = 41
IPPROTO_GRE = 47
TUN_FLAG_CSUM = 1  # IP_VS_TUNNEL_ENCAP_FLAG_CSUM
TUN_FLAG_REMCSUM = 2
GUE_HLEN = 8 + 4  # UDP + GUE base header
GRE_FLAG_CSUM = 0x8000  # the C bit of the GRE base header (GRE_CSUM)
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
LOCAL_PORT_MIN, LOCAL_PORT_MAX = 32768, 60999  # ip_local_port_range default

_ip4 = struct.Struct("!BBHHHBBH4s4s")
_ip6 = struct.Struct("!IHBB16s16s")
_udp = struct.Struct("!HHHH")


def ecn_encapsulate(ds: int) -> int:
    """INET_ECN_encapsulate(ds, ds): outer ECN = inner ECN, but CE becomes ECT(0)."""
    if ds & 3 == 3:
        return (ds & ~3) | 2
    return ds


def inner_fields(inner: bytes | bytearray, pmtu_disc: bool = True) -> tuple[int, int, int, int]:
    """(next protocol, DS field, TTL, DF bit 0x4000 or 0) of an inner IP packet."""
    if inner[0] >> 4 == 4:
        df = (inner[6] << 8 | inner[7]) & 0x4000 if pmtu_disc else 0
        return IPPROTO_IPIP, inner[1], inner[8], df
    ds = ((inner[0] & 0x0F) << 4) | (inner[1] >> 4)
    return IPPROTO_IPV6, ds, inner[7], 0


def gre_hlen(tun_flags: int) -> int:
    """gre_calc_hlen(): the 4-byte base header, plus checksum and reserved1 with
    --tun-csum (the only GRE option ip_vs_tunnel_xmit sets; no key, no sequence)."""
    return 8 if tun_flags & TUN_FLAG_CSUM else 4


def gre_encapsulate(inner: bytearray, proto: int, tun_flags: int) -> bytearray:
    """gre_build_header() as ip_vs_tunnel_xmit calls it: version 0, protocol 0x0800
    for an inner IPv4 packet (``proto`` 4) or 0x86DD for IPv6; with --tun-csum the C bit
    and the checksum of GRE header and payload (RFC 2784)."""
    csum = bool(tun_flags & TUN_FLAG_CSUM)
    ether = ETH_P_IP if proto == IPPROTO_IPIP else ETH_P_IPV6
    payload = bytearray(struct.pack("!HH", GRE_FLAG_CSUM if csum else 0, ether))
    if csum:
        payload += bytes(4)  # checksum, reserved1
    payload += inner
    if csum:
        struct.pack_into("!H", payload, 4, checksum(payload))
    return payload


def gue_sport(inner: bytes | bytearray) -> int:
    """udp_flow_src_port(): a flow hash scaled into the local port range (the kernel
    hashes with a boot-time random seed; this hash is fixed, over the first 40 bytes)."""
    h = zlib.crc32(bytes(inner[:40]))
    return ((h * (LOCAL_PORT_MAX - LOCAL_PORT_MIN)) >> 32) + LOCAL_PORT_MIN


def encapsulate(inner: bytes | bytearray, saddr: bytes, daddr: bytes, *, pmtu_disc: bool = True,
                tun_type: int = TUN_TYPE_IPIP, tun_port: int = 0, tun_flags: int = 0,
                ident: int = 0) -> bytearray:  # fmt: skip
    """Outer header(s) + ``inner`` (one IP packet whose TTL is already decremented).

    The outer family follows the address size of ``daddr`` (4 -> IPv4, 16 -> IPv6).
    The inner IPv4 header checksum is recomputed in the copy that is encapsulated.
    """
    inner = bytearray(inner)
    if inner[0] >> 4 == 4:
        set_ipv4_header_csum(inner, 0)
    proto, ds, ttl, df = inner_fields(inner, pmtu_disc)
    tos = ecn_encapsulate(ds)
    payload = inner
    if tun_type == TUN_TYPE_GUE:
        gue = bytes((0, proto, 0, 0))  # ver 0, C 0, hlen 0 | proto_ctype | flags
        ulen = 8 + len(gue) + len(inner)
        udp = bytearray(_udp.pack(gue_sport(inner), tun_port, ulen, 0))
        payload = udp + gue + inner
        if tun_flags & (TUN_FLAG_CSUM | TUN_FLAG_REMCSUM):
            c = checksum(payload, pseudo_header_sum(saddr, daddr, IPPROTO_UDP, ulen))
            struct.pack_into("!H", payload, 6, c if c else 0xFFFF)
        proto = IPPROTO_UDP
    elif tun_type == TUN_TYPE_GRE:
        payload = gre_encapsulate(inner, proto, tun_flags)
        proto = IPPROTO_GRE
    elif tun_type != TUN_TYPE_IPIP:
        raise ValueError(f"unknown tunnel type {tun_type}")
    if len(daddr) == 4:
        hdr = bytearray(_ip4.pack(0x45, tos, 20 + len(payload), ident & 0xFFFF, df, ttl, proto,
                                  0, saddr, daddr))
        set_ipv4_header_csum(hdr, 0)
    else:
        hdr = bytearray(_ip6.pack(0x60000000 | (tos << 20), len(payload), proto, ttl, saddr,
                                  daddr))
    return hdr + payload


def ipip_headers(inner: np.ndarray, saddr: np.ndarray, daddr: np.ndarray,
                 copy_df: bool) -> np.ndarray:
    """``encapsulate`` for many IPv4-in-IPv4 packets at once, header only: ``inner`` holds
    the inner IPv4 headers (m, 20) with the TTL already decremented, ``saddr``/``daddr``
    the outer addresses (m, 4).  Returns the outer headers (m, 20) with ip_vs_tunnel_xmit's
    fields: TOS by INET_ECN_encapsulate, total length, ID 0 (the raw socket picks it as
    ip_select_ident would), DF copied when ``copy_df`` (pmtu_disc), the inner TTL,
    protocol 4, and the header checksum.  The caller recomputes the inner checksum."""
    m = len(inner)
    out = np.zeros((m, 20), dtype=np.uint8)
    out[:, 0] = 0x45
    tos = inner[:, 1]
    out[:, 1] = np.where(tos & 3 == 3, (tos & 0xFC) | 2, tos)
    total = ((inner[:, 2].astype(np.int64) << 8) | inner[:, 3]) + 20
    out[:, 2] = total >> 8
    out[:, 3] = total & 0xFF
    if copy_df:
        out[:, 6] = inner[:, 6] & 0x40
    out[:, 8] = inner[:, 8]
    out[:, 9] = IPPROTO_IPIP
    out[:, 12:16] = saddr
    out[:, 16:20] = daddr
    set_ipv4_header_csums(out)
    return out


def set_ipv4_header_csums(hdrs: np.ndarray) -> None:
    """ip_send_check() on many 20-byte IPv4 headers (m, 20) in place."""
    hdrs[:, 10:12] = 0
    c = csum_finish(ipv4_header_sums(hdrs))
    hdrs[:, 10] = c >> 8
    hdrs[:, 11] = c & 0xFF


def fragment_v4(packet: bytes | bytearray, mtu: int, ident: int) -> list[bytes]:
    """ip_fragment() for an IPv4 packet without DF semantics (ignore_df): fragments of
    at most ``mtu`` bytes, payloads in multiples of 8, DF cleared, all with ``ident``.
    IP options are copied into every fragment (the kernel copies only "copied" ones)."""
    ihl = (packet[0] & 0x0F) << 2
    hdr = bytearray(packet[:ihl])
    data = memoryview(bytes(packet))[ihl:]
    base = (struct.unpack_from("!H", packet, 6)[0] & 0x1FFF) << 3
    orig_mf = struct.unpack_from("!H", packet, 6)[0] & 0x2000
    step = ((mtu - ihl) // 8) * 8
    if step <= 0:
        return []
    out = []
    for off in range(0, len(data), step):
        chunk = data[off : off + step]
        more = off + step < len(data)
        h = bytearray(hdr)
        struct.pack_into("!HH", h, 2, ihl + len(chunk), ident & 0xFFFF)
        struct.pack_into("!H", h, 6, ((base + off) >> 3) | (0x2000 if more or orig_mf else 0))
        set_ipv4_header_csum(h, 0)
        out.append(bytes(h + chunk))
    return out
