"""pyvs sim: scheduling experiments on the real director core, no root, no network.

The same ``Director`` that ``pyvs run`` uses (services, schedulers, persistence
templates, connection table, TCP/UDP states, timers, sysctls) runs on virtual time,
driven by a workload, a server model and a timeline.  docs/sim.md explains it; a
notebook drives it like this (this example runs: tests/test_sim_api.py)::

    from pyvs.engine.sim import Cluster, Event, Options, Synthetic, compare

    workload = Synthetic(flows=20_000, rate=800, clients=500, zipf=1.1,
                         duration="pareto:alpha=1.5,min=0.01").generate(seed=1)
    cluster = Cluster.uniform(10, weights=[1, 1, 2], capacity=8)
    timeline = [Event(5.0, "fail", "rs3"), Event(15.0, "recover", "rs3")]
    out = compare(workload, cluster, ["rr", "wlc", "mh", "twos"],
                  Options(seed=1, events=timeline, detect_delay=2.0))
    out["schedulers"]["wlc"]["imbalance"]          # plain dicts (JSON-able)
    out["results"]["wlc"]["series"]["active"]      # numpy: samples x servers
    out["results"]["wlc"]["flows"]["response"]     # numpy: one per flow

Modules: workload.py (synthetic flows), flowfile.py (CSV/JSON), pcap.py (capture
replay), cluster.py (real servers), servers.py (the server model), events.py (the
timeline), drivers.py (packet and flow levels), runner.py (one run), metrics.py,
compare.py, output.py, plots.py, schedspec.py (scheduler names, fresh plugin
loading), cli.py (``pyvs sim``), experiments/ (published results reproduced).
"""

from pyvs.engine.sim.cluster import Cluster, ServerSpec
from pyvs.engine.sim.compare import compare, simulate
from pyvs.engine.sim.events import Event
from pyvs.engine.sim.runner import Options, Run
from pyvs.engine.sim.workload import ServiceDef, Synthetic, Workload

__all__ = ["Cluster", "Event", "Options", "Run", "ServerSpec", "ServiceDef", "Synthetic",
           "Workload", "compare", "simulate"]
