"""The connection sync protocol (engine/sync) on synthetic packets and virtual time.

Messages a master director produces are compared byte for byte with frames this test
builds itself from the layout of ip_vs_sync.c (struct ip_vs_sync_mesg, struct
ip_vs_sync_v4/v6); a backup director is fed those messages and must then forward the
same connections, without scheduling, with the kernel's flags and counters; decoding
is fuzzed: nothing in a datagram may raise.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP

from pyvs.engine import ipvsadm
from pyvs.engine.clock import VirtualClock
from pyvs.engine.director import Director
from pyvs.engine.model import AF_INET, AF_INET6, CONN_F_SYNC, pack_addr
from pyvs.engine.proto.tcp import CLOSE_WAIT, ESTABLISHED, SYN_RECV, TIME_WAIT
from pyvs.engine.sync.backup import SyncBackup
from pyvs.engine.sync.codec import SyncBuffer, SyncRecord, decode_message, encode_record
from pyvs.engine.sync.master import SyncConfig, SyncMaster
from pyvs.engine.verdict import FORWARD

VIP = "198.18.1.1"
RS = ["198.18.2.11", "198.18.2.12", "198.18.2.13"]
CLIENT = "198.18.0.10"
PROTOS = {6: 11, 17: 1}


def director(*config: list[str]) -> Director:
    d = Director(clock=VirtualClock())
    for argv in config:
        rc, _out, err = ipvsadm.run(argv, "", d)
        assert rc == 0, err
    return d


def nat_config(persistent: bool = False) -> list[list[str]]:
    svc = ["-A", "-t", f"{VIP}:80", "-s", "rr"] + (["-p", "300"] if persistent else [])
    return [svc, *[["-a", "-t", f"{VIP}:80", "-r", f"{rs}:80", "-m"] for rs in RS],
            ["-A", "-u", f"{VIP}:53", "-s", "rr"],
            *[["-a", "-u", f"{VIP}:53", "-r", f"{rs}:53", "-m"] for rs in RS]]


def master_of(d: Director, syncid: int = 7, maxlen: int = 1472) -> SyncMaster:
    m = SyncMaster(SyncConfig("eth0", syncid=syncid, sync_maxlen=maxlen), d.sysctl, d.clock, 1)
    d.sync_observer = m.observe
    return m


def tcp(flags: str, sport: int = 40000, src: str = CLIENT, dport: int = 80) -> bytearray:
    return bytearray(bytes(IP(src=src, dst=VIP) / TCP(sport=sport, dport=dport, flags=flags)))


def reply(d: Director, flags: str, sport: int = 40000, src: str = CLIENT) -> bytearray:
    conn = d.conntable.in_get(6, pack_addr(src), sport, pack_addr(VIP), 80)
    rs = ".".join(map(str, conn.daddr))
    return bytearray(bytes(IP(src=rs, dst=src) / TCP(sport=80, dport=sport, flags=flags)))


def handshake(d: Director, sport: int = 40000, data_packets: int = 1,
              src: str = CLIENT) -> None:
    assert d.process([tcp("S", sport, src)]) == [FORWARD]
    assert d.process([reply(d, "SA", sport, src)]) == [FORWARD]
    for _ in range(1 + data_packets):
        assert d.process([tcp("A", sport, src)]) == [FORWARD]


def messages(m: SyncMaster, d: Director) -> list[bytes]:
    return [msg for _, msg in m.due(d.clock.now() + 2.0)]


# -- frames built here from the layout, not with the codec -------------------------------------
def frame_v1(syncid: int, records: list[bytes]) -> bytes:
    body = b""
    for rec in records:
        body += bytes((4 - (8 + len(body))) & 3) + rec
    return struct.pack("!BBHBBH", 0, syncid, 8 + len(body), len(records), 1, 0) + body


def record_v4(proto, flags, state, cport, vport, dport, fwmark, timeout, caddr, vaddr,
              daddr) -> bytes:
    return (bytes((0, proto)) + (36).to_bytes(2, "big") + flags.to_bytes(4, "big")
            + state.to_bytes(2, "big") + cport.to_bytes(2, "big") + vport.to_bytes(2, "big")
            + dport.to_bytes(2, "big") + fwmark.to_bytes(4, "big")
            + timeout.to_bytes(4, "big") + pack_addr(caddr) + pack_addr(vaddr)
            + pack_addr(daddr))


def test_master_sends_an_established_connection_on_its_third_packet():
    d = director(*nat_config())
    m = master_of(d)
    d.process([tcp("S")])
    d.process([reply(d, "SA")])
    d.process([tcp("A")])  # 2nd incoming packet: ESTABLISHED, 2 % 50 != 3
    assert m.counters["records"] == 0
    d.process([tcp("PA")])  # 3rd
    assert m.counters["records"] == 1
    conn = d.conntable.in_get(6, pack_addr(CLIENT), 40000, pack_addr(VIP), 80)
    daddr = ".".join(map(str, conn.daddr))
    want = frame_v1(7, [record_v4(6, 0x0000, ESTABLISHED, 40000, 80, 80, 0, 900, CLIENT,
                                  VIP, daddr)])
    assert m.due(d.clock.now() + 1.9) == []  # a partial message waits up to 2 s
    assert messages(m, d) == [want]
    for _ in range(49):  # the 53rd incoming packet is the next one sent
        d.process([tcp("A")])
    assert m.counters["records"] == 1
    d.process([tcp("A")])
    assert m.counters["records"] == 2


def test_state_changes_are_sent_at_once_and_templates_go_with_their_connections():
    """A template is sent each time a packet of a connection it controls reaches the
    sync code (only sync_refresh_period or sync_period=0 slow that down)."""
    d = director(*nat_config(persistent=True))
    m = master_of(d)
    handshake(d, data_packets=1)  # SYN, ACK, and the 3rd packet: the connection is sent
    d.process([tcp("FA")])  # FIN: ESTABLISHED -> CLOSE_WAIT, sent although 4 % 50 != 3
    conn = d.conntable.in_get(6, pack_addr(CLIENT), 40000, pack_addr(VIP), 80)
    assert conn.state == CLOSE_WAIT
    daddr = ".".join(map(str, conn.daddr))

    def tmpl(state):
        return record_v4(6, 0x1100, state, 0, 80, 80, 0, 300, CLIENT, VIP, daddr)

    want = frame_v1(7, [tmpl(0), tmpl(1),
                        record_v4(6, 0, ESTABLISHED, 40000, 80, 80, 0, 900, CLIENT, VIP,
                                  daddr), tmpl(1),
                        record_v4(6, 0x0100, CLOSE_WAIT, 40000, 80, 80, 0, 60, CLIENT, VIP,
                                  daddr), tmpl(1)])
    assert messages(m, d) == [want]


def test_full_messages_are_queued_and_sent_without_waiting():
    d = director(*nat_config())
    m = master_of(d, maxlen=8 + 36 * 3)  # three records per message
    for n in range(7):
        handshake(d, sport=41000 + n)
    # 7 records: two full messages are queued, the third waits
    sent = m.due(d.clock.now() + SEND_DELAY_PLUS)
    assert [len(msg) for _, msg in sent] == [8 + 108, 8 + 108]
    assert [msg[4] for _, msg in sent] == [3, 3]
    assert [len(msg) for msg in messages(m, d)] == [8 + 36]


SEND_DELAY_PLUS = 0.021


def test_sync_period_zero_sends_once_and_persist_mode_leaves_controlled_connections_out():
    d = director(*nat_config(persistent=True))
    d.sysctl.set("sync_threshold", "3 0")
    d.sysctl.set("sync_persist_mode", "1")
    m = master_of(d)
    handshake(d, data_packets=5)
    records = decode_message(messages(m, d)[0], 0, PROTOS).records
    # persist mode: only the template, once per packet that reached sync_conn
    assert {r.is_template for r in records} == {True}


def test_refresh_period_resends_an_unchanged_entry_only_when_its_expiry_moved_enough():
    d = director(*nat_config())
    d.sysctl.set("sync_threshold", "3 0")
    d.sysctl.set("sync_refresh_period", "20")
    m = master_of(d)
    handshake(d, data_packets=1)
    assert m.counters["records"] == 1
    d.clock.advance(5)
    d.process([tcp("A")])
    assert m.counters["records"] == 1  # expiry moved by 5 s < 20
    d.clock.advance(20)
    d.process([tcp("A")])
    assert m.counters["records"] == 2


def test_one_packet_connections_are_never_sent():
    d = director(["-A", "-u", f"{VIP}:53", "-s", "rr", "-o"],
                 ["-a", "-u", f"{VIP}:53", "-r", f"{RS[0]}:53", "-m"])
    d.sysctl.set("sync_threshold", "0 1")
    m = master_of(d)
    for n in range(5):
        d.process([bytearray(bytes(IP(src=CLIENT, dst=VIP) / UDP(sport=5000 + n, dport=53)))])
    assert m.counters["records"] == 0


def test_record_encoding_with_options_and_padding_matches_the_layout():
    seq = (1, 2, 3, 4, 5, 6)
    rec = SyncRecord(AF_INET, 6, 0x0400, 1, 1000, 80, 8080, 5, 900, pack_addr(CLIENT),
                     pack_addr(VIP), pack_addr(RS[0]), seq)
    raw = encode_record(rec)
    fixed = record_v4(6, 0x0400, 1, 1000, 80, 8080, 5, 900, CLIENT, VIP, RS[0])
    want = fixed[:2] + (36 + 26).to_bytes(2, "big") + fixed[4:] + bytes((1, 24)) \
        + struct.pack("!6I", *seq)
    assert raw == want
    buff = SyncBuffer(9, 1472, len(raw), 1, 0.0)
    buff.add(raw)
    rec6 = SyncRecord(AF_INET6, 17, 0, 0, 53, 53, 53, 0, 300, pack_addr("2001:db8::10"),
                      pack_addr("2001:db8:1::1"), pack_addr("2001:db8:2::11"))
    raw6 = encode_record(rec6)
    assert len(raw6) == 72 and raw6[0] == 1
    buff.add(raw6)
    msg = buff.message()
    assert msg == frame_v1(9, [want, raw6])
    assert msg[8 + 62:8 + 64] == b"\0\0"  # padding to the next 4-byte boundary
    decoded = decode_message(msg, 9, PROTOS)
    assert decoded.error is None
    assert [r.cport for r in decoded.records] == [1000, 53]
    assert decoded.records[0].seq == seq
    assert all(r.flags & CONN_F_SYNC for r in decoded.records)


def test_version_0_messages_both_ways():
    d = director(*nat_config())
    d.sysctl.set("sync_version", "0")
    m = master_of(d, syncid=3)
    handshake(d)
    conn = d.conntable.in_get(6, pack_addr(CLIENT), 40000, pack_addr(VIP), 80)
    (msg,) = messages(m, d)
    want = struct.pack("!BBH", 1, 3, 28) + struct.pack(
        "!BBHHH4s4s4sHH", 0, 6, 40000, 80, 80, pack_addr(CLIENT), pack_addr(VIP),
        conn.daddr, 0, ESTABLISHED)
    assert msg == want
    backup = director(*nat_config())
    sb = SyncBackup(backup, 3)
    assert sb.receive(msg) == 1
    copy = backup.conntable.in_get(6, pack_addr(CLIENT), 40000, pack_addr(VIP), 80)
    assert copy.timeout == 900  # version 0 has no timeout: the state's own


# -- the backup ---------------------------------------------------------------------------------
def sync_pair(persistent: bool = False):
    master = director(*nat_config(persistent))
    backup = director(*nat_config(persistent))
    return master, master_of(master), backup, SyncBackup(backup, 7)


def feed(m: SyncMaster, d: Director, sb: SyncBackup) -> None:
    for msg in messages(m, d):
        sb.receive(msg)


def test_backup_builds_the_masters_table_with_sync_flags_and_counters():
    master, m, backup, sb = sync_pair(persistent=True)
    for n in range(6):
        handshake(master, sport=42000 + n, src=f"198.18.0.{10 + n}")
    master.process([tcp("FA", 42000, "198.18.0.10")])
    feed(m, master, sb)
    assert sb.counters["records"] > 0 and not [k for k in sb.counters if "drop" in k]
    mine = {(c.caddr, c.cport, c.vport, c.daddr, c.dport, c.state, c.timeout, c.is_template)
            for c in master.conntable.entries()}
    theirs = {(c.caddr, c.cport, c.vport, c.daddr, c.dport, c.state, c.timeout,
               c.is_template) for c in backup.conntable.entries()}
    assert theirs == mine
    assert all(c.flags & CONN_F_SYNC for c in backup.conntable.entries())
    for ms, bs in zip(master.services.services.values(), backup.services.services.values(),
                      strict=True):
        for md, bd in zip(ms.destinations, bs.destinations, strict=True):
            assert (bd.activeconns, bd.inactconns, bd.persistconns) == \
                (md.activeconns, md.inactconns, md.persistconns)
    # the listing shows the same connections
    _, mine_l, _ = ipvsadm.run(["-Lnc"], "", master)
    _, theirs_l, _ = ipvsadm.run(["-Lnc"], "", backup)
    assert sorted(mine_l.splitlines()[2:]) == sorted(theirs_l.splitlines()[2:])


def test_promoted_backup_forwards_synced_connections_without_scheduling():
    master, m, backup, sb = sync_pair()
    handshake(master, sport=43000)
    feed(m, master, sb)
    conn = master.conntable.in_get(6, pack_addr(CLIENT), 43000, pack_addr(VIP), 80)
    svc = next(iter(backup.services.services.values()))
    before = svc.stats.conns
    # the master dies; the client's next segments reach the backup
    pkt = tcp("PA", 43000)
    assert backup.process([pkt]) == [FORWARD]
    assert IP(bytes(pkt)).dst == ".".join(map(str, conn.daddr))
    assert svc.stats.conns == before  # no scheduling
    # the real server's reply is found (NAT: rewritten back to the VIP)
    rep = reply(backup, "PA", 43000)
    assert backup.process([rep]) == [FORWARD]
    assert IP(bytes(rep)).src == VIP
    # a new connection is scheduled on the backup
    assert backup.process([tcp("S", 43001)]) == [FORWARD]
    assert svc.stats.conns == before + 1
    # closing moves the synced entry from active to inactive on the backup
    dest = backup.conntable.in_get(6, pack_addr(CLIENT), 43000, pack_addr(VIP), 80).dest
    active = dest.activeconns
    backup.process([tcp("RA", 43000)])
    assert dest.activeconns == active - 1


def test_backup_replaces_an_entry_that_moved_and_ignores_the_old_ones_last_word():
    backup = director(*nat_config())
    sb = SyncBackup(backup, 0)
    args = (6, 0, ESTABLISHED, 44000, 80, 80, 0, 900, CLIENT, VIP)
    sb.receive(frame_v1(1, [record_v4(*args, RS[0])]))
    sb.receive(frame_v1(1, [record_v4(*args, RS[1])]))
    conn = backup.conntable.in_get(6, pack_addr(CLIENT), 44000, pack_addr(VIP), 80)
    assert conn.daddr == pack_addr(RS[1])
    old = (6, 0x0100, TIME_WAIT, 44000, 80, 80, 0, 120, CLIENT, VIP, RS[0])
    sb.receive(frame_v1(1, [record_v4(*old)]))
    assert backup.conntable.in_get(6, pack_addr(CLIENT), 44000, pack_addr(VIP),
                                   80).daddr == pack_addr(RS[1])
    assert sb.counters["record-ignored:replaced"] == 1
    dests = next(iter(backup.services.services.values())).destinations
    assert sum(d.activeconns for d in dests) == 1


def test_entries_without_a_service_stay_unbound_until_one_is_configured():
    backup = director()
    sb = SyncBackup(backup, 0)
    rec = record_v4(6, 0, ESTABLISHED, 45000, 80, 80, 0, 900, CLIENT, VIP, RS[0])
    sb.receive(frame_v1(1, [rec]))
    conn = backup.conntable.in_get(6, pack_addr(CLIENT), 45000, pack_addr(VIP), 80)
    assert conn.dest is None
    for argv in nat_config():
        ipvsadm.run(argv, "", backup)
    sb.receive(frame_v1(1, [rec]))
    assert conn.dest is not None and conn.dest.activeconns == 1


def test_wrong_syncid_and_unexpected_sources_are_ignored_and_counted():
    backup = director(*nat_config())
    sb = SyncBackup(backup, 5, allowed=lambda src: src.startswith("198.18.9."))
    msg = frame_v1(6, [record_v4(6, 0, 1, 46000, 80, 80, 0, 900, CLIENT, VIP, RS[0])])
    assert sb.receive(msg, "198.18.9.2") == 0
    assert sb.counters["dropped:wrong-syncid"] == 1
    msg5 = msg[:1] + b"\x05" + msg[2:]
    assert sb.receive(msg5, "198.18.7.2") == 0
    assert sb.counters["dropped:unexpected-source"] == 1
    assert sb.receive(msg5, "198.18.9.2") == 1
    assert len(backup.conntable) == 1


# -- fuzzing ------------------------------------------------------------------------------------
ADDR4 = st.sampled_from([pack_addr(a) for a in (CLIENT, VIP, *RS, "198.18.0.99")])
ADDR6 = st.sampled_from([pack_addr(a) for a in ("2001:db8::10", "2001:db8:1::1")])


@st.composite
def records(draw):
    af = draw(st.sampled_from([AF_INET, AF_INET6]))
    addr = ADDR4 if af == AF_INET else ADDR6
    flags = draw(st.integers(0, 0xFFFF)) & ~0x0040
    return SyncRecord(af, draw(st.sampled_from([6, 17, 0, 132])), flags,
                      draw(st.integers(0, 12)), draw(st.integers(0, 65535)),
                      draw(st.sampled_from([80, 53, 0])), draw(st.sampled_from([80, 53, 0])),
                      draw(st.sampled_from([0, 0, 1])), draw(st.integers(0, 1000)),
                      draw(addr), draw(addr), draw(addr),
                      draw(st.tuples(*[st.integers(0, 2**32 - 1)] * 6)))


def valid_message(recs: list[SyncRecord], syncid: int) -> bytes:
    raws = [encode_record(r) for r in recs]
    buff = SyncBuffer(syncid, 65000, max([len(r) for r in raws] or [0]), 1, 0.0)
    for r in raws:
        buff.add(r)
    return buff.message()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recs=st.lists(records(), max_size=6),
       mutations=st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), max_size=4),
       cut=st.integers(0, 700), junk=st.binary(max_size=64))
def test_malformed_messages_are_counted_and_dropped_never_fatal(recs, mutations, cut, junk):
    backup = director(*nat_config(persistent=True))
    sb = SyncBackup(backup, 0)
    msg = bytearray(valid_message(recs, 1))
    for pos, val in mutations:
        if pos < len(msg):
            msg[pos] = val
    for datagram in (bytes(msg), bytes(msg[:cut]), junk, bytes(msg) + junk):
        before = sum(sb.counters.values())
        sb.receive(datagram)
        assert sum(sb.counters.values()) > before  # every datagram leaves a trace
    # the table stays consistent: the counters match the entries, every entry can be
    # listed, and entries expire on time (a record may carry a timeout of days)
    assert_counters_match(backup)
    assert ipvsadm.run(["-Lnc"], "", backup)[0] == 0
    for _ in range(3):
        backup.clock.advance(1800)
        backup.tick()
    assert all(c.timeout > 1800 or c.n_control for c in backup.conntable.entries())
    assert_counters_match(backup)


def assert_counters_match(d: Director) -> None:
    """Each destination's active / inactive / persistent counts are its entries'."""
    want: dict = {}
    for c in d.conntable.entries():
        if c.dest is not None:
            a, i, p = want.get(id(c.dest), (0, 0, 0))
            if c.is_template:
                p += 1
            elif c.flags & 0x0100:
                i += 1
            else:
                a += 1
            want[id(c.dest)] = (a, i, p)
    for svc in d.services.services.values():
        for dest in svc.destinations:
            assert (dest.activeconns, dest.inactconns, dest.persistconns) == \
                want.get(id(dest), (0, 0, 0))


@settings(max_examples=200, deadline=None)
@given(recs=st.lists(records(), min_size=1, max_size=8), syncid=st.integers(1, 255))
def test_decoding_returns_what_was_encoded(recs, syncid):
    decoded = decode_message(valid_message(recs, syncid), syncid, PROTOS)
    assert decoded.error is None
    expect = [r for r in recs
              if r.flags & 0x1000 or (r.protocol in PROTOS and r.state < PROTOS[r.protocol])]
    assert len(decoded.records) == len(expect)
    for got, sent in zip(decoded.records, expect, strict=True):
        assert (got.af, got.protocol, got.state, got.cport, got.vport, got.dport, got.fwmark,
                got.timeout, got.caddr, got.vaddr, got.daddr) == \
            (sent.af, sent.protocol, sent.state, sent.cport, sent.vport, sent.dport,
             sent.fwmark, sent.timeout, sent.caddr, sent.vaddr, sent.daddr)
        assert got.flags == (sent.flags & 0x1F87) | CONN_F_SYNC
        assert got.seq == (sent.seq if sent.flags & 0x0600 else None)


def test_syn_recv_connections_are_not_sent():
    d = director(*nat_config())
    d.sysctl.set("sync_threshold", "1 2")
    m = master_of(d)
    d.process([tcp("S")])
    conn = d.conntable.in_get(6, pack_addr(CLIENT), 40000, pack_addr(VIP), 80)
    assert conn.state == SYN_RECV
    assert m.counters["records"] == 0


def test_a_full_queue_drops_messages_counted_and_threads_share_the_entries():
    d = director(*nat_config())
    d.sysctl.set("sync_qlen_max", "2")
    m = SyncMaster(SyncConfig("eth0", syncid=1, sync_maxlen=8 + 36), d.sysctl, d.clock, 2)
    d.sync_observer = m.observe
    for n in range(12):  # one record per message: 11 full messages, one still filling
        handshake(d, sport=47000 + n)
    queued = sum(len(t.queue) for t in m.threads)
    assert queued <= 2 * 2  # sync_qlen_max per thread
    assert m.counters["queue-full-dropped"] == m.counters["records"] - queued - sum(
        t.buff is not None for t in m.threads)
    assert m.counters["queue-full-dropped"] > 0
    sent = m.due(d.clock.now() + 2)
    assert {thread for thread, _ in sent} == {0, 1}  # both sync threads (sync_ports=2)
