"""engine/fastpath.py against the per-packet path: for random packet sequences, the same
decisions, the same rewritten bytes, the same entries (state, timeout, expiry, flags,
in_pkts, templates and their ASSURED mark), destination counters, stats, drop counters
and the same packets sent besides (outbox: tunnels and ICMP; l2_outbox: direct routing).

Two directors get identical configuration, virtual clocks and routes (a stand-in for the
kernel's tables, so DR and TUN run without netlink); one sees each batch through
Director.process (IP packets), the other through FastPath.run (the same packets as
Ethernet frames in one buffer, as a ring block holds them).  Between batches both get
the same configuration changes -- destinations deleted, re-added, quiesced, re-weighted
or moved to another forwarding method, services edited with -E (scheduler, persistence,
one-packet scheduling), sysctls flipped -- and the same clock advance and tick.

The services cover IPv4 and IPv6, TCP and UDP, persistence templates (-p), and all three
forwarding methods, also mixed in one service.
"""

from __future__ import annotations

import random
import struct
from functools import partial

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyvs.engine import ipvsadm
from pyvs.engine.bufref import BufRef
from pyvs.engine.clock import VirtualClock
from pyvs.engine.conntable import pack_key, source_rs_key
from pyvs.engine.director import Director
from pyvs.engine.fastpath import FastPath
from pyvs.engine.fastpath6 import packed_keys
from pyvs.engine.model import FWD_DROUTE, FWD_MASQ, pack_addr
from pyvs.engine.neigh import Route
from pyvs.engine.packet import (
    ipv4_header_ok,
    l4_checksum_ok,
    parse,
    set_ipv4_header_csum,
    set_l4_checksum,
)
from pyvs.engine.sync.master import SyncConfig, SyncMaster
from pyvs.engine.verdict import DROP, FORWARD

VIP, VIP6 = "198.18.1.1", "2001:db8:1::1"
CLIENT_ADDRS = {4: [bytes((198, 18, 0, 10 + i)) for i in range(3)],
           6: [pack_addr(f"2001:db8::{10 + i:x}") for i in range(3)]}
RS_TEXT = {4: [f"198.18.2.{11 + i}" for i in range(3)],
           6: [f"2001:db8:2::{11 + i:x}" for i in range(3)]}
RS_ADDRS = {af: [pack_addr(a) for a in addrs] for af, addrs in RS_TEXT.items()}
VIPS = {4: pack_addr(VIP), 6: pack_addr(VIP6)}
ETHERTYPE = {4: b"\x08\x00", 6: b"\x86\xdd"}
# the IPv4 names tests/test_port_small_batch.py imports
CLIENTS, RS, VIPB = CLIENT_ADDRS[4], RS_ADDRS[4], VIPS[4]


class Service:
    """One virtual service of the test configuration and how its servers forward."""

    def __init__(self, af, proto, vport, rport, opts, methods) -> None:
        self.af, self.proto, self.vport, self.rport = af, proto, vport, rport
        self.opts, self.methods = opts, methods

    @property
    def addr(self) -> str:
        vip = VIP if self.af == 4 else f"[{VIP6}]"
        return f"{vip}:{self.vport}"

    @property
    def flag(self) -> str:
        return "-t" if self.proto == 6 else "-u"

    def rs(self, r: int) -> str:
        a = RS_TEXT[self.af][r]
        return f"{a}:{self.rport}" if self.af == 4 else f"[{a}]:{self.rport}"


SERVICES = [
    Service(4, 6, 80, 8080, ["-s", "rr"], ["-m", "-m", "-m"]),
    Service(4, 17, 53, 53, ["-s", "wlc"], ["-m", "-m"]),
    Service(4, 17, 54, 54, ["-s", "rr", "-p", "30"], ["-m", "-m", "-m"]),
    Service(4, 6, 81, 81, ["-s", "lc"], ["-m", "-m"]),
    Service(4, 6, 82, 82, ["-s", "wrr", "-p", "60"], ["-m", "-m", "-m"]),
    Service(4, 6, 83, 83, ["-s", "rr"], ["-m", "-g", "-i"]),  # all three methods
    Service(4, 17, 55, 55, ["-s", "rr"], ["-i", "-i"]),
    Service(4, 6, 84, 84, ["-s", "wlc", "-p", "20"], ["-g", "-g"]),
    Service(6, 6, 80, 8080, ["-s", "rr"], ["-m", "-m"]),
    Service(6, 17, 53, 53, ["-s", "rr", "-p", "20"], ["-m", "-m"]),
    Service(6, 6, 83, 83, ["-s", "rr"], ["-m", "-g", "-i"]),
    Service(6, 6, 84, 84, ["-s", "wlc", "-p", "20"], ["-g", "-g"]),
    Service(6, 17, 56, 56, ["-s", "rr"], ["-g", "-g"]),
    Service(6, 17, 57, 57, ["-s", "rr"], ["-i", "-i"]),
]


def config_commands() -> list[list[str]]:
    out = []
    for svc in SERVICES:
        out.append(["-A", svc.flag, svc.addr, *svc.opts])
        for r, method in enumerate(svc.methods):
            out.append(["-a", svc.flag, svc.addr, "-r", svc.rs(r), method])
    return out


CONFIG = config_commands()


