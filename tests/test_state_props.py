"""Property tests for the connection state machine and its accounting.

Whatever packets arrive, in whatever order (ip_vs_proto_tcp.c set_tcp_state,
ip_vs_conn.c bind/unbind):
  * each destination's activeconns/inactconns equal the number of its entries in
    active/inactive states, and persistconns its templates;
  * every entry's timeout is the table timeout of its state;
  * once everything has expired every counter is back to zero and no
    destination is left marked OVERLOAD.
"""

from __future__ import annotations

from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP

from pyvs.engine.clock import VirtualClock
from pyvs.engine.director import Director
from pyvs.engine.model import (
    AF_INET,
    FWD_DROUTE,
    FWD_MASQ,
    SVC_F_PERSISTENT,
    DestSpec,
    ServiceSpec,
    pack_addr,
)
from pyvs.engine.proto import tcp as tcpstate
from pyvs.engine.proto.udp import UDP_TIMEOUT

VIP = "198.18.1.1"
RS = ["198.18.2.10", "198.18.2.11", "198.18.2.12"]
FLAGS = ["S", "SA", "A", "FA", "F", "R", "RA", "PA", ""]


@cache
def packet(kind: str, client: int, sport: int, flags: str, rs: int) -> bytes:
    caddr = f"198.18.0.{10 + client}"
    if kind == "udp":
        return bytes(IP(src=caddr, dst=VIP) / UDP(sport=sport, dport=53) / b"x")
    if kind == "reply":
        return bytes(IP(src=RS[rs], dst=caddr) / TCP(sport=80, dport=sport, flags=flags))
    return bytes(IP(src=caddr, dst=VIP) / TCP(sport=sport, dport=80, flags=flags))


events = st.lists(
    st.tuples(
        st.sampled_from(["tcp", "tcp", "reply", "udp", "wait"]),
        st.integers(0, 1),  # client: few flows, so packets meet the same entries often
        st.integers(40000, 40001),  # source port
        st.sampled_from(FLAGS),
        st.integers(0, 2),  # which real server a reply claims to come from
        st.sampled_from([0.5, 5, 30, 200]),  # seconds for "wait"
    ),
    min_size=4,
    max_size=50,
)


def build(persistent: bool, fwd: int, u_threshold: int):
    clock = VirtualClock()
    d = Director(clock=clock)
    flags = SVC_F_PERSISTENT if persistent else 0
    for proto, port in ((6, 80), (17, 53)):
        key = d.services.add_service(ServiceSpec(AF_INET, proto, pack_addr(VIP), port,
                                                 scheduler="wlc", flags=flags,
                                                 timeout=60)).key
        for addr in RS:
            d.services.add_dest(key, DestSpec(pack_addr(addr), port, fwd=fwd,
                                              u_threshold=u_threshold))
    return d, clock


def check_accounting(d: Director) -> None:
    dests = [x for svc in d.services.services.values() for x in svc.destinations]
    for dest in dests:
        conns = [c for c in d.conntable.entries() if c.dest is dest]
        templates = [c for c in conns if c.is_template]
        normal = [c for c in conns if not c.is_template]
        active = [c for c in normal if c.protocol == 6 and c.state in tcpstate.TCP_ACTIVE]
        assert dest.persistconns == len(templates)
        assert dest.activeconns == len(active)
        assert dest.inactconns == len(normal) - len(active)
    for conn in d.conntable.entries():
        if conn.is_template:
            continue
        if conn.protocol == 6:
            assert conn.timeout == tcpstate.TCP_TIMEOUTS[conn.state]
        else:
            assert conn.timeout == UDP_TIMEOUT


@settings(max_examples=150, deadline=None)
@given(events=events, persistent=st.booleans(), nat=st.booleans(),
       u_threshold=st.sampled_from([0, 0, 2, 5]))
def test_counters_match_entries_under_any_packet_sequence(events, persistent, nat,
                                                           u_threshold):
    d, clock = build(persistent, FWD_MASQ if nat else FWD_DROUTE, u_threshold)
    for kind, client, sport, flags, rs, wait in events:
        if kind == "wait":
            clock.advance(wait)
            d.tick()
        else:
            d.process([bytearray(packet(kind, client, sport, flags, rs))])
        check_accounting(d)
    clock.advance(100_000)
    for _ in range(4):  # templates are kept while they control entries, 60 s at a time
        d.tick()
        clock.advance(100)
    d.tick()
    assert len(d.conntable) == 0
    for svc in d.services.services.values():
        for dest in svc.destinations:
            assert (dest.activeconns, dest.inactconns, dest.persistconns) == (0, 0, 0)
            assert not dest.overloaded


@settings(max_examples=200, deadline=None)
@given(state=st.integers(0, 10), direction=st.sampled_from([0, 1, 2]),
       flags=st.integers(0, 0x3F), secure=st.booleans())
def test_state_table_is_total_and_closed(state, direction, flags, secure):
    """Every (state, direction, flags) has a successor inside the table; no flags -> CLOSE."""
    new = tcpstate.tcp_next_state(state, direction, flags, secure)
    assert 0 <= new <= 10
    if not flags & (tcpstate.TCP_SYN | tcpstate.TCP_FIN | tcpstate.TCP_ACK | tcpstate.TCP_RST):
        assert new == tcpstate.CLOSE
