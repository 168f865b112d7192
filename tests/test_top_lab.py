"""`pyvs top` as a user sees it: the real full-screen view in a tmux terminal inside the
director's namespace, after real traffic; its numbers against pyvsadm's, then the keys
that sort, filter and quit."""

from __future__ import annotations

import shutil
import sys

import pytest
from labhelp import add_service
from waiting import wait_for

from pyvs.engine.lab import NatLab
from pyvs.engine.lab.tmux import TmuxPane
from pyvs.engine.runner import DirectorProcess

pytestmark = [pytest.mark.lab,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")]

SERVICE = f"TCP {NatLab.VIP}:80"


def pyvsadm_rows(director) -> dict[str, list[str]]:
    """real server -> [Forward, Weight, ActiveConn, InActConn] from `pyvsadm -L -n`."""
    rows = {}
    for line in director.adm("-L", "-n").stdout.splitlines():
        parts = line.split()
        if parts[:1] == ["->"] and parts[1][0].isdigit():
            rows[parts[1]] = parts[2:6]
    return rows


def screen_rows(screen: str) -> dict[str, list[str]]:
    """real server -> [Forward, Weight, ActiveConn, InActConn] from the top screen."""
    rows = {}
    for line in screen.splitlines():
        parts = line.split()
        if parts[:1] == ["->"] and len(parts) >= 6:
            rows[parts[1]] = parts[2:6]
    return rows


def order(screen: str) -> list[str]:
    return [line.split()[1] for line in screen.splitlines() if line.split()[:1] == ["->"]]


def test_top_shows_the_table_as_pyvsadm_and_sorts_filters_quits(nat_lab_factory, tmp_path):
    lab = nat_lab_factory(real_servers=3, clients=1)
    with DirectorProcess(lab.ns("director"), log_path=tmp_path / "pyvs.log") as director:
        add_service(director, lab, "-s", "wrr", weights=(1, 2, 3))
        answers = [lab.curl(lab.url()).strip() for _ in range(12)]
        assert sorted(set(answers)) == ["rs1", "rs2", "rs3"]
        expected = pyvsadm_rows(director)
        assert sum(int(r[3]) for r in expected.values()) == 12  # closed: InActConn

        top = TmuxPane(["ip", "netns", "exec", lab.ns("director"), sys.executable, "-m",
                        "pyvs.engine.cli", "top"], width=150, height=40)
        with top:
            screen = wait_for(top.screen, lambda s: screen_rows(s) == expected, timeout=20,
                              what="top's real servers equal to pyvsadm -L -n")
            assert SERVICE in screen and "wrr" in screen
            assert "Port load" in screen and "nfqueue packets" in screen
            assert order(screen) == ["198.18.2.11:80", "198.18.2.12:80", "198.18.2.13:80"]

            top.keys("s")  # address -> weight, largest first
            screen = wait_for(top.screen, lambda s: "Weight ▼" in s, timeout=10,
                              what="the sort on the weight column")
            assert order(screen) == ["198.18.2.13:80", "198.18.2.12:80", "198.18.2.11:80"]
            top.keys("r")
            screen = wait_for(top.screen, lambda s: "(reversed)" in s, timeout=10)
            assert order(screen) == ["198.18.2.11:80", "198.18.2.12:80", "198.18.2.13:80"]

            top.keys("f", "2.12")
            top.keys("Enter", literal=False)
            screen = wait_for(top.screen, lambda s: order(s) == ["198.18.2.12:80"],
                              timeout=10, what="the filter 2.12")
            assert "filter: 2.12" in screen and SERVICE in screen
            top.keys("c")
            wait_for(top.screen, lambda s: len(order(s)) == 3, timeout=10,
                     what="all three real servers after clearing the filter")

            top.keys("q")
            wait_for(top.alive, lambda alive: not alive, timeout=10, what="top quitting")
        assert director.proc.poll() is None  # the director never noticed


def test_top_once_prints_one_frame_and_refuses_without_a_director(nat_lab_factory):
    lab = nat_lab_factory(real_servers=1, clients=1)
    argv = [sys.executable, "-m", "pyvs.engine.cli", "top", "--once"]
    gone = lab.run("director", argv, capture_output=True, text=True, timeout=30)
    assert gone.returncode == 1
    assert "no pyvs director runs in this network namespace" in gone.stderr
    with DirectorProcess(lab.ns("director")) as director:
        add_service(director, lab, "-s", "rr", weights=(5,))
        lab.curl(lab.url())
        out = lab.run("director", argv, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert screen_rows(out.stdout) == pyvsadm_rows(director)
        assert screen_rows(out.stdout)["198.18.2.11:80"][1] == "5"