class FakeRoutes:
    """The kernel's route and neighbour tables, as engine/neigh.py's KernelRoutes answers:
    every real server on-link behind eth1 (MTU 1500), each with its own MAC."""

    def route(self, addr):
        src = pack_addr("198.18.2.1") if len(addr) == 4 else pack_addr("2001:db8:2::1")
        return Route(addr, False, 7, "eth1", src, None, 1500, b"\x02\0\0\0\0\x01", 1e9)

    def mac(self, route, addr):
        return b"\x02\x00" + addr[-4:]

    def poll(self):
        return set()


def make_director() -> Director:
    # the tunnel forwarder draws its first outer IP id from `random`: the same seed makes
    # both directors' tunnel packets comparable byte for byte
    random.seed(7)
    d = Director(clock=VirtualClock(), routes=FakeRoutes(), seed=3)
    for argv in CONFIG:
        rc, _out, err = ipvsadm.run(argv, "", d)
        assert rc == 0, (argv, err)
    return d


def ip_packet_af(af, proto, saddr, sport, daddr, dport, tcp_flags, payload, ttl, zero_udp_csum):
    if proto == 6:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 1000, 2000, 5 << 4, tcp_flags, 65535,
                         0, 0) + payload
    else:
        l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    if af == 4:
        buf = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0x4000, ttl,
                                    proto, 0, saddr, daddr) + l4)
        set_ipv4_header_csum(buf)
    else:
        buf = bytearray(struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, ttl, saddr,
                                    daddr) + l4)
    if not (proto == 17 and zero_udp_csum):
        set_l4_checksum(buf, parse(buf))
    return buf


def with_hop_by_hop(pkt: bytearray) -> bytearray:
    """The IPv6 packet with an 8-byte hop-by-hop options header (PadN) before its L4
    header: the same flow, the same L4 checksum, no longer a plain 40-byte header."""
    nh = pkt[6]
    out = bytearray(pkt[:40]) + bytes((nh, 0, 1, 4, 0, 0, 0, 0)) + pkt[40:]
    out[6] = 0
    struct.pack_into("!H", out, 4, len(out) - 40)
    return out


def ip_packet(proto, saddr, sport, daddr, dport, tcp_flags, payload, ttl, zero_udp_csum):
    """An IPv4 packet (ip_packet_af for either family)."""
    return ip_packet_af(4, proto, saddr, sport, daddr, dport, tcp_flags, payload, ttl,
                        zero_udp_csum)


# one event: direction, service, client, client port, real server, flags, payload,
# UDP checksum choice, oddity
FLAGS = st.sampled_from([0x02, 0x10, 0x18, 0x10, 0x10, 0x11, 0x04, 0x12, 0x14, 0x00, 0x19])
event = st.tuples(
    st.sampled_from(["req", "req", "rep"]),
    st.integers(0, len(SERVICES) - 1),
    st.integers(0, 2),
    st.integers(40000, 40002),
    st.sampled_from([0, 1, 2, None, None]),  # None: the server the flow's entry names
    FLAGS,
    st.one_of(st.binary(max_size=11), st.binary(min_size=12, max_size=40)),
    st.integers(0, 3),  # 0: UDP checksum 0 (none in IPv4, invalid in IPv6)
    # 1: truncated frame, 2: bad tcp doff, 3: IPv4 without DF / IPv6 extension header,
    # 4: TTL / hop limit 1
    st.sampled_from([0, 0, 0, 0, 0, 1, 2, 3, 4]),
)


def build(ev, d: Director | None = None) -> bytearray:
    """The packet of one event; a reply from server None is sent by the real server the
    flow's entry in ``d`` names (so replies find their connection), else server 0."""
    kind, s, c, cport, r, flags, payload, zc, odd = ev
    svc = SERVICES[s]
    af, proto = svc.af, svc.proto
    client, servers = CLIENT_ADDRS[af][c], RS_ADDRS[af]
    if r is None:
        conn = d.conntable.in_get(proto, client, cport, VIPS[af], svc.vport) \
            if d is not None else None
        r = servers.index(conn.daddr) if conn is not None and conn.daddr in servers else 0
    if kind == "req":
        pkt = ip_packet_af(af, proto, client, cport, VIPS[af], svc.vport, flags, payload, 64,
                           zc == 0)
    else:
        pkt = ip_packet_af(af, proto, servers[r], svc.rport, client, cport, flags, payload,
                           63, zc == 0)
    if odd == 1:
        pkt = pkt[: max(1, len(pkt) - 5)]
    elif odd == 2 and proto == 6:
        l4 = 20 if af == 4 else 40
        pkt[l4 + 12] = 0x30  # data offset 3
        if af == 4:
            set_ipv4_header_csum(pkt)
    elif odd == 3 and af == 4:  # a sender that allows fragmentation: no DF
        pkt[6] &= ~0x40
        set_ipv4_header_csum(pkt)
    elif odd == 3:
        pkt = with_hop_by_hop(pkt)
    elif odd == 4:
        pkt[8 if af == 4 else 7] = 1
        if af == 4:
            set_ipv4_header_csum(pkt)
    return pkt


