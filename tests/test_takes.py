"""The model of what pyvs takes (engine/takes.py) and its pure encodings.

* The model itself, on examples worked from the kernel (ip_vs_service_find's FTP data
  and port-0 fallbacks, fwmark, NAT replies with TTL 1, ICMP errors) and the split
  between a fast port and NFQUEUE.
* The Python and numpy classifiers (engine/io/match.py) against the model, over random
  service tables and random frames.
* The generated rules (engine/plumbing.py, engine/plumbing_ring.py), the XDP targets
  (engine/io/steer.py) and the netlink queue rule, pinned on one configuration.
* The bpf(2) number per architecture, and the NFQUEUE packet parser.
The kernel's side of the same agreement (nft rules loaded, the XDP program run) is in
tests/test_takes_kernel.py and tests/test_xdp_steering.py.
"""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from takes_frames import (
    LOCAL,
    TCP,
    UDP,
    a,
    config_st,
    describe,
    eth,
    ext_header,
    frame_st,
    icmp_error,
    ipv4,
    ipv6,
    l4,
)

from pyvs.engine import plumbing, plumbing_ring
from pyvs.engine.clock import VirtualClock
from pyvs.engine.io import bpf, steer
from pyvs.engine.io.match import MAX_HEAD, Match
from pyvs.engine.io.nfqueue import NfQueueSocket
from pyvs.engine.model import (
    AF_INET,
    AF_INET6,
    FWD_DROUTE,
    FWD_MASQ,
    FWD_TUNNEL,
    DestSpec,
    ServiceSpec,
)
from pyvs.engine.service import ServiceTable
from pyvs.engine.sysctl import Sysctl
from pyvs.engine.takes import (
    FAST,
    REPLIES,
    REPLY,
    REQUEST,
    REQUESTS,
    PortKey,
    Takes,
    merged,
    read,
)
from pyvs.schedulers.base import SchedulerEnv

VIP, VIP6 = "198.18.0.1", "2001:db8::1"
RS, RS6 = "198.18.1.1", "2001:db8:1::1"
CLIENT, CLIENT6 = "198.18.7.7", "2001:db8:7::7"


def services(*specs) -> list:
    """[(ServiceSpec, [DestSpec])] through a real ServiceTable."""
    table = ServiceTable(SchedulerEnv(clock=VirtualClock(), sysctl=Sysctl(),
                                      random=random.Random(0)))
    for spec, dests in specs:
        svc = table.add_service(spec)
        for d in dests:
            table.add_dest(svc.key, d)
    return list(table.services.values())


def tcp_service(addr: str, port: int, *dests, proto: int = TCP):
    af = AF_INET6 if ":" in addr else AF_INET
    return ServiceSpec(af, proto, a(addr), port, scheduler="rr"), list(dests)


def fwmark_service(mark: int, *dests, af: int = AF_INET):
    return ServiceSpec(af, TCP, bytes(4 if af == AF_INET else 16), 0, fwmark=mark,
                       scheduler="rr"), list(dests)


def nat(addr: str, port: int) -> DestSpec:
    return DestSpec(a(addr), port, fwd=FWD_MASQ)


def to(dst: str, dport: int, proto: int = TCP, src: str = CLIENT, sport: int = 40000,
       ttl: int = 64) -> bytes:
    if ":" in dst:
        return eth(0x86DD, ipv6(a(src if ":" in src else CLIENT6), a(dst), proto,
                                l4(proto, sport, dport), hlim=ttl))
    return eth(0x0800, ipv4(a(src), a(dst), proto, l4(proto, sport, dport), ttl=ttl))


def where(svcs, frame: bytes, fast: bool, mark: int = 0) -> str | None:
    return Takes.of(svcs).where(read(frame, mark, LOCAL), fast)


