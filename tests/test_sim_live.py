"""The simulator decides as the live director does: one flow sequence, written as a
flow list, is played through `pyvs run --seed 7` in a namespace lab with real curl
connections from fixed client addresses and ports, and through pyvs sim at both
levels; every connection reaches the same real server in all three."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pyvs.engine.lab import NatLab
from pyvs.engine.runner import DirectorProcess
from pyvs.engine.sim import Cluster, Options, Run, ServerSpec, flowfile

pytestmark = pytest.mark.lab
VIP = NatLab.VIP
SEED = 7
WEIGHTS = (1, 3, 2)


@pytest.fixture(scope="module")
def lab_director(lab_env):
    lab = NatLab(real_servers=3, clients=4, start_servers=True)
    try:
        lab.up()
        with DirectorProcess(lab.ns("director"), args=("--seed", str(SEED))) as director:
            yield lab, director
    finally:
        lab.down()


def flow_list(lab, path, base_port, n=24):
    rnd = random.Random(3)
    rows = ["start,duration,client,sport,proto,vip,vport,req_bytes,resp_bytes"]
    for k in range(n):
        rows.append(f"{k * 0.2:.1f},0.01,{rnd.choice(lab.client_addrs)},{base_port + k},tcp,"
                    f"{VIP},80,80,200")
    path.write_text("\n".join(rows) + "\n")
    return flowfile.load(path)


SCHEDULERS = ["rr", "wrr", "wlc", "twos", "sh", "mh"]


@pytest.mark.parametrize("scheduler,flags", [("rr", ()), ("wrr", ()), ("wlc", ()),
                                             ("twos", ()), ("sh", ("-b", "sh-port")),
                                             ("mh", ())])
def test_live_and_both_sim_levels_send_every_flow_to_the_same_server(lab_director, tmp_path,
                                                                     scheduler, flags):
    lab, director = lab_director
    # client ports never reused across tests (the client's TIME_WAIT sockets hold them)
    base_port = 41000 + 100 * SCHEDULERS.index(scheduler)
    workload = flow_list(lab, tmp_path / "flows.csv", base_port)
    # a fresh director per scheduler: the seeded random source starts over
    director.stop()
    director.start()
    director.adm("-A", "-t", f"{VIP}:80", "-s", scheduler, *flags)
    for rs, w in zip(lab.real_server_list(), WEIGHTS, strict=True):
        director.adm("-a", "-t", f"{VIP}:80", "-r", f"{rs['addr']}:80", "-m", "-w", str(w))
    live = []
    for k in range(len(workload)):
        client = ".".join(str(b) for b in int(workload.caddr[k]).to_bytes(4, "big"))
        answer = lab.curl(lab.url(VIP), client_addr=client,
                          args=("--local-port", str(int(workload.sport[k]))))
        live.append(answer.strip())
    cluster = Cluster([ServerSpec(rs["name"], rs["addr"], weight=w)
                       for rs, w in zip(lab.real_server_list(), WEIGHTS, strict=True)])
    names = [s.name for s in cluster.servers]
    sched_flags = "sh-port" if flags else ""
    for level in ("flow", "packet"):
        r = Run(workload, cluster, scheduler,
                Options(level=level, seed=SEED, sched_flags=sched_flags)).execute()
        simulated = [names[d] for d in r["flows"]["dest"]]
        assert simulated == live, level
    assert len(set(live)) == 3  # every server took part
    assert np.all(r["flows"]["outcome"] == 0)