# configuration changes between batches -------------------------------------------------
METHODS = ["-m", "-g", "-i"]
change = st.one_of(
    st.tuples(st.just("del"), st.integers(0, len(SERVICES) - 1), st.integers(0, 2)),
    st.tuples(st.just("add"), st.integers(0, len(SERVICES) - 1), st.integers(0, 2)),
    st.tuples(st.just("weight"), st.integers(0, len(SERVICES) - 1), st.integers(0, 2),
              st.sampled_from([0, 0, 1, 3])),
    st.tuples(st.just("method"), st.integers(0, len(SERVICES) - 1), st.integers(0, 2),
              st.sampled_from(METHODS)),
    st.tuples(st.just("edit"), st.integers(0, len(SERVICES) - 1),
              st.sampled_from([["-s", "rr"], ["-s", "wlc"], ["-s", "sh"], ["-s", "rr", "-p", "10"],
                               ["-s", "lc", "-p", "40"], ["-s", "rr", "-o"]])),
    st.tuples(st.just("sysctl"), st.sampled_from(["expire_nodest_conn",
                                                  "expire_quiescent_template",
                                                  "conn_reuse_mode", "sloppy_tcp"]),
              st.sampled_from(["0", "1", "2"])),
)


def apply_change(directors: list[Director], ch) -> None:
    """The same request for every director; both must answer it alike."""
    kind = ch[0]
    if kind == "sysctl":
        value = ch[2] if ch[1] == "conn_reuse_mode" else str(min(1, int(ch[2])))
        for d in directors:
            d.sysctl.set(ch[1], value)
        return
    svc = SERVICES[ch[1]]
    if kind == "edit":
        argv = ["-E", svc.flag, svc.addr, *ch[2]]
    elif kind == "del":
        argv = ["-d", svc.flag, svc.addr, "-r", svc.rs(ch[2])]
    elif kind == "add":
        argv = ["-a", svc.flag, svc.addr, "-r", svc.rs(ch[2]), METHODS[ch[2] % 3]]
    elif kind == "weight":
        method = svc.methods[ch[2]] if ch[2] < len(svc.methods) else "-m"
        argv = ["-e", svc.flag, svc.addr, "-r", svc.rs(ch[2]), method, "-w", str(ch[3])]
    else:  # method
        argv = ["-e", svc.flag, svc.addr, "-r", svc.rs(ch[2]), ch[3]]
    answers = {ipvsadm.run(argv, "", d)[::2] for d in directors}
    assert len(answers) == 1, (argv, answers)


# comparison ---------------------------------------------------------------------------
def snapshot(d: Director):
    conns = sorted(
        ((c.protocol, c.caddr, c.cport, c.vaddr, c.vport, c.daddr, c.dport, c.state,
          c.timeout, c.expires, c.flags, c.in_pkts, c.n_control,
          c.control.state if c.control is not None else None)
         for c in d.conntable.entries()), key=repr)
    dests = []
    for svc in d.services.services.values():
        dests.append((svc.key, svc.sched_name, svc.flags, svc.stats.as_tuple()))
        for dest in svc.destinations:
            dests.append((dest.addr, dest.port, dest.weight, dest.activeconns,
                           dest.inactconns, dest.persistconns, dest.flags, dest.conn_flags,
                           dest.stats.as_tuple()))
    return (conns, dests, d.total.as_tuple(), dict(d.drops),
            [outbox_packet(p) for p in d.outbox], [(i, bytes(f)) for i, f in d.l2_outbox])


def outbox_packet(item) -> bytes:
    """An outbox item as the IP packet it carries; a tunnel packet the batch path made
    as a ready Ethernet frame must be addressed as FakeRoutes says (the real server's
    MAC, from the egress interface's) and carry the same packet as the stack would get."""
    data = bytes(item)
    if not (isinstance(item, BufRef) and item.ifindex):
        return data
    rs = data[14 + 16: 14 + 20]  # the outer destination
    assert item.ifindex == 7
    assert data[:14] == b"\x02\x00" + rs + b"\x02\0\0\0\0\x01" + b"\x08\x00"
    return data[14:]


def frames_block(pkts: list[bytearray], headroom: int = 0):
    """The frames in one buffer, ``headroom`` free bytes before each."""
    frames = [bytes(6) + bytes(6) + ETHERTYPE[p[0] >> 4 if p else 4] + bytes(p)
              for p in pkts]
    offs, pos = [], 0
    for f in frames:
        pos += headroom
        offs.append(pos)
        pos += (len(f) + 15) & ~15
    block = np.zeros(max(pos, 1) + 64, dtype=np.uint8)
    for o, f in zip(offs, frames, strict=True):
        block[o:o + len(f)] = np.frombuffer(f, dtype=np.uint8)
    return frames, block, np.array(offs, dtype=np.int64), \
        np.array([len(f) for f in frames], dtype=np.int64)


def one_batch(slow: Director, fast: Director, fp: FastPath,
              pkts: list[bytearray], headroom: int = 0) -> list[bytearray]:
    slow_bufs = [bytearray(p) for p in pkts]
    want = slow.process(slow_bufs, stack_forwards=False)  # a fast port transmits itself
    frames, block, offs, lens = frames_block(pkts, headroom)
    got = fp.run(block, offs, lens, headroom=headroom)
    assert list(got) == want
    # a direct-routing frame (or tunnel frame, built in the headroom) the fast path
    # queued is sent from where it sits: its bytes are compared as the outbox entry they
    # are (snapshot), not as a dropped frame
    sent_in_place = {f.off for _i, f in fast.l2_outbox
                     if isinstance(f, BufRef) and f.buf is block}
    sent_in_place |= {p.off + 20 for p in fast.outbox
                      if isinstance(p, BufRef) and p.buf is block}
    for o, f, sb, v in zip(offs, frames, slow_bufs, want, strict=True):
        out = bytes(block[o + 14:o + len(f)])
        if v == DROP and o in sent_in_place:
            continue
        assert out == (bytes(sb) if v == FORWARD else f[14:])
    assert snapshot(fast) == snapshot(slow)
    return slow_bufs


