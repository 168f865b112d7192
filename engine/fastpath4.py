"""The IPv4 columns of the batch path (engine/fastpath.py): rewrites of many frames at once.

Pure functions over the header rows (``h``: the first bytes of each frame, Ethernet
included) of the IPv4 frames one batch sends on; engine/fastpath6.py is the same for
IPv6.  Every change is the one the per-packet forwarder makes (forwarders/nat.py,
dr.py, tun.py), column-wise: addresses and ports with RFC 1624 checksum updates
(engine/csum.py csum_adjust, the function nat.py uses per packet), TTLs, MACs, outer
headers (forwarders/encap.py ipip_headers).  The changed bytes are scattered back into
the batch buffer ``buf`` at the frames' offsets.
"""

from __future__ import annotations

import numpy as np

from pyvs.engine.csum import TTL_DELTA, csum_adjust
from pyvs.forwarders.encap import ipip_headers, set_ipv4_header_csums

ETH = 14
HDR = ETH + 20 + 20  # Ethernet + IPv4 without options + TCP without options
IPIP_ROOM = 20  # what an IPIP frame built in place needs before the frame
_TCP = 6
_WB = np.arange(ETH + 8, HDR, dtype=np.int64)  # TTL .. end of a TCP header
_L2TTL = np.r_[0:12, ETH + 8:ETH + 12]  # the MACs, and TTL .. header checksum
_L2_OUTER = ETH + 20 + 20  # an IPIP frame's headers: Ethernet, outer and inner IPv4
_L2_COLS = np.arange(_L2_OUTER, dtype=np.int64)
_ETH_IPV4 = np.array([0x08, 0x00], dtype=np.uint8)
_GATHER_MAX = 256  # IPIP inner packets up to this long are copied with one gather
_TTL, _CSUM = (ETH + 8) >> 1, (ETH + 10) >> 1  # 16-bit word positions
_TCP_CSUM, _UDP_CSUM = (ETH + 36) >> 1, (ETH + 26) >> 1


def nat_rewrite(buf: np.ndarray, offs: np.ndarray, h: np.ndarray, proto: np.ndarray,
                new_addr: np.ndarray, new_port: np.ndarray, reply: bool) -> None:
    """SNAT (reply: source := new) or DNAT (request: destination := new) of IPv4 frames,
    as forwarders/nat.py snat / dnat: the request's TTL is decremented (the port
    transmits it), the header and TCP/UDP checksums updated incrementally, an updated
    UDP checksum of 0 written 0xFFFF.  A UDP checksum of 0 never comes here: the kernel
    computes a full one then (udp_dnat_handler), and so does the per-packet path."""
    w = h.view(">u2")  # every field here sits on an even offset
    ai, pi = ((ETH + 12) >> 1, (ETH + 20) >> 1) if reply else ((ETH + 16) >> 1,
                                                                 (ETH + 22) >> 1)
    old_addr = (w[:, ai].astype(np.int64) << 16) | w[:, ai + 1]
    delta = new_addr - old_addr
    ip_delta = delta
    if not reply:
        w[:, _TTL] -= 0x100
        ip_delta = delta + TTL_DELTA
    w[:, _CSUM] = csum_adjust(w[:, _CSUM].astype(np.int64), ip_delta)
    w[:, ai] = new_addr >> 16
    w[:, ai + 1] = new_addr & 0xFFFF
    delta = delta + (new_port - w[:, pi])
    w[:, pi] = new_port
    tcp = proto == _TCP
    n_tcp = int(np.count_nonzero(tcp))
    if n_tcp:
        tcp = slice(None) if n_tcp == len(proto) else tcp  # one protocol: no mask
        w[tcp, _TCP_CSUM] = csum_adjust(w[tcp, _TCP_CSUM].astype(np.int64), delta[tcp])
    if n_tcp < len(proto):
        udp = slice(None) if not n_tcp else ~tcp
        nc = csum_adjust(w[udp, _UDP_CSUM].astype(np.int64), delta[udp])
        nc[nc == 0] = 0xFFFF
        w[udp, _UDP_CSUM] = nc
    buf[offs[:, None] + _WB] = h[:, _WB]


