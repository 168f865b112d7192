"""The XDP port: `pyvs run --io xdp` -- AF_XDP receive and transmit, the ring's batch path.

Same pipeline as the ring port (engine/io/ring.py: classify with numpy, the fast path
of engine/fastpath.py, next hops from the kernel's tables, the raw IP socket for what
the kernel must handle), different I/O (engine/io/xsk.py):

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

No nftables table is needed (the XDP program is the filter), fwmark services and ICMP
stay on NFQUEUE as in ring mode.  Frames steered to XDP are not seen by packet
sockets (tcpdump on the director shows only what the kernel passes).
"""

from __future__ import annotations

import numpy as np

from engine.io import xsk
from engine.io.ring import TP_STATUS_CSUMNOTREADY, RingPort, set_offloads
from engine.plumbing_ring import ring_targets

BATCH = 512  # frames per batch (perf-ceilings.md: numpy pays off from ~32, best in hundreds)
_TCP, _UDP = 6, 17


def partial_checksums(buf: np.ndarray, offs: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Which TCP/UDP frames carry CHECKSUM_PARTIAL: the checksum field holds the folded
    pseudo-header sum (what tcp_v4_send_check / udp4_hwcsum leave for the device)."""
    n = len(offs)
    out = np.zeros(n, dtype=bool)
    if n == 0:
        return out
    last = len(buf) - 1
    h = buf[np.minimum(offs[:, None] + np.arange(58), last)].astype(np.int64)
    et = (h[:, 12] << 8) | h[:, 13]
    v4 = (et == 0x0800) & (h[:, 14] >> 4 == 4) & (lens >= 34)
    v6 = (et == 0x86DD) & (h[:, 14] >> 4 == 6) & (lens >= 54)
    ihl = (h[:, 14] & 15) << 2
    proto = np.where(v4, h[:, 23], h[:, 20])
    words = (h[:, 0::2] << 8) | h[:, 1::2]  # big-endian 16-bit words from offset 0
    s4 = words[:, 13:17].sum(axis=1) + proto + (((h[:, 16] << 8) | h[:, 17]) - ihl)
    s6 = words[:, 11:27].sum(axis=1) + proto + ((h[:, 18] << 8) | h[:, 19])
    s = np.where(v4, s4, s6)
    for _ in range(3):
        s = (s & 0xFFFF) + (s >> 16)
    l4 = np.where(v4, 14 + ihl, 54)
    field = l4 + np.where(proto == _TCP, 16, 6)
    cand = (v4 | v6) & ((proto == _TCP) | (proto == _UDP)) & (lens >= field + 2)
    if not cand.any():
        return out
    at = np.minimum(offs + field, last - 1)
    got = (buf[at].astype(np.int64) << 8) | buf[at + 1]
    out[:] = cand & (got == s)
    return out


class XdpPort(RingPort):
    """AF_XDP sockets on every director interface, one UMEM, the ring's batch path."""

    def _open(self, interfaces: list[str], fanout_group: int | None) -> None:
        if fanout_group is not None:
            raise xsk.XdpError(95, "--io xdp runs one worker (use --io ring for --workers)")
        self.umem = xsk.Umem()
        self.steering = xsk.Steering(interfaces)
        first = None
        for name in interfaces:
            set_offloads(name, False, ("gro",))  # no GRO super-frames: a chunk holds one MTU
            sock = xsk.XskSocket(name, self.umem, first)
            first = first or sock
            self.rings.append(sock)
            self.steering.add_socket(sock)
        self.by_ifindex = {s.ifindex: s for s in self.rings}
        self.steering.attach()
        self._inflight: list[np.ndarray] = []
        self.counters.update({"xdp-tx-full": 0})

    def update_services(self, services) -> None:
        services = list(services)
        self.match.update(services)
        vips, reals = ring_targets(services)
        keys = {xsk.target_key(xsk.KIND_VIP, p, a.ljust(16, b"\0"), port)
                for p, a, port in vips}
        keys |= {xsk.target_key(xsk.KIND_REAL, p, a.ljust(16, b"\0"), port)
                 for p, a, port in reals}
        self.steering.sync(keys)

    # ------------------------------------------------------------------------------------
    def serve(self, sock: xsk.XskSocket, max_blocks: int = 16) -> int:
        """Process what waits on one socket (bounded); returns frames handled."""
        done = 0
        umem = self.umem
        for _ in range(max_blocks):
            addrs, lens = sock.receive(BATCH)
            if len(addrs) == 0:
                break
            offs = addrs.astype(np.int64)
            self._inflight = []
            try:
                status = np.where(partial_checksums(umem.arr, offs, lens),
                                  TP_STATUS_CSUMNOTREADY, 0)
                done += self._batch(umem.arr, umem.base, offs, lens, lens, status)
            finally:
                if self._inflight:
                    sent = np.concatenate(self._inflight)
                    umem.give(addrs[~np.isin(addrs, sent)])
                else:
                    umem.give(addrs)
                for s in self.rings:
                    s.complete()
                    s.refill()
        return done

    def _send(self, base: int, offs: np.ndarray, lens: np.ndarray, names: np.ndarray) -> None:
        ifindex_of = self.tx.ifindex_of
        uniq = np.unique(names)
        for name in uniq.tolist():
            sel = slice(None) if len(uniq) == 1 else names == name
            sock = self.by_ifindex.get(ifindex_of.get(name, -1))
            if sock is None:  # not one of ours: sendmmsg copies it out now
                self.tx.send(base + offs[sel].astype(np.uint64), lens[sel].astype(np.uint64),
                             names[sel])
                continue
            a = offs[sel].astype(np.uint64)
            n = sock.transmit(a, lens[sel])
            self._inflight.append(a[:n])
            if n < len(a):
                self.counters["xdp-tx-full"] += len(a) - n

    def tick(self) -> None:
        super().tick()
        for s in self.rings:  # completions also while no frame arrives
            s.complete()
            s.refill()

    def status(self) -> dict:
        out = dict(self.counters)
        out["fast"] = self.fast.fast
        out["slow"] = self.fast.slow
        out["tx-sent"] = sum(s.sent for s in self.rings) + self.tx.sent
        out["tx-errors"] = self.tx.errors
        out["xdp-mode"] = self.steering.mode
        out["umem-free"] = self.umem.nfree
        out["sockets"] = {s.ifname: s.stats() for s in self.rings}
        return out

    def close(self) -> None:
        steering = getattr(self, "steering", None)
        if steering is not None:
            steering.close()  # the kernel sees the traffic again first
            self.steering = None
        super().close()
        umem = getattr(self, "umem", None)
        if umem is not None:
            umem.close()
            self.umem = None


__all__ = ["XdpPort", "partial_checksums"]
