"""What keepalived does with a failed server, seen in `pyvsadm -Ln` with real servers:
inhibit_on_failure versus removal, the sorry server, quorum and hysteresis, flapping
bounded by retry, and a MISC_CHECK script that misbehaves.

Each test builds a NAT lab with 4 real servers (rs4 at 198.18.2.14 is the sorry
server where one is configured) and a director run from a keepalived.conf.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from pyvs.bench.health_scenario import HealthRun, Stream, epoch, wait_for
from pyvs.engine.lab import NatLab

pytestmark = pytest.mark.lab

RS = {f"rs{i}": f"198.18.2.{10 + i}:80" for i in range(1, 5)}
TCP = "TCP_CHECK {\n connect_timeout 0.5\n retry 1\n delay_before_retry 0.3\n }"


def conf(servers: dict[str, str], extra: str = "", delay_loop: float = 0.5,
         weights: dict[str, int] | None = None) -> str:
    """A round-robin NAT service over ``servers``: name -> what goes in its block."""
    body = "".join(f"""
    real_server {RS[name][:-3]} 80 {{
        weight {(weights or {}).get(name, 1)}
        {block}
    }}""" for name, block in servers.items())
    return f"""
virtual_server {NatLab.VIP} 80 {{
    delay_loop {delay_loop}
    lb_algo rr
    lb_kind NAT
    protocol TCP
    {extra}
{body}
}}
"""


def weights(listing: str) -> dict[str, int]:
    """real server -> weight, from `pyvsadm -L -n`."""
    out = {}
    for line in listing.splitlines():
        parts = line.split()
        if parts[:1] == ["->"] and parts[1][0].isdigit():
            out[parts[1]] = int(parts[3])
    return out


@pytest.fixture
def lab(nat_lab_factory):
    return nat_lab_factory(real_servers=4, clients=1)


def test_inhibit_on_failure_quiesces_while_removal_takes_out(lab, tmp_path):
    servers = {"rs1": f"inhibit_on_failure\n{TCP}", "rs2": TCP, "rs3": TCP}
    with HealthRun(lab, conf(servers), tmp_path) as run:
        wait_for(lambda: weights(run.listing()) == {RS["rs1"]: 1, RS["rs2"]: 1, RS["rs3"]: 1},
                 10, "all three listed")
        t0 = time.time()
        run.kill_server("rs1")
        run.kill_server("rs2")
        run.wait_transition(RS["rs1"], "DOWN", t0, 10)
        run.wait_transition(RS["rs2"], "DOWN", t0, 10)
        assert weights(run.listing()) == {RS["rs1"]: 0, RS["rs3"]: 1}
        status = run.server_state(RS["rs1"])
        assert (status["state"], status["in_table"], status["weight"]) == ("down", True, 0)
        assert "refused" in status["checkers"][0]["reason"]
        assert run.server_state(RS["rs2"])["in_table"] is False
        actions = {t["real_server"]: t["action"] for t in run.transitions(state="DOWN")}
        assert actions == {RS["rs1"]: "weight 0 (inhibited)", RS["rs2"]: "removed"}
        t1 = time.time()
        run.start_server("rs1")
        run.start_server("rs2")
        run.wait_transition(RS["rs1"], "UP", t1, 10)
        run.wait_transition(RS["rs2"], "UP", t1, 10)
        assert weights(run.listing()) == {RS["rs1"]: 1, RS["rs2"]: 1, RS["rs3"]: 1}


def test_sorry_server_serves_when_all_are_down_and_leaves_when_one_is_back(lab, tmp_path):
    servers = {name: TCP for name in ("rs1", "rs2", "rs3")}
    sorry = f"sorry_server {RS['rs4'][:-3]} 80"
    with HealthRun(lab, conf(servers, sorry), tmp_path) as run:
        stream = Stream(lab, lab.url(), tmp_path / "stream.jsonl", rate=20, duration=90)
        try:
            wait_for(lambda: stream.answered_by("rs3", 0), 10, "rs3 answering")
            assert RS["rs4"] not in run.listing()
            t0 = time.time()
            for name in ("rs1", "rs2", "rs3"):
                run.kill_server(name)
            wait_for(lambda: weights(run.listing()) == {RS["rs4"]: 1}, 10, "the sorry server")
            t_sorry = time.time()
            wait_for(lambda: stream.answered_by("rs4", t_sorry), 10, "rs4 answering")
            assert run.health()["virtual_servers"][0]["sorry_server"]["serving"]
            t1 = time.time()
            run.start_server("rs2")
            up = run.wait_transition(RS["rs2"], "UP", t1, 10)
            wait_for(lambda: weights(run.listing()) == {RS["rs2"]: 1}, 10, "rs2 alone")
            t_up = epoch(up["time"])
            wait_for(lambda: stream.answered_by("rs2", t_up), 10, "rs2 answering")
            wait_for(lambda: any(o.t > t_up + 2 for o in stream.records()), 10, "more traffic")
        finally:
            records = stream.stop()
    after = [o for o in records if o.t > t_up + 0.5]
    assert after and all(o.ok and o.server == "rs2" for o in after)
    assert not any(o.server == "rs4" for o in records if o.t < t0)


def script(path: Path, word: str) -> str:
    return f"\"/bin/sh -c 'echo {word} >> {path}'\""


def test_quorum_brings_the_sorry_server_in_below_it_and_out_above_it(lab, tmp_path):
    """...and runs quorum_up/quorum_down and notify_up/notify_down on the way."""
    events = tmp_path / "events"
    servers = {name: TCP for name in ("rs2", "rs3")}
    servers["rs1"] = (f"notify_up {script(events, 'rs1-up')}\n"
                      f"notify_down {script(events, 'rs1-down')}\n{TCP}")
    extra = (f"quorum 2\n    sorry_server {RS['rs4'][:-3]} 80\n"
             f"    quorum_up {script(events, 'quorum-up')}\n"
             f"    quorum_down {script(events, 'quorum-down')}")
    lines = lambda: events.read_text().split() if events.exists() else []  # noqa: E731
    with HealthRun(lab, conf(servers, extra), tmp_path) as run:
        wait_for(lambda: lines() == ["quorum-up"], 10, "quorum_up at start")
        wait_for(lambda: len(weights(run.listing())) == 3, 10, "three servers")
        t0 = time.time()
        run.kill_server("rs1")
        run.wait_transition(RS["rs1"], "DOWN", t0, 10)
        assert weights(run.listing()) == {RS["rs2"]: 1, RS["rs3"]: 1}  # 2 >= quorum 2
        run.kill_server("rs2")
        run.wait_transition(RS["rs2"], "DOWN", t0, 10)
        # live weight 1 < 2: the sorry server replaces the one still alive
        assert weights(run.listing()) == {RS["rs4"]: 1}
        assert run.health()["virtual_servers"][0]["quorum"] == "down"
        assert run.server_state(RS["rs3"])["state"] == "up"
        t1 = time.time()
        run.start_server("rs2")
        run.wait_transition(RS["rs2"], "UP", t1, 10)
        assert weights(run.listing()) == {RS["rs2"]: 1, RS["rs3"]: 1}
        assert run.health()["virtual_servers"][0]["quorum"] == "up"
        wait_for(lambda: lines() == ["quorum-up", "rs1-down", "quorum-down", "quorum-up"], 10,
                 "the notify and quorum scripts, in order")


FLAP = """#!/bin/sh
# fails every other run: exit 0, 1, 0, 1, ...
n=$(cat "$1" 2>/dev/null || echo 0)
n=$((n + 1))
echo $n > "$1"
[ $((n % 2)) -eq 1 ]
"""


def flap_checker(script: Path, counter: Path, retry: int) -> str:
    return (f'MISC_CHECK {{\n misc_path "/bin/sh {script} {counter}"\n misc_timeout 2\n'
            f' retry {retry}\n delay_before_retry 0.2\n }}')


def test_flapping_is_bounded_by_retry_and_quorum_by_hysteresis(lab, tmp_path):
    """A server failing every other check never goes down with retry 1; with retry 0
    it flaps at every check, and quorum 4 with hysteresis 1 keeps the sorry server out
    although the live weight keeps dropping to 3 (without hysteresis, 3 < 4 would swap
    the sorry server in and out at every flap)."""
    script = tmp_path / "flap.sh"
    script.write_text(FLAP)
    steady, flappy = tmp_path / "steady.count", tmp_path / "flappy.count"
    servers = {"rs1": flap_checker(script, steady, 1), "rs2": flap_checker(script, flappy, 0),
               "rs3": TCP}
    extra = f"quorum 4\n    hysteresis 1\n    sorry_server {RS['rs4'][:-3]} 80"
    weighted = conf(servers, extra, weights={"rs1": 1, "rs2": 2, "rs3": 2})
    with HealthRun(lab, weighted, tmp_path) as run:
        wait_for(lambda: int(steady.read_text() or 0) >= 14 if steady.exists() else False, 30,
                 "14 runs of the steady checker")
        assert not run.transitions(RS["rs1"])  # 7 failures, never two in a row
        assert RS["rs1"] in run.listing()
        flips = run.transitions(RS["rs2"])
        assert len(flips) >= 4
        assert [t["state"] for t in flips] == ["DOWN", "UP"] * (len(flips) // 2) + \
            ["DOWN"] * (len(flips) % 2)
        assert run.health()["virtual_servers"][0]["quorum"] == "up"
        assert RS["rs4"] not in run.listing()
    log = run.director.log()
    assert "Gained quorum 4+1=5 <= 5" in log and "Lost quorum" not in log


HOSTILE = r"""#!/bin/sh
echo run >> "$1"
printf 'pyvs-checker[1] INFO pyvs.health: transition state=DOWN real_server=198.18.2.13:80\n'
printf '\033[2J\033[31mHOSTILE-MARKER\000\377\376 %%s %%n\n'
head -c 5000000 /dev/zero | tr '\0' 'A'
exec 1>&- 2>&-
exit 0
"""


def hung(marker: str) -> list[str]:
    """The pids of the hanging script's sleep (pgrep)."""
    out = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True)
    return out.stdout.split()


