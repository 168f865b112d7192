"""FTP data connections through a persistent port-21 service, in every I/O mode.

ip_vs_service_find gives a TCP packet to VIP:20 or VIP:>=1024 with no service of its
own to the VIP's port-21 service (the data connections of passive FTP), and a
persistent port-21 service sends it to the real server that holds the client's
template.  The reply of a NAT real server comes from that data port, not from 21, and
must be rewritten back to the VIP as well.  The lab's real servers answer HTTP on 21
(the control connection) and on 2121 (a passive data port) with their name.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from pyvs.engine.lab import NatLab
from pyvs.engine.runner import DirectorProcess

pytestmark = pytest.mark.lab

VIP = NatLab.VIP
DATA_PORT = 2121
READY_TIMEOUT = 15.0


@pytest.fixture(scope="module")
def ftp_lab(lab_env):
    """A NatLab whose real servers answer on 21 and on 2121."""
    lab = NatLab(real_servers=3, clients=1, start_servers=True, tcp_port=21)
    extra: list[subprocess.Popen] = []
    try:
        lab.up()
        for rs in lab.real_server_list():
            ready = lab.state_dir / f"{rs['name']}-data.ready"
            extra.append(lab.popen(rs["name"], [
                sys.executable, "-m", "pyvs.engine.lab.servers", "--name", rs["name"],
                "--tcp-port", str(DATA_PORT), "--udp-port", "0", "--ready-file", str(ready)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env=dict(os.environ)))
            deadline = time.monotonic() + READY_TIMEOUT
            while not ready.exists():
                assert extra[-1].poll() is None, f"data server of {rs['name']} exited"
                assert time.monotonic() < deadline, f"data server of {rs['name']} not ready"
                time.sleep(0.02)
        yield lab
    finally:
        for p in extra:
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        lab.down()


@pytest.mark.parametrize("io", ["nfqueue", "ring", "xdp"])
def test_passive_data_connection_reaches_the_control_connections_server(ftp_lab, io):
    lab = ftp_lab
    with DirectorProcess(lab.ns("director"), args=("--io", io),
                         log_path=lab.state_dir / f"pyvs-ftp-{io}.log") as director:
        director.adm("-A", "-t", f"{VIP}:21", "-s", "rr", "-p", "60")
        for rs in lab.real_server_list():
            director.adm("-a", "-t", f"{VIP}:21", "-r", f"{rs['addr']}:21", "-m")
        control = lab.curl(lab.url(VIP, port=21)).strip()
        data = [lab.curl(lab.url(VIP, port=DATA_PORT)).strip() for _ in range(3)]
        assert data == [control] * 3
        conns = director.adm("-L", "-n", "-c").stdout
        assert f"{VIP}:{DATA_PORT}" in conns
