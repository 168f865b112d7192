"""`pyvs run --log-format json` in a lab: every line is a JSON object, the operator's
events are there (start, each configuration change, stop) and a burst of dropped
packets is summed into a summary line per 10 s interval, never one line per packet."""

from __future__ import annotations

import json
import sys

import pytest
from waiting import wait_for

from pyvs.engine.lab import NatLab
from pyvs.engine.runner import DirectorProcess

pytestmark = pytest.mark.lab

BURST = 150
VIP = NatLab.VIP


def events(director) -> list[dict]:
    return [json.loads(line) for line in director.log().splitlines()]


def test_json_log_has_start_changes_drop_summary_and_stop(nat_lab_factory, tmp_path):
    lab = nat_lab_factory(real_servers=1, clients=1)
    director = DirectorProcess(lab.ns("director"), log_path=tmp_path / "pyvs.log",
                               args=("--log-format", "json"))
    with director:
        director.adm("-A", "-u", f"{VIP}:53", "-s", "rr")
        director.adm("-a", "-u", f"{VIP}:53", "-r", "198.18.2.11:53", "-m")
        director.adm("-L", "-n")  # a listing changes nothing: no event
        director.sysctl("expire_nodest_conn=1")
        director.sysctl("expire_nodest_conn")  # a read: no event
        junk = ("from scapy.all import IP, UDP, Raw, send\n"  # UDP length beyond the packet
                f"send(IP(dst='{VIP}')/UDP(dport=53, len=200)/Raw(b'x' * 10), count={BURST},"
                " verbose=0)\n")
        lab.run("client", [sys.executable, "-c", junk], check=True, timeout=60,
                capture_output=True)
        dropped = sum(director.status()["drops"].values())
        assert dropped == BURST
        summaries = wait_for(
            lambda: [e for e in events(director) if e["event"] == "drops"],
            lambda s: sum(sum(e["fields"]["drops"].values()) for e in s) == BURST,
            timeout=40, interval=0.5, what="the drop summary")
        # one burst, one line -- two if it straddled the boundary of an interval
        assert 1 <= len(summaries) <= 2
        assert summaries[0]["level"] == "warning"
        assert summaries[0]["message"].startswith("drops in the last 10 s: ")
    log = events(director)  # every line parsed: all JSON
    assert len(log) < 20
    names = [e["event"] for e in log]
    assert names[0] == "start" and names[-1] == "stop"
    changes = [e["fields"] for e in log if e["event"] == "config-change"]
    assert changes == [
        {"source": "pyvsadm", "argv": ["-A", "-u", f"{VIP}:53", "-s", "rr"], "rc": 0},
        {"source": "pyvsadm", "argv": ["-a", "-u", f"{VIP}:53", "-r", "198.18.2.11:53",
                                       "-m"], "rc": 0},
        {"source": "sysctl", "args": ["expire_nodest_conn=1"], "rc": 0}]
    assert all({"ts", "level", "event", "message", "fields"} <= set(e) for e in log)
