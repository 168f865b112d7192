"""bench/sim_bench.py runs and reports what it says (no timing is asserted): flows/s and
events/s per scheduler at both levels, 7 director calls per connection, and a profile
whose module shares add up."""

from __future__ import annotations

import json

import pytest

from pyvs.bench import sim_bench


def test_sim_bench_reports_both_levels_and_the_profile(tmp_path, capsys):
    out = tmp_path / "sim.json"
    assert sim_bench.main(["--flows", "400", "--packet-flows", "150", "--schedulers",
                           "rr,wlc", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    runs = {(r["scheduler"], r["level"]): r for r in data["runs"]}
    assert set(runs) == {("rr", "flow"), ("rr", "packet"), ("wlc", "flow"), ("wlc", "packet")}
    for r in runs.values():
        assert r["calls_per_flow"] == 7.0  # the connection plan of engine/sim/drivers.py
        assert r["flows_per_second"] > 0
        assert r["events_per_second"] == pytest.approx(7 * r["flows_per_second"])
    prof = data["profile"]
    assert sum(prof["by_module"].values()) == pytest.approx(1.0)
    assert 0 < prof["inside_director_handle"] < 1
    assert "inside Director.handle" in capsys.readouterr().out
