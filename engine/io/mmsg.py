"""sendmmsg over one unbound AF_PACKET socket: a batch of ready Ethernet frames, each
naming its egress interface, sent straight from wherever they sit in memory."""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import struct

import numpy as np

log = logging.getLogger("pyvs.mmsg")

SOL_PACKET = 263
PACKET_QDISC_BYPASS = 20
MAX_BATCH = 4096

_libc = ctypes.CDLL(None, use_errno=True)
_sendmmsg = _libc.sendmmsg
_sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
_sendmmsg.restype = ctypes.c_int


class MmsgSender:
    """sendmmsg over one unbound AF_PACKET socket; each message names its interface."""

    def __init__(self, max_batch: int = MAX_BATCH, sock: socket.socket | None = None) -> None:
        """``sock``: another socket to send on instead (``RawMmsg``: a raw IP socket)."""
        if sock is None:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            try:
                sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
            except OSError:
                pass
        self.sock = sock
        self.max = max_batch
        self.iov = np.zeros((max_batch, 2), dtype=np.uint64)
        self.msgs = np.zeros((max_batch, 8), dtype=np.uint64)
        self._iov_addr = self.iov.ctypes.data
        self._msgs_addr = self.msgs.ctypes.data
        self.msgs[:, 2] = self._iov_addr + 16 * np.arange(max_batch, dtype=np.uint64)
        self.msgs[:, 3] = 1
        self.msgs[:, 1] = 20  # name length: sockaddr_ll (a sockaddr_in is 16, padded)
        self._names: dict[tuple[int, int], ctypes.Array] = {}
        self.ifindex_of: dict[int, int] = {}  # name_addr handle -> interface index
        self.sent = 0
        self.errors = 0

    def name_addr(self, ifindex: int, ethertype: int) -> int:
        key = (ifindex, ethertype)
        buf = self._names.get(key)
        if buf is None:
            buf = ctypes.create_string_buffer(
                struct.pack("<H", socket.AF_PACKET) + struct.pack("!H", ethertype)
                + struct.pack("<iHBB8s", ifindex, 1, 0, 6, b""), 20)
            self._names[key] = buf
            self.ifindex_of[ctypes.addressof(buf)] = ifindex
        return ctypes.addressof(buf)

    def send(self, addrs: np.ndarray, lens: np.ndarray, names: np.ndarray) -> int:
        """Send frames at absolute memory addresses; returns how many went out."""
        total = len(addrs)
        done = 0
        fd = self.sock.fileno()
        while done < total:
            n = min(total - done, self.max)
            self.iov[:n, 0] = addrs[done:done + n]
            self.iov[:n, 1] = lens[done:done + n]
            self.msgs[:n, 0] = names[done:done + n]
            k = 0
            for _ in range(8):  # bounded retries on a full queue
                r = _sendmmsg(fd, self._msgs_addr + 64 * k, n - k, 0)
                if r < 0:
                    err = ctypes.get_errno()
                    if err in (11, 105):  # EAGAIN, ENOBUFS
                        continue
                    self.errors += n - k
                    log.debug("sendmmsg: %s", os.strerror(err))
                    break
                k += r
                if k >= n:
                    break
            if k < n:
                self.errors += n - k
            self.sent += k
            done += n
        return self.sent

    def close(self) -> None:
        self.sock.close()



class RawMmsg(MmsgSender):
    """sendmmsg over a raw IPv4 socket (IPPROTO_RAW: the header is the caller's, the
    stack routes each packet, fills in an ID of 0 and the checksum): the batch path's
    tunnel packets, sent as engine/io/raw.py sends one, many per system call."""

    def __init__(self, max_batch: int = MAX_BATCH) -> None:
        super().__init__(max_batch, socket.socket(socket.AF_INET, socket.SOCK_RAW,
                                                  socket.IPPROTO_RAW))

    def name_in(self, daddr: bytes) -> int:
        """A sockaddr_in for IPv4 address ``daddr`` (kept for the socket's life)."""
        key = (-1, int.from_bytes(daddr, "big"))
        buf = self._names.get(key)
        if buf is None:
            buf = ctypes.create_string_buffer(
                struct.pack("<H", socket.AF_INET) + bytes(2) + daddr + bytes(12), 20)
            self._names[key] = buf
        return ctypes.addressof(buf)