def advance(slow: Director, fast: Director, seconds: float) -> None:
    for d in (slow, fast):
        d.clock.advance(seconds)
        d.tick()
    assert snapshot(fast) == snapshot(slow)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.tuples(st.lists(event, max_size=40),
                                  st.sampled_from([0, 0.05, 1, 3, 30, 200]),
                                  st.lists(change, max_size=2)),
                        min_size=1, max_size=6),
       secure=st.booleans(), sync=st.sampled_from([None, "3 50", "1 2", "0 1", "2 0"]),
       headroom=st.sampled_from([0, 20, 256]))
def test_fast_and_slow_paths_agree(batches, secure, sync, headroom):
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
    run_batches(slow, fast, FastPath(fast), batches, masters, headroom)


def run_batches(slow: Director, fast: Director, fp: FastPath, batches, masters,
                headroom: int) -> None:
    for events, seconds, changes in batches:
        one_batch(slow, fast, fp, [build(ev, slow) for ev in events], headroom)
        advance(slow, fast, seconds)
        for ch in changes:
            apply_change([slow, fast], ch)
        assert snapshot(fast) == snapshot(slow)
        if masters:
            sent = [m.due(d.clock.now() + 2) for m, d in zip(masters, (slow, fast),
                                                             strict=True)]
            assert sent[0] == sent[1]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.tuples(st.lists(event, min_size=10, max_size=60),
                                  st.sampled_from([0, 0, 0.05, 1, 30]),
                                  st.lists(change, max_size=1)),
                        min_size=1, max_size=4),
       secure=st.booleans(), headroom=st.sampled_from([0, 20]))
def test_fast_and_slow_paths_agree_on_established_flows(batches, secure, headroom):
    """The same property where it matters most: every client port of every service (IPv4
    and IPv6, all methods) has an established flow before the random batches, so most
    of their packets are the batch path's (mixed IPv4/IPv6 batches, both directions)."""
    slow, fast = make_director(), make_director()
    for d in (slow, fast):
        if secure:
            d.sysctl.set("secure_tcp", "3")
    fp = FastPath(fast)
    one_batch(slow, fast, fp, [build(syn(s, c, p)) for s in range(len(SERVICES))
                               for c in range(3) for p in range(40000, 40003)])
    flows = established(slow)
    one_batch(slow, fast, fp, [build(ev) for f in flows for ev in handshake_rest(*f)])
    run_batches(slow, fast, fp, batches, [], headroom)


def test_a_fast_reply_assures_the_template_before_the_next_sync_record():
    """A UDP reply marks its persistence template ASSURED (ip_vs_control_assure_ct); a
    request later in the same batch is synced with its template, so the record must
    already carry the ASSURED state, as the per-packet path (packet order) sends it.
    (Found by the property test above.)"""
    ex = {"batches": [([("req", 2, 1, 40002, 0, 2, b"\xd6\xc73q\x81L\x0f", 0, 0)], 0, []),
                      ([("rep", 2, 1, 40002, 2, 2, b"\xedi#\x9e\xfb-\xc4\x90\x13R\x1fZ\x86\x80",
                        0, 0),
                        ("req", 2, 1, 40002, 0, 2, b"\xd6\xc73q\x81L\x0f", 0, 0)], 0, [])],
          "secure": False, "sync": "2 0", "headroom": 0}
    test_fast_and_slow_paths_agree.hypothesis.inner_test(**ex)


# the same, deterministically: established flows on every service, then each change -----
def syn(s: int, c: int, cport: int) -> tuple:
    return ("req", s, c, cport, 0, 0x02, b"", 1, 0)


def handshake_rest(s: int, c: int, cport: int, r: int) -> list:
    """The real server's SYN+ACK (through the director for NAT; a DR/TUN director sees
    none in reality and passes this one on untouched) and the client's ACK."""
    return [("rep", s, c, cport, r, 0x12, b"hello, world", 1, 0),
            ("req", s, c, cport, 0, 0x10, b"hello again!", 1, 0)]


def traffic(s: int, c: int, cport: int, r: int) -> list:
    """Data both ways, twice (payloads long enough for a UDP frame to reach the 54 bytes
    the batch path decodes)."""
    return [("req", s, c, cport, 0, 0x18, b"data" * 8, 1, 0),
            ("rep", s, c, cport, r, 0x18, b"answer" * 6, 1, 0),
            ("req", s, c, cport, 0, 0x10, b"more" * 3, 1, 0),
            ("rep", s, c, cport, r, 0x10, b"more" * 3, 1, 0)]


def established(d: Director) -> list[tuple[int, int, int, int]]:
    """(service, client, port, real server) of every entry that is not a template."""
    out = []
    for conn in d.conntable.entries():
        if conn.is_template:
            continue
        af = 4 if len(conn.caddr) == 4 else 6
        s = next(i for i, svc in enumerate(SERVICES) if svc.af == af
                 and svc.proto == conn.protocol and svc.vport == conn.vport)
        out.append((s, CLIENT_ADDRS[af].index(conn.caddr), conn.cport,
                    RS_ADDRS[af].index(conn.daddr) if conn.daddr in RS_ADDRS[af] else 0))
    return out


