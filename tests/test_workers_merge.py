"""engine/workers.py without forking: the counters workers publish, the merged listing
process 0 answers with, and the global view every scheduler gets.

Two Directors stand for two workers that applied the same pyvsadm requests; each gets
its own share of the traffic (as PACKET_FANOUT would split it), publishes into one
SharedCounters, and worker 0's listing must show the sums -- then exactly its own
numbers again once the merge is taken off.
"""

from __future__ import annotations

from socket import inet_ntoa

from scapy.layers.inet import IP, TCP, UDP
from scapy.packet import Raw

from pyvs.engine import ipvsadm
from pyvs.engine.clock import VirtualClock
from pyvs.engine.director import Director
from pyvs.engine.workers import SharedCounters, Worker, _is_listing

VIP = "198.18.1.1"
RS1, RS2 = "198.18.2.11", "198.18.2.12"
CONFIG = [
    ["-A", "-u", f"{VIP}:53", "-s", "rr"],
    ["-a", "-u", f"{VIP}:53", "-r", f"{RS1}:53", "-m"],
    ["-a", "-u", f"{VIP}:53", "-r", f"{RS2}:53", "-m"],
    ["-A", "-t", f"{VIP}:80", "-s", "wlc"],
    ["-a", "-t", f"{VIP}:80", "-r", f"{RS2}:80", "-m"],
    ["-a", "-t", f"{VIP}:80", "-r", f"{RS1}:80", "-m"],  # RS1 heads the list
]


def adm(d: Director, *argv: str) -> str:
    rc, out, err = ipvsadm.run(list(argv), "", d)
    assert rc == 0, err
    return out


def workers(n: int = 2):
    shared = SharedCounters(n)
    out = []
    for i in range(n):
        d = Director(clock=VirtualClock())
        for argv in CONFIG:
            adm(d, *argv)
        w = Worker(i, shared, d)
        w.configured()
        out.append((d, w))
    return out


def udp(client: str, sport: int, size: int) -> bytearray:
    return bytearray(bytes(IP(src=client, dst=VIP) / UDP(sport=sport, dport=53)
                           / Raw(b"x" * size)))


def udp_reply(rs: str, client: str, sport: int, size: int) -> bytearray:
    return bytearray(bytes(IP(src=rs, dst=client) / UDP(sport=53, dport=sport)
                           / Raw(b"y" * size)))


def syn(client: str, sport: int) -> bytearray:
    return bytearray(bytes(IP(src=client, dst=VIP) / TCP(sport=sport, dport=80, flags="S")))


def counters(d: Director):
    """Everything a listing shows, per service and destination, and the totals."""
    rows = [d.total.as_tuple()]
    for svc in sorted(d.services.services.values(), key=lambda s: repr(s.key)):
        rows.append(svc.stats.as_tuple())
        for dest in sorted(svc.destinations, key=lambda x: x.addr):
            rows.append((dest.addr, dest.stats.as_tuple(), dest.activeconns,
                         dest.inactconns))
    return rows


def stats_rows(listing: str) -> dict[str, list[int]]:
    """`-Ln --stats --exact`: first column (service or `-> server`) -> the numbers."""
    out, svc = {}, None
    for line in listing.splitlines()[3:]:
        parts = line.split()
        if parts[0] == "->":
            out[f"{svc} {parts[1]}"] = [int(x) for x in parts[2:7]]
        else:
            svc = f"{parts[0]} {parts[1]}"
            out[svc] = [int(x) for x in parts[2:7]]
    return out


