"""Workloads of pyvs sim: distributions, arrival processes, Zipf clients, ports, flow
files, pcap replay and the timeline file format, with clear errors on bad input."""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyvs.engine.sim import distributions, events, flowfile, pcap
from pyvs.engine.sim.cluster import Cluster, ClusterError
from pyvs.engine.sim.workload import (
    PORT_HIGH,
    PORT_LOW,
    ServiceDef,
    Synthetic,
    WorkloadError,
    client_address,
)


@pytest.mark.parametrize("text,mean", [("exp:mean=0.5", 0.5),
                                       ("lognormal:mean=2,sigma=1", 2.0),
                                       ("pareto:alpha=3,min=1", 1.5),
                                       ("uniform:low=1,high=3", 2.0), ("4", 4.0)])
def test_distributions_have_the_mean_they_name(text, mean):
    d = distributions.parse(text)
    x = d.sample(np.random.default_rng(1), 400_000)
    assert d.mean == pytest.approx(mean)
    assert x.mean() == pytest.approx(mean, rel=0.03)
    assert (x >= 0).all()


@pytest.mark.parametrize("text,words", [("gauss:mean=1", "unknown distribution"),
                                        ("exp:mean=x", "not a number"),
                                        ("lognormal:mean=1", "missing sigma"),
                                        ("exp:mean=-1", "out of range"),
                                        ("exp:avg=1", "unknown avg")])
def test_bad_distributions_are_refused_clearly(text, words):
    with pytest.raises(distributions.DistributionError, match=words):
        distributions.parse(text)


def test_pareto_is_heavy_tailed():
    x = distributions.parse("pareto:alpha=1.2,min=1").sample(np.random.default_rng(2), 100_000)
    top = np.sort(x)[-1000:].sum() / x.sum()
    assert top > 0.2  # the largest 1 % of jobs carry over a fifth of the work


def counts_per_second(start: np.ndarray) -> np.ndarray:
    return np.bincount(start.astype(int))[:-1]


def test_poisson_arrivals_have_the_rate_and_poisson_dispersion():
    wl = Synthetic(flows=100_000, rate=2000).generate(3)
    c = counts_per_second(wl.start * 10)  # per 100 ms
    assert wl.span == pytest.approx(50, rel=0.02)
    assert c.var() / c.mean() == pytest.approx(1.0, abs=0.15)


def test_onoff_arrivals_are_bursty_with_the_same_mean_rate():
    wl = Synthetic(flows=100_000, rate=2000, arrivals="onoff", on=0.1, off=0.1).generate(3)
    c = counts_per_second(wl.start * 100)  # per 10 ms
    assert len(wl) / wl.span == pytest.approx(2000, rel=0.1)
    assert c.var() / c.mean() > 10  # silent and busy periods (Poisson: 1)
    assert (c == 0).mean() > 0.3


def test_diurnal_arrivals_follow_the_sine():
    wl = Synthetic(flows=200_000, rate=1000, arrivals="diurnal", period=100,
                   amplitude=0.8).generate(4)
    phase = (wl.start % 100) / 100
    peak = ((phase > 0.2) & (phase < 0.3)).sum()  # around sin = 1
    trough = ((phase > 0.7) & (phase < 0.8)).sum()  # around sin = -1
    assert peak / trough == pytest.approx(1.8 / 0.2, rel=0.25)


def test_zipf_clients_few_make_most_flows_and_hot_ones_are_spread():
    wl = Synthetic(flows=100_000, clients=1000, zipf=1.2).generate(5)
    _, counts = np.unique(wl.caddr, return_counts=True)
    counts = np.sort(counts)[::-1]
    assert counts[:10].sum() / len(wl) > 0.4
    hottest = wl.caddr[np.argmax(np.bincount(wl.caddr - wl.caddr.min()))]
    assert hottest != client_address(0)  # rank 1 is not simply the first address
    even = Synthetic(flows=100_000, clients=1000, zipf=0.0).generate(5)
    assert np.unique(even.caddr, return_counts=True)[1].max() < 160