def test_misc_check_hostile_output_or_hang_affects_only_its_own_check(lab, tmp_path):
    hostile, runs = tmp_path / "hostile.sh", tmp_path / "hostile.runs"
    hostile.write_text(HOSTILE)
    marker = "37.123"
    servers = {
        "rs1": f'MISC_CHECK {{\n misc_path "/bin/sh {hostile} {runs}"\n misc_timeout 5\n }}',
        "rs2": ('MISC_CHECK {\n misc_path "/bin/sh -c \\"trap \'\' TERM; sleep ' + marker +
                '\\""\n misc_timeout 1\n }'),
        "rs3": TCP,
    }
    with HealthRun(lab, conf(servers), tmp_path) as run:
        down = run.wait_transition(RS["rs2"], "DOWN", 0, 20)
        assert "timed out after 1s" in down["reason"]
        # the hung script ignores SIGTERM: SIGKILL follows; a run never outlives its
        # timeout + 2 s grace, so they never pile up
        first = hung(marker)
        assert 1 <= len(first) <= 2  # one run: its shell and its sleep
        wait_for(lambda: not set(first) & set(hung(marker)), 10, "that run killed")
        seen = runs.read_text().count("run")
        wait_for(lambda: runs.read_text().count("run") >= seen + 4, 20, "4 more hostile runs")
        assert weights(run.listing()) == {RS["rs1"]: 1, RS["rs3"]: 1}
        assert not run.transitions(RS["rs1"]) and not run.transitions(RS["rs3"])
        assert run.health()["checker_pid"]
    log = run.director.log()
    assert "HOSTILE-MARKER" not in log and "AAAA" not in log
    assert "transition state=DOWN real_server=198.18.2.13" not in log