def test_listing_shows_the_sum_of_every_workers_counters_and_nothing_sticks():
    (d0, w0), (d1, w1) = workers()
    # worker 0 gets three clients, worker 1 five; both see some replies
    for i in range(3):
        d0.process([udp(f"198.18.0.{10 + i}", 1000 + i, 10)])
    for i in range(5):
        d1.process([udp(f"198.18.0.{20 + i}", 2000 + i, 30)])
    for conn in list(d1.conntable.entries())[:2]:
        d1.process([udp_reply(inet_ntoa(conn.daddr), inet_ntoa(conn.caddr), conn.cport, 7)])
    d0.process([syn("198.18.0.30", 3000)])
    own0 = counters(d0)
    want = stats_rows(adm(d0, "-L", "-n", "--stats", "--exact"))
    other = stats_rows(adm(d1, "-L", "-n", "--stats", "--exact"))
    for key in want:
        want[key] = [a + b for a, b in zip(want[key], other[key], strict=True)]

    want_total = [a + b for a, b in zip(d0.total.as_tuple(), d1.total.as_tuple(),
                                         strict=True)]
    w1.publish()
    w0.publish()
    w0.merged(+1)
    try:
        got = stats_rows(adm(d0, "-L", "-n", "--stats", "--exact"))
        conns = adm(d0, "-L", "-n")
        total = list(d0.total.as_tuple())  # what `pyvs status` and the estimator read
    finally:
        w0.merged(-1)
    assert got == want
    assert total == want_total
    udp_svc = want[f"UDP {VIP}:53"]
    assert udp_svc[:3] == [8, 8, 2]  # conns, inpkts, outpkts over both workers
    assert udp_svc[3] == 3 * (28 + 10) + 5 * (28 + 30)
    # ActiveConn / InActConn: worker 0's SYN (SYN_RECV is active), the 8 UDP entries
    # (never active), spread by two independent rr cursors over the list RS2, RS1
    cols = {line.split()[1]: (int(line.split()[4]), int(line.split()[5]))
            for line in conns.splitlines()[3:] if line.strip().startswith("->")}
    assert cols == {f"{RS1}:80": (1, 0), f"{RS2}:80": (0, 0),
                    f"{RS1}:53": (0, 3), f"{RS2}:53": (0, 5)}
    assert counters(d0) == own0  # the merge is taken off exactly


def test_schedulers_see_the_other_workers_connections():
    """wlc in worker 0 with no connections of its own would pick RS1 (the head, a tie);
    worker 1 holds four half-open connections on RS1, so worker 0 picks RS2 -- and its
    own counters are unchanged after the decision."""
    (d0, w0), (d1, w1) = workers()
    for d in (d0, d1):  # the same requests in the same order, as process 0 broadcasts
        adm(d, "-e", "-t", f"{VIP}:80", "-r", f"{RS2}:80", "-m", "-w", "0")
    for i in range(4):
        d1.process([syn(f"198.18.0.{40 + i}", 4000 + i)])
    for d in (d0, d1):
        adm(d, "-e", "-t", f"{VIP}:80", "-r", f"{RS2}:80", "-m", "-w", "1")
    assert {c.daddr for c in d1.conntable.entries()} == {bytes((198, 18, 2, 11))}

    alone, _ = workers(1)[0]
    alone.process([syn("198.18.0.50", 5000)])
    assert next(alone.conntable.entries()).daddr == bytes((198, 18, 2, 11))  # local view

    w1.publish()
    d0.process([syn("198.18.0.50", 5000)])
    (conn,) = list(d0.conntable.entries())
    assert conn.daddr == bytes((198, 18, 2, 12))
    # the other worker's load was added for the decision only
    own = {d.addr: (d.activeconns, d.inactconns)
           for d in d0.services.find(2, 6, bytes((198, 18, 1, 1)), 80, 0).destinations}
    assert own == {bytes((198, 18, 2, 11)): (0, 0), bytes((198, 18, 2, 12)): (1, 0)}


def test_which_requests_are_listings():
    """A listing (merged) versus a change (applied, then sent to every worker); -Z with
    -L zeroes, so it is a change."""
    for argv in (["-L"], ["-l"], ["-Ln"], ["-L", "-n", "--stats"], ["-lnc"], ["--list"],
                 ["-S"], ["--save"], ["-Sn"]):
        assert _is_listing(argv), argv
    for argv in (["-A", "-t", f"{VIP}:80"], ["-a", "-t", f"{VIP}:80", "-r", f"{RS1}:80"],
                 ["-E", "-t", f"{VIP}:80", "-s", "lblc"], ["-C"], ["-Z"],
                 ["-L", "-Z"], ["--zero"], ["--set", "1", "2", "3"]):
        assert not _is_listing(argv), argv
