"""The director's decisions on synthetic packets and virtual time (ip_vs_core.c semantics).

Each test builds the service the way ipvsadm would and feeds packets the way a
port would; scapy builds and reads the packets (tests only).
"""

from __future__ import annotations

import socket

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror
from scapy.packet import Raw

from pyvs.engine.clock import VirtualClock
from pyvs.engine.director import Director
from pyvs.engine.model import (
    AF_INET,
    FWD_MASQ,
    SVC_F_ONEPACKET,
    SVC_F_PERSISTENT,
    DestSpec,
    ServiceSpec,
    pack_addr,
)
from pyvs.engine.verdict import ACCEPT, DROP, FORWARD

VIP = "198.18.1.1"
RS = ["198.18.2.10", "198.18.2.11", "198.18.2.12"]


def make(scheduler="rr", proto=6, port=80, weights=(1, 1, 1), flags=0, timeout=0,
         netmask=0xFFFFFFFF, fwmark=0, **dest_kw):
    clock = VirtualClock()
    d = Director(clock=clock)
    spec = ServiceSpec(AF_INET, proto, pack_addr(VIP) if not fwmark else bytes(4),
                       port if not fwmark else 0, fwmark=fwmark, scheduler=scheduler,
                       flags=flags, timeout=timeout, netmask=netmask)
    key = d.services.add_service(spec).key
    for addr, w in zip(RS, weights, strict=False):
        d.services.add_dest(key, DestSpec(pack_addr(addr), port, fwd=FWD_MASQ, weight=w,
                                          **dest_kw))
    return d, clock, key


def tcp(src="198.18.0.10", sport=40000, flags="S", dst=VIP, dport=80, payload=b""):
    pkt = IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags)
    if payload:
        pkt = pkt / Raw(payload)
    return bytearray(bytes(pkt))


def udp(src="198.18.0.10", sport=5353, dst=VIP, dport=53, payload=b"q"):
    return bytearray(bytes(IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload))


def send(d, buf, mark=0):
    (verdict,) = d.process([buf], [mark])
    return verdict, IP(bytes(buf))


def dest(d, key, addr):
    return d.services.get(key).find_dest(AF_INET, pack_addr(addr), 80)


def test_rr_thirty_connections_split_evenly_in_kernel_list_order():
    """ip_vs_rr.c: list is newest first, so dests added .10,.11,.12 are served .12,.11,.10."""
    d, _, key = make("rr")
    order = []
    for n in range(30):
        verdict, out = send(d, tcp(sport=40000 + n))
        assert verdict == FORWARD
        order.append(out.dst)
    assert order[:3] == ["198.18.2.12", "198.18.2.11", "198.18.2.10"]
    assert {a: order.count(a) for a in RS} == dict.fromkeys(RS, 10)
    assert d.services.get(key).stats.conns == 30


def test_nat_rewrites_both_directions_and_checksums_verify():
    d, _, key = make("rr", weights=(1,))
    verdict, out = send(d, tcp(sport=41000))
    assert verdict == FORWARD and out.dst == RS[0] and out[TCP].dport == 80
    # scapy recomputes checksums when they are deleted; equal bytes = correct checksums
    fixed = out.copy()
    del fixed.chksum
    del fixed[TCP].chksum
    assert bytes(fixed) == bytes(out)
    reply = tcp(src=RS[0], sport=80, dst="198.18.0.10", dport=41000, flags="SA")
    verdict, back = send(d, reply)
    assert verdict == FORWARD and back.src == VIP and back[TCP].sport == 80
    assert dest(d, key, RS[0]).stats.outpkts == 1


def test_tcp_states_and_active_inactive_counters_follow_the_nat_lifecycle():
    """ip_vs_proto_tcp.c tcp_states: SR (active) -> ES -> CW (inactive) -> TW."""
    d, clock, key = make("rr", weights=(1,))
    rs = dest(d, key, RS[0])

    def state():
        return [c.state_name for c in d.conntable.entries()]

    send(d, tcp(flags="S"))
    assert state() == ["SYN_RECV"] and (rs.activeconns, rs.inactconns) == (1, 0)
    send(d, tcp(src=RS[0], sport=80, dst="198.18.0.10", dport=40000, flags="SA"))
    send(d, tcp(flags="A"))
    assert state() == ["ESTABLISHED"]
    send(d, tcp(flags="FA"))
    assert state() == ["CLOSE_WAIT"] and (rs.activeconns, rs.inactconns) == (0, 1)
    send(d, tcp(src=RS[0], sport=80, dst="198.18.0.10", dport=40000, flags="FA"))
    assert state() == ["TIME_WAIT"]
    clock.advance(119)
    d.tick()
    assert len(d.conntable) == 1
    clock.advance(2)
    d.tick()
    assert len(d.conntable) == 0 and (rs.activeconns, rs.inactconns) == (0, 0)


