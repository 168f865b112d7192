"""Reload as a difference (engine/health/diff.py) on a real in-process director.

What did not change keeps its objects -- the very Destination and VirtualService the
connections, counters and scheduler state hang on -- and a reload ends in the table a
fresh start with the new file would build.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pyvs.engine import ipvsadm
from pyvs.engine.director import Director
from pyvs.engine.health.diff import initial_plan, plan_reload
from pyvs.engine.health.keepalived import load
from pyvs.engine.health.pool import VsPool, rs_id, vs_id
from pyvs.engine.model import format_addr

SERVERS = ("198.18.2.11", "198.18.2.12", "198.18.2.13", "198.18.2.14")


def config(tmp: Path, text: str, name: str = "k.conf"):
    path = tmp / name
    path.write_text(text)
    return load(path)


def apply(director: Director, ops) -> None:
    for argv in ops:
        rc, _out, err = ipvsadm.run(argv, "", director)
        assert rc == 0, f"{argv}: {err}"


def snapshot(director: Director) -> dict:
    """service key -> (scheduler, flags, timeout, {dest: (weight, fwd)})."""
    return {key: (svc.sched_name, svc.flags, svc.timeout,
                  {(format_addr(d.addr), d.port): (d.weight, d.fwd) for d in svc.destinations})
            for key, svc in director.services.services.items()}


class Running:
    """A director started from one file, its pools' state, reloads."""

    def __init__(self, tmp: Path, text: str) -> None:
        self.tmp = tmp
        self.cfg = config(tmp, text, "old.conf")
        plan = initial_plan(self.cfg, 0.0)
        self.director = Director()
        apply(self.director, plan.ops)
        self.states = plan.states

    def event(self, server: str, up: bool, checker: int = 0, vs: int = 0) -> None:
        v = self.cfg.virtual_servers[vs]
        pool = VsPool(v, self.cfg, self.states[vs_id(v)])
        rs = next(r for r in v.real_servers if rs_id(r) == server)
        pool.checker_result(rs, checker, up, "test")
        apply(self.director, pool.take()[0])

    def reload(self, text: str):
        new = config(self.tmp, text, "new.conf")
        plan = plan_reload(self.cfg, self.states, new, 1.0)
        apply(self.director, plan.ops)
        self.cfg, self.states = new, plan.states
        return plan

    def dest(self, server: str):
        for svc in self.director.services.services.values():
            for d in svc.destinations:
                if f"{format_addr(d.addr)}:{d.port}" == server:
                    return d
        return None


def farm(servers: dict[str, int], sched: str = "wrr", extra: str = "",
         checkers: str = "TCP_CHECK { }") -> str:
    body = "".join(f"""
    real_server {addr} 80 {{
        weight {w}
        {checkers}
    }}""" for addr, w in servers.items())
    return f"virtual_server 198.18.1.1 80 {{\n    lb_algo {sched}\n    {extra}\n{body}\n}}\n"


BASE = {"198.18.2.11": 3, "198.18.2.12": 2, "198.18.2.13": 1}


def test_same_file_changes_nothing(tmp_path):
    run = Running(tmp_path, farm(BASE))
    assert run.reload(farm(BASE)).ops == []


def test_weights_change_in_place_and_counters_stay(tmp_path):
    run = Running(tmp_path, farm(BASE))
    kept = run.dest("198.18.2.12:80")
    kept.stats.conns, kept.activeconns = 41, 3
    plan = run.reload(farm({**BASE, "198.18.2.12": 7}))
    assert [argv[0] for argv in plan.ops] == ["-e"]
    d = run.dest("198.18.2.12:80")
    assert d is kept and d.weight == 7 and d.stats.conns == 41 and d.activeconns == 3


def test_added_and_removed_real_servers_only(tmp_path):
    run = Running(tmp_path, farm(BASE))
    service = next(iter(run.director.services.services.values()))
    others = {s: run.dest(f"{s}:80") for s in ("198.18.2.11", "198.18.2.13")}
    plan = run.reload(farm({"198.18.2.11": 3, "198.18.2.13": 1, "198.18.2.14": 4}))
    assert sorted(argv[0] for argv in plan.ops) == ["-a", "-d"]
    assert run.dest("198.18.2.12:80") is None
    assert run.dest("198.18.2.14:80").weight == 4
    assert next(iter(run.director.services.services.values())) is service
    assert all(run.dest(f"{s}:80") is d for s, d in others.items())
    # a removed destination goes to the trash, as ipvsadm -d leaves it in the kernel
    assert any(format_addr(d.addr) == "198.18.2.12" for d in run.director.services.trash)


