"""AF_XDP sockets in copy mode and the UMEM they share.

Why: with AF_PACKET the forwarder's core pays for the kernel's socket receive work
(skb, tap, netdev ingress drop) of every frame, ~70 % of it at saturation
(docs/performance.md).  With XDP the frame is copied into our memory straight from the
driver's receive path, before any skb is built for the stack, on whichever CPU runs
that path (for veth: the sender's CPU), and an overloaded forwarder loses frames
there, cheaply, instead of in a receive livelock on its own core.

Pieces (names follow Documentation/networking/af_xdp.rst):
  * ``Umem``: one anonymous mapping of FRAME-sized chunks shared by every socket of
    the process, with a free list of chunk addresses;
  * ``XskSocket``: one AF_XDP socket per director interface and receive queue (queue
    0; with ``--workers``, each worker's queues), each with its own fill / completion
    rings (shared UMEM across devices and queues, Linux >= 5.10) and RX / TX rings --
    a frame received on one interface is sent from the same chunk on another, never
    copied in user space.
Which frames reach the sockets is decided by the XDP program of engine/io/steer.py.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import socket
import struct

import numpy as np

AF_XDP = 44
SOL_XDP = 283
XDP_MMAP_OFFSETS, XDP_RX_RING, XDP_TX_RING, XDP_UMEM_REG = 1, 2, 3, 4
XDP_UMEM_FILL_RING, XDP_UMEM_COMPLETION_RING, XDP_STATISTICS = 5, 6, 7
XDP_MAX_TX_SKB_BUDGET = 9  # Linux 6.17: more than 32 frames per sendto in copy mode
XDP_SHARED_UMEM, XDP_COPY, XDP_USE_NEED_WAKEUP = 1, 2, 8
PGOFF_RX, PGOFF_TX = 0, 0x80000000
PGOFF_FILL, PGOFF_COMP = 0x100000000, 0x180000000

FRAME = 2048
HEADROOM = 256  # XDP_PACKET_HEADROOM: where copy mode puts a frame in its chunk
MAX_FRAME = FRAME - HEADROOM
RING = 4096  # entries in each ring (a power of two)
REFILL_AT = RING // 16  # the fill ring is topped up when this many entries are free
FRAMES = 16384  # chunks in the UMEM: 32 MiB

_libc = ctypes.CDLL(None, use_errno=True)
_sendto = _libc.sendto
_sendto.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                    ctypes.c_void_p, ctypes.c_uint)
_sendto.restype = ctypes.c_ssize_t
MSG_DONTWAIT = 0x40


class XdpError(OSError):
    pass


class Umem:
    """The frames every socket of this process receives into and sends from."""

    def __init__(self, frames: int = FRAMES) -> None:
        self.frames = frames
        self.mm = mmap.mmap(-1, frames * FRAME, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.arr = np.frombuffer(self.mm, dtype=np.uint8)
        self.base = ctypes.addressof(ctypes.c_char.from_buffer(self.mm))
        self.free = np.arange(frames, dtype=np.uint64) * FRAME  # a stack of chunk addresses
        self.nfree = frames

    def take(self, n: int) -> np.ndarray:
        n = min(n, self.nfree)
        self.nfree -= n
        return self.free[self.nfree:self.nfree + n]

    def give(self, addrs: np.ndarray) -> None:
        """Chunks back to the free list (any address inside a chunk names the chunk)."""
        n = len(addrs)
        if n:
            self.free[self.nfree:self.nfree + n] = addrs & ~np.uint64(FRAME - 1)
            self.nfree += n

    def close(self) -> None:
        self.arr = None
        try:
            self.mm.close()
        except BufferError:
            pass


class _Ring:
    """One single-producer single-consumer ring shared with the kernel."""

    def __init__(self, fd: int, pgoff: int, off: tuple[int, int, int, int], size: int,
                 desc_words: int) -> None:
        producer, consumer, desc, _flags = off
        self.mm = mmap.mmap(fd, desc + size * 8 * desc_words, mmap.MAP_SHARED,
                            mmap.PROT_READ | mmap.PROT_WRITE, offset=pgoff)
        self.u32 = np.frombuffer(self.mm, dtype=np.uint32)
        self.p, self.c = producer // 4, consumer // 4
        self.desc = np.frombuffer(self.mm, dtype=np.uint64, offset=desc,
                                  count=size * desc_words).reshape(size, desc_words)
        self.size = size
        self.mask = size - 1

    @property
    def producer(self) -> int:
        return int(self.u32[self.p])

    @property
    def consumer(self) -> int:
        return int(self.u32[self.c])

    def close(self) -> None:
        self.u32 = self.desc = None
        try:
            self.mm.close()
        except BufferError:
            pass


class XskSocket:
    """An AF_XDP socket on one receive queue of one interface, its four rings, and the
    UMEM."""

    def __init__(self, ifname: str, umem: Umem, first: XskSocket | None = None,
                 queue: int = 0) -> None:
        self.ifname = ifname
        self.queue = queue
        self.ifindex = socket.if_nametoindex(ifname)
        self.umem = umem
        self.sock = socket.socket(AF_XDP, socket.SOCK_RAW, 0)
        self.rings: list[_Ring] = []
        try:
            s = self.sock
            if first is None:
                s.setsockopt(SOL_XDP, XDP_UMEM_REG, struct.pack(
                    "<QQIIII", umem.base, umem.frames * FRAME, FRAME, 0, 0, 0))
            for opt in (XDP_UMEM_FILL_RING, XDP_UMEM_COMPLETION_RING, XDP_RX_RING,
                        XDP_TX_RING):
                s.setsockopt(SOL_XDP, opt, RING)
            try:
                s.setsockopt(SOL_XDP, XDP_MAX_TX_SKB_BUDGET, RING // 4)
            except OSError:
                pass
            offs = struct.unpack("<16Q", s.getsockopt(SOL_XDP, XDP_MMAP_OFFSETS, 128))
            rx, tx, fr, cr = (offs[i:i + 4] for i in range(0, 16, 4))
            fd = s.fileno()
            self.rx = _Ring(fd, PGOFF_RX, rx, RING, 2)
            self.tx = _Ring(fd, PGOFF_TX, tx, RING, 2)
            self.fill = _Ring(fd, PGOFF_FILL, fr, RING, 1)
            self.comp = _Ring(fd, PGOFF_COMP, cr, RING, 1)
            self.rings = [self.rx, self.tx, self.fill, self.comp]
            self.refill()  # the kernel needs chunks before the first frame arrives
            if first is None:
                addr = struct.pack("<HHIII", AF_XDP, XDP_COPY | XDP_USE_NEED_WAKEUP,
                                   self.ifindex, queue, 0)
            else:
                addr = struct.pack("<HHIII", AF_XDP, XDP_SHARED_UMEM, self.ifindex, queue,
                                   first.sock.fileno())
            r = _libc.bind(fd, ctypes.c_char_p(addr), len(addr))
            if r < 0:
                err = ctypes.get_errno()
                raise XdpError(err, f"AF_XDP bind on {ifname} queue {queue}: "
                               f"{os.strerror(err)}")
        except BaseException:
            self.close()
            raise
        self.sent = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    # ---------------------------------------------------------------------- receive
    def receive(self, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """(UMEM addresses, lengths) of up to ``limit`` received frames, consumed."""
        rx = self.rx
        cons = int(rx.u32[rx.c])
        n = min((int(rx.u32[rx.p]) - cons) & 0xFFFFFFFF, limit)
        if n == 0:
            return _EMPTY, _EMPTY
        idx = (cons + np.arange(n, dtype=np.int64)) & rx.mask
        d = rx.desc[idx]
        rx.u32[rx.c] = (cons + n) & 0xFFFFFFFF
        return d[:, 0].copy(), (d[:, 1] & 0xFFFFFFFF).astype(np.int64)

    def refill(self) -> None:
        """Give the kernel as many free chunks as its fill ring has room for, once that
        is at least REFILL_AT (the ring stays nearly full; a few chunks at a time would
        cost the numpy calls after every small batch)."""
        f = self.fill
        prod = int(f.u32[f.p])
        room = f.size - ((prod - int(f.u32[f.c])) & 0xFFFFFFFF)
        if room < REFILL_AT:
            return
        chunks = self.umem.take(room)
        n = len(chunks)
        if n:
            f.desc[(prod + np.arange(n, dtype=np.int64)) & f.mask, 0] = chunks
            f.u32[f.p] = (prod + n) & 0xFFFFFFFF

    # ---------------------------------------------------------------------- transmit
    def transmit(self, addrs: np.ndarray, lens: np.ndarray) -> int:
        """Queue frames (UMEM addresses) for sending; returns how many were queued (the
        rest is the caller's to give back)."""
        tx = self.tx
        prod = int(tx.u32[tx.p])
        room = tx.size - ((prod - int(tx.u32[tx.c])) & 0xFFFFFFFF)
        n = min(room, len(addrs))
        if n:
            idx = (prod + np.arange(n, dtype=np.int64)) & tx.mask
            tx.desc[idx, 0] = addrs[:n]
            tx.desc[idx, 1] = lens[:n].astype(np.uint64)
            tx.u32[tx.p] = (prod + n) & 0xFFFFFFFF
            self.sent += n
            self.kick()
        return n

    def kick(self) -> None:
        """Copy mode sends only from sendto (up to the TX budget per call)."""
        fd = self.sock.fileno()
        tx = self.tx
        for _ in range(64):  # bounded: each call sends up to the budget
            if tx.u32[tx.c] == tx.u32[tx.p]:
                return
            if _sendto(fd, None, 0, MSG_DONTWAIT, None, 0) < 0:
                err = ctypes.get_errno()
                if err not in (errno.EAGAIN, errno.EBUSY, errno.ENOBUFS):
                    return

    def complete(self) -> None:
        """Chunks the kernel has finished sending go back to the free list."""
        c = self.comp
        cons = int(c.u32[c.c])
        n = (int(c.u32[c.p]) - cons) & 0xFFFFFFFF
        if n:
            self.umem.give(c.desc[(cons + np.arange(n, dtype=np.int64)) & c.mask, 0])
            c.u32[c.c] = (cons + n) & 0xFFFFFFFF

    def stats(self) -> dict:
        raw = self.sock.getsockopt(SOL_XDP, XDP_STATISTICS, 48)
        keys = ("rx_dropped", "rx_invalid_descs", "tx_invalid_descs", "rx_ring_full",
                "rx_fill_ring_empty_descs", "tx_ring_empty_descs")
        return dict(zip(keys, struct.unpack("<6Q", raw.ljust(48, b"\0")), strict=True))

    def close(self) -> None:
        for r in self.rings:
            r.close()
        self.rings = []
        self.sock.close()


_EMPTY = np.zeros(0, dtype=np.int64)
