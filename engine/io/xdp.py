"""The XDP port: `pyvs run --io xdp` -- AF_XDP receive and transmit, the ring's batch path.

The batch pipeline of the ring port (engine/io/batch.py: classify with numpy, the fast
path of engine/fastpath.py, next hops from the kernel's tables, the raw IP socket for what
the kernel must handle), different I/O (engine/io/xsk.py, engine/io/steer.py):

  * receive: the XDP program steers exactly the frames pyvs serves into one AF_XDP
    socket per director interface; the kernel never builds an skb for them, and the
    work of receiving runs on the CPU of the receive path, not the forwarder's;
  * transmit: a forwarded frame leaves from the UMEM chunk it arrived in, through the
    AF_XDP socket of its egress interface; the chunk returns to the free list when
    the kernel reports it sent (completion ring); every other chunk of the batch
    returns at once;
  * overload: the kernel drops at the socket when its fill ring is empty or its RX
    ring full (``rx_dropped`` / ``rx_ring_full`` in the status), before the frame
    costs anything on the forwarder's core, so the forwarder never livelocks.

With ``--workers N`` (engine/workers.py) every worker process has its own UMEM and
an AF_XDP socket on each receive queue q with q % N == its index, on every director
interface (``XdpWorkers``: fewer queues than workers is refused); the XDP program,
shared by all, redirects a frame to its queue's socket.  A frame whose owner
(engine/io/owner.py) is another worker is copied to it (engine/io/handoff.py) and
served and sent there, so each connection lives in exactly one worker's table.

No nftables table is needed (the XDP program is the filter, its targets generated from
engine/takes.py); what a fast port does not take -- fwmark traffic, ICMP errors, FTP
data, IPv6 with extension headers -- stays on NFQUEUE as in ring mode.  Frames
steered to XDP are not seen by packet sockets (tcpdump on the director shows only what the
kernel passes).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from pyvs.engine.csum import csum_fold
from pyvs.engine.io import owner, steer, xsk
from pyvs.engine.io.batch import SMALL_BATCH, BatchPipeline
from pyvs.engine.io.handoff import C_RECEIVED, Handoff, Inbox
from pyvs.engine.io.netdev import director_interfaces, interface_mtu, rx_queues, set_offloads
from pyvs.engine.io.port import Port, PortContext
from pyvs.engine.io.rxring import TP_STATUS_CSUMNOTREADY
from pyvs.engine.takes import Takes

_CHUNK_SHIFT = np.uint64(xsk.FRAME.bit_length() - 1)
_IN_CHUNK = np.uint64(xsk.FRAME - 1)
BATCH = 512  # frames per batch (numpy pays off from ~32 frames, best in the hundreds)
_TCP, _UDP = 6, 17
_COLS = np.arange(58, dtype=np.int64)  # Ethernet + IPv6 + ports


def partial_checksums(buf: np.ndarray, offs: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Which TCP/UDP frames carry CHECKSUM_PARTIAL: the checksum field holds the folded
    pseudo-header sum (what tcp_v4_send_check / udp4_hwcsum leave for the device)."""
    n = len(offs)
    if n == 0:
        return np.zeros(0, dtype=bool)
    h = buf.take(offs[:, None] + _COLS, mode="clip")
    w = h.view(">u2")  # big-endian 16-bit words from offset 0
    vb = h[:, 14] >> 4
    v4 = (w[:, 6] == 0x0800) & (vb == 4) & (lens >= 34)
    v6 = (w[:, 6] == 0x86DD) & (vb == 6) & (lens >= 58)
    proto = np.where(v4, h[:, 23], h[:, 20]).astype(np.int64)
    cand = (v4 | v6) & ((proto == _TCP) | (proto == _UDP))
    if not cand.any():
        return cand
    ihl = (h[:, 14] & 15).astype(np.int64) << 2
    s4 = w[:, 13:17].sum(axis=1, dtype=np.int64) + (w[:, 8] - ihl)  # addresses, L4 length
    s6 = w[:, 11:27].sum(axis=1, dtype=np.int64) + w[:, 9]
    s = csum_fold(np.where(v4, s4, s6) + proto)
    field = np.where(v4, 14 + ihl, 54) + np.where(proto == _TCP, 16, 6)
    cand &= lens >= field + 2
    at = offs + field
    got = (buf.take(at, mode="clip").astype(np.int64) << 8) | buf.take(at + 1, mode="clip")
    return cand & (got == s)