CHANGES = [
    ("del", 0, 0), ("del", 2, 1), ("del", 5, 1), ("del", 9, 0),
    ("weight", 0, 1, 0), ("weight", 4, 0, 0), ("weight", 1, 0, 3), ("weight", 10, 2, 0),
    ("method", 0, 2, "-g"), ("method", 6, 0, "-m"),
    ("edit", 0, ["-s", "wlc", "-p", "10"]), ("edit", 2, ["-s", "rr"]),
    ("edit", 1, ["-s", "rr", "-o"]), ("edit", 8, ["-s", "sh"]),
    ("sysctl", "expire_nodest_conn", "1"), ("sysctl", "expire_quiescent_template", "1"),
    ("sysctl", "conn_reuse_mode", "0"),
]


def test_every_change_between_batches_on_established_flows():
    """For each change: flows on every service and method set up, the change, then data
    both ways, a tick, new connections, and the flows' FINs."""
    for i, ch in enumerate(CHANGES):
        slow, fast = make_director(), make_director()
        fp = FastPath(fast)
        hr = 20 * (i % 2)  # every other change: the port leaves room for IPIP frames
        batch = partial(one_batch, slow, fast, fp, headroom=hr)
        syns = [syn(s, c, 41000 + i) for s in range(len(SERVICES)) for c in range(3)]
        batch([build(ev) for ev in syns])
        flows = established(slow)
        assert len(flows) == 3 * len(SERVICES)
        batch([build(ev) for f in flows for ev in handshake_rest(*f)])
        data = [build(ev) for f in flows for ev in traffic(*f)]
        fast_before = fp.fast
        batch(data)
        # what this test covers really happens: the fast path takes the NAT flows, the
        # tunnels and direct routing send packets, IPv6 and templates are in the table
        # IPv4 NAT: 5 services, 1 mixed, every packet of a flow; IPv4 DR and TUN (the
        # mixed service's one flow each, 3 DR flows, 3 UDP tunnel flows): the requests;
        # IPv6 NAT: 2 services and the mixed one's NAT flow, every packet; IPv6 DR and
        # TUN: the mixed service's DR and TUN flows, 6 DR flows (TCP, UDP) and 3 UDP
        # tunnel flows: the requests
        assert fp.fast - fast_before == (4 * 3 * 5 + 4 + 2 * (1 + 1 + 3 + 3)
                                         + 4 * 3 * 2 + 4 + 2 * (1 + 1 + 3 + 3 + 3))
        assert fast.outbox and fast.l2_outbox
        assert any(isinstance(f, BufRef) for _i, f in fast.l2_outbox)  # DR, batch path
        assert any(isinstance(p, BufRef) for p in fast.outbox)  # TUN, batch path
        # ... as ready Ethernet frames exactly when the port leaves room for them
        assert any(isinstance(p, BufRef) and p.ifindex for p in fast.outbox) == bool(hr)
        assert any(len(c.caddr) == 16 for c in fast.conntable.entries())
        assert sum(c.is_template for c in fast.conntable.entries()) >= 6
        apply_change([slow, fast], ch)
        assert snapshot(fast) == snapshot(slow), ch
        batch([build(ev) for f in flows for ev in traffic(*f)])
        advance(slow, fast, 1)
        batch([build(ev) for f in flows for ev in traffic(*f) * 2])
        batch([build(syn(s, c, 42000 + i)) for s in range(len(SERVICES))
               for c in range(3)])
        # both sides close (TIME_WAIT), then each client reuses its port: the SYN goes
        # the slow way and replaces the entry, the ACK and data behind it in the same
        # batch must see the new entry, not the one looked up before the SYN
        fins = [ev for s, c, p, r in flows for ev in (("req", s, c, p, 0, 0x11, b"", 1, 0),
                                                       ("rep", s, c, p, r, 0x11, b"", 1, 0))]
        batch([build(ev) for ev in fins])
        again = [ev for s, c, p, r in flows
                 for ev in (syn(s, c, p), ("req", s, c, p, 0, 0x10, b"data" * 8, 1, 0))]
        batch([build(ev) for ev in again])
        advance(slow, fast, 200)
        assert snapshot(fast) == snapshot(slow), ch


def test_udp_checksum_computing_to_zero_is_sent_as_ffff():
    """RFC 768: a computed UDP checksum of 0 goes out as 0xFFFF (0 means "none").  The
    payload's first word is chosen so that the DNATed datagram sums to exactly that."""
    slow, fast = make_director(), make_director()
    fp = FastPath(fast)
    first = ("req", 1, 0, 44000, 0, 0x10, bytes(2) + b"p" * 30, 1, 0)
    (out,) = one_batch(slow, fast, fp, [build(first)])  # new flow: scheduled, DNATed
    c0 = struct.unpack_from("!H", out, 26)[0]
    total = ~c0 & 0xFFFF  # ones-complement sum of the rewritten datagram, word 0 = 0
    word = 0xFFFF - total  # makes the sum 0xFFFF: the checksum computes to 0
    pkt = build(("req", 1, 0, 44000, 0, 0x10, word.to_bytes(2, "big") + b"p" * 30, 1, 0))
    (out,) = one_batch(slow, fast, fp, [pkt])  # the entry exists: the fast path's turn
    assert fp.fast == 1
    assert struct.unpack_from("!H", out, 26)[0] == 0xFFFF
    # and a datagram sent without a checksum (0) keeps none
    none = ("req", 1, 0, 44000, 0, 0x10, b"p" * 32, 0, 0)
    (out,) = one_batch(slow, fast, fp, [build(none)])
    assert fp.fast == 2 and struct.unpack_from("!H", out, 26)[0] == 0


