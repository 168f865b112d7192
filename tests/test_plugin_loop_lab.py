"""The plugin loop through a running director: pyvsadm run from the plugin's directory
names it by a relative path, an edited plugin takes effect with -E while `pyvs run`
keeps running, and a plugin that raises for one client loses that client's
connections only (counted as scheduler-error, logged once) while the other client is
served (tests/test_plugin_loop.py has the same on synthetic packets)."""

from __future__ import annotations

import json
import subprocess

import pytest
from test_plugin_loop import PICK

from pyvs.engine.runner import DirectorProcess

pytestmark = pytest.mark.lab

VIP = "198.18.1.1"
BAD_CLIENT = "198.18.0.11"

FLAKY_FOR_ONE_CLIENT = """
from pyvs.schedulers.base import Scheduler


class Flaky(Scheduler):
    name = "flaky"

    def schedule(self, svc, flow):
        if flow.saddr == bytes([198, 18, 0, 11]):
            raise KeyError("client 198.18.0.11")
        return svc.destinations[-1]
"""


def test_plugin_loop_on_a_live_director(nat_lab_factory, tmp_path):
    lab = nat_lab_factory(real_servers=2, clients=2)
    (tmp_path / "pick.py").write_text(PICK.format(choice=11))
    (tmp_path / "flaky.py").write_text(FLAKY_FOR_ONE_CLIENT)
    with DirectorProcess(lab.ns("director"), log_path=tmp_path / "director.log") as d:
        d.adm("-A", "-t", f"{VIP}:80", "-s", "pick.py:Pick", cwd=tmp_path)
        for rs in lab.real_server_list():
            d.adm("-a", "-t", f"{VIP}:80", "-r", f"{rs['addr']}:80", "-m")
        assert f"{tmp_path}/pick.py:Pick" in d.adm("-Ln").stdout
        assert lab.curl(lab.url()).strip() == "rs1"
        (tmp_path / "pick.py").write_text(PICK.format(choice=12))
        d.adm("-E", "-t", f"{VIP}:80", "-s", "pick.py:Pick", cwd=tmp_path)
        assert lab.curl(lab.url()).strip() == "rs2"  # same daemon, new code

        d.adm("-E", "-t", f"{VIP}:80", "-s", "flaky.py:Flaky", cwd=tmp_path)
        bad = lab.popen("client", ["curl", "-sS", "--interface", BAD_CLIENT,
                                   "--max-time", "3", lab.url()],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            good = [lab.curl(lab.url(), client_addr="198.18.0.10").strip() for _ in range(5)]
        finally:
            bad.wait(10)
        assert good == ["rs1"] * 5  # the list tail: rs1 (added first)
        assert bad.returncode == 28  # curl's timeout: every SYN of that client dropped
        status = d.status()
        assert status["drops"]["scheduler-error"] >= 2  # the SYN and its retransmissions
        log = d.log()
        assert log.count("raised KeyError") == 1, log
        assert f"{tmp_path}/flaky.py line 10" in log
        assert json.dumps(status)  # the director answered throughout