def partial_checksum(frame) -> bool:
    """``partial_checksums`` for one frame (bytes-like), for small batches."""
    n = len(frame)
    if n < 34 or frame[12] not in (0x08, 0x86):
        return False
    if frame[12] == 0x08 and frame[13] == 0 and frame[14] >> 4 == 4:
        ihl = (frame[14] & 15) << 2
        proto = frame[23]
        s = sum(struct.unpack_from("!4H", frame, 26)) + ((frame[16] << 8) | frame[17]) - ihl
        l4 = 14 + ihl
    elif frame[12] == 0x86 and frame[13] == 0xDD and n >= 58 and frame[14] >> 4 == 6:
        proto = frame[20]
        s = sum(struct.unpack_from("!16H", frame, 22)) + ((frame[18] << 8) | frame[19])
        l4 = 54
    else:
        return False
    if proto != _TCP and proto != _UDP:
        return False
    at = l4 + (16 if proto == _TCP else 6)
    if n < at + 2:
        return False
    s = csum_fold(s + proto)
    return ((frame[at] << 8) | frame[at + 1]) == s


@dataclass
class XdpWorkers:
    """What the XDP workers share, made by process 0 before the fork: the interfaces'
    receive queue counts, the XDP programs and maps, the hand-off rings."""

    count: int
    queues: dict[str, int]
    steering: steer.Steering
    handoff: Handoff

    @classmethod
    def make(cls, interfaces: list[str], count: int) -> XdpWorkers:
        queues = {name: rx_queues(name) for name in interfaces}
        for name, n in queues.items():
            if n < count:
                raise xsk.XdpError(22, f"--io xdp --workers {count}: {name} has {n} receive "
                                   f"queue{'s' if n != 1 else ''}; each worker needs one "
                                   f"(more queues: ethtool -L, or numrxqueues for a veth "
                                   f"or bridge), or run fewer workers")
            if n > steer.MAX_QUEUES:
                raise xsk.XdpError(22, f"--io xdp: {name} has {n} receive queues, the XDP "
                                   f"socket map holds {steer.MAX_QUEUES}")
        steering = steer.Steering(interfaces)
        return cls(count, queues, steering, Handoff(count))

    def queues_of(self, name: str, index: int) -> list[int]:
        """Worker ``index`` serves queue q of ``name`` when q % count == index."""
        return [q for q in range(self.queues[name]) if q % self.count == index]


