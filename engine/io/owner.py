"""Which worker owns a frame (``pyvs run --workers N``): one definition, two encodings.

A worker owns the connections whose *client end* hashes to it, because NAT never
rewrites the client's end: the client's (saddr, sport) of an IPv4 frame to a virtual
address, the (daddr, dport) of every other IPv4 frame (a real server's reply goes to
the client).  The key is ``mix(addr ^ port)`` (both read big-endian, as classic BPF
loads them; ``mix`` spreads the high bits into the low ones, because Linux picks even
source ports for connect(), __inet_hash_connect, so ``addr ^ port`` alone would give
one client address one worker), the owner ``key % N``; what is not IPv4, or too short
to hold the fields, has key 0 (worker 0).  So both directions of a NAT connection,
and every frame of a DR or TUN one, have one owner.

``owner_key`` is the definition; the encodings are generated from it:
  * ``fanout_program``: the classic BPF program of a PACKET_FANOUT_CBPF group (ring
    port; the kernel's fanout_demux_bpf takes its result modulo the group size);
  * ``owners``: numpy over a batch of frames (XDP port: a frame that arrived on
    another worker's queue is handed to its owner, engine/io/handoff.py).
tests/test_owner.py checks that both agree with ``owner_key`` on random frames.
"""

from __future__ import annotations

import struct

import numpy as np

ETH_HLEN = 14
SKF_AD_PROTOCOL = -0x1000
SKF_NET_OFF = -0x100000
BPF_MAXINSNS = 4096  # a classic BPF program's length limit


MIX = 0x045D9F3B


def mix(k: int) -> int:
    """32-bit: k ^= k >> 16; k *= MIX; k ^= k >> 16."""
    k ^= k >> 16
    k = (k * MIX) & 0xFFFFFFFF
    return k ^ (k >> 16)


def owner_key(frame: bytes, vips: set[int] | frozenset[int]) -> int:
    """The definition: the 32-bit key of an Ethernet frame; ``vips``: the services'
    IPv4 addresses as integers."""
    if len(frame) < ETH_HLEN + 20 or frame[12:14] != b"\x08\x00":
        return 0
    ip = ETH_HLEN
    daddr = struct.unpack_from("!I", frame, ip + 16)[0]
    ihl = (frame[ip] & 0x0F) * 4
    if daddr in vips:
        addr_at, port_at = ip + 12, ip + ihl
    else:
        addr_at, port_at = ip + 16, ip + ihl + 2
    if port_at + 2 > len(frame):
        return 0
    port = struct.unpack_from("!H", frame, port_at)[0]
    return mix(struct.unpack_from("!I", frame, addr_at)[0] ^ port)


def owner(frame: bytes, vips: set[int] | frozenset[int], workers: int) -> int:
    return owner_key(frame, vips) % workers


def fanout_program(vips: list[int]) -> list[tuple[int, int, int, int]]:
    """``owner_key`` as classic BPF (code, jt, jf, k) on an skb (loads relative to the
    network header; a load beyond the packet ends the program with 0)."""
    ins = [(0x20, 0, 0, SKF_AD_PROTOCOL),  # ld skb->protocol
           (0x15, 1, 0, 0x0800),  # jeq IPv4
           (0x06, 0, 0, 0),  # ret 0
           (0x20, 0, 0, SKF_NET_OFF + 16)]  # ld daddr

    def block(port_off: int, addr_off: int) -> list[tuple[int, int, int, int]]:
        return [(0xB1, 0, 0, SKF_NET_OFF),  # ldx 4*([0]&0xf)
                (0x48, 0, 0, SKF_NET_OFF + port_off),  # ldh [x + port]
                (0x07, 0, 0, 0),  # tax
                (0x20, 0, 0, SKF_NET_OFF + addr_off),  # ld addr
                (0xAC, 0, 0, 0),  # xor x
                (0x07, 0, 0, 0),  # tax             mix:
                (0x74, 0, 0, 16),  # rsh #16
                (0xAC, 0, 0, 0),  # xor x
                (0x24, 0, 0, MIX),  # mul #MIX
                (0x07, 0, 0, 0),  # tax
                (0x74, 0, 0, 16),  # rsh #16
                (0xAC, 0, 0, 0),  # xor x
                (0x16, 0, 0, 0)]  # ret a

    dst, src = block(2, 16), block(0, 12)  # the client is the destination / the source
    n = len(vips)
    if n - 1 + len(dst) <= 255:  # a conditional jump reaches 255 instructions ahead
        for j, v in enumerate(vips):
            ins.append((0x15, n - 1 - j + len(dst), 0, v))  # daddr == VIP: the SRC block
    else:  # more VIPs: jeq to an unconditional jump (32-bit offset) per VIP
        if 2 * n + len(ins) + len(dst) + len(src) > BPF_MAXINSNS:
            raise ValueError(f"{n} IPv4 virtual addresses: the workers' fanout program "
                             f"holds at most {(BPF_MAXINSNS - 30) // 2}")
        for j, v in enumerate(vips):
            ins += [(0x15, 0, 1, v),  # daddr == VIP:
                    (0x05, 0, 0, 2 * (n - 1 - j) + len(dst))]  # ja the SRC block
    return ins + dst + src


def pack_program(ins: list[tuple[int, int, int, int]]) -> bytes:
    """struct sock_filter[] of ``ins``."""
    return b"".join(struct.pack("<HBBI", c, jt, jf, k & 0xFFFFFFFF) for c, jt, jf, k in ins)


_COLS = np.arange(ETH_HLEN + 20, dtype=np.int64)


def owners(buf: np.ndarray, offs: np.ndarray, lens: np.ndarray, vips: np.ndarray,
           workers: int) -> np.ndarray:
    """``owner`` of each frame of a batch: ``buf`` holds the frames at ``offs`` (their
    lengths ``lens``); ``vips``: sorted int64 array of the services' IPv4 addresses."""
    n = len(offs)
    if n == 0 or workers == 1:
        return np.zeros(n, dtype=np.int64)
    h = buf.take(offs[:, None] + _COLS, mode="clip").astype(np.int64)
    v4 = (h[:, 12] == 0x08) & (h[:, 13] == 0x00) & (lens >= ETH_HLEN + 20)
    saddr = (h[:, 26] << 24) | (h[:, 27] << 16) | (h[:, 28] << 8) | h[:, 29]
    daddr = (h[:, 30] << 24) | (h[:, 31] << 16) | (h[:, 32] << 8) | h[:, 33]
    if len(vips):
        to_vip = vips[np.minimum(np.searchsorted(vips, daddr), len(vips) - 1)] == daddr
    else:
        to_vip = np.zeros(n, dtype=bool)
    port_at = ETH_HLEN + (h[:, 14] & 0x0F) * 4 + np.where(to_vip, 0, 2)
    whole = v4 & (port_at + 2 <= lens)
    at = offs + port_at
    port = ((buf.take(at, mode="clip").astype(np.int64) << 8)
            | buf.take(at + 1, mode="clip"))
    key = np.where(to_vip, saddr, daddr) ^ port
    key ^= key >> 16
    key = (key * MIX) & 0xFFFFFFFF
    key ^= key >> 16
    return np.where(whole, key, 0) % workers


__all__ = ["MIX", "fanout_program", "mix", "owner", "owner_key", "owners", "pack_program"]