def test_half_open_syn_expires_after_syn_recv_timeout():
    d, clock, key = make("rr", weights=(1,))
    send(d, tcp(flags="S"))
    clock.advance(59.5)
    d.tick()
    assert len(d.conntable) == 1
    clock.advance(1.0)
    d.tick()
    assert len(d.conntable) == 0


def test_no_destination_sends_icmp_port_unreachable_not_rst():
    """ip_vs_leave(): ICMP type 3 code 3 from the VIP; the packet is dropped."""
    d, _, key = make("rr", weights=(0, 0, 0))
    verdict, _ = send(d, tcp(sport=42000))
    assert verdict == DROP
    (icmp_bytes,) = d.outbox
    icmp = IP(icmp_bytes)
    assert icmp.src == VIP and icmp.dst == "198.18.0.10"
    assert icmp[ICMP].type == 3 and icmp[ICMP].code == 3
    assert icmp[IPerror].dst == VIP and icmp[TCPerror].sport == 42000


def test_non_syn_without_connection_goes_to_the_director_stack():
    """tcp_conn_schedule(): no SYN, no entry -> NF_ACCEPT (the local stack answers RST)."""
    d, _, _ = make("rr")
    assert send(d, tcp(flags="A"))[0] == ACCEPT
    assert send(d, tcp(flags="R"))[0] == ACCEPT
    assert len(d.conntable) == 0


def test_sloppy_tcp_schedules_mid_stream_packets():
    d, _, _ = make("rr")
    d.sysctl.set("sloppy_tcp", 1)
    assert send(d, tcp(flags="A"))[0] == FORWARD


def test_persistence_sticks_per_client_and_template_expires():
    """ip_vs_sched_persist(): template (caddr, 0, VIP, 80) -> dest, timeout -p."""
    d, clock, key = make("rr", flags=SVC_F_PERSISTENT, timeout=300)
    first = {send(d, tcp(src="198.18.0.10", sport=40000 + n))[1].dst for n in range(5)}
    other = {send(d, tcp(src="198.18.0.11", sport=40000 + n))[1].dst for n in range(5)}
    assert len(first) == 1 and len(other) == 1 and first != other
    assert dest(d, key, first.pop()).persistconns == 1
    # close every connection (RST -> CLOSE, 10 s); templates then live to their timeout
    for n in range(5):
        send(d, tcp(src="198.18.0.10", sport=40000 + n, flags="R"))
        send(d, tcp(src="198.18.0.11", sport=40000 + n, flags="R"))
    clock.advance(11)
    d.tick()
    templates = [c for c in d.conntable.entries() if c.is_template]
    assert len(templates) == 2 and all(c.state_name == "NONE" for c in templates)
    clock.advance(300)
    d.tick()
    assert len(d.conntable) == 0
    assert all(x.persistconns == 0 for x in d.services.get(key).destinations)


def test_persistence_netmask_groups_clients():
    d, _, _ = make("rr", flags=SVC_F_PERSISTENT, timeout=300, netmask=0xFFFFFF00)
    dests = {send(d, tcp(src=f"198.18.0.{10 + n}", sport=40000))[1].dst for n in range(6)}
    assert len(dests) == 1


def test_template_keeps_quiesced_server_unless_expire_quiescent_template():
    """ip_vs_check_template(): weight 0 does not break persistence by default."""
    d, _, key = make("rr", flags=SVC_F_PERSISTENT, timeout=300)
    _, out = send(d, tcp(sport=40000))
    d.services.edit_dest(key, DestSpec(pack_addr(out.dst), 80, fwd=FWD_MASQ, weight=0))
    assert send(d, tcp(sport=40001))[1].dst == out.dst
    d.sysctl.set("expire_quiescent_template", 1)
    assert send(d, tcp(sport=40002))[1].dst != out.dst


def test_udp_datagrams_from_many_ports_are_balanced_and_stay_inactive():
    d, clock, key = make("rr", proto=17, port=53)
    for n in range(9):
        assert send(d, udp(sport=5000 + n))[0] == FORWARD
    counts = [x.inactconns for x in d.services.get(key).destinations]
    assert counts == [3, 3, 3]
    assert {c.state_name for c in d.conntable.entries()} == {"UDP"}
    clock.advance(301)
    d.tick()
    assert len(d.conntable) == 0