# ------------------------------------------------------------------ the model
def test_ftp_data_goes_to_nfqueue_in_every_mode_and_its_nat_replies_too():
    """ip_vs_service_find: TCP to VIP:20 or VIP:>=1024 without a service of its own
    belongs to the VIP's port-21 service.  A fast port cannot hold a port range as an
    exact key, so NFQUEUE takes it -- before the model, ring and xdp modes took it
    nowhere and NFQUEUE took the requests but not the replies (tests/test_ftp_data_lab.py
    shows both with real TCP)."""
    svcs = services(tcp_service(VIP, 21, nat(RS, 21)))
    for port in (20, 1024, 2121, 65535):
        assert where(svcs, to(VIP, port), fast=True) == REQUESTS
        assert where(svcs, to(VIP, port), fast=False) == REQUESTS
    for port in (19, 22, 1023):
        assert where(svcs, to(VIP, port), fast=True) is None
    assert where(svcs, to(VIP, 21), fast=True) == FAST
    assert where(svcs, to(VIP, 21), fast=False) == REQUESTS
    assert where(svcs, to(CLIENT, 40000, src=RS, sport=2121), fast=True) == REPLIES
    assert where(svcs, to(CLIENT, 40000, src=RS, sport=21), fast=True) == FAST
    assert where(svcs, to(CLIENT, 40000, src=RS, sport=21), fast=False) == REPLIES
    # FTP data is TCP only, and only for a port-21 service of that address
    assert where(svcs, to(VIP, 2121, proto=UDP), fast=False) is None
    assert where(svcs, to("198.18.0.2", 2121), fast=False) is None


def test_a_fwmark_service_takes_marked_packets_through_nfqueue_unless_a_fast_key_is_first():
    svcs = services(fwmark_service(7, nat(RS, 80)), tcp_service(VIP, 80, nat(RS, 80)))
    assert where(svcs, to(VIP, 8080), fast=True, mark=7) == REQUESTS
    assert where(svcs, to("198.18.0.3", 443, proto=UDP), fast=False, mark=7) == REQUESTS
    assert where(svcs, to(VIP, 8080), fast=True, mark=8) is None
    # the deliberate difference: a fast port takes VIP:80 before any rule could mark it
    assert where(svcs, to(VIP, 80), fast=True, mark=7) == FAST
    assert where(svcs, to(VIP, 80), fast=False, mark=7) == REQUESTS
    # a fwmark service's NAT replies, from any port, stay on NFQUEUE
    assert where(svcs, to(CLIENT, 40000, src=RS, sport=8080), fast=True) == REPLIES
    # an IPv6 mark is another service
    assert where(svcs, to(VIP6, 8080), fast=False, mark=7) is None


def test_nat_replies_with_ttl_1_are_the_kernels():
    svcs = services(tcp_service(VIP, 80, nat(RS, 8080)))
    assert where(svcs, to(CLIENT, 40000, src=RS, sport=8080, ttl=2), fast=True) == FAST
    assert where(svcs, to(CLIENT, 40000, src=RS, sport=8080, ttl=1), fast=True) is None
    assert where(svcs, to(CLIENT, 40000, src=RS, sport=8080, ttl=1), fast=False) is None
    assert where(svcs, to(CLIENT, 40000, src=RS, sport=80), fast=True) is None


def test_port_zero_services_take_every_port_of_their_protocol():
    svcs = services(tcp_service(VIP, 0, nat(RS, 0), proto=UDP))
    for port in (0, 53, 65535):
        assert where(svcs, to(VIP, port, proto=UDP), fast=True) == FAST
        assert where(svcs, to(CLIENT, 9, proto=UDP, src=RS, sport=port), fast=True) == FAST
    assert where(svcs, to(VIP, 53, proto=TCP), fast=True) is None


def test_what_a_fast_port_cannot_read_goes_to_nfqueue():
    svcs = services(tcp_service(VIP6, 80, nat(RS6, 80)))
    with_hop_by_hop = eth(0x86DD, ipv6(a(CLIENT6), a(VIP6), 0,
                                       ext_header(0, TCP) + l4(TCP, 40000, 80)))
    assert where(svcs, with_hop_by_hop, fast=True) == REQUESTS
    assert where(svcs, to(VIP6, 80), fast=True) == FAST