def test_service_settings_are_edited_not_recreated(tmp_path):
    run = Running(tmp_path, farm(BASE))
    service = next(iter(run.director.services.services.values()))
    plan = run.reload(farm(BASE, sched="wlc", extra="persistence_timeout 120"))
    assert [argv[0] for argv in plan.ops] == ["-E"]
    assert next(iter(run.director.services.services.values())) is service
    assert service.sched_name == "wlc" and service.timeout == 120


def test_a_down_server_stays_down_across_a_reload(tmp_path):
    run = Running(tmp_path, farm(BASE))
    run.event("198.18.2.12:80", False)
    assert run.dest("198.18.2.12:80") is None
    plan = run.reload(farm({**BASE, "198.18.2.12": 5}))  # weight changes while down
    assert plan.ops == []  # not re-added, nothing else touched
    assert run.dest("198.18.2.12:80") is None
    run.event("198.18.2.12:80", True)  # its checker's state came along: first success
    assert run.dest("198.18.2.12:80").weight == 5


def test_a_timing_change_keeps_the_checkers_results(tmp_path):
    """keepalived's compare functions ignore retry and the delays: the checker is the
    same one, so a down server stays down."""
    run = Running(tmp_path, farm(BASE))
    run.event("198.18.2.12:80", False)
    slower = "TCP_CHECK {\n retry 4\n delay_before_retry 2\n delay_loop 9\n }"
    assert run.reload(farm(BASE, checkers=slower)).ops == []
    assert run.dest("198.18.2.12:80") is None
    state = run.states[vs_id(run.cfg.virtual_servers[0])].servers["198.18.2.12:80"]
    assert not state.alive and not state.checkers[0].up


def test_a_server_whose_failing_checker_is_removed_comes_back(tmp_path):
    two = "TCP_CHECK { }\n        TCP_CHECK { connect_port 81 }"
    run = Running(tmp_path, farm(BASE, checkers=two))
    run.event("198.18.2.13:80", False, checker=1)
    assert run.dest("198.18.2.13:80") is None
    run.reload(farm(BASE))  # the port 81 check is gone; the port 80 one never failed
    assert run.dest("198.18.2.13:80").weight == 1


def test_removed_virtual_server_goes_new_one_comes(tmp_path):
    other = farm({"198.18.2.14": 1}).replace("198.18.1.1 80", "198.18.1.2 80")
    run = Running(tmp_path, farm(BASE) + other)
    plan = run.reload(farm(BASE).replace("198.18.1.1 80", "198.18.1.3 80") + other)
    assert sorted(argv[0] for argv in plan.ops) == ["-A", "-D", "-a", "-a", "-a", "-d", "-d",
                                                    "-d"]
    keys = sorted(format_addr(k[2]) for k in run.director.services.services)
    assert keys == ["198.18.1.2", "198.18.1.3"]


# -- the property: reload == fresh start --------------------------------------------------
SERVICES = {
    "tcp": "virtual_server 198.18.1.1 80",
    "udp": "virtual_server 198.18.1.1 53",
    "fwm": "virtual_server fwmark 5",
}


@st.composite
def configs(draw) -> str:
    out = []
    for name, head in SERVICES.items():
        if not draw(st.booleans()):
            continue
        sched = draw(st.sampled_from(["rr", "wrr", "wlc", "sh"]))
        persist = draw(st.sampled_from(["", "persistence_timeout 60", "persistence_timeout 300"]))
        proto = "protocol UDP" if name == "udp" else ""
        servers = draw(st.dictionaries(st.sampled_from(SERVERS), st.integers(0, 5),
                                       max_size=4))
        method = draw(st.sampled_from(["NAT", "DR"]))
        body = "".join(f"""
    real_server {a} {80 if name != 'udp' else 53} {{
        weight {w}
        TCP_CHECK {{ connect_port 80 }}
    }}""" for a, w in servers.items())
        out.append(f"{head} {{\n    lb_algo {sched}\n    lb_kind {method}\n    {persist}\n"
                   f"    {proto}\n{body}\n}}\n")
    return "".join(out)


@settings(max_examples=120, deadline=None)
@given(old=configs(), new=configs())
def test_reload_ends_in_the_table_a_fresh_start_builds(tmp_path_factory, old, new):
    tmp = tmp_path_factory.mktemp("diff")
    run = Running(tmp, old)
    before = {(key, format_addr(d.addr), d.port): d
              for key, svc in run.director.services.services.items() for d in svc.destinations}
    run.reload(new)
    fresh = Director()
    apply(fresh, initial_plan(config(tmp, new, "fresh.conf"), 0.0).ops)
    assert snapshot(run.director) == snapshot(fresh)
    for key, svc in run.director.services.services.items():
        for d in svc.destinations:
            prev = before.get((key, format_addr(d.addr), d.port))
            if prev is not None:
                assert d is prev  # kept: same object, connections and counters with it
