"""pyvs sim's two levels make the same decisions: real frames through Director.process
(packet level) and Director.handle(info, None) driven by connection events (flow level)
give every flow the same real server and outcome, and leave the same counters,
connection states and timers, for every kind of scheduler, with persistence, with
direct routing and through failures, removals and weight changes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyvs.engine.sim.cluster import Cluster
from pyvs.engine.sim.events import Event
from pyvs.engine.sim.runner import Options, Run
from pyvs.engine.sim.workload import ServiceDef, Synthetic


def director_state(run: Run) -> tuple:
    d = run.director
    stats = sorted((dest.addr, dest.port, dest.stats.as_tuple(), dest.activeconns,
                    dest.inactconns, dest.persistconns)
                   for dests in run.dests for dest in dests)
    conns = sorted((c.caddr, c.cport, c.vaddr, c.vport, c.daddr, c.dport, c.state, c.flags,
                    c.expires, c.timeout) for c in d.conntable.entries())
    return stats, conns, d.total.as_tuple(), dict(d.drops)


def both_levels(workload, cluster, scheduler, **opts):
    out = []
    for level in ("flow", "packet"):
        run = Run(workload, cluster, scheduler, Options(level=level, **opts))
        result = run.execute()
        out.append((result, director_state(run)))
    return out


def assert_same(flow, packet):
    (rf, sf), (rp, sp) = flow, packet
    for key in ("dest", "outcome"):
        assert np.array_equal(rf["flows"][key], rp["flows"][key]), key
    assert np.array_equal(rf["flows"]["response"], rp["flows"]["response"], equal_nan=True)
    assert sf == sp
    for key in ("active", "inactive", "bytes", "conns"):
        assert np.array_equal(rf["series"][key], rp["series"][key]), key


EVENTS = [Event(0.6, "fail", "rs2"), Event(1.0, "weight", "rs3", weight=3),
          Event(1.3, "quiesce", "rs1"), Event(1.6, "recover", "rs2"),
          Event(1.8, "remove", "rs4"), Event(2.0, "add", "rs9", fields={"weight": 2})]


@pytest.mark.parametrize("scheduler", ["rr", "wrr", "wlc", "lc", "sed", "nq", "sh", "mh",
                                       "dh", "lblc", "lblcr", "fo", "ovf", "twos",
                                       "schedulers/examples/least_response.py:LeastResponse"])
def test_levels_agree_for_every_scheduler(scheduler, monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    wl = Synthetic(flows=600, rate=300, clients=40, zipf=1.1,
                   duration="lognormal:mean=0.05,sigma=1.5",
                   resp_size="pareto:alpha=1.3,min=200",
                   services=[ServiceDef(port=80), ServiceDef(port=53, proto="udp", share=0.3)]
                   ).generate(7)
    cluster = Cluster.uniform(5, weights=[1, 2, 1, 3, 1], capacity=3, queue=4)
    flow, packet = both_levels(wl, cluster, scheduler, seed=3, events=EVENTS,
                               detect_delay=0.2)
    assert_same(flow, packet)
    outcomes = flow[0]["summary"]["outcomes"]
    assert sum(outcomes.values()) == 600 and outcomes["served"] > 100  # a real run
    assert outcomes["broken"] > 0  # the failure lost requests, the removal broke flows


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31), persistent=st.sampled_from([0, 30]),
       fwd=st.sampled_from(["nat", "dr"]),
       scheduler=st.sampled_from(["rr", "wlc", "sh", "mh", "twos", "lblc"]),
       on_failure=st.sampled_from(["remove", "quiesce"]),
       expire_nodest=st.sampled_from([0, 1]))
def test_levels_agree_on_random_runs(seed, persistent, fwd, scheduler, on_failure,
                                     expire_nodest):
    wl = Synthetic(flows=250, rate=200, clients=25, zipf=1.0,
                   duration="exp:mean=0.08", resp_size="lognormal:mean=4000,sigma=1.2"
                   ).generate(seed)
    cluster = Cluster.uniform(4, capacity=2, queue=2, fwd=fwd)
    flow, packet = both_levels(wl, cluster, scheduler, seed=seed, persistent=persistent,
                               events=EVENTS[:5], on_failure=on_failure, detect_delay=0.1,
                               sysctl={"expire_nodest_conn": expire_nodest})
    assert_same(flow, packet)


def test_same_seed_same_run_bit_for_bit():
    """A seed fixes the workload, the server model and the schedulers' random draws."""
    wl = Synthetic(flows=400, rate=500).generate(11)
    again = Synthetic(flows=400, rate=500).generate(11)
    for name, col in wl.columns().items():
        assert np.array_equal(col, again.columns()[name]), name
    cluster = Cluster.uniform(6, capacity=2, service="exp:mean=0.01")
    a = Run(wl, cluster, "twos", Options(seed=5)).execute()
    b = Run(again, cluster, "twos", Options(seed=5)).execute()
    c = Run(wl, cluster, "twos", Options(seed=6)).execute()
    assert np.array_equal(a["flows"]["dest"], b["flows"]["dest"])
    assert np.array_equal(a["flows"]["response"], b["flows"]["response"], equal_nan=True)
    assert not np.array_equal(a["flows"]["dest"], c["flows"]["dest"])  # the seed matters
