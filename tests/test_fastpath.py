"""engine/fastpath.py against the per-packet path: for random packet sequences, the same
decisions, the same rewritten bytes, the same entries (state, timeout, expiry, flags,
in_pkts), destination counters, stats and drop counters.

Two directors get identical configuration and virtual clocks; one sees each batch
through Director.process (IP packets), the other through FastPath.run (the same
packets as Ethernet frames in one buffer, as a ring block holds them).
"""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyvs.engine import ipvsadm
from pyvs.engine.clock import VirtualClock
from pyvs.engine.director import Director
from pyvs.engine.fastpath import FastPath
from pyvs.engine.packet import parse, set_ipv4_header_csum, set_l4_checksum
from pyvs.engine.sync.master import SyncConfig, SyncMaster
from pyvs.engine.verdict import FORWARD

VIP = "198.18.1.1"
CLIENTS = [bytes((198, 18, 0, 10 + i)) for i in range(3)]
RS = [bytes((198, 18, 2, 11 + i)) for i in range(3)]
VIPB = bytes((198, 18, 1, 1))
ETH_HDR = bytes(6) + bytes(6) + b"\x08\x00"

CONFIG = [
    ["-A", "-t", f"{VIP}:80", "-s", "rr"],
    *[["-a", "-t", f"{VIP}:80", "-r", f"198.18.2.{11 + i}:8080", "-m"] for i in range(3)],
    ["-A", "-u", f"{VIP}:53", "-s", "wlc"],
    *[["-a", "-u", f"{VIP}:53", "-r", f"198.18.2.{11 + i}:53", "-m"] for i in range(2)],
    ["-A", "-u", f"{VIP}:54", "-s", "rr", "-p", "30"],
    *[["-a", "-u", f"{VIP}:54", "-r", f"198.18.2.{11 + i}:54", "-m"] for i in range(3)],
    ["-A", "-t", f"{VIP}:81", "-s", "lc"],
    *[["-a", "-t", f"{VIP}:81", "-r", f"198.18.2.{11 + i}:81", "-m"] for i in range(2)],
]


def make_director() -> Director:
    d = Director(clock=VirtualClock())
    for argv in CONFIG:
        rc, _out, err = ipvsadm.run(argv, "", d)
        assert rc == 0, err
    return d


def ip_packet(proto, saddr, sport, daddr, dport, tcp_flags, payload, ttl, zero_udp_csum):
    if proto == 6:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 1000, 2000, 5 << 4, tcp_flags, 65535,
                         0, 0) + payload
    else:
        l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    buf = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0x4000, ttl,
                                proto, 0, saddr, daddr) + l4)
    set_ipv4_header_csum(buf)
    if not (proto == 17 and zero_udp_csum):
        set_l4_checksum(buf, parse(buf))
    return buf


# one event: direction, service, client, client port, real server, flags, payload
FLAGS = st.sampled_from([0x02, 0x10, 0x18, 0x10, 0x10, 0x11, 0x04, 0x12, 0x14, 0x00, 0x19])
event = st.tuples(
    st.sampled_from(["req", "req", "rep"]),
    st.sampled_from([(6, 80, 8080), (17, 53, 53), (17, 54, 54), (6, 81, 81)]),
    st.integers(0, len(CLIENTS) - 1),
    st.integers(40000, 40003),
    st.integers(0, len(RS) - 1),
    FLAGS,
    st.binary(max_size=24),
    st.integers(0, 3),  # 0: UDP checksum 0 (none)
    st.sampled_from([0, 0, 0, 1, 2]),  # 1: truncated frame, 2: bad tcp doff
)


def build(ev):
    kind, (proto, vport, rport), c, cport, r, flags, payload, zc, odd = ev
    if kind == "req":
        pkt = ip_packet(proto, CLIENTS[c], cport, VIPB, vport, flags, payload, 64, zc == 0)
    else:
        pkt = ip_packet(proto, RS[r], rport, CLIENTS[c], cport, flags, payload, 63, zc == 0)
    if odd == 1:
        pkt = pkt[: max(1, len(pkt) - 5)]
    elif odd == 2 and proto == 6:
        pkt[32] = 0x30  # data offset 3
        set_ipv4_header_csum(pkt)
    return pkt