class XdpPort(Port):
    """AF_XDP sockets on every director interface, one UMEM, the batch pipeline."""

    name = "xdp"

    def __init__(self, director, interfaces: list[str], raw,
                 workers: XdpWorkers | None = None, index: int = 0) -> None:
        self.rings: list[xsk.XskSocket] = []
        self.steering: steer.Steering | None = None
        self.umem: xsk.Umem | None = None
        self.workers = workers
        self.index = index
        self.inbox: Inbox | None = None
        self.vips = np.zeros(0, dtype=np.int64)  # the owner function's virtual addresses
        self.vip_set: frozenset[int] = frozenset()
        self.pipeline = BatchPipeline(director, raw, send=self._send)
        self.counters = {"tx-full": 0}
        self._inflight: list[np.ndarray] = []
        try:
            self._open(interfaces)
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(cls, ctx: PortContext) -> XdpPort:
        workers = ctx.options.get("xdp-workers")
        if ctx.fanout_group is not None and workers is None:
            raise xsk.XdpError(95, "--io xdp with workers needs the workers' shared state "
                               "(engine/workers.py)")
        interfaces = ctx.interfaces or director_interfaces()
        if not interfaces:
            raise RuntimeError("--io xdp: no interface with an address in this namespace")
        ctx.interfaces = interfaces
        return cls(ctx.director, interfaces, ctx.raw, workers)

    @staticmethod
    def clear_stale() -> list[str]:
        return [f"XDP program pyvs on {name}" for name in steer.detach_stale()]

    def _open(self, interfaces: list[str]) -> None:
        for name in interfaces:
            mtu = interface_mtu(name)
            if mtu + 14 > xsk.MAX_FRAME:
                raise xsk.XdpError(
                    90, f"--io xdp: {name} has MTU {mtu}, but an AF_XDP frame holds at most "
                    f"{xsk.MAX_FRAME - 14} bytes of IP; lower the MTU or use --io ring")
        self.umem = xsk.Umem()
        w = self.workers
        steering = steer.Steering(interfaces) if w is None else w.steering
        if self.index == 0:  # process 0 attaches, syncs the targets and detaches
            self.steering = steering
        first = None
        for name in interfaces:
            set_offloads(name, False, ("gro",))  # no GRO super-frames: a chunk holds one MTU
            for q in [0] if w is None else w.queues_of(name, self.index):
                sock = xsk.XskSocket(name, self.umem, first, q)
                first = first or sock
                self.rings.append(sock)
                steering.add_socket(sock)
        self.by_ifindex: dict[int, xsk.XskSocket] = {}
        for sock in self.rings:  # transmit: the worker's first queue of the interface
            self.by_ifindex.setdefault(sock.ifindex, sock)
        self._busy = np.zeros(self.umem.frames, dtype=bool)  # scratch: chunks being sent
        if w is not None:
            self.inbox = w.handoff.inbox(self.index)
        if self.steering is not None:
            self.steering.attach()

    def readers(self) -> list:
        return list(self.rings) + ([self.inbox] if self.inbox is not None else [])

    def update(self, services: list) -> None:
        self.pipeline.update(services)
        vips = {int.from_bytes(s.addr, "big") for s in services
                if not s.fwmark and len(s.addr) == 4}
        self.vip_set = frozenset(vips)
        self.vips = np.array(sorted(vips), dtype=np.int64)
        if self.steering is not None:
            self.steering.sync(steer.targets(Takes.of(services)))

    # ------------------------------------------------------------------------------------
    def serve(self, reader, max_blocks: int = 1) -> int:
        """Process one batch of one socket (or of the hand-off inbox); returns frames
        handled.  One batch per call: the daemon's loop then takes the other sockets in
        turn, so replies arriving on one interface never wait behind a stream of batches
        on another (16 batches per call made a probe's round trip at half load ~12 ms;
        one makes it ~1 ms)."""
        if reader is self.inbox:
            offs, lens = self.inbox.receive(self.umem.arr, self._take_chunks, BATCH)
            return self._run(offs.astype(np.uint64), lens)
        done = 0
        for _ in range(max_blocks):
            addrs, lens = reader.receive(BATCH)
            if len(addrs) == 0:
                break
            if self.workers is not None:
                addrs, lens = self._hand_off(addrs, lens)
            done += self._run(addrs, lens)
        return done

    def _take_chunks(self, n: int) -> np.ndarray:
        """Free chunks for handed-in frames, each frame placed as the kernel places a
        received one (after XDP_PACKET_HEADROOM, which the tunnel path builds into)."""
        return self.umem.take(n).astype(np.int64) + xsk.HEADROOM  # a copy of the free list

    def _hand_off(self, addrs: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Copy the frames another worker owns to it; returns the ones this worker owns."""
        w, me, umem = self.workers, self.index, self.umem
        w.handoff.counters[me][C_RECEIVED] += len(addrs)
        offs = addrs.astype(np.int64)
        if len(offs) <= SMALL_BATCH:  # numpy's fixed cost would dominate
            arr = umem.arr
            own = np.array([owner.owner(arr[o:o + min(ln, 96)].tobytes(), self.vip_set, w.count)
                            for o, ln in zip(offs.tolist(), lens.tolist(), strict=True)],
                           dtype=np.int64)
        else:
            own = owner.owners(umem.arr, offs, lens, self.vips, w.count)
        mine = own == me
        if mine.all():
            return addrs, lens
        theirs = ~mine
        for to in np.unique(own[theirs]).tolist():
            sel = own == to
            w.handoff.send(me, to, umem.arr, offs[sel], lens[sel])
        umem.give(addrs[theirs])  # copied (or lost to a full ring): the chunks are free
        return addrs[mine], lens[mine]

    def _run(self, addrs: np.ndarray, lens: np.ndarray) -> int:
        """The batch pipeline over frames in UMEM chunks (``addrs``); every chunk not
        left on a TX ring goes back to the free list."""
        umem = self.umem
        done = 0
        try:
            if len(addrs) == 0:
                return 0
            offs = addrs.astype(np.int64)
            self._inflight = []
            if len(offs) <= SMALL_BATCH:
                arr = umem.arr
                status = np.array([TP_STATUS_CSUMNOTREADY if partial_checksum(
                    arr[o: o + min(ln, 96)].tobytes()) else 0
                    for o, ln in zip(offs.tolist(), lens.tolist(), strict=True)],
                    dtype=np.int64)
            else:
                status = np.where(partial_checksums(umem.arr, offs, lens),
                                  TP_STATUS_CSUMNOTREADY, 0)
            # the chunk's bytes before each frame (XDP_PACKET_HEADROOM) are free
            headroom = int((addrs & _IN_CHUNK).min())
            done = self.pipeline.run(umem.arr, umem.base, offs, lens, lens, status,
                                     headroom)
        finally:
            if self._inflight:  # chunks on a TX ring come back by completion
                sent = np.concatenate(self._inflight) >> _CHUNK_SHIFT
                busy = self._busy
                busy[sent] = True
                umem.give(addrs[~busy[addrs >> _CHUNK_SHIFT]])
                busy[sent] = False
                self._inflight = []
            else:
                umem.give(addrs)
            for s in self.rings:
                s.complete()
                s.refill()
        return done

    def _send(self, base: int, offs: np.ndarray, lens: np.ndarray, names: np.ndarray) -> None:
        """The pipeline's transmit: from the chunk the frame arrived in, on the AF_XDP
        socket of its egress interface (sendmmsg for an interface pyvs does not serve)."""
        tx = self.pipeline.tx
        ifindex_of = tx.ifindex_of
        # one egress interface (the usual batch, always a single frame): no np.unique
        uniq = names[:1] if (names == names[0]).all() else np.unique(names)
        for name in uniq.tolist():
            sel = slice(None) if len(uniq) == 1 else names == name
            sock = self.by_ifindex.get(ifindex_of.get(name, -1))
            if sock is None:  # not one of ours: sendmmsg copies it out now
                tx.send(base + offs[sel].astype(np.uint64), lens[sel].astype(np.uint64),
                        names[sel])
                continue
            a = offs[sel].astype(np.uint64)
            n = sock.transmit(a, lens[sel])
            self._inflight.append(a[:n])
            if n < len(a):
                self.counters["tx-full"] += len(a) - n

    def tick(self) -> None:
        self.pipeline.tick()
        for s in self.rings:  # completions also while no frame arrives
            s.complete()
            s.refill()

    def status(self) -> dict:
        out = {**self.pipeline.counters, **self.counters, **self.pipeline.status()}
        out["tx-sent"] = sum(s.sent for s in self.rings) + self.pipeline.tx.sent
        if self.workers is not None:
            out["worker"] = self.index
            out["queues"] = {s.ifname: [r.queue for r in self.rings if r.ifname == s.ifname]
                             for s in self.rings}
        out.update({"mode": self.steering.mode if self.steering else None,
                    "umem-free": self.umem.nfree if self.umem else 0,
                    "sockets": {s.ifname: s.stats() for s in self.rings}})
        return out

    def close(self) -> None:
        if self.steering is not None:
            self.steering.close()  # the kernel sees the traffic again first
            self.steering = None
        for s in self.rings:
            s.close()
        self.rings = []
        if self.pipeline is not None:
            self.pipeline.close()
            self.pipeline = None
        if self.umem is not None:
            self.umem.close()
            self.umem = None


__all__ = ["XdpPort", "XdpWorkers", "partial_checksums"]
