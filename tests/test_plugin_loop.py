"""The loop around writing a scheduler plugin (schedulers/registry.py, engine/service.py,
engine/director.py ``_pick``): a relative path is the caller's, every load failure says
what is wrong, an edited file takes effect with -A or -E (no restart), and a plugin that
raises costs the packet it was called for and nothing else, counted and logged once per
interval.  Driven through pyvsadm's language (engine/ipvsadm) on a Director with
synthetic packets; tests/test_plugin_loop_lab.py does it through a running director."""

from __future__ import annotations

import logging

import pytest
from scapy.layers.inet import IP, TCP

from pyvs.engine import ipvsadm
from pyvs.engine.clock import VirtualClock
from pyvs.engine.director import SCHEDULER_LOG_INTERVAL, Director
from pyvs.engine.verdict import DROP, FORWARD

VIP = "198.18.1.1"
RS = ("198.18.2.11", "198.18.2.12")

# picks the real server whose last address byte is CHOICE (schedulers/README.md)
PICK = """
from pyvs.schedulers.base import Scheduler

CHOICE = {choice}


class Pick(Scheduler):
    name = "pick"

    def __init__(self, svc, env):
        super().__init__(svc, env)
        self.calls = 0

    def schedule(self, svc, flow):
        self.calls += 1
        for d in svc.destinations:
            if d.addr[-1] == CHOICE:
                return d
        return None
"""

# raises for clients whose source port is odd: a plugin's bug on some flows only
FLAKY = """
from pyvs.schedulers.base import Scheduler


class Flaky(Scheduler):
    name = "flaky"

    def schedule(self, svc, flow):
        if flow.sport % 2:
            raise ZeroDivisionError("odd port")
        return svc.destinations[0]
"""


def adm(d: Director, *argv: str, cwd=None) -> tuple[int, str, str]:
    return ipvsadm.run(list(argv), "", d, cwd=None if cwd is None else str(cwd))


def service(d: Director, sched: str, cwd=None) -> tuple[int, str, str]:
    result = adm(d, "-A", "-t", f"{VIP}:80", "-s", sched, cwd=cwd)
    if result[0] == 0:
        for rs in RS:
            assert adm(d, "-a", "-t", f"{VIP}:80", "-r", f"{rs}:80", "-m")[0] == 0
    return result


def syn(sport: int, src: str = "198.18.0.10") -> bytearray:
    return bytearray(bytes(IP(src=src, dst=VIP) / TCP(sport=sport, dport=80, flags="S")))


def chosen(d: Director, sport: int) -> str | None:
    buf = syn(sport)
    (verdict,) = d.process([buf])
    return IP(bytes(buf)).dst if verdict == FORWARD else None


def test_a_relative_plugin_path_is_the_callers(tmp_path, monkeypatch):
    (tmp_path / "pick.py").write_text(PICK.format(choice=12))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the daemon's own directory must not matter
    d = Director(clock=VirtualClock())
    assert service(d, "pick.py:Pick", cwd=tmp_path)[0] == 0
    listing = adm(d, "-Ln")[1]
    assert f"{tmp_path / 'pick.py'}:Pick" in listing  # saved and listed as absolute
    assert chosen(d, 40000) == "198.18.2.12"
    rc, _, err = adm(d, "-A", "-t", f"{VIP}:81", "-s", "pick.py:Pick", cwd=elsewhere)
    assert rc == 255 and f"no such file {elsewhere / 'pick.py'}" in err


