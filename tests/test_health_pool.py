"""keepalived's failure handling (engine/health/pool.py) on a real in-process director.

Every ipvsadm argv the pool produces is run by pyvsadm's own code against a Director,
so the tests check the IPVS table an administrator would see, not the argv.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pyvs.engine import ipvsadm
from pyvs.engine.director import Director
from pyvs.engine.health.diff import initial_plan
from pyvs.engine.health.keepalived import load
from pyvs.engine.health.pool import VsPool, rs_id, vs_id, weigh_live
from pyvs.engine.model import format_addr


def config(tmp: Path, text: str):
    path = tmp / "k.conf"
    path.write_text(text)
    return load(path)


def apply(director: Director, ops: list[list[str]]) -> None:
    for argv in ops:
        rc, _out, err = ipvsadm.run(argv, "", director)
        assert rc == 0, f"{argv}: {err}"


def table(director: Director) -> dict[str, int]:
    """"real server" -> weight, over every service."""
    return {f"{format_addr(d.addr)}:{d.port}": d.weight
            for svc in director.services.services.values() for d in svc.destinations}


def start(tmp: Path, text: str) -> tuple[Director, VsPool]:
    cfg = config(tmp, text)
    plan = initial_plan(cfg, 0.0)
    director = Director()
    apply(director, plan.ops)
    vs = cfg.virtual_servers[0]
    return director, VsPool(vs, cfg, plan.states[vs_id(vs)])


def step(director: Director, pool: VsPool, server: str, checker: int, up: bool) -> None:
    rs = next(r for r in pool.vs.real_servers if rs_id(r) == server)
    pool.checker_result(rs, checker, up, "test")
    apply(director, pool.take()[0])


FARM = """
virtual_server 198.18.1.1 80 {{
    lb_algo wrr
    {extra}
    real_server 198.18.2.11 80 {{
        weight 3
        {rs1}
        TCP_CHECK {{ }}
        HTTP_GET {{ url {{ path / }} }}
    }}
    real_server 198.18.2.12 80 {{
        weight 2
        TCP_CHECK {{ }}
    }}
    real_server 198.18.2.13 80 {{
        weight 1
        TCP_CHECK {{ }}
    }}
}}
"""
RS1, RS2, RS3, SORRY = ("198.18.2.11:80", "198.18.2.12:80", "198.18.2.13:80",
                        "198.18.2.99:80")


def test_start_adds_every_server_with_its_weight(tmp_path):
    director, _ = start(tmp_path, FARM.format(extra="", rs1=""))
    assert table(director) == {RS1: 3, RS2: 2, RS3: 1}
    _, out, _ = ipvsadm.run(["-S", "-n"], "", director)
    assert "-A -t 198.18.1.1:80 -s wrr" in out


def test_alpha_starts_down_inhibited_servers_at_weight_zero(tmp_path):
    director, pool = start(tmp_path, FARM.format(extra="alpha", rs1="inhibit_on_failure"))
    assert table(director) == {RS1: 0}
    step(director, pool, RS2, 0, True)  # first success: added
    assert table(director) == {RS1: 0, RS2: 2}
    step(director, pool, RS1, 0, True)  # one of two alpha checkers: still down
    assert table(director) == {RS1: 0, RS2: 2}
    step(director, pool, RS1, 1, True)
    assert table(director) == {RS1: 3, RS2: 2}


def test_down_removes_or_inhibits_and_up_restores(tmp_path):
    director, pool = start(tmp_path, FARM.format(extra="", rs1="inhibit_on_failure"))
    step(director, pool, RS2, 0, False)
    assert table(director) == {RS1: 3, RS3: 1}  # removed
    step(director, pool, RS1, 1, False)
    assert table(director) == {RS1: 0, RS3: 1}  # quiesced, still listed
    step(director, pool, RS1, 0, False)  # its second checker fails too: nothing new
    assert table(director) == {RS1: 0, RS3: 1}
    step(director, pool, RS1, 1, True)  # one of two recovered: still down
    assert table(director) == {RS1: 0, RS3: 1}
    step(director, pool, RS1, 0, True)
    step(director, pool, RS2, 0, True)
    assert table(director) == {RS1: 3, RS2: 2, RS3: 1}


def test_sorry_server_takes_over_when_quorum_is_lost_and_leaves_when_back(tmp_path):
    extra = "quorum 3\n    sorry_server 198.18.2.99 80"
    director, pool = start(tmp_path, FARM.format(extra=extra, rs1=""))
    assert table(director) == {RS1: 3, RS2: 2, RS3: 1}
    step(director, pool, RS2, 0, False)  # live weight 4 >= 3: quorum holds
    assert table(director) == {RS1: 3, RS3: 1}
    step(director, pool, RS1, 0, False)  # 1 < 3: quorum lost, only the sorry server
    assert table(director) == {SORRY: 1}
    assert not pool.state.quorum_up
    step(director, pool, RS2, 0, True)  # 3: recorded only... and quorum is back
    assert table(director) == {RS2: 2, RS3: 1}
    assert pool.state.quorum_up and not pool.state.sorry.alive


def test_sorry_server_at_start_when_every_server_starts_down(tmp_path):
    director, pool = start(tmp_path, FARM.format(
        extra="alpha\n    sorry_server 198.18.2.99 80\n    sorry_server_inhibit", rs1=""))
    assert table(director) == {SORRY: 1}
    step(director, pool, RS3, 0, True)  # weight 1 >= quorum 1: the sorry server quiesced
    assert table(director) == {SORRY: 0, RS3: 1}


def test_misc_dynamic_exit_status_sets_the_weight(tmp_path):
    director, pool = start(tmp_path, """
