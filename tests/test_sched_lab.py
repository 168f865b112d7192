"""Schedulers with real traffic: lc steered by held-open connections, sh stickiness,
and a researcher's scheduler file loaded with `pyvsadm -s path.py:Class`."""

from __future__ import annotations

import ipaddress
import time

import pytest

from pyvs.engine.lab import NatLab
from pyvs.engine.runner import ROOT, DirectorProcess
from pyvs.schedulers.hashing import hash_32

pytestmark = pytest.mark.lab
VIP = NatLab.VIP


@pytest.fixture(scope="module")
def setup(lab_env):
    lab = NatLab(real_servers=3, clients=4, start_servers=True)
    try:
        lab.up()
        with DirectorProcess(lab.ns("director")) as director:
            yield lab, director
    finally:
        lab.down()


def configure(lab, director, *opts):
    director.adm("-C")
    director.adm("-A", "-t", f"{VIP}:80", *opts)
    for rs in lab.real_server_list():
        director.adm("-a", "-t", f"{VIP}:80", "-r", f"{rs['addr']}:80", "-m")


def active_conns(director) -> dict[str, int]:
    out = director.adm("-L", "-n").stdout
    return {line.split()[1].split(":")[0]: int(line.split()[4])
            for line in out.splitlines() if line.startswith("  ->") and "Masq" in line}


def test_lc_sends_new_connections_away_from_held_open_ones(setup):
    """ip_vs_lc.c: overhead = active*256 + inactive; ties go to the first in list."""
    lab, director = setup
    configure(lab, director, "-s", "lc")
    hold = ("import socket, time\n"
            f"s = [socket.create_connection(('{VIP}', 80), timeout=5) for _ in range(2)]\n"
            "print('open', flush=True)\n"
            "time.sleep(30)\n")
    holder = lab.popen("client", ["python3", "-c", hold])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sum(active_conns(director).values()) < 2:
            time.sleep(0.1)
        # list order rs3, rs2, rs1: the two held connections took rs3 then rs2
        assert active_conns(director) == {"198.18.2.13": 1, "198.18.2.12": 1,
                                          "198.18.2.11": 0}
        answers = [lab.curl(lab.url(VIP)).strip() for _ in range(5)]
        assert answers == ["rs1"] * 5
    finally:
        holder.kill()
        holder.wait(5)


def test_sh_keeps_each_client_address_on_its_hashed_server(setup):
    """ip_vs_sh.c: bucket = hash_32(ntohl(caddr), 8); buckets filled rs3, rs2, rs1, ..."""
    lab, director = setup
    configure(lab, director, "-s", "sh")
    order = ["rs3", "rs2", "rs1"]
    for client in lab.client_addrs:
        bucket = hash_32(int(ipaddress.IPv4Address(client)), 8)
        expected = order[bucket % 3]
        answers = {lab.curl(lab.url(VIP), client_addr=client).strip() for _ in range(4)}
        assert answers == {expected}, client


def test_scheduler_plugin_file_is_selectable_with_pyvsadm(setup):
    lab, director = setup
    plugin = ROOT / "schedulers" / "examples" / "pick_k.py"
    configure(lab, director, "-s", f"{plugin}:PickK")
    answers = {lab.curl(lab.url(VIP)).strip() for _ in range(12)}
    assert answers <= {"rs1", "rs2", "rs3"} and answers
    assert f"{plugin}:PickK" in director.adm("-L", "-n").stdout
