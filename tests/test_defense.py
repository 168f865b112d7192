"""The bounded connection table and IPVS's defense strategies (engine/defense.py), on
synthetic packets and virtual time: what is dropped, what is counted, and that
established connections are never the price of a flood."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP

from pyvs.engine import ipvsadm
from pyvs.engine.clock import VirtualClock
from pyvs.engine.defense import ENTRIES_PER_PAGE
from pyvs.engine.director import Director
from pyvs.engine.model import pack_addr
from pyvs.engine.proto.tcp import ESTABLISHED, SYN_RECV
from pyvs.engine.verdict import DROP, FORWARD

VIP = "198.18.1.1"
RS = ["198.18.2.11", "198.18.2.12"]


def director(limit: int, persistent: bool = False) -> Director:
    d = Director(clock=VirtualClock(), seed=1)
    d.defense.limit = limit
    svc = ["-A", "-t", f"{VIP}:80", "-s", "rr"] + (["-p", "60"] if persistent else [])
    for argv in (svc, *[["-a", "-t", f"{VIP}:80", "-r", f"{rs}:80", "-m"] for rs in RS]):
        rc, _, err = ipvsadm.run(argv, "", d)
        assert rc == 0, err
    return d


def syn(n: int, flags: str = "S", src: str | None = None) -> bytearray:
    src = src or f"198.18.{100 + n // 250}.{1 + n % 250}"
    return bytearray(bytes(IP(src=src, dst=VIP) / TCP(sport=30000 + n % 1000, dport=80,
                                                     flags=flags)))


def establish(d: Director, n: int) -> None:
    src = f"198.18.0.{10 + n}"
    assert d.process([syn(n, "S", src)]) == [FORWARD]
    conn = d.conntable.in_get(6, pack_addr(src), 30000 + n, pack_addr(VIP), 80)
    rs = ".".join(map(str, conn.daddr))
    d.process([bytearray(bytes(IP(src=rs, dst=src) / TCP(sport=80, dport=30000 + n,
                                                         flags="SA")))])
    assert d.process([syn(n, "A", src)]) == [FORWARD]
    assert conn.state == ESTABLISHED


def test_a_full_table_recycles_half_open_entries_and_never_established_ones():
    d = director(limit=50)
    for n in range(5):
        establish(d, n)
    flood = [syn(1000 + n) for n in range(200)]
    assert d.process(flood) == [FORWARD] * 200  # the oldest half-open entries make room
    assert d.defense.counters["half-open-reclaimed"] == 155
    assert len(d.conntable) == 50
    for n in range(5):  # established connections go on, none was evicted
        assert d.process([syn(n, "PA", f"198.18.0.{10 + n}")]) == [FORWARD]
    # a legitimate handshake completes in the middle of the flood
    establish(d, 7)
    d.process([syn(2000 + n) for n in range(200)])
    assert sum(c.state == ESTABLISHED for c in d.conntable.entries()) == 6


def test_a_table_full_of_established_connections_drops_new_ones_counted():
    d = director(limit=6)
    for n in range(6):
        establish(d, n)
    verdicts = d.process([syn(1000 + n) for n in range(20)])
    assert verdicts == [DROP] * 20
    assert d.drops["conn-limit"] == 20
    assert len(d.conntable) == 6
    # entries that end make room again
    d.process([syn(0, "RA", "198.18.0.10")])
    d.clock.advance(11)
    d.tick()
    assert d.process([syn(5000)]) == [FORWARD]


def test_a_persistent_connection_needs_room_for_its_template_too():
    d = director(limit=3, persistent=True)
    establish(d, 1)  # template + connection
    assert d.process([syn(2)]) == [DROP]  # would make 4
    assert d.drops["conn-limit"] == 1


def test_drop_packet_always_drops_one_in_am_droprate_new_connections():
    d = director(limit=0)
    establish(d, 0)
    d.sysctl.set("am_droprate", "4")
    d.sysctl.set("drop_packet", "3")
    verdicts = d.process([syn(1000 + n) for n in range(40)])
    assert verdicts.count(DROP) == 10 and d.drops["defense-drop-packet"] == 10
    assert verdicts[0] == DROP and verdicts[1:4] == [FORWARD] * 3
    for _ in range(20):  # packets of established connections are never dropped
        assert d.process([syn(0, "PA", "198.18.0.10")]) == [FORWARD]


def test_automatic_modes_follow_the_tables_pressure():
    thresh = 4  # pages: 4 * ENTRIES_PER_PAGE free entries
    d = director(limit=thresh * ENTRIES_PER_PAGE * 2)
    d.sysctl.set("amemthresh", str(thresh))
    for name in ("drop_packet", "drop_entry", "secure_tcp"):
        d.sysctl.set(name, "1")
    d.tick()
    assert (d.sysctl.drop_packet, d.sysctl.drop_entry, d.sysctl.secure_tcp) == (1, 1, 1)
    # fill the table to 7/8: 1 free page < 4
    n = thresh * ENTRIES_PER_PAGE * 2 - ENTRIES_PER_PAGE
    d.process([syn(1000 + i) for i in range(n)])
    d.clock.advance(1)
    d.tick()
    assert (d.sysctl.drop_packet, d.sysctl.drop_entry, d.sysctl.secure_tcp) == (2, 2, 2)
    assert d.defense.drop_rate == thresh // (thresh - 1)
    assert d.defense.counters["entries-dropped"] > 0  # half-open entries went first
    # pressure gone: back to 1 and nothing dropped any more
    d.clock.advance(61)
    d.tick()
    d.clock.advance(1)
    d.tick()
    assert (d.sysctl.drop_packet, d.sysctl.drop_entry, d.sysctl.secure_tcp) == (1, 1, 1)
    assert d.defense.drop_rate == 0


def test_drop_entry_takes_half_open_entries_and_leaves_busy_established_ones():
    d = director(limit=0)
    for n in range(8):
        establish(d, n)
        for _ in range(10):
            d.process([syn(n, "PA", f"198.18.0.{10 + n}")])
    d.process([syn(1000 + i) for i in range(3200)])
    d.sysctl.set("drop_entry", "3")
    for _ in range(40):
        d.clock.advance(1)
        d.tick()
    states = [c.state for c in d.conntable.entries()]
    assert states.count(ESTABLISHED) == 8
    assert states.count(SYN_RECV) < 3200 // 2
    assert d.defense.counters["entries-dropped"] == 3200 - states.count(SYN_RECV)


def test_secure_tcp_uses_the_defense_state_tables_only_while_on():
    d = director(limit=0)
    d.sysctl.set("secure_tcp", "2")  # written 2 without pressure: update makes it 1
    assert d.sysctl.secure_tcp == 1
    d.process([syn(1, "S", "198.18.0.50")])
    d.process([syn(1, "A", "198.18.0.50")])  # normal tables: SYN_RECV + ACK -> ESTABLISHED
    assert d.conntable.in_get(6, pack_addr("198.18.0.50"), 30001, pack_addr(VIP),
                              80).state == ESTABLISHED
    d.sysctl.set("secure_tcp", "3")
    d.process([syn(2, "S", "198.18.0.51")])
    d.process([syn(2, "A", "198.18.0.51")])  # defense tables: stays SYN_RECV
    assert d.conntable.in_get(6, pack_addr("198.18.0.51"), 30002, pack_addr(VIP),
                              80).state == SYN_RECV