def snapshot(d: Director):
    conns = sorted(
        ((c.protocol, c.caddr, c.cport, c.vaddr, c.vport, c.daddr, c.dport, c.state,
          c.timeout, c.expires, c.flags, c.in_pkts, c.n_control,
          c.control.state if c.control is not None else None)
         for c in d.conntable.entries()), key=repr)
    dests = []
    for svc in d.services.services.values():
        dests.append(svc.stats.as_tuple())
        for dest in svc.destinations:
            dests.append((dest.addr, dest.port, dest.activeconns, dest.inactconns,
                           dest.persistconns, dest.flags, dest.stats.as_tuple()))
    return conns, dests, d.total.as_tuple(), dict(d.drops), list(d.outbox)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.tuples(st.lists(event, max_size=40),
                                  st.sampled_from([0, 0.05, 1, 3, 30, 200])),
                        min_size=1, max_size=6),
       secure=st.booleans(), sync=st.sampled_from([None, "3 50", "1 2", "0 1", "2 0"]))
def test_fast_and_slow_paths_agree(batches, secure, sync):
    """Also with a sync master: the fast path's frames count for the sync rules (the
    in_pkts threshold), so both send the same records in the same order."""
    slow, fast = make_director(), make_director()
    masters = []
    for d in (slow, fast):
        if secure:
            d.sysctl.set("secure_tcp", "3")
        if sync is not None:
            d.sysctl.set("sync_threshold", sync)
            m = SyncMaster(SyncConfig("eth0"), d.sysctl, d.clock, 1)
            d.sync_observer = m.observe
            masters.append(m)
    fp = FastPath(fast)
    for events, advance in batches:
        pkts = [build(ev) for ev in events]
        slow_bufs = [bytearray(p) for p in pkts]
        want = slow.process(slow_bufs)
        frames = [ETH_HDR + bytes(p) for p in pkts]
        offs, pos = [], 0
        for f in frames:
            offs.append(pos)
            pos += (len(f) + 15) & ~15
        block = np.zeros(max(pos, 1) + 64, dtype=np.uint8)
        for o, f in zip(offs, frames, strict=True):
            block[o:o + len(f)] = np.frombuffer(f, dtype=np.uint8)
        got = fp.run(block, np.array(offs, dtype=np.int64),
                     np.array([len(f) for f in frames], dtype=np.int64))
        assert list(got) == want
        for o, f, sb, v in zip(offs, frames, slow_bufs, want, strict=True):
            out = bytes(block[o + 14:o + len(f)])
            assert out == (bytes(sb) if v == FORWARD else f[14:])
        assert snapshot(fast) == snapshot(slow)
        if masters:
            sent = [m.due(d.clock.now() + 2) for m, d in zip(masters, (slow, fast),
                                                             strict=True)]
            assert sent[0] == sent[1]
        for d in (slow, fast):
            d.clock.advance(advance)
            d.tick()
        assert snapshot(fast) == snapshot(slow)


def test_established_flows_take_the_fast_path():
    slow, fast = make_director(), make_director()
    fp = FastPath(fast)
    seq = [("req", (6, 80, 8080), 0, 40000, 0, 0x02, b"", 1, 0)]
    for d in (slow, fast):
        d.process([build(seq[0])])
    # find where the SYN went, then answer from there and send data
    conn = next(iter(fast.conntable.by_in.values()))
    r = RS.index(conn.daddr)
    evs = [("rep", (6, 80, 8080), 0, 40000, r, 0x12, b"", 1, 0),
           *[("req", (6, 80, 8080), 0, 40000, 0, 0x10, b"data", 1, 0)] * 5,
           *[("rep", (6, 80, 8080), 0, 40000, r, 0x18, b"reply", 1, 0)] * 5]
    frames = [ETH_HDR + bytes(build(e)) for e in evs]
    offs = np.cumsum([0] + [len(f) for f in frames[:-1]])
    block = np.frombuffer(b"".join(frames), dtype=np.uint8).copy()
    before = fp.fast
    got = fp.run(block, offs, np.array([len(f) for f in frames]))
    assert list(got) == [FORWARD] * 11
    # slow: the SYN-ACK (a SYN event) and the first ACK (SYN_RECV -> ESTABLISHED)
    assert fp.fast - before == 9
    assert slow.process([bytearray(build(e)) for e in evs]) == [FORWARD] * 11
    assert snapshot(fast) == snapshot(slow)