def test_half_open_flows_with_and_without_secure_tcp():
    """The states an ACK leaves alone differ by direction and by secure_tcp (the defense
    table keeps SYN_RECV on the client's ACK, not on the server's): a real server that
    answers a SYN with a bare ACK, then both sides talking, then RSTs."""
    for secure in ("0", "3"):
        slow, fast = make_director(), make_director()
        for d in (slow, fast):
            d.sysctl.set("secure_tcp", secure)
        fp = FastPath(fast)
        tcp = [s for s, svc in enumerate(SERVICES) if svc.proto == 6]
        one_batch(slow, fast, fp, [build(syn(s, c, 43000)) for s in tcp for c in range(3)])
        flows = established(slow)
        bare = [("rep", s, c, p, r, 0x10, b"", 1, 0) for s, c, p, r in flows]
        client = [("req", s, c, p, 0, 0x10, b"", 1, 0) for s, c, p, r in flows]
        for evs in (client, bare, bare, client):
            one_batch(slow, fast, fp, [build(ev) for ev in evs])
        one_batch(slow, fast, fp, [build(ev) for f in flows for ev in traffic(*f)])
        resets = [("rep", s, c, p, r, 0x14, b"", 1, 0) for s, c, p, r in flows]
        one_batch(slow, fast, fp, [build(ev) for ev in resets + client + bare])
        advance(slow, fast, 20)


def test_established_flows_take_the_fast_path():
    slow, fast = make_director(), make_director()
    fp = FastPath(fast)
    syn = ("req", 0, 0, 40000, 0, 0x02, b"", 1, 0)
    for d in (slow, fast):
        d.process([build(syn)])
    # find where the SYN went, then answer from there and send data
    conn = next(iter(fast.conntable.by_in.values()))
    r = RS_ADDRS[4].index(conn.daddr)
    evs = [("rep", 0, 0, 40000, r, 0x12, b"", 1, 0),
           *[("req", 0, 0, 40000, 0, 0x10, b"data", 1, 0)] * 5,
           *[("rep", 0, 0, 40000, r, 0x18, b"reply", 1, 0)] * 5]
    frames = [ETHERTYPE[4].rjust(14, b"\0") + bytes(build(e)) for e in evs]
    offs = np.cumsum([0] + [len(f) for f in frames[:-1]])
    block = np.frombuffer(b"".join(frames), dtype=np.uint8).copy()
    before = fp.fast
    got = fp.run(block, offs, np.array([len(f) for f in frames]))
    assert list(got) == [FORWARD] * 11
    # slow: the SYN-ACK (a SYN event) and the first ACK (SYN_RECV -> ESTABLISHED)
    assert fp.fast - before == 9
    assert slow.process([bytearray(build(e)) for e in evs],
                        stack_forwards=False) == [FORWARD] * 11
    assert snapshot(fast) == snapshot(slow)


def test_a_fast_port_decrements_the_ttl_of_nat_requests_as_ipvs_does():
    """__ip_vs_get_out_rt decrements the TTL of what IPVS sends on; with NFQUEUE the
    kernel's ip_forward does it after pyvs, a fast port must do it itself -- and answer a
    TTL of 1 with time exceeded -- on both of its paths."""
    for ttl, expect in ((64, 63), (2, 1)):
        d = make_director()
        fp = FastPath(d)
        syn = ("req", 0, 0, 40000, 0, 0x02, b"", 1, 0)
        pkt = build(syn)
        pkt[8] = ttl
        set_ipv4_header_csum(pkt)
        frames, block, offs, lens = frames_block([pkt])
        assert list(fp.run(block, offs, lens)) == [FORWARD]  # a SYN: the per-packet path
        out = bytes(block[14:14 + len(pkt)])
        assert out[8] == expect and ipv4_header_ok(out, parse(out))
        ack = build(("req", 0, 0, 40000, 0, 0x10, b"data", 1, 0))
        ack[8] = ttl
        set_ipv4_header_csum(ack)
        for _ in range(2):  # SYN_RECV -> ESTABLISHED, then an established ACK (vectorised)
            frames, block, offs, lens = frames_block([ack, ack, ack])
            assert list(fp.run(block, offs, lens)) == [FORWARD] * 3
            for o in offs.tolist():
                out = bytes(block[o + 14:o + 14 + len(ack)])
                assert out[8] == expect and ipv4_header_ok(out, parse(out))
    d = make_director()
    one = build(("req", 0, 0, 40000, 0, 0x02, b"", 1, 0))
    one[8] = 1
    set_ipv4_header_csum(one)
    frames, block, offs, lens = frames_block([one])
    assert list(FastPath(d).run(block, offs, lens)) == [DROP]
    assert d.drops["ttl-exceeded"] == 1 and len(d.outbox) == 1


class HalfResolvedRoutes(FakeRoutes):
    """The first real server's neighbour is not resolved (yet): DR queues for it."""

    resolved = False

    def __init__(self, clock) -> None:
        self.clock = clock.now

    def mac(self, route, addr):
        if addr == RS_ADDRS[4][0] and not self.resolved:
            return None
        return super().mac(route, addr)


