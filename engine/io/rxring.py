"""One AF_PACKET PACKET_MMAP TPACKET_V3 receive ring (``pyvs run --io ring``).

A ring of large blocks (BLOCK_SIZE, so that one block -- one batch -- holds hundreds
of frames) on one interface; with a fanout group the sockets of every worker share
the interface's traffic, steered by the client's end of each connection.  The kernel
fills blocks and marks them TP_STATUS_USER; the port processes a block and gives it
back (``release``).  docs/performance.md explains the sizes.
"""

from __future__ import annotations

import ctypes
import mmap
import socket
import struct

import numpy as np

from pyvs.engine.io import owner
from pyvs.engine.io.netdev import interface_mtu

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_FANOUT = 18
PACKET_IGNORE_OUTGOING = 23
TPACKET_V3 = 2
PACKET_FANOUT_HASH = 0
PACKET_FANOUT_CBPF = 6
PACKET_FANOUT_DATA = 22
PACKET_FANOUT_FLAG_DEFRAG = 0x8000
ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_CSUMNOTREADY = 8

BLOCK_SIZE = 1 << 16  # 64 KiB: ~330 small frames per batch
BLOCK_NR = 64
FRAME_SIZE = 2048
TPACKET3_HDR = 48  # sizeof(struct tpacket3_hdr)
RETIRE_TOV_MS = 1  # a partly filled block is handed over after this long (min 1 ms)
MAX_BEHIND = 32  # more blocks than this waiting (of BLOCK_NR): shed the oldest

_HDR3 = struct.Struct("<IIIIIIHH")  # tpacket3_hdr: next, sec, nsec, snaplen, len, status, mac, net
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


