"""pyvs sim needs no root: it runs as the unprivileged user nobody, from a virtual
environment made from Debian's /usr/bin/python3 (with its numpy, rich, matplotlib and
scapy packages, which scripts/bootstrap.sh installs), on a copy of the sources in a
temporary folder that user can read (the checkout may live where nobody cannot enter)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
SYSTEM_PYTHON = "/usr/bin/python3"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or not Path(SYSTEM_PYTHON).exists(),
    reason="switching to the user nobody needs root, setpriv and /usr/bin/python3")

PLUGIN = """
from pyvs.schedulers.base import Scheduler

class Last(Scheduler):
    name = "last"

    def schedule(self, svc, flow):
        return svc.destinations[-1]
"""


def as_nobody(argv: list[str], home: Path, **kw) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "MPLCONFIGDIR": str(home / "mpl"),
           "LANG": "C.UTF-8"}
    return subprocess.run([*NOBODY, *argv], capture_output=True, text=True, env=env,
                          timeout=600, **kw)


@pytest.fixture(scope="module")
def nobody_venv():
    missing = subprocess.run([SYSTEM_PYTHON, "-c", "import numpy, rich, matplotlib, scapy"],
                             capture_output=True, text=True)
    assert missing.returncode == 0, ("Debian's python3 lacks numpy/rich/matplotlib/scapy: "
                                     "run scripts/bootstrap.sh (" + missing.stderr.strip() + ")")
    top = Path(tempfile.mkdtemp(prefix="pyvs-nobody-"))
    try:
        src = top / "src" / "pyvs"
        for part in ("engine", "schedulers", "forwarders"):
            shutil.copytree(ROOT / part, src / part,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copytree(ROOT / "schedulers" / "examples", top / "examples",
                        ignore=shutil.ignore_patterns("__pycache__"))
        (top / "last.py").write_text(PLUGIN)
        (top / "events.txt").write_text("2 fail rs2\n4 recover rs2\n5 weight rs1 3\n")
        os.chmod(top, 0o755)
        subprocess.run(["chown", "-R", "65534:65534", str(top)], check=True)
        made = as_nobody([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages",
                          "--without-pip", str(top / "venv")], top)
        assert made.returncode == 0, made.stderr
        python = top / "venv" / "bin" / "python"
        site = as_nobody([str(python), "-c", "import sysconfig; "
                          "print(sysconfig.get_paths()['purelib'])"], top).stdout.strip()
        assert site.startswith(str(top / "venv")), site
        (Path(site) / "pyvs-src.pth").write_text(str(top / "src") + "\n")
        yield top, python
    finally:
        shutil.rmtree(top, ignore_errors=True)


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
