"""pyvs sim needs no root: it runs as the unprivileged user nobody, from a virtual
environment made from Debian's /usr/bin/python3 (with its numpy, rich, matplotlib and
scapy packages, which scripts/bootstrap.sh installs), on a copy of the sources in a
temporary folder that user can read (the checkout may live where nobody cannot enter)."""

from __future__ import annotations

import json
import sys
import sysconfig
from pathlib import Path

import pytest
from nobody import SYSTEM_PYTHON, as_nobody, can_switch
from nobody import nobody_venv as venv

pytestmark = pytest.mark.skipif(can_switch() is not None, reason=str(can_switch()))

PLUGIN = """
from pyvs.schedulers.base import Scheduler

class Last(Scheduler):
    name = "last"

    def schedule(self, svc, flow):
        return svc.destinations[-1]
"""


@pytest.fixture(scope="module")
def nobody_venv():
    with venv(extra={"last.py": PLUGIN,
                     "events.txt": "2 fail rs2\n4 recover rs2\n5 weight rs1 3\n"}) as made:
        yield made


def test_pyvs_sim_runs_as_nobody_from_a_debian_python_venv(nobody_venv):
    top, python = nobody_venv
    who = as_nobody([str(python), "-c", "import os, sys, pyvs.engine.sim as s; "
                     "print(os.geteuid(), sys.prefix, s.__file__)"], top)
    uid, prefix, module = who.stdout.split()
    assert who.returncode == 0 and uid == "65534"
    assert prefix == str(top / "venv") and module.startswith(str(top / "src"))
    assert sys.prefix != prefix  # not the test's own interpreter
    out = top / "out"
    run = as_nobody([str(python), "-m", "pyvs.engine.cli", "sim", "--flows", "3000",
                     "--schedulers", f"rr,wlc,sh,mh,twos,{top / 'last.py'}:Last,"
                     f"{top / 'examples' / 'least_response.py'}:LeastResponse",
                     "--events", str(top / "events.txt"), "--seed", "3", "--servers", "4",
                     "--json", str(out / "sim.json"), "--csv", str(out / "csv"),
                     "--plot", str(out / "plots"), "--level", "packet"], top,
                    cwd=str(top))
    assert run.returncode == 0, run.stderr
    data = json.loads((out / "sim.json").read_text())
    assert len(data["schedulers"]) == 7
    for summary in data["schedulers"].values():
        assert summary["flows"] == 3000 and summary["level"] == "packet"
        assert summary["disruption"]["events"][0]["event"] == "t=2 fail rs2"
    assert (out / "plots" / "load.png").stat().st_uid == 65534
    last = data["schedulers"][f"{top / 'last.py'}:Last"]["servers"]
    assert last["rs1"]["flows"] == 3000  # the plugin ran: always the list tail (rs1)


def test_the_test_venv_is_not_the_default_python():
    """The default python3 of this machine may live under /root, which nobody cannot
    enter: the unprivileged run must use Debian's."""
    assert Path(SYSTEM_PYTHON).resolve().parent == Path("/usr/bin")
    assert sysconfig.get_paths()["purelib"]  # the suite's own interpreter still works
