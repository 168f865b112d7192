"""Reload under traffic, broken reloads, and the checker process's life, with real
servers: `pyvs reload` and SIGHUP, pyvsadm beside the configuration, the native TOML
configuration, a checker that dies with its director and comes back if it crashes.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from pyvs.bench.health_scenario import HealthRun, Stream, epoch, wait_for
from pyvs.engine.lab import NatLab

pytestmark = pytest.mark.lab

CHECK = "TCP_CHECK {\n connect_timeout 0.5\n delay_before_retry 0.3\n }"


def conf(weights: dict[int, int], sched: str = "wrr") -> str:
    servers = "".join(f"""
    real_server 198.18.2.{10 + i} 80 {{
        weight {w}
        {CHECK}
    }}""" for i, w in weights.items())
    return f"""
virtual_server {NatLab.VIP} 80 {{
    delay_loop 0.5
    lb_algo {sched}
    lb_kind NAT
    protocol TCP
{servers}
}}
"""


def stats(run: HealthRun) -> dict[str, int]:
    """real server -> Conns, from `pyvsadm -L -n --stats`."""
    out = {}
    for line in run.director.adm("-L", "-n", "--stats").stdout.splitlines():
        parts = line.split()
        if parts[:1] == ["->"] and parts[1][0].isdigit():
            out[parts[1]] = int(parts[2])
    return out


@pytest.fixture
def lab(nat_lab_factory):
    return nat_lab_factory(real_servers=4, clients=1)


def test_reload_under_traffic_adds_removes_reweights_with_no_failed_request(lab, tmp_path):
    with HealthRun(lab, conf({1: 1, 2: 1, 3: 1}), tmp_path) as run:
        stream = Stream(lab, lab.url(), tmp_path / "stream.jsonl", rate=50, duration=120)
        try:
            for name in ("rs1", "rs2", "rs3"):
                wait_for(lambda n=name: stream.answered_by(n, 0), 10, f"{name} answering")
            result = run.reload(conf({1: 1, 2: 1, 3: 1, 4: 1}))
            assert result.returncode == 0, result.stderr
            assert result.stdout.endswith("reloaded (configuration 1): 1 real server added\n")
            t = time.time()
            wait_for(lambda: stream.answered_by("rs4", t), 10, "the added rs4 answering")
            before = stats(run)
            result = run.reload(conf({2: 3, 3: 1, 4: 1}))
            assert result.returncode == 0, result.stderr
            assert "1 real server removed, 1 real server edited" in result.stdout
            t_removed = time.time()
            listing = run.listing()
            assert "198.18.2.11:80" not in listing
            assert any(line.split()[1:4] == ["198.18.2.12:80", "Masq", "3"]
                       for line in listing.splitlines() if line.strip().startswith("->"))
            after = stats(run)
            assert after["198.18.2.12:80"] >= before["198.18.2.12:80"] > 0  # not reset
            wait_for(lambda: sum(o.t > t_removed + 0.2 for o in stream.records()) >= 100, 20,
                     "100 requests after the re-weight")
            assert run.health()["generation"] == 2
            assert not run.transitions()  # no check result was lost or reset
        finally:
            records = stream.stop()
    assert all(o.ok for o in records), [o for o in records if not o.ok][:3]
    late = [o.server for o in records if o.t > t_removed + 0.2]
    assert "rs1" not in late
    # weight 3 : 1 : 1 once the re-weight is in (wrr over the 5-request cycle)
    share = late.count("rs2") / len(late)
    assert 0.5 <= share <= 0.7


def test_broken_reload_keeps_the_running_configuration(lab, tmp_path):
    good = conf({1: 1, 2: 1})
    with HealthRun(lab, good, tmp_path) as run:
        wait_for(lambda: "198.18.2.12:80" in run.listing(), 10, "configured")
        listing = run.listing()
        broken = good.replace("lb_algo wrr", "lb_algo wrr\n    lb_kind NATT")
        result = run.reload(broken)
        assert result.returncode == 1
        message = result.stderr.strip()
        assert message.startswith(f"pyvs reload: {run.conf}:5: lb_kind:"), message
        assert message.endswith("nothing changed")
        assert run.listing() == listing and run.health()["generation"] == 0
        # SIGHUP does the same: refused, logged, nothing changes
        run.conf.write_text(good.replace("real_server 198.18.2.12 80 {", "real_server x {"))
        os.kill(run.director.proc.pid, signal.SIGHUP)
        wait_for(lambda: "reload refused" in run.director.log(), 10, "the refusal logged")
        assert run.listing() == listing and run.health()["generation"] == 0
        # and checking goes on: a failure is still noticed
        t0 = time.time()
        run.kill_server("rs2")
        run.wait_transition("198.18.2.12:80", "DOWN", t0, 10)
        # a good file by SIGHUP is applied
        run.conf.write_text(conf({1: 1, 3: 1}))
        os.kill(run.director.proc.pid, signal.SIGHUP)
        wait_for(lambda: "198.18.2.13:80" in run.listing(), 10, "rs3 added by SIGHUP")
        assert run.health()["generation"] == 1


def test_pyvsadm_works_beside_the_configuration(lab, tmp_path):
    with HealthRun(lab, conf({1: 1, 2: 1}), tmp_path) as run:
        d = run.director
        wait_for(lambda: "198.18.2.12:80" in run.listing(), 10, "configured")
        d.adm("-a", "-t", f"{NatLab.VIP}:80", "-r", "198.18.2.13:80", "-m", "-w", "2")
        d.adm("-A", "-u", f"{NatLab.VIP}:53", "-s", "rr")
        d.adm("-a", "-u", f"{NatLab.VIP}:53", "-r", "198.18.2.12:53", "-m")
        t0 = time.time()
        run.kill_server("rs1")
        run.wait_transition("198.18.2.11:80", "DOWN", t0, 10)
        listing = run.listing()
        assert "198.18.2.13:80" in listing and "198.18.2.12:53" in listing
        assert "198.18.2.11:80" not in listing
        assert lab.udp_query(NatLab.VIP, 53).strip() == "rs2"  # a service of its own


RECORDER = """
from pyvs.engine.model import format_addr
from pyvs.schedulers.examples.least_response import LeastResponse


