"""`pyvs run --metrics` without a network: the collector over a director that handled
known synthetic traffic, read back with prometheus-client's parser and compared with
what `pyvsadm -Ln --stats / --rate` lists for the same director; node_exporter's label
values; health states and transitions; the option's refusals."""

from __future__ import annotations

import types

import pytest
from metricshelp import backend_rows, metric_rows, parse_listing, samples
from prometheus_client import generate_latest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from pyvs.engine import cli, ipvsadm
from pyvs.engine.clock import VirtualClock
from pyvs.engine.director import Director
from pyvs.engine.metrics import MetricsExporter, go_ip, parse_listen

VIP, VIP2, VIP6 = "198.18.1.1", "198.18.1.2", "2001:db8:1::1"
RS = ["198.18.2.11", "198.18.2.12"]
RS6 = "2001:db8:2::11"
FWM_RS = "198.18.2.13"


def adm(d: Director, *argv: str) -> str:
    rc, out, err = ipvsadm.run(list(argv), "", d)
    assert rc == 0, err
    return out


def director() -> Director:
    d = Director(clock=VirtualClock(), seed=1)
    adm(d, "-A", "-t", f"{VIP}:80", "-s", "rr")
    adm(d, "-a", "-t", f"{VIP}:80", "-r", f"{RS[0]}:80", "-m", "-w", "3")
    adm(d, "-a", "-t", f"{VIP}:80", "-r", f"{RS[1]}:8080", "-m", "-w", "1")
    adm(d, "-A", "-u", f"[{VIP6}]:53", "-s", "wlc")
    adm(d, "-a", "-u", f"[{VIP6}]:53", "-r", f"[{RS6}]:53", "-m")
    adm(d, "-A", "-f", "7", "-s", "rr")
    adm(d, "-a", "-f", "7", "-r", f"{FWM_RS}:80", "-m", "-w", "2")
    adm(d, "-A", "-t", f"{VIP2}:80", "-s", "rr")  # no real server: no-destination
    return d


def tcp_flows(d: Director, first: int, count: int, established: bool) -> None:
    """``count`` NAT connections from 198.18.0.x: SYN, the real server's SYN-ACK, ACK
    and a 100-byte request (established), or the SYN alone (left in SYN_RECV)."""
    for i in range(first, first + count):
        client, port = f"198.18.0.{10 + i}", 40000 + i
        syn = bytearray(bytes(IP(src=client, dst=VIP) / TCP(sport=port, dport=80, flags="S")))
        d.process([syn])
        if not established:
            continue
        rs, rport = IP(bytes(syn)).dst, IP(bytes(syn))[TCP].dport
        d.process([bytearray(bytes(IP(src=rs, dst=client)
                                   / TCP(sport=rport, dport=port, flags="SA")))])
        d.process([bytearray(bytes(IP(src=client, dst=VIP) / TCP(sport=port, dport=80,
                                                                 flags="A")))])
        d.process([bytearray(bytes(IP(src=client, dst=VIP) / TCP(sport=port, dport=80,
                                                                 flags="PA") / Raw(b"x" * 100)))])


def other_traffic(d: Director) -> None:
    for i in range(3):  # UDP over IPv6, each answered
        q = bytearray(bytes(IPv6(src=f"2001:db8::{10 + i}", dst=VIP6)
                            / UDP(sport=5000 + i, dport=53) / Raw(b"q" * 20)))
        d.process([q])
        d.process([bytearray(bytes(IPv6(src=RS6, dst=f"2001:db8::{10 + i}")
                                   / UDP(sport=53, dport=5000 + i) / Raw(b"a" * 60)))])
    for i in range(4):  # fwmark 7 (the mark NFQUEUE hands over)
        pkt = IP(src=f"198.18.0.{50 + i}", dst="198.18.1.7") / TCP(sport=41000 + i, dport=443,
                                                                  flags="S")
        d.process([bytearray(bytes(pkt))], marks=[7])
    for i in range(2):  # a service with no real server
        d.process([bytearray(bytes(IP(src="198.18.0.99", dst=VIP2)
                                   / TCP(sport=42000 + i, dport=80, flags="S")))])


def scrape(d: Director, health=None) -> dict:
    exporter = MetricsExporter("127.0.0.1", 9)  # never started: no socket
    exporter.publish(types.SimpleNamespace(director=d, ports=[], health=health))
    return samples(generate_latest(exporter.registry).decode())


@pytest.fixture(scope="module")
def loaded() -> Director:
    d = director()
    tcp_flows(d, 0, 6, established=True)
    tcp_flows(d, 6, 3, established=False)
    other_traffic(d)
    return d


