"""The lab itself, without any load balancer: addressing, kernel forwarding through the
director, real servers, bulk transfers and - above all - complete teardown."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from pyvs.engine.lab import LabError, NatLab, cleanup_stale, down_by_name, lab_down, lab_up
from pyvs.engine.lab import netns as nx
from pyvs.engine.lab.servers import pattern_sha256
from pyvs.engine.lab.topology import STATE_DIR

pytestmark = pytest.mark.lab


def ip_netns_list() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                          timeout=10, check=True).stdout


def host_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                         timeout=10, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def assert_gone(name: str) -> None:
    assert f"{name}-" not in ip_netns_list()
    assert not (STATE_DIR / name).exists()


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("nat_lab", [{"real_servers": 3, "clients": 2}], indirect=True)
def test_real_servers_answer_directly_v4_v6(nat_lab):
    d = nat_lab.describe()
    assert len(d["real_servers"]) == 3
    for rs in d["real_servers"]:
        for client in d["client_addrs"]:
            assert nat_lab.curl(nat_lab.url(rs["addr"]), client_addr=client) == f"{rs['name']}\n"
            assert nat_lab.udp_query(rs["addr"], 53, "q", client_addr=client) == f"{rs['name']}\n"
        for client in d["client_addrs6"]:
            assert nat_lab.curl(nat_lab.url(rs["addr6"]), client_addr=client) == f"{rs['name']}\n"
            assert nat_lab.udp_query(rs["addr6"], 53, "q", client_addr=client) == f"{rs['name']}\n"


@pytest.mark.parametrize("nat_lab", [{"real_servers": 2, "clients": 3}], indirect=True)
def test_real_server_sees_client_address_and_port(nat_lab):
    """Plain routing, no NAT: the real server sees the chosen client address."""
    rs = nat_lab.describe()["real_servers"][1]
    for client in nat_lab.client_addrs + nat_lab.client_addrs6:
        addr = rs["addr6"] if ":" in client else rs["addr"]
        name, peer, port = nat_lab.curl(nat_lab.url(addr, "/peer"), client_addr=client).split()
        assert (name, peer) == (rs["name"], client)
        assert 1024 <= int(port) <= 65535
    assert nat_lab.udp_query(rs["addr"], 53, "q", sport=40053) == "rs2\n"


def test_nat_topology_configuration(nat_lab):
    d = nat_lab.describe()
    director, client = d["namespaces"]["director"], d["namespaces"]["client"]
    rs = d["real_servers"][0]
    assert d["mode"] == "nat" and d["vip"] == "198.18.1.1" and d["vip6"] == "2001:db8:1::1"
    lo = nx.addrs(director, "lo")
    assert "198.18.1.1/32" in lo and "2001:db8:1::1/128" in lo
    assert "198.18.0.1/24" in nx.addrs(director, "cli0")
    assert "198.18.2.1/24" in nx.addrs(director, "br0")
    assert "198.18.0.10/24" in nx.addrs(client, "eth0")
    fwd = nat_lab.run("director", ["sysctl", "-n", "net.ipv4.ip_forward",
                                   "net.ipv6.conf.all.forwarding"],
                      capture_output=True, check=True).stdout.split()
    assert fwd == ["1", "1"]
    routes = nx.run(rs["ns"], ["ip", "route", "show", "default"], capture_output=True).stdout
    assert "via 198.18.2.1" in routes
    routes6 = nx.run(rs["ns"], ["ip", "-6", "route", "show", "default"],
                     capture_output=True).stdout
    assert "via 2001:db8:2::1" in routes6
    # the VIP is local to the director: nothing listens there yet, so its kernel
    # answers the SYN with a RST at once (v4 and v6)
    for vip in (d["vip"], d["vip6"]):
        with pytest.raises(LabError, match="refused|Failed to connect"):
            nat_lab.curl(nat_lab.url(vip), timeout=3)
    json.dumps(d)  # JSON-able


def test_no_route_out_of_the_lab(nat_lab):
    """Nothing leaves the lab: client and director have no route outside the lab
    ranges, real servers only their default route to the director."""
    for role in ("client", "director"):
        r = nat_lab.run(role, ["ip", "route", "get", "192.0.2.1"], capture_output=True)
        assert r.returncode != 0, f"{role} has a route out: {r.stdout}"
    r = nat_lab.run("rs1", ["ip", "route", "get", "192.0.2.1"], capture_output=True)
    assert "via 198.18.2.1 " in r.stdout


def test_bulk_transfer_integrity(nat_lab):
    rs = nat_lab.describe()["real_servers"][0]
    n = 50 * 1000 * 1000
    digest, got = nat_lab.fetch_sha256(nat_lab.url(rs["addr"], f"/bytes/{n}"), timeout=60)
    assert got == n and digest == pattern_sha256(n)
    n = 5 * 1000 * 1000 + 7
    sent, echoed = nat_lab.post_pattern(nat_lab.url(rs["addr6"], "/sha256"), n, timeout=60)
    assert sent == echoed


def test_down_leaves_nothing(lab_env):
    before = host_links()
    lab = NatLab(real_servers=2, clients=2, start_servers=True).up()
    pids = [rs["pid"] for rs in lab.describe()["real_servers"]]
    assert all(pid_alive(p) for p in pids)
    assert f"{lab.name}-director" in ip_netns_list()
    assert host_links() == before, "the lab must not create host-side interfaces"
    lab.down()
    assert_gone(lab.name)
    assert not any(pid_alive(p) for p in pids)
    lab.down()  # idempotent


def test_up_failure_midway_removes_everything(lab_env, monkeypatch):
    calls = {"n": 0}
    real_add_route = nx.add_route

    def failing_add_route(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated failure")
        return real_add_route(*a, **kw)

    monkeypatch.setattr(nx, "add_route", failing_add_route)
    lab = NatLab(real_servers=3, clients=2)
    with pytest.raises(RuntimeError, match="simulated"):
        lab.up()
    assert calls["n"] == 3
    assert_gone(lab.name)


def test_server_start_failure_removes_everything(lab_env):
    lab = NatLab(real_servers=2, tcp_port=70000, start_servers=True)  # invalid port
    with pytest.raises(LabError, match="exited"):
        lab.up()
    assert_gone(lab.name)


def test_context_manager_tears_down_on_exception(lab_env):
    with pytest.raises(ZeroDivisionError):
        with NatLab() as lab:
            name = lab.name
            assert f"{name}-client" in ip_netns_list()
            1 / 0  # noqa: B018
    assert_gone(name)


def test_name_clash_and_prefix_safety(nat_lab_factory):
    lab = nat_lab_factory(real_servers=1)
    other = NatLab(name=lab.name)
    with pytest.raises(LabError, match="already exists"):
        other.up()
    other.down()
    # neither the clash nor a shorter name's teardown touched the running lab
    assert down_by_name("pyvs") == []
    assert lab.curl(lab.url("198.18.2.11")) == "rs1\n"


def test_lab_up_detached_and_lab_down(lab_env):
    name = f"pyvs-t{os.getpid() % 100000:05d}"
    try:
        d = lab_up("nat", 2, 3, name=name)
        assert d["name"] == name and len(d["client_addrs"]) == 3
        pids = [rs["pid"] for rs in d["real_servers"]]
        assert all(pid_alive(p) for p in pids)
        # the servers are detached (own session), so they survive their starter
        assert all(os.getsid(p) == p for p in pids)
        # drive it the way the README does
        out = nx.run(d["namespaces"]["client"],
                     ["curl", "-sS", "--max-time", "5", "http://198.18.2.12/"],
                     capture_output=True, check=True).stdout
        assert out == "rs2\n"
        assert cleanup_stale() == []  # detached labs are never stale
        removed = lab_down(name)
        assert sorted(removed) == sorted([*d["namespaces"]["real_servers"],
                                          d["namespaces"]["client"],
                                          d["namespaces"]["director"]])
        assert_gone(name)
        deadline = time.monotonic() + 5
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(pid_alive(p) for p in pids)
    finally:
        lab_down(name)


def test_cleanup_stale_reaps_labs_of_dead_owners(lab_env):
    lab = NatLab().up()
    try:
        dead = subprocess.Popen(["true"])
        dead.wait()
        st_file = STATE_DIR / lab.name / "lab.json"
        st = json.loads(st_file.read_text())
        st["owner_pid"] = dead.pid
        st_file.write_text(json.dumps(st))
        assert lab.ns("director") in cleanup_stale()
        assert_gone(lab.name)
    finally:
        lab.down()


def test_bad_arguments():
    with pytest.raises(LabError):
        NatLab(real_servers=0)
    with pytest.raises(LabError):
        NatLab(name="../etc")
    with pytest.raises(LabError):
        lab_up("no-such-mode", 1, 1)
    with pytest.raises(LabError):
        nx.check_lab_prefix("10.0.0.0/8")
