"""The ring/XDP port's two ways through a batch make the same decisions.

The fast ports' batch pipeline (engine/io/batch.py) takes up to SMALL_BATCH frames
one at a time (run_small: classify, TTL, checksum completion, the per-packet
director, next hop) and larger batches column-wise with numpy.  For random batches
of frames -- requests to the VIP and
replies from real servers, TTL 1 replies, bad IPv4 header checksums, truncated
captures, CHECKSUM_PARTIAL frames, unresolved next hops, traffic that is not
pyvs's -- both ways must send the same frames (bytes and egress), hand the same
packets to the kernel, and leave identical directors and counters.
"""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fastpath import CLIENTS, RS, VIPB, ip_packet, make_director, snapshot

from pyvs.engine.io import batch
from pyvs.engine.io.batch import BatchPipeline
from pyvs.engine.io.mmsg import MmsgSender
from pyvs.engine.io.rxring import TP_STATUS_CSUMNOTREADY
from pyvs.engine.packet import parse, set_ipv4_header_csum, set_l4_checksum

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


def make_port() -> BatchPipeline:
    """The pipeline of a fast port without sockets: next hops, the raw socket and the
    transmit function are passed in, and what is sent is recorded."""
    d = make_director()
    out: list = []
    tx = MmsgSender()

    def send(base, offs, lens, names) -> None:
        out.extend((bytes(p._buf[o:o + n]), tx.ifindex_of[int(a)])
                   for o, n, a in zip(offs.tolist(), lens.tolist(), names.tolist(), strict=True))

    p = BatchPipeline(d, Raw(), send=send, hops=Hops(), tx=tx)
    p.out = out
    p.update(list(d.services.services.values()))
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


def run_batch(port: BatchPipeline, frames) -> None:
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
    port.run(buf, 0, np.array(offs, dtype=np.int64), snaps, wire, status)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.lists(frame_spec, min_size=1, max_size=batch.SMALL_BATCH),
                        min_size=1, max_size=5))
def test_one_at_a_time_and_vectorised_batches_agree(batches):
    small, wide = make_port(), make_port()
    for specs in batches:
        frames = [build(s) for s in specs]
        run_batch(small, frames)
        wide.small_batch = 0  # the same frames through the numpy pipeline
        run_batch(wide, frames)
        assert small.out == wide.out
        # to the kernel: the same packets (the numpy path sends the not-IPVS ones first)
        assert sorted(small.raw.sent) == sorted(wide.raw.sent)
        assert small.raw.generated == wide.raw.generated
        assert small.counters == wide.counters
        assert snapshot(small.director) == snapshot(wide.director)
        for p in (small, wide):
            p.director.clock.advance(0.5)


# --------------------------------------------------------------- checksum completion
def _l4_packet(v6: bool, proto: int, payload: bytes) -> bytearray:
    if proto == 6:
        l4 = struct.pack("!HHIIBBHHH", 40000, 80, 1, 2, 5 << 4, 0x18, 1000, 0, 0) + payload
    else:
        l4 = struct.pack("!HHHH", 40000, 53, 8 + len(payload), 0) + payload
    if v6:
        return bytearray(struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, 64,
                                     bytes.fromhex("20010db8000000000000000000000010"),
                                     bytes.fromhex("20010db8000100000000000000000001")) + l4)
    pkt = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, 64, proto, 0,
                                bytes((198, 18, 0, 10)), bytes((198, 18, 1, 1))) + l4)
    set_ipv4_header_csum(pkt)
    return pkt


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(st.tuples(st.booleans(), st.sampled_from([6, 17]),
                                 st.binary(max_size=300), st.integers(0, 0xFFFF),
                                 st.integers(0, 12)), min_size=1, max_size=12))
def test_batch_checksum_completion_matches_the_per_packet_arithmetic(frames):
    """Whatever the checksum field holds (a pseudo-header sum, a valid or a wrong
    checksum), the batch completion writes what engine/packet.set_l4_checksum writes;
    odd lengths, IPv6 and Ethernet padding after the IP packet included."""
    buf = np.zeros(2048 * len(frames), dtype=np.uint8)
    want = []
    for k, (v6, proto, payload, field, pad) in enumerate(frames):
        pkt = _l4_packet(v6, proto, payload)
        info = parse(pkt)
        at = info.csum_off
        pkt[at:at + 2] = field.to_bytes(2, "big")
        frame = ETH[:12] + (b"\x86\xdd" if v6 else b"\x08\x00") + bytes(pkt) + bytes(pad)
        buf[2048 * k:2048 * k + len(frame)] = np.frombuffer(frame, dtype=np.uint8)
        ref = bytearray(pkt)
        set_l4_checksum(ref, parse(ref))
        want.append(ETH[:12] + frame[12:14] + bytes(ref) + bytes(pad))
    done = batch.complete_checksums(buf, np.arange(len(frames), dtype=np.int64) * 2048)
    assert done.all()
    for k, w in enumerate(want):
        assert bytes(buf[2048 * k:2048 * k + len(w)]) == w