def test_icmp_errors_to_services_and_about_nat_real_servers():
    svcs = services(tcp_service(VIP, 80, nat(RS, 80)),
                    tcp_service("198.18.0.2", 80, DestSpec(a("198.18.1.2"), 80,
                                                           fwd=FWD_DROUTE)))

    def icmp(dst: str, icmp_type: int, qsrc: str, qdst: str, src: str = "198.18.9.9"):
        return eth(0x0800, ipv4(a(src), a(dst), 1, icmp_error(4, icmp_type, a(qsrc), a(qdst),
                                                              TCP, 80, 40000)))

    assert where(svcs, icmp(VIP, 3, VIP, CLIENT), fast=True) == REQUESTS
    assert where(svcs, icmp(VIP, 8, VIP, CLIENT), fast=True) is None  # an echo request
    # from a router beyond the director, about a request forwarded to the real server
    assert where(svcs, icmp(CLIENT, 11, CLIENT, RS), fast=True) == REPLIES
    assert where(svcs, icmp(CLIENT, 11, CLIENT, "198.18.1.2"), fast=True) is None
    # to a local address that is no service's: only with a tunnel real server
    assert where(svcs, icmp("198.18.0.3", 3, "198.18.0.3", "198.18.1.2"), fast=False) is None
    tun = services(tcp_service(VIP, 80, DestSpec(a(RS), 80, fwd=FWD_TUNNEL)))
    assert where(tun, icmp("198.18.0.3", 3, "198.18.0.3", RS), fast=False) == REQUESTS


# ------------------------------------------------------------------ the classifiers
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=config_st(), data=st.data())
def test_python_and_numpy_classifiers_agree_with_the_model(config, data):
    frames = [f for f, _ in data.draw(st.lists(frame_st(config), min_size=1, max_size=20),
                                      label="frames")]
    takes = Takes.of(config)
    match = Match(takes)
    want = [takes.fast_kind(read(f)) for f in frames]
    for frame, kind in zip(frames, want, strict=True):
        event(f"kind {kind}")
        got = match.classify(frame)
        assert got == kind, f"classify says {got}, the model {kind}: {describe(frame)}"
        # the batch pipeline hands over at most MAX_HEAD bytes and the wire length
        assert match.classify(frame[:MAX_HEAD], len(frame)) == kind, describe(frame)
    gaps = data.draw(st.lists(st.binary(max_size=24), min_size=len(frames),
                              max_size=len(frames)), label="gaps")
    raw, offs = b"", []
    for frame, gap in zip(frames, gaps, strict=True):
        raw += gap
        offs.append(len(raw))
        raw += frame
    lens = np.array([len(f) for f in frames], dtype=np.int64)
    got = match.classify_batch(np.frombuffer(raw, dtype=np.uint8),
                               np.array(offs, dtype=np.int64), lens, lens)
    assert got.mine.tolist() == [k != 0 for k in want]
    assert got.reply.tolist() == [k == REPLY for k in want]


def test_classifier_of_no_configuration_takes_nothing():
    match = Match()
    assert match.empty and match.classify(to(VIP, 80)) == 0


# ------------------------------------------------------------------ generated rules
PINNED = services(
    tcp_service(VIP, 21, nat(RS, 21)),
    tcp_service(VIP6, 0, nat(RS6, 0), proto=UDP),
    fwmark_service(7, nat("198.18.1.2", 80)),
    tcp_service("198.18.0.2", 80, DestSpec(a("198.18.1.3"), 80, fwd=FWD_TUNNEL)),
)