def test_addresses_ports_and_services():
    wl = Synthetic(flows=20_000, clients=70_000, zipf=0.0,
                   services=[ServiceDef(port=80), ServiceDef(port=443, share=3)]).generate(6)
    nets = [ipaddress.ip_network("198.18.0.0/15")]
    assert all(ipaddress.IPv4Address(int(a)) in nets[0] for a in wl.caddr[:2000])
    assert ((wl.sport >= PORT_LOW) & (wl.sport <= PORT_HIGH)).all()
    share = (wl.service == 1).mean()
    assert share == pytest.approx(0.75, abs=0.02)
    # one client's flows take consecutive ports (mod the range)
    hot = Synthetic(flows=5000, clients=3, zipf=0).generate(1)
    ports = hot.sport[hot.caddr == hot.caddr[0]]
    steps = (np.diff(ports) - 1) % (PORT_HIGH - PORT_LOW + 1)
    assert (steps == 0).all()


@pytest.mark.parametrize("kw,words", [({"flows": 0}, "flows"), ({"rate": 0}, "rate"),
                                      ({"arrivals": "weekly"}, "arrivals"),
                                      ({"clients": 200_000}, "clients"),
                                      ({"amplitude": 1.5}, "amplitude")])
def test_bad_synthetic_options_are_refused(kw, words):
    with pytest.raises(WorkloadError, match=words):
        Synthetic(**kw)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), zipf=st.floats(0, 2))
def test_flow_file_round_trip(tmp_path_factory, seed, zipf):
    wl = Synthetic(flows=200, clients=50, zipf=zipf,
                   services=[ServiceDef(), ServiceDef(port=53, proto="udp")]).generate(seed)
    folder = tmp_path_factory.mktemp("flows")
    for name in ("f.csv", "f.json"):
        flowfile.save(wl, folder / name)
        back = flowfile.load(folder / name)
        np.testing.assert_array_equal(back.start, wl.start)
        np.testing.assert_array_equal(back.duration, wl.duration)
        np.testing.assert_array_equal(back.caddr, wl.caddr)
        np.testing.assert_array_equal(back.sport, wl.sport)
        np.testing.assert_array_equal(back.resp_bytes, wl.resp_bytes)
        labels = [back.services[k].label for k in back.service]
        assert labels == [wl.services[k].label for k in wl.service]


