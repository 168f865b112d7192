"""Direct routing and IPIP on the batch path: `pyvs run --io xdp` and `--io ring` in the
DR and TUN labs (the TUN lab's real servers decapsulate with `pyvs realserver`).

What a user checks: a download and an upload arrive intact through the fast port, the
port's batch path (engine/fastpath.py) served the flow's established packets (``fast``
in `pyvs status`; DR frames sent from the block count ``routed``, IPIP frames built in
the block ``tunneled-l2``), and a burst of
datagrams on established flows gives exactly the `pyvsadm -Ln --stats` counters the
per-packet path (the default NFQUEUE port) gives for the same burst.
"""

from __future__ import annotations

import sys

import pytest

from pyvs.engine.lab import DrLab, TunLab, servers
from pyvs.engine.runner import DirectorProcess

pytestmark = pytest.mark.lab

LABS = {"dr": (DrLab, "-g"), "tun": (TunLab, "-i")}
PORTS = ["xdp", "ring"]
SIZE = 20_000_000
FLOWS, PER_FLOW, PAYLOAD = 4, 300, 100  # the datagram burst

# every datagram of the burst from the client namespace: one socket per flow, no waiting
# for answers (they bypass the director; a closed socket would make the client send ICMP
# port unreachable to the VIP, which IPVS counts, rate-limited), a short pause between
# rounds so that the director's rings never overflow (the counters must be exact)
BURST = """
import socket, sys, time
vip, port, src, flows, per_flow, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], \\
    *map(int, sys.argv[4:7])
socks = []
for k in range(flows):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 31000 + k))
    socks.append(s)
for s in socks:  # the first datagram of each flow schedules it
    s.sendto(b"x" * size, (vip, port))
time.sleep(0.3)
for r in range(per_flow - 1):
    for s in socks:
        s.sendto(b"y" * size, (vip, port))
    if r % 50 == 49:
        time.sleep(0.02)
time.sleep(1)  # the sockets stay open for the answers: no port unreachable to the VIP
"""


@pytest.fixture(scope="module", params=sorted(LABS))
def lab(request, lab_env):
    cls, method = LABS[request.param]
    with cls(real_servers=1, clients=1, start_servers=True) as lab:  # down also on failure
        yield request.param, method, lab


def configure(proc: DirectorProcess, lab, method: str, proto: str, port: int) -> None:
    proc.adm("-C")
    rs = lab.real_server_list()[0]
    proc.adm("-A", proto, f"{lab.VIP}:{port}", "-s", "rr")
    proc.adm("-a", proto, f"{lab.VIP}:{port}", "-r", f"{rs['addr']}:{port}", method)


def burst_stats(lab, proc: DirectorProcess, method: str) -> list[str]:
    """The service's and the real server's `-Ln --stats --exact` rows after the burst."""
    configure(proc, lab, method, "-u", 53)
    lab.run("client", [sys.executable, "-c", BURST, lab.VIP, "53", lab.client_addrs[0],
                       str(FLOWS), str(PER_FLOW), str(PAYLOAD)], check=True, timeout=60)
    out = proc.adm("-L", "-n", "-u", f"{lab.VIP}:53", "--stats", "--exact").stdout
    rows = [line.split() for line in out.splitlines()]
    return [" ".join(r) for r in rows
            if len(r) > 2 and r[0] in ("UDP", "->") and r[1][0].isdigit()]


def port_counters(proc: DirectorProcess, io: str) -> dict:
    return proc.status()["ports"][io]


@pytest.mark.parametrize("io", PORTS)
def test_download_and_upload_intact_and_served_by_the_batch_path(lab, io):
    mode, method, lab = lab
    with DirectorProcess(lab.ns("director"), args=("--io", io),
                         log_path=lab.state_dir / f"pyvs-{io}.log") as proc:
        configure(proc, lab, method, "-t", 80)
        before = port_counters(proc, io)
        digest, n = lab.fetch_sha256(lab.url(path=f"/bytes/{SIZE}"), timeout=120)
        assert n == SIZE and digest == servers.pattern_sha256(SIZE)
        sent, received = lab.post_pattern(lab.url(path="/sha256"), SIZE, timeout=120)
        assert received == sent
        after = port_counters(proc, io)
        fast = after["fast"] - before["fast"]
        slow = after["slow"] - before["slow"]
        # the upload's segments and the download's ACKs: thousands of established
        # packets, most of them in batches the vectorised path takes
        assert fast > 2000 and fast > slow, (fast, slow)
        # every packet the batch path took left through the port's batch transmit:
        # DR frames from the block; IPIP (TCP sets DF) as ready Ethernet frames built in
        # the block too, not through the stack
        sent_by = "routed" if mode == "dr" else "tunneled-l2"
        assert after[sent_by] - before[sent_by] >= fast
        assert "Traceback" not in proc.log()


@pytest.mark.parametrize("io", PORTS)
def test_datagram_counters_equal_the_per_packet_paths(lab, io):
    mode, method, lab = lab
    with DirectorProcess(lab.ns("director"),
                         log_path=lab.state_dir / "pyvs-nfqueue.log") as proc:
        want = burst_stats(lab, proc, method)
    with DirectorProcess(lab.ns("director"), args=("--io", io),
                         log_path=lab.state_dir / f"pyvs-{io}-burst.log") as proc:
        before = port_counters(proc, io)
        got = burst_stats(lab, proc, method)
        fast = port_counters(proc, io)["fast"] - before["fast"]
    total = FLOWS * PER_FLOW
    svc = want[0].split()
    # conns, inpkts, outpkts, inbytes, outbytes: every datagram, none seen twice
    assert svc[2:7] == [str(FLOWS), str(total), "0", str(total * (28 + PAYLOAD)), "0"]
    assert got == want
    assert fast > 0, f"{mode}/{io}: no datagram took the batch path"