def test_the_model_of_a_pinned_configuration():
    takes = Takes.of(PINNED)
    rs2 = a("198.18.1.2")
    assert takes.fast_requests == {PortKey(TCP, a(VIP), 21, 21),
                                   PortKey(UDP, a(VIP6), 0, 65535),
                                   PortKey(TCP, a("198.18.0.2"), 80, 80)}
    assert takes.requests == takes.fast_requests | {PortKey(TCP, a(VIP), 20, 20),
                                                    PortKey(TCP, a(VIP), 1024, 65535)}
    assert takes.fast_replies == {PortKey(TCP, a(RS), 21, 21), PortKey(UDP, a(RS6), 0, 65535)}
    assert takes.replies == takes.fast_replies | {
        PortKey(TCP, a(RS), 20, 20), PortKey(TCP, a(RS), 1024, 65535),
        PortKey(TCP, rs2, 0, 65535), PortKey(UDP, rs2, 0, 65535)}
    assert takes.marks == {(4, 7)}
    assert takes.icmp_to == {a(VIP), a(VIP6), a("198.18.0.2")}
    assert takes.icmp_local == {4}
    assert takes.icmp_about == {a(RS), a(RS6), rs2}


def test_nfqueue_rules_of_a_pinned_configuration():
    q, ret = "goto to_queue", "return"
    assert plumbing.rules(Takes.of(PINNED)) == [
        ("requests", q, "meta nfproto ipv4 meta mark { 7 }"),
        ("requests", ret, "ip frag-off & 0x1fff != 0"),
        ("requests", ret, "frag frag-off != 0"),
        ("replies", ret, "ip frag-off & 0x1fff != 0"),
        ("replies", ret, "frag frag-off != 0"),
        ("requests", q, "ip daddr . meta l4proto . th dport { 198.18.0.1 . tcp . 20-21, "
                        "198.18.0.1 . tcp . 1024-65535, 198.18.0.2 . tcp . 80 } "
                        "fib daddr type local"),
        ("requests", q, "icmp type { destination-unreachable, source-quench, time-exceeded } "
                        "ip daddr { 198.18.0.1, 198.18.0.2 }"),
        ("requests", q, "icmp type { destination-unreachable, source-quench, time-exceeded } "
                        "fib daddr type local"),
        ("replies", q, "ip saddr . meta l4proto . th sport { 198.18.1.1 . tcp . 20-21, "
                       "198.18.1.1 . tcp . 1024-65535, 198.18.1.2 . tcp . 0-65535, "
                       "198.18.1.2 . udp . 0-65535 }"),
        ("replies", q, "icmp type { destination-unreachable, source-quench, time-exceeded } "
                       "@th,192,32 { 0xc6120101, 0xc6120102 }"),
        ("requests", q, "ip6 daddr . meta l4proto . th dport { 2001:db8::1 . udp . 0-65535 } "
                        "fib daddr type local"),
        ("requests", q, "icmpv6 type < 128 ip6 daddr { 2001:db8::1 }"),
        ("replies", q, "ip6 saddr . meta l4proto . th sport { 2001:db8:1::1 . udp . 0-65535 }"),
        ("replies", q, "icmpv6 type < 128 @th,256,128 { 0x20010db8000100000000000000000001 }"),
    ]
    text = plumbing.ruleset(Takes.of(PINNED))
    assert text.startswith(plumbing.table_text())
    assert "flush chain inet pyvs requests\nflush chain inet pyvs replies\n" in text
    assert text.count("goto to_queue") == 10 and text.count(" return\n") == 4
    assert "priority 2147483647" in plumbing.table_text()
    assert plumbing.ruleset(Takes()).count("add rule") == 0  # no empty sets: nft refuses them
    marks_only = Takes.of(services(fwmark_service(5, af=AF_INET6)))
    assert plumbing.rules(marks_only) == [
        ("requests", q, "meta nfproto ipv6 meta mark { 5 }"),
        ("requests", ret, "ip frag-off & 0x1fff != 0"),
        ("requests", ret, "frag frag-off != 0"),
        ("replies", ret, "ip frag-off & 0x1fff != 0"),
        ("replies", ret, "frag frag-off != 0"),
        ("requests", q, "icmpv6 type < 128 fib daddr type local")]