def route(buf: np.ndarray, offs: np.ndarray, h: np.ndarray, macs: bytes) -> None:
    """Direct routing (forwarders/dr.py): TTL - 1 with the checksum as ip_decrease_ttl,
    and the Ethernet header toward the real server (``macs``: destination and source
    MAC per frame)."""
    w = h.view(">u2")
    w[:, _TTL] -= 0x100
    w[:, _CSUM] = csum_adjust(w[:, _CSUM].astype(np.int64), TTL_DELTA)
    h[:, :12] = np.frombuffer(macs, dtype=np.uint8).reshape(len(h), 12)
    buf[offs[:, None] + _L2TTL] = h[:, _L2TTL]


def _inner_and_outer(h: np.ndarray, plans: list, copy_df: bool) -> tuple:
    """The inner IPv4 headers (TTL - 1, checksum recomputed) and the outer ones."""
    inner = h[:, ETH:ETH + 20].copy()
    inner[:, 8] -= 1
    set_ipv4_header_csums(inner)
    saddr = np.frombuffer(b"".join(p.saddr for p in plans), np.uint8).reshape(-1, 4)
    daddr = np.frombuffer(b"".join(p.daddr for p in plans), np.uint8).reshape(-1, 4)
    return inner, ipip_headers(inner, saddr, daddr, copy_df)


def encapsulate(buf: np.ndarray, offs: np.ndarray, tot: np.ndarray, h: np.ndarray,
                plans: list, tunbuf: np.ndarray, at: list[int]) -> None:
    """IPIP (forwarders/tun.py): each packet behind the outer header forwarders/encap.py
    makes, written into ``tunbuf`` at ``at`` (where the queued references point)."""
    inner, outer = _inner_and_outer(h, plans, plans[0].copy_df)
    starts = np.asarray(at, dtype=np.int64)
    if int(tot.max()) <= _GATHER_MAX:  # small packets: one gather for all bytes
        ends = np.cumsum(tot)
        pos = np.arange(int(ends[-1]), dtype=np.int64) - np.repeat(ends - tot, tot)
        tunbuf[np.repeat(starts + 20, tot) + pos] = buf[np.repeat(offs + ETH, tot) + pos]
    else:
        for s, o, ln in zip(at, (offs + ETH).tolist(), tot.tolist(), strict=True):
            tunbuf[s + 20: s + 20 + ln] = buf[o: o + ln]
    cols = np.arange(20, dtype=np.int64)
    tunbuf[starts[:, None] + cols] = outer
    tunbuf[starts[:, None] + 20 + cols] = inner


def encapsulate_in_place(buf: np.ndarray, offs: np.ndarray, h: np.ndarray,
                         plans: list) -> None:
    """IPIP as whole Ethernet frames (outer DF set): the next hop's Ethernet header and
    the outer header go into the IPIP_ROOM bytes before each frame and over its own
    Ethernet header; the inner packet stays where it is (TTL - 1, checksum recomputed).
    The frame then starts IPIP_ROOM bytes before ``offs``."""
    inner, outer = _inner_and_outer(h, plans, True)
    head = np.empty((len(h), _L2_OUTER), dtype=np.uint8)
    head[:, :12] = np.frombuffer(b"".join(p.hop.dst_mac + p.hop.src_mac for p in plans),
                                 np.uint8).reshape(-1, 12)
    head[:, 12:14] = _ETH_IPV4
    head[:, 14:34] = outer
    head[:, 34:] = inner
    buf[(offs - IPIP_ROOM)[:, None] + _L2_COLS] = head


__all__ = ["HDR", "IPIP_ROOM", "encapsulate", "encapsulate_in_place", "nat_rewrite", "route"]
