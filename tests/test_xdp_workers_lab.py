"""`pyvs run --io xdp --workers 2` on multi-queue veths (labs built with ``queues=2``).

Each worker has the AF_XDP socket of one receive queue per interface; a veth frame's
receive queue is its sender's transmit queue, picked by the sender's hash of its own
flow, so a connection's request and reply directions land on either worker.  What
is checked: every TCP download (sha256) and UDP query from several client addresses
and ports succeeds, frames really crossed between the workers (without the hand-off
those connections would have broken: the non-owner has no entry for them), the
merged ``-L -n --stats`` totals are exactly what was sent, and DR works too.  On a
lab with single-queue links, two workers are refused naming the interface.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from labhelp import add_service
from waiting import wait_for

from pyvs.engine.lab import DrLab, NatLab, servers
from pyvs.engine.runner import DirectorError, DirectorProcess

pytestmark = pytest.mark.lab

VIP = NatLab.VIP
ARGS = ("--io", "xdp", "--workers", "2")


def stats_line(d: DirectorProcess, proto: str, port: int) -> tuple[int, ...]:
    out = d.adm("-L", "-n", proto, f"{VIP}:{port}", "--stats", "--exact").stdout
    line = next(row for row in out.splitlines() if row.startswith(("TCP", "UDP")))
    return tuple(int(x) for x in line.split()[2:7])


def crossed(d: DirectorProcess) -> list[dict]:
    return d.status()["xdp-workers"]


def test_nat_connections_of_both_workers_all_succeed_and_totals_add_up(nat_lab_factory):
    lab = nat_lab_factory(real_servers=3, clients=3, queues=2)
    with DirectorProcess(lab.ns("director"), args=ARGS,
                         log_path=lab.state_dir / "pyvs.log") as d:
        add_service(d, lab, "-s", "rr", proto="-u", port=53)
        add_service(d, lab, "-s", "rr")
        payload = "q" * 20
        queries = 40
        replied = 0  # UDP payload bytes of the answers
        for n in range(queries):
            client = lab.client_addrs[n % 3]
            reply = lab.udp_query(VIP, 53, payload, client_addr=client, sport=30000 + n)
            assert reply.strip() in {"rs1", "rs2", "rs3"}
            replied += len(reply.encode())
        downloads, size = 12, 500_000

        def download(n: int) -> tuple[str, int]:
            return lab.fetch_sha256(lab.url(VIP, f"/bytes/{size}"),
                                    client_addr=lab.client_addrs[n % 3], timeout=60)

        with ThreadPoolExecutor(4) as pool:  # four at a time: batches mix connections
            results = list(pool.map(download, range(downloads)))
        assert results == [(servers.pattern_sha256(size), size)] * downloads

        # both workers received frames, and frames crossed both ways between them
        per = crossed(d)
        assert [w["worker"] for w in per] == [0, 1]
        assert all(w["received"] > 0 for w in per), per
        assert per[0]["handed-out"] > 0 and per[1]["handed-out"] > 0, per
        assert per[0]["handed-in"] == per[1]["handed-out"], per
        assert per[1]["handed-in"] == per[0]["handed-out"], per
        assert all(w["ring-full"] == 0 for w in per), per

        # the merged listing: every query, exactly once (workers publish every 0.1 s)
        udp = wait_for(lambda: stats_line(d, "-u", 53),
                       until=lambda t: t[:3] == (queries, queries, queries),
                       what=f"{queries} UDP conns/inpkts/outpkts in the merged listing")
        assert udp[3] == queries * (20 + 8 + len(payload))
        assert udp[4] == queries * (20 + 8) + replied
        tcp = wait_for(lambda: stats_line(d, "-t", 80), until=lambda t: t[0] == downloads,
                       what=f"{downloads} TCP connections in the merged listing")
        assert tcp[4] >= downloads * size  # every body went out through the director
        st = d.status()
        assert st["workers"] == 2
        assert st["ports"]["xdp"]["queues"] == {"cli0": [0], "br0": [0]}


def test_direct_routing_with_two_workers(lab_env):
    lab = DrLab(real_servers=3, clients=3, start_servers=True, queues=2)
    try:
        lab.up()
        with DirectorProcess(lab.ns("director"), args=ARGS,
                             log_path=lab.state_dir / "pyvs.log") as d:
            d.adm("-A", "-t", f"{lab.VIP}:80", "-s", "rr")
            for rs in lab.real_server_list():
                d.adm("-a", "-t", f"{lab.VIP}:80", "-r", f"{rs['addr']}:80", "-g")
            answers = [lab.curl(lab.url(), client_addr=lab.client_addrs[n % 3]).strip()
                       for n in range(24)]
            assert set(answers) == {"rs1", "rs2", "rs3"}
            size = 200_000
            digest, got = lab.fetch_sha256(lab.url(lab.VIP, f"/bytes/{size}"), timeout=30)
            assert (got, digest) == (size, servers.pattern_sha256(size))
            # here the lab's bridge sends every frame to the director's queue 0, so worker
            # 0 receives all and hands worker 1 its connections
            per = crossed(d)
            assert sum(w["handed-out"] for w in per) > 0, per
            assert sum(w["handed-in"] for w in per) == sum(w["handed-out"] for w in per)
            wait_for(lambda: stats_line(d, "-t", 80), until=lambda t: t[0] == 25,
                     what="25 TCP connections in the merged listing")
    finally:
        lab.down()


def test_fewer_queues_than_workers_is_refused_naming_the_interface(nat_lab_factory):
    lab = nat_lab_factory(real_servers=1, clients=1)  # single-queue links
    proc = DirectorProcess(lab.ns("director"), args=ARGS,
                           log_path=lab.state_dir / "pyvs.log")
    with pytest.raises(DirectorError, match=r"cli0 has 1 receive queue; each worker needs"):
        proc.start()
    proc.stop()