def test_routed_packets_the_batch_path_cannot_serve_go_the_per_packet_way():
    """DR toward an unresolved neighbour (queued, then flushed when it resolves), IPIP
    over a learned path MTU too small for the packet (frag needed to the client), GRE:
    the forwarders' ready_hop / ready_plan say no, Director.handle does it, and both
    paths end with the same bytes, entries, counters and outboxes."""
    dr_svc, tun_svc = 7, 6  # TCP -g -g (persistent), UDP -i -i
    slow, fast = make_director(), make_director()
    for d in (slow, fast):
        d.ctx.routes = HalfResolvedRoutes(d.clock)
        rc, _o, err = ipvsadm.run(["-e", "-u", SERVICES[tun_svc].addr, "-r",
                                   SERVICES[tun_svc].rs(1), "-i", "--tun-type", "gre"],
                                  "", d)
        assert rc == 0, err
    fp = FastPath(fast)
    flows = []
    for s in (dr_svc, tun_svc):
        one_batch(slow, fast, fp, [build(syn(s, c, 45000)) for c in range(3)])
    flows = established(slow)
    assert {r for s, _c, _p, r in flows if s == dr_svc} >= {0}  # someone on rs1 (queued)
    one_batch(slow, fast, fp, [build(ev) for f in flows for ev in handshake_rest(*f)])
    for d in (slow, fast):  # rs1's tunnel path learned a small MTU: 100 bytes inside
        d.ctx.pmtu.learn(RS_ADDRS[4][0], 120, d.clock.now())
    fast_before = fp.fast
    sizes = (b"data" * 30, b"more" * 3)  # 148 and 40 bytes as UDP, 160 and 52 as TCP
    one_batch(slow, fast, fp, [build(("req", s, c, p, 0, 0x10, payload, 1, 0))
                               for s, c, p, _r in flows for payload in sizes])
    # DR to a resolved neighbour: both; IPIP to rs1: the small one; GRE (rs2): neither
    want = sum(2 if s == dr_svc and r != 0 else 1 if s == tun_svc and r == 0 else 0
               for s, _c, _p, r in flows)
    assert {(s, r) for s, _c, _p, r in flows} >= {(dr_svc, 0), (tun_svc, 0), (tun_svc, 1)}
    assert fp.fast - fast_before == want
    assert fast.drops == slow.drops and slow.drops["frag-needed"]
    for d in (slow, fast):
        d.ctx.routes.resolved = True
        d.tick()  # the queue for rs1 is flushed into l2_outbox
    assert snapshot(fast) == snapshot(slow)
    one_batch(slow, fast, fp, [build(ev) for f in flows for ev in traffic(*f)])


# IPv6 on the batch path --------------------------------------------------------------
def test_ipv6_header_bytes_pack_to_the_tables_keys():
    """engine/fastpath6.packed_keys builds, from header bytes, the very integers the
    table indexes (pack_key) and whose top bits are the reply's rs_key; the table finds a
    NAT reply from such a key (out_get_key) as out_get does."""
    d = make_director()
    pkts = [build(("req", s, c, 40000 + c, 0, 0x02, b"", 1, 0))
            for s, svc in enumerate(SERVICES) if svc.af == 6 for c in range(3)]
    frames, block, offs, lens = frames_block(pkts)
    h = block[offs[:, None] + np.arange(74)]
    want = [pack_key(p[6], bytes(p[8:24]), struct.unpack_from("!H", p, 40)[0],
                     bytes(p[24:40]), struct.unpack_from("!H", p, 42)[0]) for p in pkts]
    assert packed_keys(h) == want
    assert FastPath(d).run(block, offs, lens).tolist() == d.process(
        [bytearray(p) for p in pkts])  # the SYNs made NAT entries (and DR ones)
    for ev in [("rep", s, c, 40000 + c, None, 0x10, b"", 1, 0)
               for s, svc in enumerate(SERVICES) for c in range(3)]:
        p = parse(build(ev, d))
        key = pack_key(p.proto, p.saddr, p.sport, p.daddr, p.dport)
        assert source_rs_key(key) >> 16 & ((1 << (8 * len(p.saddr))) - 1) \
            == int.from_bytes(p.saddr, "big")
        assert d.conntable.out_get_key(key) is d.conntable.out_get(
            p.proto, p.saddr, p.sport, p.daddr, p.dport)


