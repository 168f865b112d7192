"""Direct routing and tunnelling end to end: real namespaces, `pyvs run`, `pyvsadm`, curl.

One DrLab and one TunLab (3 real servers, 3 client addresses each) with one director
each serve the module; every test starts from `pyvsadm -C`.  Adding rs1, rs2, rs3
makes the kernel's list rs3, rs2, rs1 (newest first), which rr then follows.

Replies must not pass the director: the director's interface counters
(``ip -s link`` in its namespace) are read around each transfer.
"""

from __future__ import annotations

import time

import pytest
from waiting import wait_for

from pyvs.engine.lab import DrLab, TunLab, servers
from pyvs.engine.runner import DirectorProcess

pytestmark = pytest.mark.lab

SIZE = 50_000_000
LABS = {"dr": (DrLab, "-g"), "tun": (TunLab, "-i")}


def _build(mode):
    cls, _ = LABS[mode]
    lab = cls(real_servers=3, clients=3, start_servers=True)
    proc = None
    try:
        lab.up()
        proc = DirectorProcess(lab.ns("director"), log_path=lab.state_dir / "pyvs.log")
        proc.start()
        yield lab, proc
    finally:
        if proc is not None:
            proc.stop()
        lab.down()


@pytest.fixture(scope="module")
def dr(lab_env):
    yield from _build("dr")


@pytest.fixture(scope="module")
def tun(lab_env):
    yield from _build("tun")


@pytest.fixture(params=["dr", "tun"])
def env(request):
    lab, proc = request.getfixturevalue(request.param)
    proc.adm("-C")
    yield request.param, lab, proc
    proc.adm("-C")


def add_service(proc, lab, method, *opts, vip=None, six=False):
    vip = vip or (lab.VIP6 if six else lab.VIP)
    v = f"[{vip}]:80" if six else f"{vip}:80"
    proc.adm("-A", "-t", v, "-s", "rr", *opts)
    for rs in lab.real_server_list():
        r = f"[{rs['addr6']}]:80" if six else f"{rs['addr']}:80"
        proc.adm("-a", "-t", v, "-r", r, method)


def director_bytes(lab) -> int:
    stats = lab.director_stats()
    return sum(s["rx_bytes"] + s["tx_bytes"] for name, s in stats.items() if name != "lo")


def test_rr_balances_clients_in_kernel_order(env):
    mode, lab, proc = env
    add_service(proc, lab, LABS[mode][1])
    clients = lab.client_addrs
    answers = [lab.curl(lab.url(), client_addr=clients[n % 3]).strip() for n in range(12)]
    assert answers[:3] == ["rs3", "rs2", "rs1"]
    assert answers == ["rs3", "rs2", "rs1"] * 4
    stats = proc.adm("-L", "-n", "--stats").stdout
    assert "198.18.1.1:80" in stats
    listing = proc.adm("-L", "-n").stdout
    assert ("Route" if mode == "dr" else "Tunnel") in listing


def test_fifty_megabytes_each_way_and_replies_bypass_the_director(env, capsys):
    mode, lab, proc = env
    proc.adm("-A", "-t", f"{lab.VIP}:80", "-s", "rr")
    rs = lab.real_server_list()[0]
    proc.adm("-a", "-t", f"{lab.VIP}:80", "-r", f"{rs['addr']}:80", LABS[mode][1])
    before = director_bytes(lab)
    t = time.monotonic()
    digest, n = lab.fetch_sha256(lab.url(path=f"/bytes/{SIZE}"), timeout=180)
    down = time.monotonic() - t
    assert n == SIZE and digest == servers.pattern_sha256(SIZE)
    seen = director_bytes(lab) - before
    # the director sees the client's ACKs only (and, in TUN, their encapsulated copies)
    assert seen < SIZE * 0.1, f"director carried {seen} bytes of a {SIZE}-byte download"
    # upload: full-size segments from the client; in TUN mode they do not fit the
    # tunnel (1500 + 20), so the director must send frag-needed (MTU 1480) and TCP adapts
    t = time.monotonic()
    sent, received = lab.post_pattern(lab.url(path="/sha256"), SIZE, timeout=180)
    up = time.monotonic() - t
    assert received == sent
    drops = proc.log()
    with capsys.disabled():
        print(f"\n[{mode}] 50 MB download {SIZE / down / 1e6:.1f} MB/s "
              f"(director carried {seen} B), upload {SIZE / up / 1e6:.1f} MB/s")
    assert "Traceback" not in drops


def test_tun_upload_triggers_frag_needed(tun):
    lab, proc = tun
    proc.adm("-C")
    proc.adm("-A", "-t", f"{lab.VIP}:80", "-s", "rr")
    rs = lab.real_server_list()[1]
    proc.adm("-a", "-t", f"{lab.VIP}:80", "-r", f"{rs['addr']}:80", "-i")
    # a fresh client address: no PMTU learnt yet for it... the PMTU is per destination
    # (the VIP), so flush the client's route cache first
    lab.run("client", ["ip", "route", "flush", "cache"], check=True)
    sent, received = lab.post_pattern(lab.url(path="/sha256"), 2_000_000,
                                      client_addr=lab.client_addrs[2], timeout=60)
    assert received == sent
    cache = lab.run("client", ["ip", "route", "get", lab.VIP], capture_output=True).stdout
    assert "mtu 1480" in cache
    proc.adm("-C")


