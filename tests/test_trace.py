"""`pyvs trace` on synthetic packets and virtual time: what the hub reports, what its
filters select, that tracing never changes a decision, the fast path's hand-over,
the words, the pcapng files and the ladder diagram."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap
from test_director import RS, make, send, tcp, udp
from test_fastpath import build, frames_block, make_director, snapshot

from pyvs.engine.director import Director
from pyvs.engine.fastpath import FastPath
from pyvs.engine.model import FWD_DROUTE, SVC_F_PERSISTENT, DestSpec, pack_addr
from pyvs.engine.trace import ladder, words
from pyvs.engine.trace.filter import FilterError, FlowView, ServiceSpec, TraceFilter
from pyvs.engine.trace.hook import MAX_BACKLOG, TraceHub
from pyvs.engine.trace.pcapng import PcapNgWriter
from pyvs.engine.verdict import DROP, FORWARD
from pyvs.schedulers.mh import h1, mh_key
from pyvs.schedulers.sh import sh_table

CLIENT = "198.18.0.10"


class Traced:
    """A director with one trace subscriber on a socketpair."""

    def __init__(self, d: Director, flt: dict | None = None, hub: TraceHub | None = None):
        self.d = d
        self.hub = hub or TraceHub(d)
        self.sock, peer = socket.socketpair()
        self.hub.subscribe(peer, {"op": "trace", "filter": flt or {}})
        self.sock.setblocking(False)
        self.answer = json.loads(self._read().split(b"\n", 1)[0])
        self.rest = b""

    def _read(self) -> bytes:
        out = b""
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                return out
            if not data:
                return out
            out += data

    def events(self) -> list[dict]:
        data = self.rest + self._read()
        lines, _, self.rest = data.rpartition(b"\n")
        return [json.loads(x) for x in lines.split(b"\n") if x]


def handshake(d, src=CLIENT, sport=40000):
    """SYN, SYN-ACK from the chosen real server, ACK: returns the real server."""
    _, out = send(d, tcp(src=src, sport=sport, flags="S"))
    send(d, tcp(src=out.dst, sport=80, dst=src, dport=sport, flags="SA"))
    send(d, tcp(src=src, sport=sport, flags="A"))
    return out.dst


# -- what one packet's event says ---------------------------------------------------------

def test_nat_connection_events_tell_lookup_choice_states_and_rewrite():
    d, _, _ = make("rr")
    t = Traced(d)
    rs = handshake(d)
    send(d, tcp(flags="FA"))
    syn, synack, ack, fin = t.events()
    assert syn["lookup"] == "miss" and syn["conn"]["new"]
    assert syn["schedule"]["scheduler"] == "rr"
    assert syn["schedule"]["chose"] == f"{rs}:80" == "198.18.2.12:80"  # kernel list order
    assert [i["dest"] for i in syn["schedule"]["inputs"]] == [f"{a}:80" for a in reversed(RS)]
    assert syn["schedule"]["before"] == {"cursor": "the list head"}
    assert (syn["conn"]["state_before"], syn["conn"]["state"], syn["conn"]["timeout"]) == \
        ("NONE", "SYN_RECV", 60)
    before, after = IP(bytes.fromhex(syn["in"])), IP(bytes.fromhex(syn["out"][0]["hex"]))
    assert (before.dst, after.dst, after.src) == ("198.18.1.1", rs, CLIENT)
    assert synack["lookup"] == "reply" and "schedule" not in synack
    assert IP(bytes.fromhex(synack["out"][0]["hex"])).src == "198.18.1.1"
    assert (ack["lookup"], ack["conn"]["state_before"], ack["conn"]["state"],
            ack["conn"]["timeout"]) == ("hit", "SYN_RECV", "ESTABLISHED", 900)
    assert (fin["conn"]["state_before"], fin["conn"]["state"]) == ("ESTABLISHED", "CLOSE_WAIT")
    text = "\n".join(words.describe(syn, 1, syn["t"]))
    assert "rr chose 198.18.2.12:80" in text and "NONE -> SYN_RECV, expires in 60 s" in text
    assert "after   IP / TCP 198.18.0.10:40000 > 198.18.2.12:http S" in text


def test_no_service_and_no_syn_are_passed_to_the_stack_with_the_reason():
    d, _, _ = make("rr")
    t = Traced(d)
    send(d, tcp(flags="S", dport=81))
    send(d, tcp(flags="A"))
    other, ack = t.events()
    assert (other["verdict"], other["why"]) == ("ACCEPT", "no-service")
    assert (ack["verdict"], ack["why"], ack["lookup"]) == ("ACCEPT", "no-entry-no-syn", "miss")
    assert "tcp_conn_schedule" in "\n".join(words.describe(ack, 2, 0))


def test_every_server_quiesced_drops_with_port_unreachable_to_the_client():
    d, _, key = make("rr")
    for a in RS:
        d.services.edit_dest(key, DestSpec(pack_addr(a), 80, weight=0, fwd=0))
    t = Traced(d)
    verdict, _ = send(d, tcp(flags="S"))
    (ev,) = t.events()
    assert verdict == DROP and ev["drops"] == {"no-destination": 1}
    assert ev["schedule"]["chose"] is None
    assert [i["weight"] for i in ev["schedule"]["inputs"]] == [0, 0, 0]
    icmp = IP(bytes.fromhex(ev["out"][0]["hex"]))
    assert (icmp.src, icmp.dst, icmp[ICMP].type, icmp[ICMP].code) == ("198.18.1.1", CLIENT, 3, 3)
    text = "\n".join(words.describe(ev, 1, ev["t"]))
    assert "no real server available" in text and "rr found no usable real server" in text


def test_persistence_template_created_then_hit_without_scheduling():
    d, _, _ = make("rr", flags=SVC_F_PERSISTENT, timeout=300)
    t = Traced(d)
    send(d, tcp(sport=40000, flags="S"))
    send(d, tcp(sport=40001, flags="S"))
    first, second = t.events()
    assert first["template"]["hit"] is False and "schedule" in first
    assert first["template"]["timeout"] == 300
    assert second["template"]["hit"] is True and "schedule" not in second
    assert second["conn"]["rs"] == first["conn"]["rs"]
    assert "template decides" in "\n".join(words.describe(second, 2, 0))


@pytest.mark.parametrize("scheduler", ["sh", "mh"])
def test_hash_schedulers_report_the_slot_that_chose(scheduler):
    d, _, key = make(scheduler)
    t = Traced(d)
    for n in range(5):
        send(d, tcp(src=f"198.18.0.{10 + n}", flags="S"))
    svc = d.services.get(key)
    for n, ev in enumerate(t.events()):
        after = ev["schedule"]["after"]
        client = pack_addr(f"198.18.0.{10 + n}")
        if scheduler == "sh":
            owner = sh_table(svc.destinations)[after["slot"]]
        else:
            assert after["slot"] == h1(mh_key(client, 0)) % 4093
            owner = svc.scheduler.table[after["slot"]]
        assert ev["schedule"]["chose"] == after["slot_owner"] == \
            f"{'.'.join(map(str, owner.addr))}:80"


def test_wrr_reports_the_current_weight_it_walked_with():
    """cw is carried across the one-by-one adds (ip_vs_wrr_dest_changed), so the first
    round serves every server once at cw 1 before the walk restarts at mw 3."""
    d, _, _ = make("wrr", weights=(1, 2, 3))
    t = Traced(d)
    for n in range(6):
        send(d, tcp(sport=40000 + n, flags="S"))
    evs = [e["schedule"] for e in t.events()]
    assert [e["before"]["cw"] for e in evs] == [1, 1, 1, 1, 3, 2]
    assert [e["after"]["cw"] for e in evs[:-1]] == [e["before"]["cw"] for e in evs[1:]]
    assert [e["chose"] for e in evs] == [f"198.18.2.{n}:80" for n in (12, 11, 10, 12, 12, 11)]


def test_dr_frame_in_words_and_pcap(tmp_path):
    clock_d, _, key = make("rr", weights=(1,))
    d = clock_d
    from test_fastpath import FakeRoutes

    d.ctx.routes = FakeRoutes()
    d.services.edit_dest(key, DestSpec(pack_addr(RS[0]), 80, fwd=FWD_DROUTE, weight=1))
    t = Traced(d)
    verdict, _ = send(d, tcp(flags="S"))
    (ev,) = t.events()
    assert verdict == DROP and ev["why"] == "sent-by-forwarder"
    (out,) = ev["out"]
    frame = Ether(bytes.fromhex(out["hex"]))
    assert (out["link"], out["to"], frame.dst, frame[IP].dst) == \
        ("eth", "eth1", "02:00:c6:12:02:0a", "198.18.1.1")
    text = "\n".join(words.describe(ev, 1, ev["t"]))
    assert "Route (direct routing)" in text and "Ether 02:00:00:00:00:01 > 02:00:c6:12:02:0a" \
        in text
    w = PcapNgWriter(str(tmp_path / "out.pcapng"))
    w.write(bytes.fromhex(ev["in"]), "ip", 1.0)
    w.write(bytes.fromhex(out["hex"]), "eth", 1.5)
    w.close()
    first, second = rdpcap(str(tmp_path / "out.pcapng"))
    assert first.dst == "198.18.1.1" and second[Ether].dst == "02:00:c6:12:02:0a"


# -- filters ---------------------------------------------------------------------------

def test_filters_select_by_client_vip_real_server_and_service():
    d, _, key = make("rr")
    hub = TraceHub(d)  # one hub per daemon, one subscriber per `pyvs trace`
    traces = {name: Traced(d, flt, hub) for name, flt in {
        "client": {"clients": ["198.18.0.11"]},
        "vip": {"vips": ["198.18.1.1:80"]},
        "rs": {"real_servers": ["198.18.2.11"]},
        "svc": {"services": ["-t 198.18.1.1:80"]},
        "udp": {"services": ["-u 198.18.1.1:53"]},
        "both": {"clients": ["198.18.0.10"], "real_servers": ["198.18.2.11:80"]},
    }.items()}
    served = {}
    for n in range(3):  # rr: .10 -> rs .12, .11 -> rs .11, .12 -> rs .10
        served[n] = handshake(d, src=f"198.18.0.{10 + n}", sport=41000 + n)
    send(d, tcp(src="198.18.0.13", flags="S", dport=8080))  # no service
    got = {name: t.events() for name, t in traces.items()}
    assert served == {0: "198.18.2.12", 1: "198.18.2.11", 2: "198.18.2.10"}
    assert len(got["client"]) == 3 and {e["conn"]["client"] for e in got["client"]} == \
        {"198.18.0.11:41001"}
    assert len(got["vip"]) == 9  # replies come from the real servers, still the VIP's
    assert len(got["rs"]) == 3 and {e["conn"]["rs"] for e in got["rs"]} == {"198.18.2.11:80"}
    assert len(got["svc"]) == 9 and got["udp"] == []
    assert got["both"] == []


def test_filter_parsing_errors_are_one_clear_line():
    with pytest.raises(FilterError, match="not an IP address"):
        TraceFilter.from_json({"clients": ["nosuch"]})
    with pytest.raises(FilterError, match="needs ADDR:PORT"):
        ServiceSpec.parse("tcp", "198.18.1.1")
    with pytest.raises(FilterError, match="port out of range"):
        TraceFilter.from_json({"vips": ["198.18.1.1:70000"]})
    d, _, _ = make("rr")
    t = Traced(d, {"vips": ["[2001:db8::1]:x"]})
    assert t.answer["rc"] == 2 and "bad port" in t.answer["err"]
    assert d.tracer is None


def test_ipv6_endpoints_parse_and_match():
    flt = TraceFilter.from_json({"vips": ["[2001:db8:1::1]:80"]})
    vip = pack_addr("2001:db8:1::1")
    assert flt.matches(FlowView(pack_addr("2001:db8::10"), 4000, vip, 80))
    assert not flt.matches(FlowView(pack_addr("2001:db8::10"), 4000, vip, 81))


# -- tracing changes nothing; nobody tracing costs nothing --------------------------------

flows = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2),
                           st.sampled_from(["S", "A", "PA", "FA", "R", "SA"]),
                           st.booleans()), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(flows, st.sampled_from(["rr", "wlc", "sh", "mh", "wrr"]))
def test_tracing_never_changes_a_decision(steps, scheduler):
    plain, _, _ = make(scheduler)
    traced, _, _ = make(scheduler)
    t = Traced(traced, {"clients": ["198.18.0.10", "198.18.0.12"]})
    for client, port, flags, reply in steps:
        src, sport = f"198.18.0.{10 + client}", 40000 + port
        results = []
        for d in (plain, traced):
            if reply:
                conn = d.conntable.in_get(6, pack_addr(src), sport, pack_addr("198.18.1.1"), 80)
                rs = ".".join(map(str, conn.daddr)) if conn is not None else RS[0]
                buf = tcp(src=rs, sport=80, dst=src, dport=sport, flags=flags)
            else:
                buf = tcp(src=src, sport=sport, flags=flags)
            results.append((d.process([buf]), bytes(buf)))
        assert results[0] == results[1]
    assert [(c.ikey, c.daddr, c.state, c.timeout) for c in plain.conntable.entries()] == \
        [(c.ikey, c.daddr, c.state, c.timeout) for c in traced.conntable.entries()]
    assert dict(plain.drops) == dict(traced.drops)
    assert all(e["conn"]["client"].split(":")[0] in ("198.18.0.10", "198.18.0.12")
               for e in t.events() if e.get("conn"))


def test_detaching_restores_the_untraced_method_and_a_gone_client_detaches():
    d, _, _ = make("rr")
    assert "handle" not in vars(d) and d.tracer is None
    t = Traced(d)
    assert d.tracer is t.hub and "handle" in vars(d)
    t.sock.close()
    t.hub.tick()
    assert d.tracer is None and "handle" not in vars(d)
    assert send(d, tcp(flags="S"))[0] == FORWARD


def test_a_slow_reader_loses_events_it_is_told_about_and_the_packet_path_goes_on():
    d, _, _ = make("rr")
    t = Traced(d)
    payload = b"x" * 1200
    n = 0
    while not t.hub.subscribers[0].lost:  # nobody reads: the backlog fills up
        assert send(d, tcp(sport=30000 + n % 1000, flags="S", payload=payload))[0] == FORWARD
        n += 1
        assert n < 4 * MAX_BACKLOG // 2000
    got = []
    while True:
        got += t.events()
        if any("lost" in e for e in got):
            break
        t.hub.tick()
    assert sum(e["lost"] for e in got if "lost" in e) >= 1


def test_udp_and_icmp_error_events():
    d, _, _ = make("rr", proto=17, port=53)
    t = Traced(d)
    _, out = send(d, udp(payload=b"query"))
    (ev,) = t.events()
    assert ev["proto"] == "UDP" and ev["conn"]["state"] == "UDP" and "flags" not in ev
    assert IP(bytes.fromhex(ev["out"][0]["hex"])).dst == out.dst


# -- the fast path hands traced frames to Director.handle --------------------------------

def test_fast_path_sends_traced_frames_through_the_tracer_and_others_stay_fast():
    d = make_director()
    plain = make_director()
    fp, fp_plain = FastPath(d), FastPath(plain)
    syns = [("req", 0, c, 40000 + c, 0, 0x02, b"", 1, 0) for c in range(3)]
    for dd in (d, plain):
        dd.process([build(s) for s in syns])
    t = Traced(d, {"clients": ["198.18.0.11"]})
    acks = [("req", 0, c, 40000 + c, 0, 0x10, b"data", 1, 0) for c in range(3)] * 4
    pkts = [build(a) for a in acks]
    _, block, offs, lens = frames_block(pkts)
    _, block2, _, _ = frames_block([build(a) for a in acks])
    v = fp.run(block, offs, lens)
    v2 = fp_plain.run(block2, offs, lens)
    assert list(v) == list(v2) == [FORWARD] * 12
    assert np.array_equal(block, block2)
    assert snapshot(d) == snapshot(plain)
    # the first ACK of each flow changes its state (slow anyway); client .11's other three
    # frames left the fast path for the tracer
    assert (fp.slow, fp.fast) == (fp_plain.slow + 3, fp_plain.fast - 3) == (6, 6)
    evs = t.events()
    assert len(evs) == 4 and {e["src"].split(":")[0] for e in evs} == {"198.18.0.11"}


# -- ladder -------------------------------------------------------------------------------

def test_ladder_draws_one_arrow_per_hop_with_the_states(tmp_path):
    d, _, _ = make("rr")
    t = Traced(d)
    handshake(d)
    send(d, tcp(flags="S", dport=81))  # passed to the stack: ends at the director
    evs = t.events()
    clients, servers, rows = ladder.arrows(evs)
    assert clients == [CLIENT] and servers == ["198.18.2.12"]
    assert [(r[1][0], r[2][0] if r[2] else None) for r in rows] == [
        ("client", "director"), ("director", "rs"),
        ("rs", "director"), ("director", "client"),
        ("client", "director"), ("director", "rs"),
        ("client", "director"), ("director", None)]
    notes = [r[4] for r in rows if r[4]]
    assert notes == ["NONE -> SYN_RECV", "SYN_RECV -> ESTABLISHED"]
    path = tmp_path / "ladder.svg"
    assert ladder.draw(evs, str(path)) == 7
    svg = path.read_text()
    assert svg.startswith("<?xml") and "<svg" in svg and "SYN_RECV" in svg
