"""`pyvs run --io ring`: what is particular to the ring port.  The behaviour it shares
with the XDP port (balancing, UDP, 50 MB, IPv6, fwmark, plumbing removed on stop and
after a crash) is tested for both in test_fast_ports_lab.py.
"""

from __future__ import annotations

import pytest
from labhelp import add_service, answers_every_probe
from waiting import wait_for

from pyvs.engine.lab import NatLab
from pyvs.engine.runner import DirectorProcess

pytestmark = pytest.mark.lab

VIP = NatLab.VIP


def test_two_workers_balance_and_stats_show_totals(nat_lab_factory):
    lab = nat_lab_factory(real_servers=3, clients=3)
    with DirectorProcess(lab.ns("director"), args=("--io", "ring", "--workers", "2")) as d:
        add_service(d, lab, "-s", "rr", proto="-u", port=53)
        add_service(d, lab, "-s", "wlc")
        payload = "x" * 10
        replies = [lab.udp_query(VIP, 53, payload, sport=21000 + n).strip() for n in range(24)]
        assert set(replies) == {"rs1", "rs2", "rs3"}
        answers = [lab.curl(lab.url(VIP), client_addr=lab.client_addrs[n % 3]).strip()
                   for n in range(12)]
        assert set(answers) == {"rs1", "rs2", "rs3"}
        def udp_totals():
            stats = d.adm("-L", "-n", "-u", f"{VIP}:53", "--stats", "--exact").stdout
            line = next(row for row in stats.splitlines() if row.startswith("UDP"))
            return tuple(int(x) for x in line.split()[2:7])

        # workers publish their counters every 0.1 s: wait until the listing has them all
        totals = wait_for(udp_totals, until=lambda t: t[:3] == (24, 24, 24),
                          what="24 conns/inpkts/outpkts in the merged listing")
        conns, inpkts, outpkts, inbytes, outbytes = totals
        assert inbytes == 24 * (20 + 8 + len(payload))
        st = d.status()
        assert st["workers"] == 2
        assert st["ports"]["ring"]["forward"] > 0


def test_ring_keeps_serving_after_a_flood_it_cannot_keep_up_with(lab_env):
    """Overload sheds whole blocks; afterwards the ring and the kernel must still agree on
    which blocks are whose (a desynchronised ring stops receiving for good).
    Uses the bench topology (client -> director -> sink) and its raw-frame generator."""
    from pyvs.bench import tools, traffic
    from pyvs.bench.variants import configure_pyvs
    from pyvs.engine.lab.benchtopo import FLOOD_PORT, BenchLab

    built = tools.build_all()
    with BenchLab(tools=built) as bench:
        gen = traffic.raw_gen(bench, built["gen"])
        with DirectorProcess(bench.ns("director"), args=("--io", "ring")) as d:
            configure_pyvs(d, bench, "m")
            # three rounds: the second flood used to leave the ring silent for good
            for _round in range(3):
                flood = traffic.flat_out(bench, gen, bench.VIP, FLOOD_PORT, duration=2.0)
                assert flood["loss"] > 0.2  # it really could not keep up
                probe = answers_every_probe(bench, gen.path)  # serving again within seconds
                assert probe["lost"] == 0 and probe["p50_us"] > 0, d.status()["ports"]["ring"]