def test_tun_path_mtu_beyond_the_router_is_relayed_to_the_client(tun):
    """ip_vs_in_icmp, tunnel case: a router behind the director sends frag-needed (1400)
    about the IPIP packets; pyvs learns it and tells the client 1400 - 20 = 1380 from
    the VIP, so a full-size upload gets through instead of black-holing."""
    lab, proc = tun
    rs = lab.real_server_list()[0]
    links = [("router", rs["name"]), (rs["name"], lab.RS_IF)]
    proc.adm("-C")
    proc.adm("-A", "-t", f"{lab.VIP}:80", "-s", "rr")
    proc.adm("-a", "-t", f"{lab.VIP}:80", "-r", f"{rs['addr']}:80", "-i")
    try:
        for role, ifname in links:
            lab.run(role, ["ip", "link", "set", ifname, "mtu", "1400"], check=True)
        lab.run("client", ["ip", "route", "flush", "cache"], check=True)
        sent, received = lab.post_pattern(lab.url(path="/sha256"), 2_000_000,
                                          client_addr=lab.client_addrs[1], timeout=60)
        assert received == sent
        cache = lab.run("client", ["ip", "route", "get", lab.VIP], capture_output=True,
                        text=True).stdout
        assert "mtu 1380" in cache
        stats = proc.adm("-L", "-n", "--stats").stdout
        assert stats.splitlines()[3].split()[4] != "0"  # the relayed errors count as out
    finally:
        for role, ifname in links:
            lab.run(role, ["ip", "link", "set", ifname, "mtu", "1500"])
        lab.run("client", ["ip", "route", "flush", "cache"])
        proc.adm("-C")


def test_dr_leaves_fin_wait_after_the_clients_fin(dr):
    lab, proc = dr
    proc.adm("-C")
    add_service(proc, lab, "-g")
    lab.curl(lab.url())
    # curl has returned; its FIN reaches the director asynchronously
    conns = wait_for(lambda: proc.adm("-L", "-n", "-c").stdout,
                     until=lambda out: "FIN_WAIT" in out, what="FIN_WAIT in -Lnc")
    assert "198.18.2.13:80" in conns, conns
    stats = proc.adm("-L", "-n", "--stats").stdout.splitlines()
    svc = next(line for line in stats if line.startswith("TCP"))
    assert svc.split()[4] == "0"  # OutPkts: a DR director never sees a reply
    proc.adm("-C")


def test_mixed_methods_in_one_service(dr):
    """rs1 masqueraded (its replies come back through the director), rs2 direct."""
    lab, proc = dr
    proc.adm("-C")
    rs1, rs2 = lab.real_server_list()[:2]
    proc.adm("-A", "-t", f"{lab.VIP}:80", "-s", "rr")
    proc.adm("-a", "-t", f"{lab.VIP}:80", "-r", f"{rs1['addr']}:80", "-m")
    proc.adm("-a", "-t", f"{lab.VIP}:80", "-r", f"{rs2['addr']}:80", "-g")
    answers = [lab.curl(lab.url()).strip() for _ in range(4)]
    assert answers == ["rs2", "rs1", "rs2", "rs1"]
    stats = proc.adm("-L", "-n", "--stats").stdout
    rows = {line.split()[1]: line.split() for line in stats.splitlines()
            if line.strip().startswith("->") and ":" in line.split()[1]}
    assert int(rows[f"{rs1['addr']}:80"][4]) > 0  # NAT dest: replies counted
    assert int(rows[f"{rs2['addr']}:80"][4]) == 0  # DR dest: none
    assert "Masq" in proc.adm("-L", "-n").stdout and "Route" in proc.adm("-L", "-n").stdout
    proc.adm("-C")


@pytest.mark.parametrize("method", ["-g", "-m"])
def test_ipv6_through_the_dr_lab(dr, method):
    lab, proc = dr
    proc.adm("-C")
    add_service(proc, lab, method, six=True)
    answers = [lab.curl(lab.url(lab.VIP6), client_addr=lab.client_addrs6[n % 2]).strip()
               for n in range(6)]
    assert answers == ["rs3", "rs2", "rs1"] * 2
    proc.adm("-C")


def test_ipv6_tunnel(tun):
    lab, proc = tun
    proc.adm("-C")
    add_service(proc, lab, "-i", six=True)
    answers = [lab.curl(lab.url(lab.VIP6)).strip() for _ in range(3)]
    assert answers == ["rs3", "rs2", "rs1"]
    proc.adm("-C")
