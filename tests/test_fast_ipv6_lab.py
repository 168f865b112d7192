"""IPv6 on the batch path: `pyvs run --io xdp` and `--io ring`, NAT, direct routing and
IPv6-in-IPv6 tunnelling (the TUN lab's real servers decapsulate with `pyvs realserver`).

What a user checks: a download and an upload over IPv6 arrive intact (sha256) through
the fast port, and the port's batch path (engine/fastpath.py, engine/fastpath6.py)
served the flow's established packets (``fast`` in `pyvs status`; direct-routing frames
sent from the block count ``routed``, tunnel packets ``tunneled``).
"""

from __future__ import annotations

import pytest

from pyvs.engine.lab import DrLab, NatLab, TunLab, servers
from pyvs.engine.runner import DirectorProcess

pytestmark = pytest.mark.lab

LABS = {"nat": (NatLab, "-m"), "dr": (DrLab, "-g"), "tun": (TunLab, "-i")}
PORTS = ["xdp", "ring"]
SIZE = 20_000_000


@pytest.fixture(scope="module", params=sorted(LABS))
def lab(request, lab_env):
    cls, method = LABS[request.param]
    with cls(real_servers=1, clients=1, start_servers=True) as lab:  # down also on failure
        yield request.param, method, lab


@pytest.mark.parametrize("io", PORTS)
def test_ipv6_download_and_upload_intact_and_served_by_the_batch_path(lab, io):
    mode, method, lab = lab
    with DirectorProcess(lab.ns("director"), args=("--io", io),
                         log_path=lab.state_dir / f"pyvs-{io}-v6.log") as proc:
        proc.adm("-C")
        rs = lab.real_server_list()[0]
        vip = f"[{lab.VIP6}]:80"
        proc.adm("-A", "-t", vip, "-s", "rr")
        proc.adm("-a", "-t", vip, "-r", f"[{rs['addr6']}]:80", method)
        before = proc.status()["ports"][io]
        digest, n = lab.fetch_sha256(lab.url(lab.VIP6, f"/bytes/{SIZE}"), timeout=120)
        assert n == SIZE and digest == servers.pattern_sha256(SIZE)
        sent, received = lab.post_pattern(lab.url(lab.VIP6, "/sha256"), SIZE, timeout=120)
        assert received == sent
        after = proc.status()["ports"][io]
        fast = after["fast"] - before["fast"]
        slow = after["slow"] - before["slow"]
        # the upload's segments and the download's ACKs (NAT: and the download's
        # segments): thousands of established IPv6 packets, most in batches
        assert fast > 2000 and fast > slow, (fast, slow)
        if mode == "dr":  # every DR frame the batch path took left from the block
            assert after["routed"] - before["routed"] >= fast
        elif mode == "tun":  # ... every tunnel packet it built through the raw socket
            assert after["tunneled"] - before["tunneled"] >= fast
        else:
            assert after["forward"] - before["forward"] >= fast
        stats = proc.adm("-L", "-n", "-t", vip, "--stats", "--exact").stdout
        line = next(row for row in stats.splitlines() if row.startswith("TCP"))
        conns, inpkts, outpkts = (int(x) for x in line.split()[2:5])
        assert conns == 2 and inpkts + outpkts >= fast  # counted, fast or slow
        assert "Traceback" not in proc.log()