class Recorder(LeastResponse):
    def report(self, dest, seconds):
        super().report(dest, seconds)
        with open(__file__ + ".reports", "a") as f:
            f.write(f"{format_addr(dest.addr)}:{dest.port} {seconds}\\n")
"""


def test_native_toml_configuration_runs_the_same_checks(lab, tmp_path):
    """...and hands the measured response times to a scheduler with report()."""
    recorder = tmp_path / "recorder.py"
    recorder.write_text(RECORDER)
    toml = f"""
[[virtual_server]]
address = "{NatLab.VIP}"
port = 80
delay_loop = 0.5
lb_algo = "{recorder}:Recorder"
lb_kind = "NAT"
""" + "".join(f"""
  [[virtual_server.real_server]]
  address = "198.18.2.{10 + i}"
  port = 80
    [[virtual_server.real_server.HTTP_GET]]
    url = [{{ path = "/", status_code = ["200-299"] }}]
    connect_timeout = 0.5
    delay_before_retry = 0.3
""" for i in (1, 2))
    reports = tmp_path / "recorder.py.reports"
    with HealthRun(lab, toml, tmp_path, kind="toml") as run:
        wait_for(lambda: "198.18.2.12:80" in run.listing(), 10, "configured")
        wait_for(lambda: reports.exists() and {line.split()[0] for line in
                                               reports.read_text().splitlines()} ==
                 {"198.18.2.11:80", "198.18.2.12:80"}, 10, "response times reported")
        assert all(0 < float(line.split()[1]) < 0.5 for line in
                   reports.read_text().splitlines())
        t0 = time.time()
        run.control("rs2", http="500")
        down = run.wait_transition("198.18.2.12:80", "DOWN", t0, 10)
        assert "HTTP status 500 not in 200-299" in down["reason"]
        assert "198.18.2.12:80" not in run.listing()


def test_checker_dies_with_the_director_and_is_restarted_if_it_crashes(lab, tmp_path):
    with HealthRun(lab, conf({1: 1, 2: 1}), tmp_path) as run:
        first = wait_for(lambda: run.health()["checker_pid"], 10, "a checker process")
        os.kill(first, signal.SIGKILL)
        second = wait_for(lambda: (pid := run.health()["checker_pid"]) and pid != first and pid,
                          15, "a new checker process")
        assert "restarting" in run.director.log()
        t0 = time.time()
        run.kill_server("rs1")
        down = run.wait_transition("198.18.2.11:80", "DOWN", t0, 10)
        assert epoch(down["time"]) >= t0
        os.kill(run.director.proc.pid, signal.SIGKILL)  # the director crashes
        run.director.proc.wait(5)
        wait_for(lambda: not os.path.exists(f"/proc/{second}"), 5,
                 "the checker gone with its director")