def test_counters_equal_the_stats_listing(loaded):
    listing = parse_listing(adm(loaded, "-L", "-n", "--stats", "--exact"), columns=5)
    scraped = scrape(loaded)
    services = metric_rows(scraped, "pyvs_service", "_total", dests=False)
    dests = metric_rows(scraped, "pyvs_backend", "_total", dests=True)
    assert {**services, **dests} == listing
    # the traffic did reach every kind of service, both directions
    assert listing[("TCP 198.18.1.1:80", None)][:3] == [9, 9 + 2 * 6, 6]  # + ACK, request
    assert listing[("UDP [2001:db8:1::1]:53", None)][:3] == [3, 3, 3]
    assert listing[("FWM 7", "198.18.2.13:80")][0] == 4


def test_node_exporter_families_equal_the_plain_listing_and_the_totals(loaded):
    scraped = scrape(loaded)
    plain = parse_listing(adm(loaded, "-L", "-n"), columns=3)
    assert backend_rows(scraped) == plain
    assert plain[("TCP 198.18.1.1:80", "198.18.2.11:80")][0] == 3
    def active_inactive(service):
        rows = [v for (svc, _), v in plain.items() if svc == service]
        return [sum(v[1] for v in rows), sum(v[2] for v in rows)]

    assert active_inactive("TCP 198.18.1.1:80") == [9, 0]  # SYN_RECV counts as active
    assert active_inactive("UDP [2001:db8:1::1]:53") == [0, 3]
    totals = {name: scraped[f"node_ipvs_{name}_total"][0][1] for name in (
        "connections", "incoming_packets", "outgoing_packets", "incoming_bytes",
        "outgoing_bytes")}
    assert tuple(totals.values()) == loaded.total.as_tuple()
    listing = parse_listing(adm(loaded, "-L", "-n", "--stats", "--exact"), columns=5)
    per_service = [v for (svc, dest), v in listing.items() if dest is None]
    assert list(totals.values()) == [sum(col) for col in zip(*per_service, strict=True)]


def test_label_values_are_node_exporters(loaded):
    labels = {tuple(sorted(lab.items())) for lab, _ in scrape(loaded)["node_ipvs_backend_weight"]}
    assert tuple(sorted({"local_address": "", "local_port": "0", "proto": "FWM",
                         "local_mark": "00000007", "remote_address": FWM_RS,
                         "remote_port": "80"}.items())) in labels
    assert tuple(sorted({"local_address": VIP6, "local_port": "53", "proto": "UDP",
                         "local_mark": "", "remote_address": RS6,
                         "remote_port": "53"}.items())) in labels
    assert tuple(sorted({"local_address": VIP, "local_port": "80", "proto": "TCP",
                         "local_mark": "", "remote_address": RS[1],
                         "remote_port": "8080"}.items())) in labels
    # Go's net.IP.String(): zero runs compressed, IPv4-mapped written dotted
    assert go_ip(bytes.fromhex("20010db8000000000000000000000001")) == "2001:db8::1"
    assert go_ip(bytes.fromhex("00000000000000000000ffffc6120101")) == "198.18.1.1"
    assert go_ip(bytes.fromhex("20010db8000100000001000000000001")) == "2001:db8:1:0:1::1"


def test_rates_equal_the_rate_listing():
    d = director()
    clock = d.clock
    for second in range(12):  # the estimator samples every 2 s (ip_vs_est.c)
        tcp_flows(d, second * 5, 5, established=True)
        clock.advance(1.0)
        d.tick()
    listing = parse_listing(adm(d, "-L", "-n", "--rate", "--exact"), columns=5)
    scraped = scrape(d)
    rates = {**metric_rows(scraped, "pyvs_service", "_per_second", dests=False),
             **metric_rows(scraped, "pyvs_backend", "_per_second", dests=True)}
    assert rates == listing
    assert 4 <= listing[("TCP 198.18.1.1:80", None)][0] <= 5  # about 5 conn/s


def test_scheduler_decisions_drops_and_table(loaded):
    scraped = scrape(loaded)
    decisions = {(lab["proto"], lab["local_address"], lab["local_mark"], lab["outcome"]): v
                 for lab, v in scraped["pyvs_scheduler_decisions_total"]}
    assert decisions[("TCP", VIP, "", "scheduled")] == 9
    assert decisions[("FWM", "", "00000007", "scheduled")] == 4
    assert decisions[("TCP", VIP2, "", "no-destination")] == 2
    assert decisions[("TCP", VIP2, "", "scheduled")] == 0
    drops = {lab["reason"]: v for lab, v in scraped["pyvs_drops_total"]}
    assert drops == dict(loaded.drops) and drops["no-destination"] == 2
    assert scraped["pyvs_connection_table_entries"][0][1] == len(loaded.conntable) == 16
    assert scraped["pyvs_connection_table_limit"][0][1] == loaded.defense.limit