def test_overlapping_port_ranges_are_joined_for_nftables():
    """A port-0 service and an exact one on the same address overlap; an nftables
    interval set refuses that (EEXIST), so the encodings join them."""
    vip = a(VIP)
    keys = [PortKey(TCP, vip, 80, 80), PortKey(TCP, vip, 0, 65535), PortKey(TCP, vip, 20, 20),
            PortKey(UDP, vip, 53, 53), PortKey(UDP, vip, 54, 60), PortKey(UDP, vip, 62, 62)]
    assert merged(keys) == [PortKey(TCP, vip, 0, 65535), PortKey(UDP, vip, 53, 60),
                            PortKey(UDP, vip, 62, 62)]
    svcs = services(tcp_service(VIP, 0), tcp_service(VIP, 80), tcp_service(VIP, 21))
    assert plumbing_ring.drop_rules(Takes.of(svcs)) == [
        "ether type ip ip frag-off & 0x1fff == 0 ip daddr . meta l4proto . th dport "
        "{ 198.18.0.1 . tcp . 0-65535 } drop"]


def test_netdev_drop_rules_and_xdp_targets_of_a_pinned_configuration():
    assert plumbing_ring.drop_rules(Takes.of(PINNED)) == [
        "ether type ip ip frag-off & 0x1fff == 0 ip daddr . meta l4proto . th dport "
        "{ 198.18.0.1 . tcp . 21, 198.18.0.2 . tcp . 80 } drop",
        "ether type ip ip frag-off & 0x1fff == 0 ip ttl > 1 ip saddr . meta l4proto . th sport "
        "{ 198.18.1.1 . tcp . 21 } drop",
        "ether type ip6 ip6 nexthdr { tcp, udp } ip6 daddr . meta l4proto . th dport "
        "{ 2001:db8::1 . udp . 0-65535 } drop",
        "ether type ip6 ip6 nexthdr { tcp, udp } ip6 hoplimit > 1 ip6 saddr . meta l4proto . "
        "th sport { 2001:db8:1::1 . udp . 0-65535 } drop",
    ]
    text = plumbing_ring.ruleset(PINNED, ["eth0", "br0"])
    assert 'hook ingress device "br0" priority -500' in text
    assert text.count(" drop\n") == 8
    assert steer.targets(Takes.of(PINNED)) == {
        steer.target_key(steer.KIND_VIP, TCP, a(VIP), 21),
        steer.target_key(steer.KIND_VIP, TCP, a("198.18.0.2"), 80),
        steer.target_key(steer.KIND_VIP, UDP, a(VIP6), 0),
        steer.target_key(steer.KIND_REAL, TCP, a(RS), 21),
        steer.target_key(steer.KIND_REAL, UDP, a(RS6), 0),
    }


def _attrs(data: bytes) -> dict[int, bytes]:
    out, at = {}, 0
    while at + 4 <= len(data):
        size, kind = struct.unpack_from("=HH", data, at)
        out[kind & 0x3FFF] = data[at + 4:at + size]
        at += (size + 3) & ~3
    return out


def test_the_netlink_queue_rule_is_one_nfqueue_target_in_one_batch():
    batch = plumbing.queue_rule_batch(plumbing.NFPROTO_INET, "pyvs", "to_queue", 20601)
    messages, at = [], 0
    while at < len(batch):
        size, mtype, flags, seq, _ = struct.unpack_from("=IHHII", batch, at)
        messages.append((mtype, flags, batch[at + 16:at + size]))
        at += size
    assert [m[0] for m in messages] == [0x10, (10 << 8) | 6, 0x11]  # begin, NEWRULE, end
    assert struct.unpack_from("!H", messages[0][2], 2)[0] == 10  # res_id: nf_tables
    body = messages[1][2]
    assert body[0] == plumbing.NFPROTO_INET and messages[1][1] & plumbing.NLM_F_ACK
    rule = _attrs(body[4:])
    assert rule[1] == b"pyvs\0" and rule[2] == b"to_queue\0"
    expr = _attrs(_attrs(rule[4])[1])
    assert expr[1] == b"target\0"
    target = _attrs(expr[2])
    assert target[1] == b"NFQUEUE\0" and struct.unpack(">I", target[2]) == (3,)
    queuenum, total, flags = struct.unpack_from("=HHH", target[3])
    assert (queuenum, total, flags) == (20601, 1, 1)  # NFQ_FLAG_BYPASS


