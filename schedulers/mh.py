"""mh: Maglev hashing (+ mh-fallback, mh-port).  Kernel: net/netfilter/ipvs/ip_vs_mh.c.

Lookup table of M = 4093 slots (CONFIG_IP_VS_MH_TAB_INDEX 12 -> primes[4]),
IP_VS_MH_TAB_BITS = 6.  Hash = hsiphash (SipHash-1-3 on 64-bit kernels, low 32
bits) of the 4-byte little-endian u32 v = offset + ntohs(port) + fold(addr),
with the fixed keys hash1 = {2654435761, 2654435761} and
hash2 = {2654446892, 2654446892} (generate_hash_secret()).

Rebuild (ip_vs_mh_dest_changed, on every add, delete and edit) uses
last_weight, so a destination quiesced to weight 0 keeps its slots:
  g = gcd of positive last_weights (none: table emptied);
  rshift = max(0, fls(max_last_weight / g) - 6);
  per destination, list order: offset = H1(addr, port) % M,
  skip = H2(addr, port) % (M - 1) + 1, turns = ((lw / g) >> rshift) or (lw != 0);
  population: passes over the list; each destination with turns >= 1 claims
  `turns` slots, each time advancing perm by skip while the slot is taken.
More than M destinations: the rebuild is refused and the old table stays.

Research extension (not the kernel): ``MaglevHashing.table_size`` is the M above;
``with_table_size(m)`` gives a subclass with another prime M (e.g. 65537, the
Maglev paper's), named ``mh@m`` -- ``pyvs sim --schedulers mh@65537``.  The kernel's
``mh`` keeps 4093.

Lookup: h = H1(client addr, port) % M (port only with SVC_F_SCHED_MH_PORT and
TCP/UDP/SCTP); usable = weight > 0 and not OVERLOAD.  With
SVC_F_SCHED_MH_FALLBACK an unusable slot is followed by probes
H1(addr, port, offset=(h + k) % M) % M for k = 0..M-1 (a fresh hash per probe),
stopping at an empty slot.
"""

from __future__ import annotations

import errno
from functools import lru_cache
from math import gcd

from pyvs.engine.model import (
    DEST_F_OVERLOAD,
    SVC_F_SCHED_MH_FALLBACK,
    SVC_F_SCHED_MH_PORT,
    Destination,
    Flow,
    VirtualService,
)
from pyvs.engine.service import IPVSError
from pyvs.schedulers.base import Scheduler
from pyvs.schedulers.hashing import flow_hash_key, fold, hsiphash_u32
from pyvs.schedulers.registry import register

PRIMES = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)
MH_TAB_INDEX_CONFIG = 12
MH_TAB_BITS = MH_TAB_INDEX_CONFIG // 2
MH_TAB_SIZE = PRIMES[MH_TAB_INDEX_CONFIG - 8]  # 4093
HASH1 = (2654435761, 2654435761)
HASH2 = (2654446892, 2654446892)
_M32 = 0xFFFFFFFF


@lru_cache(maxsize=1 << 16)
def h1(v: int) -> int:
    """hsiphash(hash1, v): cached, since a client address is looked up repeatedly."""
    return hsiphash_u32(HASH1[0], HASH1[1], v)


def h2(v: int) -> int:
    return hsiphash_u32(HASH2[0], HASH2[1], v)


def mh_key(addr: bytes, port: int, offset: int = 0) -> int:
    """The u32 v that ip_vs_mh_hashkey() feeds to hsiphash."""
    return (offset + port + fold(addr)) & _M32


def dest_permutation(dest: Destination, m: int = MH_TAB_SIZE) -> tuple[int, int]:
    """(offset, skip) of a destination (ip_vs_mh_permutate)."""
    v = mh_key(dest.addr, dest.port)
    return h1(v) % m, h2(v) % (m - 1) + 1


def mh_table(dests: list[Destination], m: int = MH_TAB_SIZE,
             tab_bits: int = MH_TAB_BITS) -> list[Destination | None]:
    """Build the lookup table for a destination list (permutate + populate)."""
    g = 0
    mw = 0
    for d in dests:
        lw = d.last_weight
        if lw > 0:
            g = gcd(lw, g) if g > 0 else lw
        if lw > mw:
            mw = lw
    if g < 1:
        return [None] * m
    rshift = max(0, (mw // g).bit_length() - tab_bits)
    setup = []  # [dest, perm, skip, turns] for turns >= 1, list order
    for d in dests:
        lw = d.last_weight
        turns = ((lw // g) >> rshift) or (1 if lw != 0 else 0)
        if turns < 1:
            continue
        offset, skip = dest_permutation(d, m)
        setup.append([d, offset, skip, turns])
    table: list[Destination | None] = [None] * m
    n = 0
    while True:
        for ds in setup:
            d, perm, skip, turns = ds
            for _ in range(turns):
                while table[perm] is not None:
                    perm += skip
                    if perm >= m:
                        perm -= m
                table[perm] = d
                n += 1
                if n == m:
                    return table
            ds[1] = perm


@register
class MaglevHashing(Scheduler):
    name = "mh"
    table_size = MH_TAB_SIZE  # M: a prime; the kernel's is 4093

    def __init__(self, svc: VirtualService, env) -> None:
        super().__init__(svc, env)
        if len(svc.destinations) > self.table_size:
            raise IPVSError(errno.EINVAL, "Invalid argument")
        self.table = mh_table(svc.destinations, self.table_size)

    def dest_changed(self, svc: VirtualService) -> None:
        """ip_vs_mh_dest_changed(): rebuild, unless there are more than M dests."""
        if len(svc.destinations) > self.table_size:
            return
        self.table = mh_table(svc.destinations, self.table_size)

    def add_dest(self, svc: VirtualService, dest: Destination) -> None:
        self.dest_changed(svc)

    def del_dest(self, svc: VirtualService, dest: Destination, index: int) -> None:
        self.dest_changed(svc)

    def upd_dest(self, svc: VirtualService, dest: Destination) -> None:
        self.dest_changed(svc)

    def schedule(self, svc: VirtualService, flow: Flow) -> Destination | None:
        flags = svc.flags
        addr, port = flow_hash_key(flow, bool(flags & SVC_F_SCHED_MH_PORT))
        base = (port + fold(addr)) & _M32
        table = self.table
        m = self.table_size
        ihash = h1(base) % m
        d = table[ihash]
        if d is None:
            return None
        if d.weight > 0 and not d.flags & DEST_F_OVERLOAD:
            return d
        if not flags & SVC_F_SCHED_MH_FALLBACK:
            return None
        for k in range(m):
            roffset = (k + ihash) % m
            d = table[h1((roffset + base) & _M32) % m]
            if d is None:
                return None
            if d.weight > 0 and not d.flags & DEST_F_OVERLOAD:
                return d
        return None


def _is_prime(n: int) -> bool:
    return n > 2 and n % 2 == 1 and all(n % k for k in range(3, int(n ** 0.5) + 1, 2))


def with_table_size(m: int) -> type[MaglevHashing]:
    """mh with an M-slot table (research extension; M must be prime, so that every
    skip visits every slot), registered as ``mh@M``."""
    if not _is_prime(m):
        raise ValueError(f"mh table size must be an odd prime, not {m}")
    if m == MH_TAB_SIZE:
        return MaglevHashing
    cls = type(f"MaglevHashing{m}", (MaglevHashing,), {"name": f"mh@{m}", "table_size": m,
                                                       "__module__": __name__})
    return register(cls)
