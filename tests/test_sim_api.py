"""The notebook API documented in engine/sim/__init__.py runs as written and returns
plain dicts and numpy arrays that mean what they say."""

from __future__ import annotations

import textwrap

import numpy as np

import pyvs.engine.sim as sim


def documented_example() -> str:
    doc = sim.__doc__
    start = doc.index("::\n") + 3
    end = doc.index("\nModules:")
    return textwrap.dedent(doc[start:end])


def test_documented_example_runs_and_its_results_make_sense():
    scope: dict = {}
    exec(compile(documented_example(), "engine/sim/__init__.py", "exec"), scope)
    out = scope["out"]
    assert list(out["schedulers"]) == ["rr", "wlc", "mh", "twos"]
    wlc, rr = out["schedulers"]["wlc"], out["schedulers"]["rr"]
    series = out["results"]["wlc"]["series"]
    flows = out["results"]["wlc"]["flows"]
    assert series["active"].shape == (len(series["time"]), 10)
    assert flows["response"].shape == (20_000,)
    # rs3 failed at 5 s and came back at 15 s: connections sent to it in between, before
    # the health checker removed it (2 s), got no answer; its requests in service were lost
    assert wlc["outcomes"]["failed"] > 0 and wlc["outcomes"]["broken"] > 0
    rs3 = series["active"][:, 2]
    t = series["time"]
    removed = (t > 7.5) & (t < 14.5)
    assert series["weight"][removed, 2].max() == 0  # out of the service
    assert rs3[(t > 16) & (t < 20)].max() > 0  # back in after recovery + detection
    # least-connection scheduling balances active connections better than round robin
    assert wlc["imbalance"] < rr["imbalance"]
    # per-event disruption is reported for both events
    assert [e["event"] for e in wlc["disruption"]["events"]] == ["t=5 fail rs3",
                                                                 "t=15 recover rs3"]
    # mh keeps most clients on their server across the failure; rr keeps almost none
    assert (out["schedulers"]["mh"]["disruption"]["clients_remapped"]
            < rr["disruption"]["clients_remapped"])
    assert np.nanmax(flows["response"]) > 0
