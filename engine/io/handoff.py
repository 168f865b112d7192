"""Frames passed between XDP workers (``pyvs run --io xdp --workers N``).

An XDP program can redirect a frame only to the AF_XDP socket of the queue it arrived
on (xsk_rcv_check: the socket's device and queue must be the frame's), and a veth's
receive queue is the sender's transmit queue, chosen by the sender's hash of its own
flow -- so the two directions of a NAT connection (client -> VIP, real server ->
client: different tuples) arrive on queues of different workers.  As in DPVS's "conn
redirect", the worker that receives a frame it does not own (engine/io/owner.py)
copies it into a ring towards the owner, which serves it in its next batch and
transmits it from its own socket (any queue may transmit).

``Handoff`` is made before the fork: one anonymous shared mapping holding a
single-producer single-consumer ring per (from, to) pair of workers (slots of one
AF_XDP chunk each, head and tail on their own cache lines), one eventfd per worker
that a producer writes after a push so the owner's selector wakes, and a table of
per-worker counters that process 0 reports in ``pyvs status``.  Ordering: the
producer writes the slots, then the head; the consumer reads the head, then the
slots; both are plain stores, which the x86-64 memory model keeps in order (a
weakly ordered CPU would need barriers, which numpy cannot issue).
"""

from __future__ import annotations

import mmap
import os

import numpy as np

SLOT = 2048  # one AF_XDP chunk
SLOTS = 512  # per (from, to) ring
_HDR = 128  # head (offset 0) and tail (offset 64), on separate cache lines
# per-worker counters (columns of ``Handoff.counters``)
COUNTERS = ("received", "handed-out", "handed-in", "ring-full")
C_RECEIVED, C_OUT, C_IN, C_FULL = range(4)


class _Ring:
    """One SPSC ring inside the shared mapping."""

    def __init__(self, mm: mmap.mmap, at: int, slots: int) -> None:
        self.idx = np.frombuffer(mm, dtype=np.uint64, offset=at, count=_HDR // 8)
        self.lens = np.frombuffer(mm, dtype=np.uint32, offset=at + _HDR, count=slots)
        data_at = at + _HDR + slots * 4
        self.data = np.frombuffer(mm, dtype=np.uint8, offset=data_at,
                                  count=slots * SLOT).reshape(slots, SLOT)
        self.slots = slots
        self.mask = slots - 1

    @staticmethod
    def size(slots: int) -> int:
        return _HDR + slots * 4 + slots * SLOT

    def push(self, buf: np.ndarray, offs: np.ndarray, lens: np.ndarray) -> int:
        """Copy frames in (producer side); returns how many fitted."""
        head, tail = int(self.idx[0]), int(self.idx[8])
        n = min(len(offs), self.slots - (head - tail))
        if n <= 0:
            return 0
        width = int(lens[:n].max())
        idx = (head + np.arange(n, dtype=np.int64)) & self.mask
        self.data[idx, :width] = buf.take(offs[:n, None] + np.arange(width), mode="clip")
        self.lens[idx] = lens[:n]
        self.idx[0] = head + n  # after the slots
        return n

    def waiting(self) -> int:
        return int(self.idx[0]) - int(self.idx[8])

    def pop(self, buf: np.ndarray, dests: np.ndarray) -> np.ndarray:
        """Copy up to ``len(dests)`` frames out to ``buf`` at ``dests`` (consumer side);
        returns their lengths."""
        head, tail = int(self.idx[0]), int(self.idx[8])
        n = min(len(dests), head - tail)
        if n <= 0:
            return np.zeros(0, dtype=np.int64)
        idx = (tail + np.arange(n, dtype=np.int64)) & self.mask
        lens = self.lens[idx].astype(np.int64)
        width = int(lens.max())
        buf[dests[:n, None] + np.arange(width)] = self.data[idx, :width]
        self.idx[8] = tail + n  # after the copy: the producer may reuse the slots
        return lens


class Handoff:
    """Every worker's rings and wakeups; made before the fork, used by all."""

    def __init__(self, workers: int, slots: int = SLOTS) -> None:
        if slots & (slots - 1):
            raise ValueError("slots must be a power of two")
        self.workers = workers
        ring = _Ring.size(slots)
        counters = workers * len(COUNTERS) * 8
        self._mm = mmap.mmap(-1, workers * workers * ring + counters)  # MAP_SHARED
        self.rings = [[_Ring(self._mm, (f * workers + t) * ring, slots)
                       for t in range(workers)] for f in range(workers)]
        self.counters = np.frombuffer(self._mm, dtype=np.int64,
                                      offset=workers * workers * ring,
                                      count=workers * len(COUNTERS),
                                      ).reshape(workers, len(COUNTERS))
        self.wakeups = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
                        for _ in range(workers)]

    def inbox(self, worker: int) -> Inbox:
        return Inbox(self, worker)

    def send(self, me: int, to: int, buf: np.ndarray, offs: np.ndarray,
             lens: np.ndarray) -> int:
        """Pass frames to worker ``to``; returns how many it will get (the rest is lost,
        counted ``ring-full``)."""
        n = self.rings[me][to].push(buf, offs, lens)
        c = self.counters[me]
        c[C_OUT] += n
        c[C_FULL] += len(offs) - n
        if n:
            os.eventfd_write(self.wakeups[to], 1)
        return n

    def status(self) -> list[dict]:
        return [{"worker": w, **{name: int(v) for name, v in zip(
            COUNTERS, self.counters[w].tolist(), strict=True)}}
            for w in range(self.workers)]

    def close(self) -> None:
        for fd in self.wakeups:
            try:
                os.close(fd)
            except OSError:
                pass
        self.wakeups = []


class Inbox:
    """One worker's end: the selector waits on its eventfd; ``receive`` copies waiting
    frames into the worker's own buffer."""

    def __init__(self, handoff: Handoff, worker: int) -> None:
        self.handoff = handoff
        self.worker = worker
        self.fd = handoff.wakeups[worker]

    def fileno(self) -> int:
        return self.fd

    def receive(self, buf: np.ndarray, take, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """(offsets, lengths) of up to ``limit`` frames copied into ``buf`` at chunks
        from ``take(n)`` (returns up to n chunk offsets).  If frames are left waiting,
        the eventfd is re-armed so the selector comes back."""
        try:
            os.eventfd_read(self.fd)
        except BlockingIOError:
            pass
        h = self.handoff
        got_offs, got_lens = [], []
        left = limit
        more = False
        for src in range(h.workers):
            ring = h.rings[src][self.worker]
            waiting = ring.waiting()
            if src == self.worker or waiting == 0:
                continue
            if left == 0:
                more = True
                break
            dests = take(min(waiting, left))
            if len(dests) == 0:
                more = True
                break
            lens = ring.pop(buf, dests)
            got_offs.append(dests[:len(lens)])
            got_lens.append(lens)
            left -= len(lens)
            more |= ring.waiting() > 0
        if more:
            os.eventfd_write(self.fd, 1)
        if not got_offs:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        offs = np.concatenate(got_offs).astype(np.int64)
        h.counters[self.worker][C_IN] += len(offs)
        return offs, np.concatenate(got_lens)


__all__ = ["COUNTERS", "Handoff", "Inbox"]