class RxRing:
    """One TPACKET_V3 receive ring on one interface."""

    def __init__(self, ifname: str, fanout_group: int | None = None,
                 block_size: int = BLOCK_SIZE, block_nr: int = BLOCK_NR) -> None:
        self.ifname = ifname
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            s = self.sock
            s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            try:
                s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            except OSError:  # kernel < 4.20: outgoing frames are skipped by pkttype
                pass
            req = struct.pack("<7I", block_size, block_nr, FRAME_SIZE,
                              block_size // FRAME_SIZE * block_nr, RETIRE_TOV_MS, 0, 0)
            s.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self.size = block_size * block_nr
            self.mm = mmap.mmap(s.fileno(), self.size, mmap.MAP_SHARED,
                                mmap.PROT_READ | mmap.PROT_WRITE)
            s.bind((ifname, ETH_P_ALL))
            if fanout_group is not None:
                s.setsockopt(SOL_PACKET, PACKET_FANOUT, struct.pack(
                    "<I", (fanout_group & 0xFFFF)
                    | ((PACKET_FANOUT_CBPF | PACKET_FANOUT_FLAG_DEFRAG) << 16)))
                self.set_fanout_program([])
                self.fanout = True
            else:
                self.fanout = False
            s.setblocking(False)
        except BaseException:
            self.sock.close()
            raise
        self.block_size = block_size
        self.block_nr = block_nr
        # the longest frame that can be sent on: MTU + Ethernet header + one VLAN tag
        self.max_frame = interface_mtu(ifname) + 18
        self.arr = np.frombuffer(self.mm, dtype=np.uint8)
        self._a32 = np.frombuffer(self.mm, dtype=np.uint32)  # frame headers, gathered
        self._a16 = np.frombuffer(self.mm, dtype=np.uint16)
        self._m32 = memoryview(self.mm).cast("I")  # the tp_next_offset walk
        self.base = ctypes.addressof(ctypes.c_char.from_buffer(self.mm))
        self.cur = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def set_fanout_program(self, vips: list[int]) -> None:
        """Steer by the client's end of the connection, which NAT never rewrites
        (engine/io/owner.py: the one definition of a frame's worker, which the XDP
        port's hand-off uses too).  The kernel's own flow hash (PACKET_FANOUT_HASH)
        would send a NAT connection's two directions to different workers.  The kernel
        takes the result modulo the number of workers (fanout_demux_bpf)."""
        ins = owner.fanout_program(vips)
        prog = owner.pack_program(ins)
        self._prog = ctypes.create_string_buffer(prog, len(prog))
        fprog = struct.pack("<HxxxxxxQ", len(ins), ctypes.addressof(self._prog))
        self.sock.setsockopt(SOL_PACKET, PACKET_FANOUT_DATA, fprog)

    def ready(self, k: int) -> bool:
        off = ((self.cur + k) % self.block_nr) * self.block_size
        return bool(_U32.unpack_from(self.mm, off + 8)[0] & TP_STATUS_USER)

    def resync(self) -> bool:
        """If the block at the cursor is not ours while others are, move the cursor to the
        oldest ready block (by the kernel's block sequence number).  After heavy overload
        the cursor was seen to fall out of step with the kernel's fill order, leaving it
        on a block the kernel no longer fills next while every other block waited."""
        if self.ready(0):
            return False
        oldest = None
        for k in range(self.block_nr):
            off = k * self.block_size
            if _U32.unpack_from(self.mm, off + 8)[0] & TP_STATUS_USER:
                seq = _U64.unpack_from(self.mm, off + 24)[0]  # tpacket_hdr_v1.seq_num
                if oldest is None or seq < oldest[0]:
                    oldest = (seq, k)
        if oldest is None:
            return False
        self.cur = oldest[1]
        return True

    def block_status(self, k: int) -> int:
        """The status word of block ``k`` (TP_STATUS_USER: waiting for the process)."""
        return _U32.unpack_from(self.mm, k * self.block_size + 8)[0]

    def pending(self) -> bool:
        """Whether any block is the user's (waiting to be processed)."""
        mm, size = self.mm, self.block_size
        return any(_U32.unpack_from(mm, k * size + 8)[0] & TP_STATUS_USER
                   for k in range(self.block_nr))

    def behind(self, limit: int) -> int:
        """How many blocks are waiting (counting at most ``limit``)."""
        n = 0
        limit = min(limit, self.block_nr)
        while n < limit and self.ready(n):
            n += 1
        return n

    def frames(self) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The current block: (headroom, frame offsets, captured lengths, wire lengths,
        status words); offsets are absolute in the ring (the Ethernet header).  The
        headroom is how many bytes before every Ethernet header are free to overwrite once
        the block is walked: the sockaddr_ll and padding after struct tpacket3_hdr."""
        b = self.cur * self.block_size
        m32 = self._m32
        num = m32[(b + 12) >> 2]
        off = b + m32[(b + 16) >> 2]
        # only the chain of tp_next_offset is walked in Python (frames are 16-byte
        # aligned, so every header word is a whole uint32); the fields are gathered
        offs = []
        append = offs.append
        for _ in range(num):
            append(off)
            nxt = m32[off >> 2]
            if not nxt:
                break
            off += nxt
        o = np.array(offs, dtype=np.int64)
        w = o >> 2
        a32 = self._a32
        snaps = a32[w + 3].astype(np.int64)
        lens = a32[w + 4].astype(np.int64)
        stats = a32[w + 5].astype(np.int64)
        mac = self._a16[(o >> 1) + 12].astype(np.int64)  # tp_mac (u16 at +24)
        return (int(mac.min()) - TPACKET3_HDR if len(mac) else 0), o + mac, snaps, lens, stats

    def release(self) -> int:
        """Give the current block back to the kernel; returns its frame count."""
        b = self.cur * self.block_size
        num = _U32.unpack_from(self.mm, b + 12)[0]
        _U32.pack_into(self.mm, b + 8, TP_STATUS_KERNEL)
        self.cur = (self.cur + 1) % self.block_nr
        return num

    def stats(self) -> tuple[int, int]:
        """(packets, drops) since the last call (tpacket_stats_v3)."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        packets, drops, _freeze = struct.unpack("<3I", raw)
        return packets, drops

    def close(self) -> None:
        self.arr = self._a32 = self._a16 = None
        if getattr(self, "_m32", None) is not None:
            self._m32.release()
            self._m32 = None
        try:
            self.mm.close()
        except BufferError:  # a view is still exported: the process is going away
            pass
        self.sock.close()

