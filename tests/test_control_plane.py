"""Control-plane semantics: rate estimator, destination trash, sysctls, `pyvs lab`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pyvs.engine.clock import VirtualClock
from pyvs.engine.director import Director
from pyvs.engine.model import AF_INET, FWD_MASQ, DestSpec, ServiceSpec, Stats, pack_addr
from pyvs.engine.stats import Estimator
from pyvs.engine.sysctl import Sysctl, SysctlError


def test_rate_estimator_follows_the_kernels_ewma():
    """ip_vs_est.c: 100 new connections/s, sampled every 2 s, EWMA 1/4 -> 25, 44, 58 ..."""
    est, stats = Estimator(), Stats()
    est.track(stats)
    seen = []
    for _ in range(12):
        stats.conns += 200
        est.sample([stats])
        seen.append(est.rates(stats)[0])
    assert seen == [25, 44, 58, 68, 76, 82, 87, 90, 92, 94, 96, 97]
    for _ in range(60):  # converge on a steady 100 conns/s
        stats.conns += 200
        est.sample([stats])
    assert est.rates(stats)[0] == 100
    decay = []
    for _ in range(10):
        est.sample([stats])
        decay.append(est.rates(stats)[0])
    assert decay == [75, 56, 42, 32, 24, 18, 13, 10, 8, 6]


def test_rate_estimator_bytes_per_second():
    est, stats = Estimator(), Stats()
    est.track(stats)
    seen = []
    for _ in range(6):
        stats.inbytes += 2000  # 1000 B/s
        est.sample([stats])
        seen.append(est.rates(stats)[3])
    assert seen == [250, 437, 578, 684, 763, 822]


def test_deleted_destination_is_resurrected_from_the_trash_with_its_counters():
    """ip_vs_add_dest(): a dest still in the trash comes back as the same object, at the head."""
    d = Director(clock=VirtualClock())
    key = d.services.add_service(ServiceSpec(AF_INET, 6, pack_addr("198.18.1.1"), 80,
                                             scheduler="rr")).key
    a = d.services.add_dest(key, DestSpec(pack_addr("198.18.2.11"), 80, fwd=FWD_MASQ))
    d.services.add_dest(key, DestSpec(pack_addr("198.18.2.12"), 80, fwd=FWD_MASQ))
    a.stats.conns = 7
    d.services.del_dest(key, AF_INET, pack_addr("198.18.2.11"), 80, d.now())
    assert not a.available and a in d.services.trash
    again = d.services.add_dest(key, DestSpec(pack_addr("198.18.2.11"), 80, fwd=FWD_MASQ,
                                              weight=5))
    assert again is a and again.stats.conns == 7 and again.weight == 5
    assert d.services.get(key).destinations[0] is a


def test_trash_frees_unused_destinations_after_the_trash_period():
    clock = VirtualClock()
    d = Director(clock=clock)
    key = d.services.add_service(ServiceSpec(AF_INET, 6, pack_addr("198.18.1.1"), 80)).key
    d.services.add_dest(key, DestSpec(pack_addr("198.18.2.11"), 80))
    d.services.del_dest(key, AF_INET, pack_addr("198.18.2.11"), 80, clock.now())
    clock.advance(119)
    d.tick()
    assert len(d.services.trash) == 1
    clock.advance(2)
    d.tick()
    assert d.services.trash == []


def test_sysctl_defaults_ranges_and_errors():
    s = Sysctl()
    assert s.get("net.ipv4.vs.conn_reuse_mode") == 1
    assert s.get("expire_nodest_conn") == 0 and s.get("pmtu_disc") == 1
    assert s.format("sync_threshold") == "net.ipv4.vs.sync_threshold = 3\t50"
    s.set("net.ipv4.vs.sloppy_tcp", "1")
    assert s.sloppy_tcp == 1
    for bad in (("sloppy_tcp", "2"), ("conn_reuse_mode", "x"), ("no_such_thing", "1"),
                ("sync_threshold", "60 50")):
        with pytest.raises(SysctlError):
            s.set(*bad)
    assert s.sloppy_tcp == 1


def test_set_timeouts_zero_keeps_a_value():
    d = Director(clock=VirtualClock())
    assert d.get_timeouts() == (900, 120, 300)
    d.set_timeouts(0, 60, 0)
    assert d.get_timeouts() == (900, 60, 300)


@pytest.mark.lab
def test_pyvs_lab_up_prints_json_and_lab_down_removes_it(lab_env):
    name = "pyvs-cli-lab"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    cli = [sys.executable, "-m", "pyvs.engine.cli", "lab"]
    try:
        up = subprocess.run([*cli, "up", "--mode", "nat", "--real-servers", "2", "--clients",
                             "2", "--name", name], capture_output=True, text=True, env=env,
                            timeout=60, check=True)
        info = json.loads(up.stdout)
        assert info["name"] == name and info["vip"] == "198.18.1.1"
        assert [rs["addr"] for rs in info["real_servers"]] == ["198.18.2.11", "198.18.2.12"]
        answer = subprocess.run(["ip", "netns", "exec", info["namespaces"]["client"], "curl",
                                 "-s", "--max-time", "5", "http://198.18.2.12/"],
                                capture_output=True, text=True, timeout=10)
        assert answer.stdout.strip() == "rs2"
    finally:
        subprocess.run([*cli, "down", name], env=env, timeout=60, check=True)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert name not in listed


def test_the_daemon_tick_keeps_the_connection_table_out_of_gc_scans():
    """A full cyclic-GC pass over a million entries stalled the director for 60-150 ms;
    after every tick the objects alive are frozen out of the collector's scans (entries
    are still freed by reference counting when they expire)."""
    import gc

    from test_fastpath import make_director
    from test_port_small_batch import _l4_packet

    from pyvs.engine.conntable import Conn
    from pyvs.engine.daemon import keep_long_lived_out_of_gc

    d = make_director()
    before = gc.get_freeze_count()
    try:
        pkts = []
        for n in range(2000):
            pkt = _l4_packet(False, 17, b"x")
            pkt[20:22] = (30000 + n).to_bytes(2, "big")  # one UDP flow per source port
            pkts.append(pkt)
        d.process(pkts)
        assert len(d.conntable) == 2000

        mine = {id(c) for c in d.conntable.entries()}

        def scanned() -> int:  # this table's entries in the generations a collection walks
            return sum(1 for o in gc.get_objects() if type(o) is Conn and id(o) in mine)

        assert scanned() == 2000
        keep_long_lived_out_of_gc()
        assert scanned() == 0
        assert gc.get_freeze_count() - before >= 2000
        d.clock.advance(400)  # past the UDP timeout: every entry expires, frozen or not
        d.tick()
        assert len(d.conntable) == 0
    finally:
        gc.unfreeze()