@pytest.mark.parametrize(("text", "sched", "expected"), [
    (None, "missing.py:Pick", "no such file {dir}/missing.py"),
    (PICK.format(choice=11), "plugin.py:Nope", "{dir}/plugin.py has no Nope"),
    (PICK.format(choice=11) + "\nNOT = 3\n", "plugin.py:NOT",
     "NOT in {dir}/plugin.py is not a scheduler (a subclass of "
     "pyvs.schedulers.base.Scheduler)"),
    (PICK.format(choice=11), "plugin.py:Scheduler",
     "Scheduler in {dir}/plugin.py is not a scheduler"),  # the base class it imports
    ("import os\n\ndef broken(:\n    pass\n", "plugin.py:Pick",
     "syntax error in {dir}/plugin.py line 3: "),
    ("import os\nx = 1\nraise RuntimeError('no config')\n", "plugin.py:Pick",
     "RuntimeError while loading {dir}/plugin.py line 3: no config"),
    (None, "pyvs_no_such_module:Pick", "no module named pyvs_no_such_module"),
])
def test_every_load_failure_says_what_is_wrong(tmp_path, text, sched, expected):
    if text is not None:
        (tmp_path / "plugin.py").write_text(text)
    d = Director(clock=VirtualClock())
    rc, out, err = service(d, sched, cwd=tmp_path)
    assert rc == 255 and out == ""
    assert err.startswith("Cannot load scheduler ") and err.count("\n") == 1
    assert expected.format(dir=tmp_path) in err
    assert adm(d, "-Ln")[1].count("TCP") == 0  # nothing was added


def test_an_unknown_scheduler_name_keeps_ipvsadms_message():
    d = Director(clock=VirtualClock())
    assert service(d, "nosuch") == (255, "", "Scheduler or persistence engine not found\n")


def test_an_edited_plugin_takes_effect_with_E_and_A_without_a_restart(tmp_path):
    plugin = tmp_path / "pick.py"
    plugin.write_text(PICK.format(choice=11))
    d = Director(clock=VirtualClock())
    assert service(d, "./pick.py:Pick", cwd=tmp_path)[0] == 0
    assert chosen(d, 40000) == "198.18.2.11"
    svc = next(iter(d.services.services.values()))
    first = svc.scheduler
    assert adm(d, "-E", "-t", f"{VIP}:80", "-s", "pick.py:Pick", cwd=tmp_path)[0] == 0
    assert svc.scheduler is first  # the file did not change: same instance, same state
    plugin.write_text(PICK.format(choice=12))  # edited while the director runs
    assert chosen(d, 40001) == "198.18.2.11"  # not before -E
    assert adm(d, "-E", "-t", f"{VIP}:80", "-s", "pick.py:Pick", cwd=tmp_path)[0] == 0
    assert svc.scheduler is not first
    assert chosen(d, 40002) == "198.18.2.12"
    plugin.write_text(PICK.format(choice=11))
    assert adm(d, "-A", "-t", f"{VIP}:8080", "-s", "pick.py:Pick", cwd=tmp_path)[0] == 0
    svc8080 = [s for s in d.services.services.values() if s.port == 8080][0]
    assert type(svc8080.scheduler).__module__ != type(svc.scheduler).__module__  # read anew
    plugin.write_text("def broken(:\n")
    rc, _, err = adm(d, "-E", "-t", f"{VIP}:80", "-s", "pick.py:Pick", cwd=tmp_path)
    assert rc == 255 and "syntax error" in err
    assert chosen(d, 40003) == "198.18.2.12"  # a broken edit changes nothing


def test_a_raising_plugin_drops_only_its_packets_counts_and_logs_once(tmp_path, caplog):
    (tmp_path / "flaky.py").write_text(FLAKY)
    clock = VirtualClock()
    d = Director(clock=clock)
    assert service(d, "flaky.py:Flaky", cwd=tmp_path)[0] == 0
    caplog.set_level(logging.WARNING, logger="pyvs.director")
    batch = [syn(40000 + i) for i in range(10)]
    verdicts = d.process(batch)
    assert verdicts == [FORWARD, DROP] * 5  # the even ports went through, in the same batch
    assert d.drops["scheduler-error"] == 5
    assert len(d.conntable) == 5
    records = [r for r in caplog.records if "raised ZeroDivisionError" in r.getMessage()]
    assert len(records) == 1
    assert f"{tmp_path / 'flaky.py'} line 10" in records[0].getMessage()
    d.process([syn(41001), syn(41003)])
    assert len([r for r in caplog.records if "raised" in r.getMessage()]) == 1
    clock.advance(SCHEDULER_LOG_INTERVAL)
    d.process([syn(42001)])
    later = [r.getMessage() for r in caplog.records if "raised" in r.getMessage()]
    assert len(later) == 2 and "(6 more since the last report)" in later[1]
    assert d.drops["scheduler-error"] == 8
