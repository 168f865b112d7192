"""Hash primitives shared by the hashing schedulers (dh, sh, mh, lblc, lblcr).

* hash_32()  - include/linux/hash.h (GOLDEN_RATIO_32 multiplicative hash).
* fold()     - the IPv4/IPv6 address fold every hashing scheduler uses:
               ntohl(addr) for IPv4, XOR of the four big-endian 32-bit words
               for IPv6 (ip_vs_dh.c / ip_vs_sh.c / ip_vs_mh.c hashkey()).
* siphash() / hsiphash_u32() - lib/siphash.c.  On 64-bit kernels hsiphash()
  is SipHash-1-3 (one compression round, three finalization rounds) with the
  two unsigned longs of hsiphash_key_t as k0/k1, truncated to 32 bits.
"""

from __future__ import annotations

GOLDEN_RATIO_32 = 0x61C88647
_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF


def hash_32(val: int, bits: int) -> int:
    """hash_32() from include/linux/hash.h."""
    return ((val * GOLDEN_RATIO_32) & _M32) >> (32 - bits)


def fold(addr: bytes) -> int:
    """Host-order 32-bit fold of a packed IPv4 (4 bytes) or IPv6 (16 bytes) address."""
    a = int.from_bytes(addr, "big")
    if len(addr) == 4:
        return a
    return (a ^ (a >> 32) ^ (a >> 64) ^ (a >> 96)) & _M32


def siphash(k0: int, k1: int, data: bytes, c: int = 2, d: int = 4) -> int:
    """Generic SipHash-c-d returning the 64-bit result (k0/k1 as little-endian words)."""
    v0 = 0x736F6D6570736575 ^ k0
    v1 = 0x646F72616E646F6D ^ k1
    v2 = 0x6C7967656E657261 ^ k0
    v3 = 0x7465646279746573 ^ k1

    def rounds(n: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & _M64
            v1 = ((v1 << 13) | (v1 >> 51)) & _M64
            v1 ^= v0
            v0 = ((v0 << 32) | (v0 >> 32)) & _M64
            v2 = (v2 + v3) & _M64
            v3 = ((v3 << 16) | (v3 >> 48)) & _M64
            v3 ^= v2
            v0 = (v0 + v3) & _M64
            v3 = ((v3 << 21) | (v3 >> 43)) & _M64
            v3 ^= v0
            v2 = (v2 + v1) & _M64
            v1 = ((v1 << 17) | (v1 >> 47)) & _M64
            v1 ^= v2
            v2 = ((v2 << 32) | (v2 >> 32)) & _M64

    n = len(data)
    end = n - (n % 8)
    for i in range(0, end, 8):
        m = int.from_bytes(data[i:i + 8], "little")
        v3 ^= m
        rounds(c)
        v0 ^= m
    b = ((n & 0xFF) << 56) | int.from_bytes(data[end:], "little")
    v3 ^= b
    rounds(c)
    v0 ^= b
    v2 ^= 0xFF
    rounds(d)
    return v0 ^ v1 ^ v2 ^ v3


def hsiphash_u32(k0: int, k1: int, v: int) -> int:
    """hsiphash(&v, 4, key) for a u32 v on 64-bit little-endian: SipHash-1-3, low 32 bits.

    Unrolled version of siphash(k0, k1, v.to_bytes(4, 'little'), 1, 3) & 0xffffffff.
    """
    v0 = 0x736F6D6570736575 ^ k0
    v1 = 0x646F72616E646F6D ^ k1
    v2 = 0x6C7967656E657261 ^ k0
    b = 0x0400000000000000 | (v & _M32)
    v3 = 0x7465646279746573 ^ k1 ^ b
    for _ in range(4):  # 1 compression round, then (after the xors below) 3 final rounds
        v0 = (v0 + v1) & _M64
        v1 = ((v1 << 13) | (v1 >> 51)) & _M64
        v1 ^= v0
        v0 = ((v0 << 32) | (v0 >> 32)) & _M64
        v2 = (v2 + v3) & _M64
        v3 = ((v3 << 16) | (v3 >> 48)) & _M64
        v3 ^= v2
        v0 = (v0 + v3) & _M64
        v3 = ((v3 << 21) | (v3 >> 43)) & _M64
        v3 ^= v0
        v2 = (v2 + v1) & _M64
        v1 = ((v1 << 17) | (v1 >> 47)) & _M64
        v1 ^= v2
        v2 = ((v2 << 32) | (v2 >> 32)) & _M64
        if b:
            v0 ^= b
            v2 ^= 0xFF
            b = 0
    return (v0 ^ v1 ^ v2 ^ v3) & _M32


def flow_hash_key(flow, use_port: bool) -> tuple[bytes, int]:
    """(address, port) that sh/mh hash: the client side, or the other side for
    inverse (ICMP-embedded) lookups flagged with flow.extra['inverse']."""
    inverse = bool(flow.extra.get("inverse")) if flow.extra else False
    addr = flow.daddr if inverse else flow.saddr
    port = 0
    if use_port and flow.protocol in (6, 17, 132):
        port = flow.dport if inverse else flow.sport
    return addr, port