def test_port_counters_come_from_each_ports_status():
    d = director()

    class Port:
        def __init__(self, name, status):
            self.name, self._status = name, status

        def status(self):
            return self._status

    ports = [Port("nfqueue", {"packets": 120, "batches": 7, "overruns": 2,
                              "rewritten-packets": "verdict"}),
             Port("xdp", {"frames": 900, "tx-sent": 880, "tx-full": 3, "fast": 850,
                          "sockets": {"lb0": {"rx_dropped": 4, "rx_ring_full": 1,
                                              "rx_fill_ring_empty_descs": 0},
                                      "lb1": {"rx_dropped": 5, "rx_ring_full": 0,
                                              "rx_fill_ring_empty_descs": 6}}})]
    exporter = MetricsExporter("127.0.0.1", 9)
    exporter.publish(types.SimpleNamespace(director=d, ports=ports, health=None))
    scraped = samples(generate_latest(exporter.registry).decode())
    assert {lab["port"]: v for lab, v in scraped["pyvs_port_received_packets_total"]} == {
        "nfqueue": 120, "xdp": 900}
    assert {lab["port"]: v for lab, v in scraped["pyvs_port_transmitted_packets_total"]} == {
        "xdp": 880}
    assert {(lab["port"], lab["reason"]): v
            for lab, v in scraped["pyvs_port_overload_packets_total"]} == {
        ("nfqueue", "overruns"): 2, ("xdp", "tx-full"): 3, ("xdp", "rx-dropped"): 9,
        ("xdp", "rx-ring-full"): 1, ("xdp", "rx-fill-ring-empty-descs"): 6}


def test_health_states_and_transitions(tmp_path):
    from test_health_supervisor import supervisor, transition_request

    sup, d = supervisor(tmp_path)
    before = {(lab["virtual_server"], lab["real_server"]): v
              for lab, v in scrape(d, sup)["pyvs_health_real_server_up"]}
    assert before == {("[198.18.1.1]:tcp:80", "198.18.2.11:80"): 1,
                      ("[198.18.1.1]:tcp:80", "198.18.2.12:80"): 1}
    assert sup.handle(transition_request(sup, generation=0))["rc"] == 0
    scraped = scrape(d, sup)
    after = {lab["real_server"]: v for lab, v in scraped["pyvs_health_real_server_up"]}
    assert after == {"198.18.2.11:80": 0, "198.18.2.12:80": 1}
    moves = {(lab["real_server"], lab["state"]): v
             for lab, v in scraped["pyvs_health_transitions_total"]}
    assert moves == {("198.18.2.11:80", "down"): 1}
    # the table follows: the downed server left the IPVS families too
    remotes = {lab["remote_address"] for lab, _ in scraped["node_ipvs_backend_weight"]}
    assert remotes == {"198.18.2.12"}


def test_a_snapshot_is_plain_data_taken_on_publish(loaded):
    """What a scrape reads was copied on publish: later traffic shows up only after the
    next publish (the director's thread never shares live objects with the server's)."""
    d = director()
    exporter = MetricsExporter("127.0.0.1", 9)
    owner = types.SimpleNamespace(director=d, ports=[], health=None)
    exporter.publish(owner)
    tcp_flows(d, 0, 2, established=True)
    stale = samples(generate_latest(exporter.registry).decode())
    assert stale["node_ipvs_connections_total"][0][1] == 0
    exporter.publish(owner)
    fresh = samples(generate_latest(exporter.registry).decode())
    assert fresh["node_ipvs_connections_total"][0][1] == 2


@pytest.mark.parametrize(("text", "expected"), [
    ("9100", ("127.0.0.1", 9100)), (":9100", ("127.0.0.1", 9100)),
    ("0.0.0.0:9100", ("0.0.0.0", 9100)), ("198.18.1.1:1", ("198.18.1.1", 1)),
    ("[::1]:9100", ("::1", 9100)), ("[2001:db8::1]:65535", ("2001:db8::1", 65535)),
])
def test_listen_values(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize(("text", "fragment"), [
    ("abc", "port 'abc' is not a number"), ("", "port '' is not a number"),
    ("0", "port must be in 1..65535, not 0"), ("127.0.0.1:70000", "not 70000"),
    ("localhost:9100", "'localhost' is not an IP address"),
    ("::1:9100", "write an IPv6 address in brackets"),
    ("300.1.1.1:9100", "'300.1.1.1' is not an IP address"),
])
def test_a_bad_metrics_value_is_one_clear_line(text, fragment, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "--metrics", text])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"pyvs run: error: --metrics {text!r}: ")
    assert fragment in err