def test_flow_file_errors_name_the_flow(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("start,duration,client,proto,vip,vport\n0,1,198.19.0.1,tcp,198.18.1.1,80\n"
                   "1,1,not-an-ip,tcp,198.18.1.1,80\n")
    with pytest.raises(WorkloadError, match="flow 2"):
        flowfile.load(bad)
    missing = tmp_path / "m.csv"
    missing.write_text("start,client\n0,198.19.0.1\n")
    with pytest.raises(WorkloadError, match="missing columns"):
        flowfile.load(missing)
    ok = tmp_path / "noports.csv"  # ports left out: given per client
    ok.write_text("start,duration,client,proto,vip,vport\n0,1,198.19.0.1,tcp,198.18.1.1,80\n"
                  "0.5,1,198.19.0.1,udp,198.18.1.1,53\n")
    wl = flowfile.load(ok)
    assert len(wl.services) == 2 and wl.sport[1] == wl.sport[0] + 1


def write_capture(path):
    from scapy.all import IP, TCP, UDP, Ether, Raw, wrpcap

    c1, c2, vip, dns = "198.19.0.1", "198.19.0.2", "198.18.1.1", "198.18.1.2"
    pkts = []

    def add(t, p):
        p.time = t
        pkts.append(p)

    e = Ether()
    add(1.0, e / IP(src=c2, dst=vip) / TCP(sport=999, dport=80, flags="A"))  # no SYN seen
    add(1.0, e / IP(src=c1, dst=vip) / TCP(sport=40000, dport=80, flags="S"))
    add(1.1, e / IP(src=vip, dst=c1) / TCP(sport=80, dport=40000, flags="SA"))
    add(1.2, e / IP(src=c1, dst=vip) / TCP(sport=40000, dport=80, flags="PA") / Raw(b"x" * 100))
    add(1.5, e / IP(src=vip, dst=c1) / TCP(sport=80, dport=40000, flags="PA") / Raw(b"y" * 5000))
    add(1.6, e / IP(src=vip, dst=c1) / TCP(sport=80, dport=40000, flags="FA"))
    add(1.7, e / IP(src=c1, dst=vip) / TCP(sport=40000, dport=80, flags="FA"))
    add(2.0, e / IP(src=c1, dst=vip) / TCP(sport=40000, dport=80, flags="S"))  # port reused
    add(2.5, e / IP(src=c1, dst=vip) / TCP(sport=40000, dport=80, flags="R"))
    add(3.0, e / IP(src=c2, dst=dns) / UDP(sport=5353, dport=53) / Raw(b"q" * 30))
    add(3.1, e / IP(src=dns, dst=c2) / UDP(sport=53, dport=5353) / Raw(b"a" * 90))
    add(60.0, e / IP(src=c2, dst=dns) / UDP(sport=5353, dport=53) / Raw(b"q" * 30))  # idle > 30
    add(61.0, Ether() / Raw(b"\x00" * 40))  # not IP
    wrpcap(str(path), pkts)


def test_pcap_replay_reconstructs_flows(tmp_path):
    cap = tmp_path / "c.pcap"
    write_capture(cap)
    wl = pcap.load(cap)
    assert len(wl) == 4
    labels = [wl.services[k].label for k in wl.service]
    assert labels == ["TCP 198.18.1.1:80"] * 2 + ["UDP 198.18.1.2:53"] * 2
    assert wl.start.tolist() == pytest.approx([0.0, 1.0, 2.0, 59.0])
    assert wl.duration.tolist() == pytest.approx([0.7, 0.5, 0.1, 0.0])
    assert wl.req_bytes.tolist() == [100, 0, 30, 30]
    assert wl.resp_bytes.tolist() == [5000, 0, 90, 0]
    assert wl.sport.tolist() == [40000, 40000, 5353, 5353]
    skipped = wl.description["skipped_packets"]
    assert skipped["tcp-without-syn"] == 1 and skipped["not-ipv4"] == 1


def test_pcap_errors(tmp_path):
    bad = tmp_path / "x.pcap"
    bad.write_bytes(b"not a capture at all")
    with pytest.raises(WorkloadError, match="cannot read capture"):
        pcap.load(bad)
    with pytest.raises(WorkloadError, match="no such capture"):
        pcap.load(tmp_path / "missing.pcap")


def test_events_file_text_and_json(tmp_path):
    text = tmp_path / "ev.txt"
    text.write_text("# a timeline\n10 fail rs3\n5 weight rs1 3\n"
                    "20 add rs11 weight=2 capacity=4\n30 quiesce rs2  # drain\n")
    got = events.load(text)
    assert [e.label for e in got] == ["t=5 weight rs1 3", "t=10 fail rs3", "t=20 add rs11",
                                      "t=30 quiesce rs2"]
    assert got[2].fields == {"weight": 2, "capacity": 4}
    js = tmp_path / "ev.json"
    js.write_text('[{"time": 3, "action": "remove", "server": "rs4"},'
                  ' {"time": 1, "action": "weight", "server": "rs1", "weight": 0}]')
    assert [e.label for e in events.load(js)] == ["t=1 weight rs1 0", "t=3 remove rs4"]


@pytest.mark.parametrize("line,words", [("10 explode rs1", "unknown action"),
                                        ("x fail rs1", "not a number"),
                                        ("10 weight rs1", "needs a weight"),
                                        ("10 fail", "expected TIME ACTION SERVER")])
def test_bad_events_name_the_line(tmp_path, line, words):
    f = tmp_path / "ev.txt"
    f.write_text("1 fail rs1\n" + line + "\n")
    with pytest.raises(events.EventError, match=f"ev.txt:2: .*{words}"):
        events.load(f)


def test_cluster_file_and_errors(tmp_path):
    f = tmp_path / "c.json"
    f.write_text('{"fwd": "dr", "servers": [{"weight": 3, "capacity": 4, "speed": 2},'
                 ' {"name": "big", "addr": "198.18.2.50", "service": "exp:mean=0.01"}]}')
    c = Cluster.from_json(f)
    assert c.fwd == "dr" and [s.name for s in c.servers] == ["rs1", "big"]
    assert c.servers[0].addr == "198.18.2.11" and c.servers[1].service.mean == 0.01
    f.write_text('{"servers": [{"wieght": 3}]}')
    with pytest.raises(ClusterError, match="unknown fields"):
        Cluster.from_json(f)
    with pytest.raises(ClusterError, match="unique"):
        Cluster([Cluster.uniform(1).servers[0]] * 2)


def test_pcap_replay_builds_no_scapy_packet_objects(tmp_path, monkeypatch):
    """A big capture is read as raw records and decoded by engine/packet.py."""
    from scapy.packet import Packet

    cap = tmp_path / "c.pcap"
    write_capture(cap)

    def refuse(*args, **kwargs):
        raise AssertionError("a scapy packet object was built")

    monkeypatch.setattr(Packet, "__init__", refuse)
    assert len(pcap.load(cap)) == 4
