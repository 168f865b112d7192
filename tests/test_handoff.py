"""The XDP workers' hand-off rings (engine/io/handoff.py) without root: frames arrive
intact and in order across wrap-around, a full ring loses (and counts) the excess
instead of overwriting, a consumer that takes less than is waiting is woken again,
and the rings work across a fork (the mapping is made before it)."""

from __future__ import annotations

import os
import select

import numpy as np

from pyvs.engine.io.handoff import Handoff

CHUNK = 2048


def batch(first: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n frames of distinct lengths and contents, numbered from ``first``."""
    buf = np.zeros(CHUNK * n, dtype=np.uint8)
    offs = np.arange(n, dtype=np.int64) * CHUNK + 256
    lens = np.array([60 + (first + i) % 1400 for i in range(n)], dtype=np.int64)
    for i in range(n):
        o, ln = int(offs[i]), int(lens[i])
        buf[o:o + ln] = (np.arange(ln) + first + i) % 251
    return buf, offs, lens


def receive(h: Handoff, worker: int, limit: int):
    out = np.zeros(CHUNK * limit, dtype=np.uint8)
    free = list(range(limit))

    def take(k: int) -> np.ndarray:
        got = np.array(free[:k], dtype=np.int64) * CHUNK
        del free[:k]
        return got

    offs, lens = h.inbox(worker).receive(out, take, limit)
    return [bytes(out[o:o + ln]) for o, ln in zip(offs.tolist(), lens.tolist(), strict=True)]


def expected(first: int, n: int) -> list[bytes]:
    buf, offs, lens = batch(first, n)
    return [bytes(buf[o:o + ln]) for o, ln in zip(offs.tolist(), lens.tolist(), strict=True)]


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_frames_arrive_intact_in_order_across_wraparound():
    h = Handoff(3, slots=8)
    try:
        sent = 0
        for n in (5, 6, 7, 3, 8):  # 29 frames through 8 slots
            buf, offs, lens = batch(sent, n)
            assert h.send(2, 1, buf, offs, lens) == n
            assert readable(h.wakeups[1]) and not readable(h.wakeups[0])
            assert receive(h, 1, 8) == expected(sent, n)
            sent += n
        st = h.status()
        assert st[2]["handed-out"] == st[1]["handed-in"] == 29
        assert st[2]["ring-full"] == 0
    finally:
        h.close()


def test_a_full_ring_keeps_what_it_has_and_counts_the_rest():
    h = Handoff(2, slots=8)
    try:
        buf, offs, lens = batch(0, 12)
        assert h.send(0, 1, buf, offs, lens) == 8
        assert h.status()[0]["ring-full"] == 4
        assert receive(h, 1, 8) == expected(0, 8)  # the first 8, not overwritten
    finally:
        h.close()


def test_a_consumer_that_takes_less_than_waits_is_woken_again():
    h = Handoff(2, slots=16)
    try:
        buf, offs, lens = batch(0, 10)
        h.send(0, 1, buf, offs, lens)
        assert receive(h, 1, 4) == expected(0, 10)[:4]
        assert readable(h.wakeups[1])  # re-armed: six are still waiting
        assert receive(h, 1, 16) == expected(0, 10)[4:]
        assert not readable(h.wakeups[1])
    finally:
        h.close()


def test_the_rings_cross_a_fork():
    h = Handoff(2, slots=16)
    try:
        pid = os.fork()
        if pid == 0:  # worker 1 sends to worker 0
            code = 1
            try:
                buf, offs, lens = batch(100, 9)
                code = 0 if h.send(1, 0, buf, offs, lens) == 9 else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert readable(h.wakeups[0])
        assert receive(h, 0, 16) == expected(100, 9)
    finally:
        h.close()