def test_ipv6_established_flows_take_the_batch_path_with_valid_checksums():
    """IPv6 NAT (TCP, UDP, both directions) and direct routing on established flows:
    the batch path serves them, the rewritten packets carry checksums that verify, the
    request's hop limit is one less and the reply's unchanged (the port decrements a
    forwarded reply's before, as ip_forward); a packet with an extension header, or
    with hop limit 1, or an IPv6 UDP datagram with checksum 0 (invalid), is handled
    as the per-packet path handles it."""
    slow, fast = make_director(), make_director()
    fp = FastPath(fast)
    six = [s for s, svc in enumerate(SERVICES) if svc.af == 6]
    one_batch(slow, fast, fp, [build(syn(s, c, 46000)) for s in six for c in range(3)])
    flows = established(slow)
    one_batch(slow, fast, fp, [build(ev) for f in flows for ev in handshake_rest(*f)])
    fwd = {s: SERVICES[s].methods for s in six}
    nat = [f for f in flows if fast.conntable.in_get(
        SERVICES[f[0]].proto, CLIENT_ADDRS[6][f[1]], f[2], VIPS[6],
        SERVICES[f[0]].vport).fwd == FWD_MASQ]
    dr = [f for f in flows if f not in nat and fast.conntable.in_get(
        SERVICES[f[0]].proto, CLIENT_ADDRS[6][f[1]], f[2], VIPS[6],
        SERVICES[f[0]].vport).fwd == FWD_DROUTE]
    assert len(nat) >= 6 and len(dr) >= 6, fwd
    before_fast, before_slow = fp.fast, fp.slow
    queued = len(fast.l2_outbox)
    evs = [ev for f in nat + dr for ev in traffic(*f)]
    pkts = [build(ev) for ev in evs]
    outs = one_batch(slow, fast, fp, pkts)
    # every NAT packet and every DR request (the DR flows' "replies" are no IPVS business)
    assert fp.fast - before_fast == 4 * len(nat) + 2 * len(dr)
    assert fp.slow - before_slow == 2 * len(dr)
    # (one_batch checked that the batch path's bytes are these, the per-packet path's)
    nat_flows = {f[:3] for f in nat}
    for ev, pkt, out in zip(evs, pkts, outs, strict=True):
        if ev[1:4] not in nat_flows:
            continue
        assert l4_checksum_ok(out, parse(out))
        if ev[0] == "req":  # to the real server: destination rewritten, hop limit - 1
            assert out[7] == pkt[7] - 1 and out[24:40] in RS_ADDRS[6]
        else:  # to the client: from the VIP
            assert out[7] == pkt[7] and out[8:24] == VIPS[6]
    routed = [bytes(f) for _i, f in fast.l2_outbox[queued:] if isinstance(f, BufRef)]
    assert len(routed) == 2 * len(dr)
    assert all(f[12:14] == b"\x86\xdd" and f[14 + 7] == 63 for f in routed)
    # the odd ones: per packet, in order with fast ones around them
    odd = []
    for s, c, p, r in nat:
        odd += [("req", s, c, p, 0, 0x10, b"data" * 8, 1, 3),  # hop-by-hop header
                ("req", s, c, p, 0, 0x10, b"data" * 8, 1, 4),  # hop limit 1
                ("req", s, c, p, 0, 0x10, b"data" * 8, 0, 0),  # UDP: checksum 0
                ("rep", s, c, p, r, 0x10, b"answer" * 6, 1, 0)]
    before_fast, before_slow = fp.fast, fp.slow
    one_batch(slow, fast, fp, [build(ev) for ev in odd])
    udp = sum(SERVICES[s].proto == 17 for s, _c, _p, _r in nat)
    assert fp.slow - before_slow == 2 * len(nat)
    assert fp.fast - before_fast == 2 * len(nat)  # zero-checksum UDP: as the slow path
    assert udp and slow.drops["ttl-exceeded"] == len(nat)


class NoSource6Routes(FakeRoutes):
    """IPv6 routes without a preferred source address (an IPv6 tunnel cannot be sent)."""

    def route(self, addr):
        r = super().route(addr)
        if len(addr) == 16:
            r.src = None
        return r


def test_ipv6_tunnel_packets_the_batch_path_cannot_serve_go_the_per_packet_way():
    """IPv6 in IPv6 (ip_vs_tunnel_xmit_v6) on the batch path only when the outer header is
    all there is to do: a packet larger than the path MTU left after the outer header
    (ICMPv6 packet too big to the client), a path MTU below 1280 + 40, a route without a
    source address, GRE: Tunnel.ready_plan says no, Director.handle does it, and both
    paths end with the same bytes, entries, counters and outboxes."""
    tun6 = next(s for s, svc in enumerate(SERVICES)
                if svc.af == 6 and svc.methods == ["-i", "-i"])
    for case in ("big", "small-pmtu", "no-source", "gre"):
        slow, fast = make_director(), make_director()
        for d in (slow, fast):
            if case == "no-source":
                d.ctx.routes = NoSource6Routes()
            if case == "gre":
                for r in (0, 1):
                    rc, _o, err = ipvsadm.run(["-e", "-u", SERVICES[tun6].addr, "-r",
                                               SERVICES[tun6].rs(r), "-i", "--tun-type",
                                               "gre"], "", d)
                    assert rc == 0, err
        fp = FastPath(fast)
        one_batch(slow, fast, fp, [build(syn(tun6, c, 47000)) for c in range(3)])
        flows = established(slow)
        assert len(flows) == 3
        for d in (slow, fast):
            for rs in RS_ADDRS[6]:
                if case == "big":
                    d.ctx.pmtu.learn(rs, 1400, d.clock.now())  # 1360 bytes inside
                elif case == "small-pmtu":
                    d.ctx.pmtu.learn(rs, 1300, d.clock.now())  # 1260 < 1280 inside
        before = fp.fast
        small, big = b"more" * 3, b"x" * 1320  # 60 and 1368 bytes as IPv6 UDP
        one_batch(slow, fast, fp, [build(("req", s, c, p, 0, 0x10, payload, 1, 0))
                                   for s, c, p, _r in flows for payload in (small, big)])
        assert fp.fast - before == (len(flows) if case == "big" else 0), case
        assert fast.drops == slow.drops
        want = {"big": "frag-needed", "small-pmtu": "tun-mtu-too-small",
                "no-source": "no-source-address"}.get(case)
        if want is not None:
            assert slow.drops[want], (case, dict(slow.drops))
