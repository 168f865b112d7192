"""The ring/XDP port's two ways through a batch make the same decisions.

RingPort._batch takes up to SMALL_BATCH frames one at a time (_small: classify,
TTL, checksum completion, the per-packet director, next hop) and larger batches
column-wise with numpy.  For random batches of frames -- requests to the VIP and
replies from real servers, TTL 1 replies, bad IPv4 header checksums, truncated
captures, CHECKSUM_PARTIAL frames, unresolved next hops, traffic that is not
pyvs's -- both ways must send the same frames (bytes and egress), hand the same
packets to the kernel, and leave identical directors and counters.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.fastpath import FastPath
from engine.io import ring
from engine.io.ring import TP_STATUS_CSUMNOTREADY, Match, MmsgSender, RingPort
from engine.packet import parse
from tests.test_fastpath import CLIENTS, RS, VIPB, ip_packet, make_director, snapshot

ETH = bytes(6) + bytes(6) + b"\x08\x00"
UNRESOLVED = RS[2]  # no neighbour entry: the frame goes to the kernel


class Hops:
    def get(self, addr: bytes):
        if addr == UNRESOLVED:
            return None
        return (7 if addr in RS else 9, bytes([2, 0, 0, 0, 0, addr[-1]]) + bytes(6))


class Raw:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.generated: list = []

    def send(self, packet: bytes) -> None:
        self.sent.append(bytes(packet))

    def flush(self, director) -> None:
        self.generated += director.outbox + director.l2_outbox
        director.outbox.clear()
        director.l2_outbox.clear()


def make_port() -> RingPort:
    d = make_director()
    p = RingPort.__new__(RingPort)  # no sockets: the pipeline only
    p.director, p.fast, p.raw, p.rings = d, FastPath(d), Raw(), []
    p.tx, p.hops, p.match = MmsgSender(), Hops(), Match()
    p.counters = dict.fromkeys(("ring-frames", "ring-mine", "ring-forward", "ring-to-kernel",
                                "ring-truncated", "ring-bad-ip-checksum"), 0)
    p.update_services(d.services.services.values())
    p.out = []
    p._send = lambda base, offs, lens, names: p.out.extend(
        (bytes(p._buf[o:o + n]), p.tx.ifindex_of[int(a)])
        for o, n, a in zip(offs.tolist(), lens.tolist(), names.tolist(), strict=True))
    return p


FLAGS = st.sampled_from([0x02, 0x10, 0x18, 0x11, 0x04, 0x12])
frame_spec = st.tuples(
    st.sampled_from(["req", "req", "rep", "other"]),
    st.sampled_from([(6, 80, 8080), (17, 53, 53), (17, 54, 54)]),
    st.integers(0, len(CLIENTS) - 1), st.integers(40000, 40002), st.integers(0, len(RS) - 1),
    FLAGS, st.binary(max_size=16),
    st.sampled_from(["", "", "", "ttl1", "badsum", "cut", "partial"]),
)


def build(spec) -> tuple[bytes, int, int]:
    """(frame, captured length, status word)."""
    kind, (proto, vport, rport), c, cport, r, flags, payload, odd = spec
    if kind == "req":
        pkt = ip_packet(proto, CLIENTS[c], cport, VIPB, vport, flags, payload, 64, False)
    elif kind == "rep":
        pkt = ip_packet(proto, RS[r], rport, CLIENTS[c], cport, flags, payload,
                        1 if odd == "ttl1" else 63, False)
    else:
        pkt = ip_packet(proto, CLIENTS[c], cport, RS[r], 9999, flags, payload, 64, False)
    status = 0
    if odd == "badsum":
        pkt[10] ^= 0x55
    elif odd == "partial":  # the checksum field holds the pseudo-header sum only
        info = parse(pkt)
        at = info.l4_off + (16 if proto == 6 else 6)
        pkt[at:at + 2] = b"\x12\x34"
        status = TP_STATUS_CSUMNOTREADY
    frame = ETH + bytes(pkt)
    return frame, len(frame) - (4 if odd == "cut" else 0), status


def run_batch(port: RingPort, frames) -> None:
    offs, pos = [], 64
    for _ in frames:
        offs.append(pos)
        pos += 2048
    buf = np.zeros(pos + 64, dtype=np.uint8)
    for o, (f, _snap, _st) in zip(offs, frames, strict=True):
        buf[o:o + len(f)] = np.frombuffer(f, dtype=np.uint8)
    port._buf = buf
    snaps = np.array([s for _f, s, _st in frames], dtype=np.int64)
    wire = np.array([len(f) for f, _s, _st in frames], dtype=np.int64)
    status = np.array([st for _f, _s, st in frames], dtype=np.int64)
    port._batch(buf, 0, np.array(offs, dtype=np.int64), snaps, wire, status)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.lists(frame_spec, min_size=1, max_size=ring.SMALL_BATCH),
                        min_size=1, max_size=5))
def test_one_at_a_time_and_vectorised_batches_agree(batches):
    small, wide = make_port(), make_port()
    for specs in batches:
        frames = [build(s) for s in specs]
        run_batch(small, frames)
        saved = ring.SMALL_BATCH
        ring.SMALL_BATCH = 0  # the same frames through the numpy pipeline
        try:
            run_batch(wide, frames)
        finally:
            ring.SMALL_BATCH = saved
        assert small.out == wide.out
        # to the kernel: the same packets (the numpy path sends the not-IPVS ones first)
        assert sorted(small.raw.sent) == sorted(wide.raw.sent)
        assert small.raw.generated == wide.raw.generated
        assert small.counters == wide.counters
        assert snapshot(small.director) == snapshot(wide.director)
        for p in (small, wide):
            p.director.clock.advance(0.5)
