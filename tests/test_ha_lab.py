"""Director failover with real keepalived (VRRP only) and pyvs's connection sync, for NAT
and DR (engine/lab/ha.py): the active director dies in the middle of a 200 MiB download
-- SIGKILL to its pyvs and keepalived, links down -- and the download finishes intact
through the backup, a persistent client keeps its real server, new connections are
scheduled by the backup.

The timeline of a run (bytes received against time) is written to the file named by
PYVS_HA_TIMELINE, if set ("{forwarding}" in it becomes nat or dr), for
bench/ha_timeline.py to plot.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time

import pytest

from pyvs.engine.lab.download import __name__ as DOWNLOAD
from pyvs.engine.lab.servers import pattern_sha256

pytestmark = [pytest.mark.lab,
              pytest.mark.skipif(shutil.which("keepalived") is None,
                                 reason="needs keepalived (scripts/bootstrap.sh installs it)")]

SIZE = 200 * 1024 * 1024
RATE = 20e6  # bytes/s: about 10 s of transfer
DOWNLOADER, PERSISTENT, NEWCOMER = "198.18.0.10", "198.18.0.11", "198.18.0.12"


def wait_for(cond, timeout: float, what: str, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def service_conns(director) -> int:
    out = director.adm("-Ln", "--stats").stdout
    m = re.search(r"^TCP\s+198\.18\.1\.1:80\s+(\d+)", out, re.M)
    return int(m.group(1)) if m else 0


def who(lab, client: str) -> str:
    return lab.curl(lab.url(), client_addr=client).strip()


def received(path: str) -> int:
    try:
        lines = open(path).read().split()
    except OSError:
        return 0
    return int(lines[-1]) if lines else 0


@pytest.fixture
def ha_lab(request, lab_env):
    from pyvs.engine.lab.ha import HaLab

    lab = HaLab(forwarding=request.param, real_servers=3, clients=3, start_servers=True)
    lab.up()
    try:
        yield lab
    finally:
        lab.down()


@pytest.mark.parametrize("ha_lab", ["nat", "dr"], indirect=True)
def test_failover_keeps_established_and_persistent_connections(ha_lab):
    lab = ha_lab
    method = "-m" if lab.forwarding == "nat" else "-g"
    config = [["-A", "-t", f"{lab.VIP}:80", "-s", "rr", "-p", "300"],
              *[["-a", "-t", f"{lab.VIP}:80", "-r", f"{rs['addr']}:80", method]
                for rs in lab.real_server_list()]]
    lab.start_directors(config)
    master, backup = lab.directors["dir1"], lab.directors["dir2"]
    wait_for(lambda: lab.holds_vip("dir1") and "backup sync daemon"
             in backup.adm("-L", "--daemon").stdout
             and "master sync daemon" in master.adm("-L", "--daemon").stdout,
             20, "dir1 to become VRRP master and both sync daemons to run")

    sticky = who(lab, PERSISTENT)
    timeline = str(lab.state_dir / "timeline")
    dl = lab.popen("client", ["env", f"PYTHONPATH={os.getcwd()}", os.sys.executable, "-m",
                              DOWNLOAD, "--bind", DOWNLOADER, "--host", lab.VIP,
                              "--bytes", str(SIZE), "--rate", str(RATE),
                              "--timeline", timeline],
                   stdout=-1, stderr=-1, text=True)
    try:
        # mid-transfer, and once the backup holds both the download and the template
        wait_for(lambda: received(timeline) > SIZE // 4, 60, "a quarter of the download")
        wait_for(lambda: re.search(rf"ESTABLISHED +{DOWNLOADER}:\d+ ",
                                   backup.adm("-Lnc").stdout)
                 and f"{PERSISTENT}:0 " in backup.adm("-Lnc").stdout,
                 10, "the backup to hold the synced entries")
        before_kill = received(timeline)
        killed_at = time.time()
        lab.kill_director("dir1")
        assert received(timeline) < SIZE
        took_over = wait_for(lambda: lab.holds_vip("dir2") and time.time(), 20,
                             "the backup to take the VIP")
        out, err = dl.communicate(timeout=120)
    finally:
        if dl.poll() is None:
            dl.kill()
            dl.wait(10)
    result = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"err": err}
    # the download finished through the backup: every byte, right checksum, no reset
    assert result.get("error") is None, result
    assert result["bytes"] == SIZE
    assert result["sha256"] == pattern_sha256(SIZE)
    assert before_kill < SIZE
    # keepalived's own account: the backup became master on the advertisement timeout
    ka_log = lab.log("dir2-keepalived.log")
    assert re.search(r"Receive advertisement timeout.*\n.*Entering MASTER STATE", ka_log), ka_log
    assert lab.events("dir2")[-1][1] == "master"
    # the persistent client still reaches its real server, now through the backup
    assert who(lab, PERSISTENT) == sticky
    # new connections are scheduled by the backup
    before = service_conns(backup)
    assert who(lab, NEWCOMER).startswith("rs")
    assert service_conns(backup) == before + 1
    path = os.environ.get("PYVS_HA_TIMELINE")
    if path:
        with open(path.replace("{forwarding}", lab.forwarding), "w") as f:
            json.dump({"forwarding": lab.forwarding, "killed_at": killed_at,
                       "backup_events": lab.events("dir2"),
                       "vip_taken_at": took_over, "size": SIZE, "rate": RATE,
                       "keepalived_conf": lab.keepalived_conf("dir2"),
                       "timeline": [line.split() for line in open(timeline)]}, f)