virtual_server 198.18.1.1 80 {
    real_server 198.18.2.11 80 {
        weight 5
        MISC_CHECK {
            misc_path /bin/true
            misc_dynamic
        }
    }
}
""")
    rs = pool.vs.real_servers[0]
    for status, weight in ((12, 10), (2, 0), (255, 253), (0, 5)):
        pool.dynamic_weight(rs, 0, status)
        apply(director, pool.take()[0])
        assert table(director) == {RS1: weight}


# -- the table always is what the pools say -------------------------------------------------
def farm(weights, inhibits, quorum, hysteresis, sorry, alpha) -> str:
    servers = "".join(f"""
    real_server 198.18.2.{11 + i} 80 {{
        weight {w}
        {"inhibit_on_failure" if inh else ""}
        TCP_CHECK {{ }}
        TCP_CHECK {{ connect_port 81 }}
    }}""" for i, (w, inh) in enumerate(zip(weights, inhibits, strict=False)))
    return f"""
virtual_server 198.18.1.1 80 {{
    lb_algo wlc
    quorum {quorum}
    hysteresis {hysteresis}
    {"sorry_server 198.18.2.99 80" if sorry else ""}
    {"alpha" if alpha else ""}
{servers}
}}
"""


@settings(max_examples=150, deadline=None)
@given(weights=st.lists(st.integers(0, 5), min_size=1, max_size=4),
       inhibits=st.lists(st.booleans(), min_size=4, max_size=4),
       quorum=st.integers(1, 8), hysteresis=st.integers(0, 3), sorry=st.booleans(),
       alpha=st.booleans(),
       events=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1), st.booleans()),
                       max_size=40))
def test_table_always_reflects_the_pool(tmp_path_factory, weights, inhibits, quorum,
                                        hysteresis, sorry, alpha, events):
    tmp = tmp_path_factory.mktemp("pool")
    director, pool = start(tmp, farm(weights, inhibits, quorum, hysteresis, sorry, alpha))
    vs = pool.vs
    for index, checker, up in events:
        rs = vs.real_servers[index % len(vs.real_servers)]
        quorum_before = pool.state.quorum_up
        pool.checker_result(rs, checker, up, "test")
        apply(director, pool.take()[0])
        live = weigh_live(vs, pool.state)
        if quorum_before and not pool.state.quorum_up:
            assert live == 0 or live < vs.quorum - vs.hysteresis
        if not quorum_before and pool.state.quorum_up:
            assert live >= vs.quorum + vs.hysteresis
        expected = {}
        for r in vs.real_servers:
            s = pool.server(r)
            assert s.alive == (s.failed() == 0)  # down at the first failure, up at the last
            if s.set:
                expected[rs_id(r)] = pool.table_weight(r)
        if vs.sorry_server is not None:
            assert pool.state.sorry.alive == (not pool.state.quorum_up)
            if pool.state.sorry.set:
                expected[SORRY] = pool.table_weight(vs.sorry_server)
            if pool.state.sorry.alive:  # it serves alone
                assert all(w == 0 for k, w in expected.items() if k != SORRY)
        assert table(director) == expected
