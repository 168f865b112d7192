"""Which frames a fast port takes, compiled from the model (engine/takes.py) for numpy
(whole batches of IPv4) and for Python sets (one frame; IPv6).

The predicate is ``Takes.fast_kind``: TCP/UDP to a service's addr:port (port 0: every
port) -> REQUEST; TCP/UDP from a NAT real server's addr:port with a TTL / hop limit
above 1 -> REPLY; only IPv4 headers netfilter accepts (version 4, IHL >= 5, total
length within the frame and not below the header), no fragment past the first, IPv6
with TCP/UDP right after the fixed header and a payload length that fits, ports inside
the frame.  The netdev rules (engine/plumbing_ring.py) and the XDP program
(engine/io/steer.py) encode the same; tests/test_takes_agreement.py checks all three.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from pyvs.engine.takes import REPLY, REQUEST, Takes

_TCP, _UDP = 6, 17
_COLS = np.arange(38, dtype=np.int64)  # Ethernet + IPv4 header up to the addresses
MAX_HEAD = 14 + 60 + 4  # bytes ``classify`` may read: Ethernet, IPv4 with options, ports
# tpacket status: the frame had a VLAN tag the kernel took off (skb_vlan_untag) before the
# ring saw it; the netdev rules (``ether type``) and the XDP program still see the tag
TP_STATUS_VLAN_VALID = 0x10


def _u16(h: np.ndarray, i: int) -> np.ndarray:
    return (h[:, i].astype(np.int64) << 8) | h[:, i + 1]


def _u32(h: np.ndarray, i: int) -> np.ndarray:
    return ((h[:, i].astype(np.int64) << 24) | (h[:, i + 1].astype(np.int64) << 16)
            | (h[:, i + 2].astype(np.int64) << 8) | h[:, i + 3])


class Classified(NamedTuple):
    """What ``Match.classify_batch`` found: the header bytes it read (``h``: one row of
    38 bytes per frame), the ethertypes, which frames are IPv4, which are taken, and
    which of those are replies (forwarded: the caller decrements their TTL)."""

    h: np.ndarray
    ethertype: np.ndarray
    v4: np.ndarray
    mine: np.ndarray
    reply: np.ndarray


class Match:
    """The fast ports' classifier for one configuration (``update`` on every change)."""

    def __init__(self, takes: Takes | None = None) -> None:
        self.update(takes or Takes())

    def update(self, takes: Takes) -> None:
        requests, replies = takes.fast_targets()

        def key(p: int, a: bytes, port: int) -> int:
            return (p << 48) | (int.from_bytes(a, "big") << 16) | port

        def table(targets, exact: bool) -> np.ndarray:
            return np.array(sorted(key(*t) for t in targets if len(t[1]) == 4
                                   and bool(t[2]) == exact), dtype=np.int64)

        self.vip4, self.vip4_any = table(requests, True), table(requests, False)
        self.rs4, self.rs4_any = table(replies, True), table(replies, False)
        self.vip6 = {t for t in requests if len(t[1]) == 16}
        self.rs6 = {t for t in replies if len(t[1]) == 16}
        self.sets4 = tuple(frozenset(a.tolist()) for a in (self.vip4, self.vip4_any, self.rs4,
                                                           self.rs4_any))

    @property
    def empty(self) -> bool:
        return not (len(self.vip4) or len(self.vip4_any) or len(self.rs4) or len(self.rs4_any)
                    or self.vip6 or self.rs6)

    # -- one frame ----------------------------------------------------------------------
    def classify(self, f, length: int | None = None) -> int:
        """0, REQUEST or REPLY for one frame: ``f`` holds its first bytes (MAX_HEAD do),
        ``length`` is its length on the wire (default: ``len(f)``)."""
        have = len(f)
        if have < 34:
            return 0
        if f[12] != 0x08 or f[13] != 0x00:
            return self.v6(f, length) if f[12] == 0x86 and f[13] == 0xDD else 0
        vihl = f[14]
        ihl = (vihl & 15) << 2
        total = (f[16] << 8) | f[17]
        l4 = 14 + ihl
        proto = f[23]
        if (vihl >> 4 != 4 or ihl < 20 or total < ihl
                or 14 + total > (have if length is None else length)
                or (proto != _TCP and proto != _UDP) or have < l4 + 4 or (f[20] & 0x1F)
                or f[21]):
            return 0
        vip, vip_any, rs, rs_any = self.sets4
        vkey = (proto << 48) | (int.from_bytes(f[30:34], "big") << 16)
        if (vkey | (f[l4 + 2] << 8) | f[l4 + 3]) in vip or vkey in vip_any:
            return REQUEST
        if f[22] > 1:
            rkey = (proto << 48) | (int.from_bytes(f[26:30], "big") << 16)
            if (rkey | (f[l4] << 8) | f[l4 + 1]) in rs or rkey in rs_any:
                return REPLY
        return 0

    def v6(self, f, length: int | None = None) -> int:
        """``classify`` for an IPv6 frame."""
        n = len(f) if length is None else length
        if len(f) < 58 or f[14] >> 4 != 6 or 54 + ((f[18] << 8) | f[19]) > n:
            return 0
        nh = f[20]
        if nh != _TCP and nh != _UDP:
            return 0
        saddr, daddr = bytes(f[22:38]), bytes(f[38:54])
        sport = (f[54] << 8) | f[55]
        dport = (f[56] << 8) | f[57]
        if (nh, daddr, dport) in self.vip6 or (nh, daddr, 0) in self.vip6:
            return REQUEST
        if f[21] > 1 and ((nh, saddr, sport) in self.rs6 or (nh, saddr, 0) in self.rs6):
            return REPLY
        return 0

    # -- a batch ------------------------------------------------------------------------
    def classify_batch(self, buf: np.ndarray, offs: np.ndarray, snaps: np.ndarray,
                       wire: np.ndarray) -> Classified:
        """``classify`` for frames at ``offs`` in ``buf`` (``snaps`` bytes of each there,
        ``wire`` its length): IPv4 column-wise, IPv6 one by one."""
        last = len(buf) - 1
        idx = offs[:, None] + _COLS
        np.minimum(idx, last, out=idx)
        h = buf[idx]
        ethertype = _u16(h, 12)
        ihl = (h[:, 14] & 15).astype(np.int64) << 2
        total = _u16(h, 16)
        v4 = ((ethertype == 0x0800) & (snaps >= 34) & ((h[:, 14] >> 4) == 4) & (ihl >= 20)
              & (total >= ihl) & (14 + total <= wire))
        proto = h[:, 23].astype(np.int64)
        l4 = 14 + ihl
        ports_ok = v4 & (snaps >= l4 + 4) & ((_u16(h, 20) & 0x1FFF) == 0)
        lidx = offs[:, None] + l4[:, None] + np.arange(4)
        np.minimum(lidx, last, out=lidx)
        ph = buf[lidx]
        tcpudp = ports_ok & ((proto == _TCP) | (proto == _UDP))
        vkey = (proto << 48) | (_u32(h, 30) << 16)
        to_vip = tcpudp & (member(self.vip4, vkey | _u16(ph, 2)) | member(self.vip4_any, vkey))
        rkey = (proto << 48) | (_u32(h, 26) << 16)
        reply = (tcpudp & ~to_vip & (h[:, 22] > 1)
                 & (member(self.rs4, rkey | _u16(ph, 0)) | member(self.rs4_any, rkey)))
        mine = to_vip | reply
        if self.vip6 or self.rs6:
            for i in np.flatnonzero(ethertype == 0x86DD).tolist():
                o = int(offs[i])
                kind = self.v6(bytes(buf[o:o + min(int(snaps[i]), 58)]), int(wire[i]))
                if kind:
                    mine[i] = True
                    reply[i] = kind == REPLY
        return Classified(h, ethertype, v4, mine, reply)


def member(table: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``np.isin(x, table)`` for a sorted ``table``: a binary search, a few times
    cheaper than isin on the small batches and tables a director has."""
    if len(table) == 0:
        return np.zeros(len(x), dtype=bool)
    at = np.searchsorted(table, x)
    np.minimum(at, len(table) - 1, out=at)
    return table[at] == x
