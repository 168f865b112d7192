"""A packet or frame that sits in a batch buffer, queued in the director's outboxes.

The batch path (engine/fastpath.py) puts its direct-routing frames and tunnel packets in
``ctx.l2_outbox`` / ``ctx.outbox`` in packet order, like the per-packet forwarders, but
without copying each one into a ``bytes``: the port sends them from where they sit
(engine/io/batch.py), anyone else reads them with ``bytes(ref)``.  A reference is only
good while its buffer is: the port flushes the outboxes before it gives a block back.
"""

from __future__ import annotations

import numpy as np


class BufRef:
    """``length`` bytes at ``off`` in ``buf`` (a uint8 array); ``ifindex``: the egress
    interface of an Ethernet frame (0 for an IP packet the stack routes)."""

    __slots__ = ("buf", "off", "length", "ifindex")

    def __init__(self, buf: np.ndarray, off: int, length: int, ifindex: int = 0) -> None:
        self.buf = buf
        self.off = off
        self.length = length
        self.ifindex = ifindex

    def __bytes__(self) -> bytes:
        return self.buf[self.off: self.off + self.length].tobytes()

    def __len__(self) -> int:
        return self.length


def as_bytes(item) -> bytes | bytearray:
    """An outbox item as something a socket sends."""
    return bytes(item) if isinstance(item, BufRef) else item


__all__ = ["BufRef", "as_bytes"]