def test_one_packet_scheduling_schedules_each_datagram():
    """ONE_PACKET: no entry is kept; conns counts datagrams."""
    d, _, key = make("rr", proto=17, port=53, flags=SVC_F_ONEPACKET)
    dests = [send(d, udp(sport=5000))[1].dst for _ in range(3)]
    assert sorted(dests) == sorted(RS) and len(d.conntable) == 0
    assert d.services.get(key).stats.conns == 3
    assert all(x.inactconns == 0 for x in d.services.get(key).destinations)


def test_conn_reuse_mode_reschedules_syn_on_time_wait_entry():
    """ip_vs_in_hook(): a SYN hitting a TIME_WAIT entry creates a new connection."""
    d, _, _ = make("rr")
    first = send(d, tcp(flags="S"))[1].dst
    send(d, tcp(flags="FA"))  # ES is skipped; FIN from SR -> TIME_WAIT
    assert [c.state_name for c in d.conntable.entries()] == ["TIME_WAIT"]
    second = send(d, tcp(flags="S"))[1].dst
    assert second != first
    d.sysctl.set("conn_reuse_mode", 0)
    send(d, tcp(flags="FA"))
    assert send(d, tcp(flags="S"))[1].dst == second


def test_deleted_destination_drops_until_expire_nodest_conn():
    d, clock, key = make("rr", weights=(1, 1))
    out = send(d, tcp(flags="S"))[1].dst
    d.services.del_dest(key, AF_INET, pack_addr(out), 80, clock.now())
    assert send(d, tcp(flags="A"))[0] == DROP
    d.sysctl.set("expire_nodest_conn", 1)
    verdict, again = send(d, tcp(flags="S"))
    assert verdict == FORWARD and again.dst != out


def test_upper_threshold_sets_overload_and_lower_clears_it():
    """ip_vs_bind_dest/unbind_dest: -x 2 marks at 2 conns, cleared when 1 is left (4 < 6)."""
    d, clock, key = make("rr", weights=(1,), u_threshold=2)
    rs = d.services.get(key).destinations[0]
    send(d, tcp(sport=1))
    send(d, tcp(sport=2))
    assert rs.overloaded
    verdict, _ = send(d, tcp(sport=3))
    assert verdict == DROP and d.outbox  # ICMP port unreachable
    send(d, tcp(sport=1, flags="A"))  # SR -> ES
    send(d, tcp(sport=1, flags="R"))  # ES -> CLOSE, 10 s (an RST in SYN_RECV stays SYN_RECV)
    clock.advance(11)
    d.tick()
    assert not rs.overloaded


def test_fwmark_service_matches_by_mark_and_keeps_client_port():
    d, _, key = make("rr", fwmark=7, port=0)
    assert send(d, tcp(dport=8080))[0] == ACCEPT  # no mark: not this service
    verdict, out = send(d, tcp(dport=8080), mark=7)
    assert verdict == FORWARD and out[TCP].dport == 8080 and out.dst in RS


def test_icmp_error_from_real_server_is_translated_for_the_client():
    """ip_vs_out_icmp + ip_vs_nat_icmp: outer src and embedded dst become the VIP."""
    d, _, _ = make("rr", weights=(1,))
    _, out = send(d, tcp(sport=43000))
    err = IP(src=RS[0], dst="198.18.0.10") / ICMP(type=3, code=4, nexthopmtu=1400) / bytes(out)[:28]
    verdict, back = send(d, bytearray(bytes(err)))
    assert verdict == FORWARD and back.src == VIP
    assert back[IPerror].dst == VIP and back[TCPerror].dport == 80
    fixed = back.copy()
    del fixed[ICMP].chksum
    assert bytes(fixed)[20:24] == bytes(back)[20:24]


@pytest.mark.parametrize("junk,reason", [
    (b"\x45\x00", "truncated"),
    (b"\x43" + bytes(39), "bad-ihl"),
    (b"\x75" + bytes(39), "bad-version"),
])
def test_malformed_packets_are_counted_and_dropped_and_service_continues(junk, reason):
    d, _, _ = make("rr")
    verdicts = d.process([bytearray(junk), tcp()])
    assert verdicts == [DROP, FORWARD]
    assert d.drops[reason] == 1


def test_expire_nodest_conn_sweeps_every_entry_whose_destination_is_gone():
    """ip_vs_conn.c ip_vs_expire_nodest_conn_flush: runs when a dest is deleted and walks
    the whole table, so it also takes the entries of a destination deleted earlier
    while the setting was 0."""
    d, clock, key = make("rr", weights=(1, 1))
    for n in range(4):
        send(d, tcp(sport=40000 + n))
    victim = RS[1]  # list order .11, .10: the first connection went to .11
    d.services.del_dest(key, AF_INET, pack_addr(victim), 80, clock.now())
    assert len(d.conntable) == 4  # default: entries stay (their packets are dropped)
    d.sysctl.set("expire_nodest_conn", 1)
    d.services.del_dest(key, AF_INET, pack_addr(RS[0]), 80, clock.now())
    assert list(d.conntable.entries()) == []