# ------------------------------------------------------------------ bpf(2), nfqueue
@pytest.mark.parametrize("machine,number", [("x86_64", 321), ("aarch64", 280),
                                            ("armv7l", 386), ("i686", 357),
                                            ("ppc64le", 361), ("s390x", 351),
                                            ("riscv64", 280)])
def test_bpf_syscall_number_per_architecture(machine, number):
    assert bpf.syscall_number(machine) == number


def test_unknown_architecture_is_refused_with_a_clear_message():
    with pytest.raises(bpf.BpfError, match="'sparc64'.*--io ring") as err:
        bpf.syscall_number("sparc64")
    assert err.value.errno == 38  # ENOSYS


def test_nfqueue_packet_message_gives_id_mark_hook_and_payload():
    def attr(kind: int, payload: bytes) -> bytes:
        size = 4 + len(payload)
        return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)

    packet = ipv4(a(CLIENT), a(VIP), TCP, l4(TCP, 40000, 80))
    attrs = (attr(1, struct.pack(">IHB", 77, 0x0800, 2) + b"\0")  # id, hw_protocol, hook
             + attr(3, struct.pack(">I", 7)) + attr(10, packet))
    view = memoryview(bytearray(b"\0" * 20 + attrs))
    got = NfQueueSocket._parse_packet(view, 20, len(view))
    assert (got.packet_id, got.mark, got.hook, bytes(got.buf)) == (77, 7, 2, packet)
    assert NfQueueSocket._parse_packet(memoryview(bytearray(attr(3, bytes(4)))), 0, 8) is None


def test_ipv6_nat_reply_with_extension_headers_is_nfqueues():
    svcs = services(tcp_service(VIP6, 80, nat(RS6, 80)))
    frame = eth(0x86DD, ipv6(a(RS6), a(CLIENT6), 60, ext_header(60, TCP) + l4(TCP, 80, 40000)))
    assert where(svcs, frame, fast=True) == REPLIES
    assert Takes.of(svcs).fast_kind(read(to(CLIENT6, 40000, src=RS6, sport=80))) == REPLY
    assert Takes.of(svcs).fast_kind(read(to(VIP6, 80))) == REQUEST


def test_a_frame_the_kernel_untagged_is_left_to_it_in_both_batch_paths():
    """The ring sees a VLAN frame without its tag (TP_STATUS_VLAN_VALID); the netdev rules
    and the XDP program see the tag and leave the frame to the kernel, so the ring's
    batch pipeline must leave it too, in small and in vectorised batches."""
    from test_fastpath import CLIENTS, VIPB, ip_packet
    from test_port_small_batch import make_port

    from pyvs.engine.io.match import TP_STATUS_VLAN_VALID

    frame = bytes(12) + b"\x08\x00" + bytes(ip_packet(6, CLIENTS[0], 40000, VIPB, 80, 0x02, b"",
                                                       64, False))
    for count in (1, 20):
        for status, taken in ((0, count), (TP_STATUS_VLAN_VALID, 0)):
            port = make_port()
            buf = np.frombuffer(frame * count, dtype=np.uint8).copy()
            offs = np.arange(count, dtype=np.int64) * len(frame)
            lens = np.full(count, len(frame), dtype=np.int64)
            assert port.run(buf, 0, offs, lens, lens, np.full(count, status)) == taken
