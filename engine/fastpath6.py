"""The IPv6 columns of the batch path (engine/fastpath.py): decode, keys, rewrites.

Pure functions over the IPv6 frames of one batch, kept apart from the IPv4 columns
because an IPv6 address does not fit a numpy integer: the packed connection keys
(engine/conntable.py pack_key) are built from the header bytes as Python integers, and
address rewrites update the checksums from 16-bit word sums (RFC 1624 takes any word
sum difference, engine/csum.py csum_adjust).

Only the plain case is eligible: a fixed 40-byte header with TCP or UDP right after it
(any extension header -- hop-by-hop, routing, fragment, ... -- goes to the per-packet
path, which walks them), the payload length consistent with the frame and the L4 header
(exactly what engine/packet.parse checks, so parse could not fail on it), a hop limit
above 1 (ip_vs_nat_xmit_v6 / ip_vs_dr_xmit_v6 answer 1 with time exceeded), TCP flags
making an ACK event.  There is no IPv6 header checksum: the NAT rewrite changes the
address, the port and the TCP/UDP checksum (through the pseudo-header), the request's
hop limit; direct routing only the hop limit and the MACs.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from pyvs.engine.csum import csum_adjust

ETH = 14
HDR6 = ETH + 40 + 20  # Ethernet + IPv6 without extension headers + TCP without options
KEY6_BYTES = 39  # pack_key of an IPv6 packet: 0x01 0x00 proto saddr sport daddr dport
_COLS = np.arange(HDR6, dtype=np.int64)
_WB = np.arange(ETH + 7, HDR6, dtype=np.int64)  # hop limit .. end of a TCP header
_L2HOP = np.r_[0:12, ETH + 7]  # the MACs and the hop limit
_TCP, _UDP = 6, 17
IPPROTO_IPV6 = 41  # the outer next header of IPv6 in IPv6
_SRC, _DST = (ETH + 8) >> 1, (ETH + 24) >> 1  # address words
_SPORT, _DPORT = (ETH + 40) >> 1, (ETH + 42) >> 1
_TCP_CSUM, _UDP_CSUM = (ETH + 56) >> 1, (ETH + 46) >> 1


class Columns6(NamedTuple):
    """The decoded IPv6 frames of a batch (rows in the order they were given)."""

    h: np.ndarray  # (m, HDR6) header bytes
    elig: np.ndarray  # bool: may take the batch path
    tot: np.ndarray  # int64: 40 + payload length (what IPVS counts as the packet's bytes)
    proto: np.ndarray  # int64: next header
    keys: list[int]  # the packed in keys (pack_key), valid where elig


def decode(buf: np.ndarray, offs: np.ndarray, lens: np.ndarray) -> Columns6:
    """Gather and decode the first HDR6 bytes of the IPv6 frames at ``offs``."""
    idx = offs[:, None] + _COLS
    np.minimum(idx, len(buf) - 1, out=idx)
    h = buf[idx]
    w = h.view(">u2")
    i64 = np.int64
    plen = w[:, (ETH + 4) >> 1].astype(i64)
    tot = plen + 40
    proto = h[:, ETH + 6].astype(i64)
    doff = (h[:, ETH + 52] >> 4).astype(i64) << 2
    tflags = h[:, ETH + 53]
    ulen = w[:, (ETH + 44) >> 1].astype(i64)
    is_tcp = proto == _TCP
    is_udp = proto == _UDP
    elig = ((w[:, 6] == 0x86DD) & ((h[:, ETH] >> 4) == 6)
            & (h[:, ETH + 7] > 1)  # a hop limit of 1 is answered with time exceeded
            & (lens >= HDR6) & (tot + ETH <= lens)
            & ((is_tcp & (plen >= 20) & (doff >= 20) & (doff <= plen)
                & ((tflags & 0x17) == 0x10))
               | (is_udp & (plen >= 8) & (ulen >= 8) & (ulen <= plen))))
    return Columns6(h, elig, tot, proto, packed_keys(h))


def packed_keys(h: np.ndarray) -> list[int]:
    """engine/conntable.pack_key of each IPv6 header row: V6_KEY | proto<<288 |
    saddr<<160 | sport<<144 | daddr<<16 | dport is, big-endian, exactly the bytes
    01 00 proto saddr sport daddr dport -- one int.from_bytes per frame."""
    m = len(h)
    kb = np.empty((m, KEY6_BYTES), dtype=np.uint8)
    kb[:, 0] = 1
    kb[:, 1] = 0
    kb[:, 2] = h[:, ETH + 6]
    kb[:, 3:19] = h[:, ETH + 8:ETH + 24]
    kb[:, 19:21] = h[:, ETH + 40:ETH + 42]
    kb[:, 21:37] = h[:, ETH + 24:ETH + 40]
    kb[:, 37:39] = h[:, ETH + 42:ETH + 44]
    raw = kb.tobytes()
    frm = int.from_bytes
    return [frm(raw[k:k + KEY6_BYTES], "big") for k in range(0, m * KEY6_BYTES, KEY6_BYTES)]


def nat_rewrite(buf: np.ndarray, offs: np.ndarray, h: np.ndarray, proto: np.ndarray,
                new: bytes, reply: bool) -> None:
    """SNAT (reply: source := ``new``) or DNAT (request: destination := ``new``) of IPv6
    frames, as forwarders/nat.py snat / dnat do: ``new`` holds, per frame, the 16-byte
    address and the 2-byte port.  The request's hop limit is decremented (the port
    transmits it: __ip_vs_get_out_rt_v6's decrement).  TCP/UDP checksums are updated
    incrementally; a UDP checksum of 0 is left 0 as the per-packet path leaves it, an
    updated one of 0 is written 0xFFFF.  ``h`` holds the frames' header rows (changed
    here) at ``offs``; the changed bytes are scattered back into ``buf``."""
    m = len(h)
    w = h.view(">u2")
    nw = np.frombuffer(new, dtype=">u2").reshape(m, 9).astype(np.int64)
    a = _SRC if reply else _DST
    p = _SPORT if reply else _DPORT
    delta = (nw[:, :8].sum(axis=1) - w[:, a:a + 8].sum(axis=1, dtype=np.int64)
             + nw[:, 8] - w[:, p])
    if not reply:
        h[:, ETH + 7] -= 1
    w[:, a:a + 8] = nw[:, :8]
    w[:, p] = nw[:, 8]
    tcp = proto == _TCP
    if tcp.any():
        w[tcp, _TCP_CSUM] = csum_adjust(w[tcp, _TCP_CSUM].astype(np.int64), delta[tcp])
    udp = ~tcp
    if udp.any():
        c = w[udp, _UDP_CSUM].astype(np.int64)
        nc = csum_adjust(c, delta[udp])
        nc[nc == 0] = 0xFFFF
        w[udp, _UDP_CSUM] = np.where(c != 0, nc, 0)
    buf[offs[:, None] + _WB] = h[:, _WB]


def route(buf: np.ndarray, offs: np.ndarray, h: np.ndarray, macs: bytes) -> None:
    """Direct routing (forwarders/dr.py, ip_vs_dr_xmit_v6): hop limit - 1 and the
    Ethernet header toward the real server (``macs``: destination and source MAC per
    frame); nothing else of the packet changes."""
    h[:, ETH + 7] -= 1
    h[:, :12] = np.frombuffer(macs, dtype=np.uint8).reshape(len(h), 12)
    buf[offs[:, None] + _L2HOP] = h[:, _L2HOP]


def encapsulate(buf: np.ndarray, offs: np.ndarray, tot: np.ndarray, h: np.ndarray,
                plans: list, tunbuf: np.ndarray, at: list[int]) -> None:
    """IPv6 in IPv6 (forwarders/tun.py, ip_vs_tunnel_xmit_v6): each packet with its hop
    limit decremented, behind the outer header forwarders/encap.py's ``encapsulate``
    makes -- version 6, traffic class by INET_ECN_encapsulate, flow label 0, payload
    length = the inner packet, next header IPPROTO_IPV6 (41), hop limit = the inner's
    after the decrement, the plan's source and destination -- written into ``tunbuf``
    at ``at`` (the queued references point there)."""
    m = len(h)
    inner = h[:, ETH:ETH + 40]
    hop = inner[:, 7] - 1
    tc = ((inner[:, 0] & 0x0F) << 4) | (inner[:, 1] >> 4)
    tos = np.where(tc & 3 == 3, (tc & 0xFC) | 2, tc)
    outer = np.zeros((m, 40), dtype=np.uint8)
    outer[:, 0] = 0x60 | (tos >> 4)
    outer[:, 1] = (tos & 0x0F) << 4
    outer[:, 4] = tot >> 8
    outer[:, 5] = tot & 0xFF
    outer[:, 6] = IPPROTO_IPV6
    outer[:, 7] = hop
    outer[:, 8:24] = np.frombuffer(b"".join(p.saddr for p in plans), np.uint8).reshape(m, 16)
    outer[:, 24:40] = np.frombuffer(b"".join(p.daddr for p in plans), np.uint8).reshape(m, 16)
    for s, o, ln in zip(at, (offs + ETH).tolist(), tot.tolist(), strict=True):
        tunbuf[s + 40: s + 40 + ln] = buf[o: o + ln]
    starts = np.asarray(at, dtype=np.int64)
    tunbuf[starts[:, None] + np.arange(40)] = outer
    tunbuf[starts + 40 + 7] = hop


__all__ = ["HDR6", "Columns6", "decode", "encapsulate", "nat_rewrite", "packed_keys",
           "route"]
