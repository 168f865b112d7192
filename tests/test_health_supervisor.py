"""The daemon's side (engine/health/supervisor.py) without a network: requests from the
checker process, reload refusals, omega at shutdown, the scheduler report() hook, and
ha_suspend's address test."""

from __future__ import annotations

import time
from pathlib import Path

from pyvs.engine import ipvsadm
from pyvs.engine.director import Director
from pyvs.engine.health import model
from pyvs.engine.health.checkerd import suspended
from pyvs.engine.health.diff import initial_plan
from pyvs.engine.health.keepalived import load
from pyvs.engine.health.pool import VsPool, vs_id
from pyvs.engine.health.supervisor import HealthSupervisor

CONF = """
virtual_server 198.18.1.1 80 {{
    lb_algo {sched}
    omega
    quorum_down "/bin/sh -c 'echo quorum-down >> {events}'"
    real_server 198.18.2.11 80 {{
        notify_down "/bin/sh -c 'echo rs1-down >> {events}'"
        TCP_CHECK {{ }}
    }}
    real_server 198.18.2.12 80 {{
        TCP_CHECK {{ }}
    }}
}}
"""


def supervisor(tmp: Path, sched: str = "rr") -> tuple[HealthSupervisor, Director]:
    path = tmp / "k.conf"
    path.write_text(CONF.format(sched=sched, events=tmp / "events"))
    sup = HealthSupervisor(str(path), "keepalived", load(path))
    director = Director()

    def apply(argv):
        rc, out, err = ipvsadm.run(argv, "", director)
        return {"rc": rc, "out": out, "err": err}

    sup.apply, sup.director = apply, director
    plan = initial_plan(sup.cfg, 0.0)
    assert sup.run_plan(plan) == []
    sup.states = plan.states
    return sup, director


def dests(director: Director) -> list[str]:
    return sorted(f"{d.addr.hex()}:{d.port}" for svc in director.services.services.values()
                  for d in svc.destinations)


def transition_request(sup: HealthSupervisor, generation: int) -> dict:
    vs = sup.cfg.virtual_servers[0]
    pool = VsPool(vs, sup.cfg, model.from_json(type(sup.states[vs_id(vs)]),
                                               model.to_json(sup.states[vs_id(vs)])))
    pool.checker_result(vs.real_servers[0], 0, False, "connection refused")
    ops, _, _ = pool.take()
    return {"op": "health", "action": "apply", "generation": generation, "vs": vs_id(vs),
            "state": model.to_json(pool.state), "ops": ops, "lines": [],
            "event": {"real_server": "198.18.2.11:80", "state": "DOWN"}}


def test_apply_runs_the_ops_and_a_stale_generation_is_refused(tmp_path):
    sup, director = supervisor(tmp_path)
    before = dests(director)
    stale = sup.handle(transition_request(sup, generation=7))
    assert stale["rc"] == 3 and dests(director) == before
    reply = sup.handle(transition_request(sup, generation=0))
    assert reply["rc"] == 0 and reply["errors"] == []
    assert len(dests(director)) == 1
    assert reply["event"]["time"].endswith("Z") and sup.history[-1] == reply["event"]
    status = sup.status()["virtual_servers"][0]["real_servers"][0]
    assert (status["state"], status["in_table"], status["checkers"][0]["state"]) == (
        "down", False, "down")


def test_broken_reload_changes_nothing_and_says_where(tmp_path):
    sup, director = supervisor(tmp_path)
    before = dests(director)
    Path(sup.path).write_text(CONF.format(sched="fastest", events="x"))
    reply = sup.handle({"op": "reload"})
    assert reply["rc"] == 1 and f"{sup.path}:3: lb_algo" in reply["err"]
    assert dests(director) == before and sup.generation == 0


def test_omega_runs_the_down_notifiers_at_shutdown(tmp_path):
    sup, _ = supervisor(tmp_path)
    sup.stop()
    events = tmp_path / "events"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (not events.exists() or
                                           len(events.read_text().split()) < 2):
        time.sleep(0.05)
    assert sorted(events.read_text().split()) == ["quorum-down", "rs1-down"]


RECORDER = """
from pyvs.schedulers.registry import lookup


class Recorder(lookup("rr")):
    def report(self, dest, seconds):
        self.__dict__.setdefault("calls", []).append((dest, seconds))
"""


def test_measured_response_times_reach_a_scheduler_with_report(tmp_path):
    module = tmp_path / "recorder.py"
    module.write_text(RECORDER)
    sup, director = supervisor(tmp_path, sched=f"{module}:Recorder")
    svc = next(iter(director.services.services.values()))
    sup.handle({"op": "health", "action": "timings", "samples": [
        [["TCP", "198.18.1.1", 80, 0, 4], "198.18.2.12", 80, 0.012],
        [["TCP", "198.18.1.1", 80, 0, 4], "198.18.2.99", 80, 0.5]]})  # not a destination
    calls = svc.scheduler.calls
    assert [(d.port, s) for d, s in calls] == [(80, 0.012)]
    assert calls[0][0] is svc.find_dest(2, bytes([198, 18, 2, 12]), 80)


def test_ha_suspend_needs_the_virtual_address_here(tmp_path):
    path = tmp_path / "k.conf"
    path.write_text("virtual_server 127.0.0.1 80 {\n ha_suspend\n}\n"
                    "virtual_server 198.18.255.254 80 {\n ha_suspend\n}\n"
                    "virtual_server fwmark 3 {\n ha_suspend\n}\n")
    cfg = load(path)
    assert [suspended(vs, cfg) for vs in cfg.virtual_servers] == [False, True, False]