def test_nat_icmp_send_answers_unmatched_replies_from_real_servers(monkeypatch):
    import pyvs.engine.director

    monkeypatch.setattr(pyvs.engine.director, "route_source", lambda dst: pack_addr("198.18.2.1"))
    d, _, _ = make("rr", weights=(1,))
    stray = tcp(src=RS[0], sport=80, dst="198.18.0.10", dport=41000, flags="A")
    assert send(d, bytearray(stray))[0] == ACCEPT
    d.sysctl.set("nat_icmp_send", 1)
    assert send(d, bytearray(stray))[0] == DROP
    icmp = IP(d.outbox[-1])
    assert icmp.dst == RS[0] and icmp[ICMP].type == 3 and icmp[ICMP].code == 3
    assert icmp.src == "198.18.2.1"  # the director's own address toward the real server
    rst = tcp(src=RS[0], sport=80, dst="198.18.0.10", dport=41000, flags="R")
    assert send(d, rst)[0] == ACCEPT


def test_ipv6_persistence_groups_by_prefix_length():
    """IPv6 templates mask the client address to the service's prefix length (-M 64)."""
    from scapy.layers.inet6 import IPv6

    d = Director(clock=VirtualClock())
    vip = "2001:db8:1::1"
    key = d.services.add_service(ServiceSpec(socket.AF_INET6, 6, pack_addr(vip), 80,
                                             scheduler="rr", flags=SVC_F_PERSISTENT,
                                             timeout=300, netmask=64)).key
    for n in range(3):
        d.services.add_dest(key, DestSpec(pack_addr(f"2001:db8:2::{10 + n}"), 80,
                                          fwd=FWD_MASQ))
    seen = set()
    for host in range(4):
        pkt = IPv6(src=f"2001:db8::{host + 1}", dst=vip) / TCP(sport=40000, dport=80,
                                                               flags="S")
        buf = bytearray(bytes(pkt))
        assert d.process([buf]) == [FORWARD]
        seen.add(IPv6(bytes(buf)).dst)
    assert len(seen) == 1
    (tmpl,) = [c for c in d.conntable.entries() if c.is_template]
    assert tmpl.caddr == pack_addr("2001:db8::")


def test_port_zero_persistent_service_keeps_the_clients_port_and_one_template():
    """ip_vs_sched_persist(): a port-0 service shares one template per client across
    ports, and connections keep the client's destination port (5.2, 5.3)."""
    d, _, key = make("rr", port=0, flags=SVC_F_PERSISTENT, timeout=300)
    outs = [send(d, tcp(sport=41000 + n, dport=port))[1]
            for n, port in enumerate((8080, 8443, 9000))]
    assert len({o.dst for o in outs}) == 1
    assert [o[TCP].dport for o in outs] == [8080, 8443, 9000]
    templates = [c for c in d.conntable.entries() if c.is_template]
    assert len(templates) == 1 and templates[0].vport == 0 and templates[0].dport == 0


def test_fwmark_persistence_shares_one_template_across_protocols():
    """An fwmark template is (IPPROTO_IP, caddr, fwmark as address, 0): HTTP and HTTPS
    of one client stick together (5.2)."""
    d, _, key = make("rr", fwmark=5, flags=SVC_F_PERSISTENT, timeout=300)
    web = send(d, tcp(sport=41000, dport=80), mark=5)[1]
    tls = send(d, tcp(sport=41001, dport=443), mark=5)[1]
    dns = send(d, udp(sport=41002, dport=53), mark=5)[1]
    assert web.dst == tls.dst == dns.dst
    (tmpl,) = [c for c in d.conntable.entries() if c.is_template]
    assert tmpl.protocol == 0 and tmpl.vaddr == (5).to_bytes(4, "big")
    assert tmpl.state_name == "NONE"


def test_zeroing_everything_also_zeroes_the_totals():
    """ip_vs_zero_all() zeroes every service and the netns totals; -Z of one service
    leaves the totals alone."""
    d, clock, key = make("rr", weights=(1, 1))
    for n in range(3):
        send(d, tcp(sport=41000 + n))
    assert d.total.conns == 3
    d.services.zero(key)
    assert d.total.conns == 3
    d.services.zero(None)
    assert d.total.as_tuple() == (0, 0, 0, 0, 0)
    send(d, tcp(sport=42000))
    assert d.total.conns == 1  # still the object the director counts into
