"""The ring port (``pyvs run --io ring``): TPACKET_V3 receive rings, the batch pipeline.

Receive: one AF_PACKET ring per director interface (engine/io/rxring.py; the
interfaces that hold an IP address, loopback excepted).  With ``--workers`` the rings of
every worker join a PACKET_FANOUT group per interface, so a flow always lands in the
same worker.

Which frames are pyvs's: exactly the ones the nftables netdev-ingress rules of
engine/plumbing_ring.py drop before the kernel stack sees them (both generated from
engine/takes.py).  AF_PACKET taps run before that hook, so the ring sees them while
the kernel does not.  Everything else in a block (ICMP, fwmark traffic, other hosts'
packets) is left to the kernel, which also feeds the NFQUEUE port.

Each block goes through the batch pipeline (engine/io/batch.py) and is given back.
Frames longer than the interface's MTU are local senders' offload super-frames:
counted ``oversize``, dropped, and the sender is made to segment from then on
(engine/io/steer.py SegmentationGuard).  Overload: when more than ``MAX_BEHIND``
blocks are waiting, the oldest are given back unprocessed (counted as ``shed``), so
the freshest traffic is served and the work per wakeup stays bounded.
"""

from __future__ import annotations

import logging

from pyvs.engine.io.batch import BatchPipeline
from pyvs.engine.io.netdev import director_interfaces, set_offloads
from pyvs.engine.io.port import Port, PortContext
from pyvs.engine.io.rxring import MAX_BEHIND, TP_STATUS_USER, RxRing
from pyvs.engine.plumbing_ring import RingPlumbing, RingPlumbingError

log = logging.getLogger("pyvs.ring")


class RingPort(Port):
    """All rings of one process, the batch pipeline, and the netdev table that keeps the
    kernel from also handling the frames the rings take."""

    name = "ring"

    def __init__(self, director, interfaces: list[str], raw, fanout_group: int | None = None,
                 plumbing: bool = True) -> None:
        from pyvs.engine.io.steer import SegmentationGuard

        self.rings: list[RxRing] = []
        self.plumbing: RingPlumbing | None = None
        self.guard = None
        self.pipeline = BatchPipeline(director, raw)
        self.counters = {"shed": 0, "resync": 0, "oversize": 0}
        self.oversize_on: set[str] = set()  # interfaces that delivered super-frames
        try:
            self.guard = SegmentationGuard()
            for i, name in enumerate(interfaces):
                set_offloads(name, False, ("gro",))  # no GRO super-frames on the ring
                # one fanout group per interface (a group is bound to one device)
                self.rings.append(RxRing(name, None if fanout_group is None
                                         else fanout_group + i))
            if plumbing:
                self.plumbing = RingPlumbing(interfaces)
                self.plumbing.install()
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(cls, ctx: PortContext) -> RingPort:
        interfaces = ctx.interfaces or director_interfaces()
        if not interfaces:
            raise RuntimeError("--io ring: no interface with an address in this namespace")
        ctx.interfaces = interfaces
        return cls(ctx.director, interfaces, ctx.raw, ctx.fanout_group)

    @staticmethod
    def clear_stale() -> list[str]:
        try:
            return RingPlumbing([]).remove()
        except RingPlumbingError:  # no nft: no table can exist either
            return []

    def readers(self) -> list[RxRing]:
        return list(self.rings)

    def update(self, services: list) -> None:
        # the ring takes a service's packets before the kernel stops seeing them, and gives
        # them up only after the kernel sees them again
        self.pipeline.update(services)
        vips = sorted({int.from_bytes(s.addr, "big") for s in services
                       if not s.fwmark and len(s.addr) == 4})
        for ring in self.rings:
            if ring.fanout:
                ring.set_fanout_program(vips)
        if self.plumbing is not None:
            self.plumbing.sync(services)

    # ------------------------------------------------------------------------------------
    def serve(self, ring: RxRing, max_blocks: int = 64) -> int:
        """Process the waiting blocks of one ring (bounded); returns frames handled."""
        done = 0
        if ring.resync():
            self.counters["resync"] += 1
        waiting = ring.behind(max_blocks + MAX_BEHIND)
        while waiting > MAX_BEHIND:  # behind: shed the oldest blocks whole
            self.counters["shed"] += ring.release()
            waiting -= 1
        for _ in range(min(waiting, max_blocks)):
            try:
                done += self._block(ring)
            finally:
                ring.release()
        return done

    def _block(self, ring: RxRing) -> int:
        headroom, offs, snaps, wire, status = ring.frames()
        over = wire > ring.max_frame
        if over.any():  # a local sender's segmentation-offload super-frame
            self.counters["oversize"] += int(over.sum())
            self.oversize_on.add(ring.ifname)
            keep = ~over
            offs, snaps, wire, status = offs[keep], snaps[keep], wire[keep], status[keep]
        return self.pipeline.run(ring.arr, ring.base, offs, snaps, wire, status, headroom)

    def tick(self) -> None:
        """Every daemon tick: next-hop expiry, and any ring holding frames is served even
        without a wakeup.  TPACKET_V3 signals poll() only when the block before the
        kernel's active one is the user's; after an overload that left the blocks
        out of order, the kernel could wait for a block the process was never woken
        to return -- a ring silent for good (seen after flat-out floods)."""
        self.pipeline.tick()
        for ring in self.rings:
            if ring.pending():
                self.serve(ring)
        # super-frames from local senders cannot be sent on: make those senders segment
        # (engine/io/steer.py SegmentationGuard); the frames lost meanwhile are retransmitted
        if self.guard is not None:
            for name in self.oversize_on - self.guard.guarded:
                try:
                    self.guard.add(name)
                except OSError as err:
                    log.warning("%s: cannot keep super-frames away: %s", name, err)

    def status(self) -> dict:
        out = {**self.pipeline.counters, **self.counters, **self.pipeline.status()}
        out["rings"] = {r.ifname: {"cur": r.cur, "user_blocks": [
            k for k in range(r.block_nr)
            if r.block_status(k) & TP_STATUS_USER]} for r in self.rings}
        return out

    def close(self) -> None:
        if self.plumbing is not None:
            self.plumbing.remove()  # the kernel sees the traffic again first
            self.plumbing = None
        if self.guard is not None:
            self.guard.close()
            self.guard = None
        for r in self.rings:
            r.close()
        self.rings = []
        if self.pipeline is not None:
            self.pipeline.close()
            self.pipeline = None


__all__ = ["RingPort"]
