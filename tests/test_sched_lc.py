"""Least-connection family against ip_vs_lc.c, ip_vs_wlc.c, ip_vs_sed.c, ip_vs_nq.c,
ip_vs_fo.c and ip_vs_ovf.c (docs/ipvs-semantics.md, "Schedulers").

Counters are set directly on the Destination objects; overhead is
active*256 + inactive (ip_vs_dest_conn_overhead).  Lists are built with
ServiceTable one add at a time, so list order is newest first.
"""

from hypothesis import given, settings
from hypothesis import strategies as st

from pyvs.engine.model import DEST_F_OVERLOAD
from pyvs.schedulers.testing import build, dest, edit, name_of, run

A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"


def service(sched, spec):
    """spec in *list order* [(addr, weight, active, inact)], added in reverse."""
    t, svc = build(sched, [(a, w) for a, w, _, _ in reversed(spec)])
    for a, _, act, ina in spec:
        d = dest(svc, a)
        d.activeconns, d.inactconns = act, ina
    assert [name_of(d) for d in svc.destinations] == [a for a, *_ in spec]
    return t, svc


def pick(svc):
    return run(svc, 1)[0]


def test_lc_example():
    """ip_vs_lc.c: A 266, B 300, C 261 -> C."""
    _, svc = service("lc", [(A, 1, 1, 10), (B, 1, 0, 300), (C, 1, 1, 5)])
    assert pick(svc) == C


def test_lc_tie_first_in_list_and_weight_ignored():
    """ip_vs_lc.c: strict '<' keeps the first; weight only matters if it is 0."""
    _, svc = service("lc", [(A, 1, 0, 3), (B, 100, 0, 3), (C, 1, 0, 4)])
    assert pick(svc) == A
    _, svc = service("lc", [(B, 100, 0, 3), (A, 1, 0, 3)])
    assert pick(svc) == B


def test_lc_skips_weight0_and_overload():
    """ip_vs_lc.c: OVERLOAD or weight == 0 -> skipped; none left -> NULL."""
    t, svc = service("lc", [(A, 1, 0, 0), (B, 1, 0, 1), (C, 1, 0, 2)])
    edit(t, svc, A, 0)
    assert pick(svc) == B
    dest(svc, B).flags |= DEST_F_OVERLOAD
    assert pick(svc) == C
    dest(svc, C).flags |= DEST_F_OVERLOAD
    assert pick(svc) is None


def test_wlc_example():
    """ip_vs_wlc.c: weights A=1,B=2,C=1, same counts as lc -> B."""
    _, svc = service("wlc", [(A, 1, 1, 10), (B, 2, 0, 300), (C, 1, 1, 5)])
    assert pick(svc) == B


def test_wlc_tie_and_weight0():
    """ip_vs_wlc.c: equal overhead/weight -> first in list; weight 0 never wins, even
    with zero connections (0 * w > doh * 0 is false)."""
    _, svc = service("wlc", [(A, 2, 1, 0), (B, 1, 0, 128), (C, 0, 0, 0)])
    assert pick(svc) == A
    _, svc = service("wlc", [(C, 0, 0, 0), (A, 1, 5, 0)])
    assert pick(svc) == A


def test_wlc_overload_first_candidate_skipped():
    """ip_vs_wlc.c: the first candidate must be !OVERLOAD and w>0."""
    _, svc = service("wlc", [(A, 1, 0, 0), (B, 1, 9, 0)])
    dest(svc, A).flags |= DEST_F_OVERLOAD
    assert pick(svc) == B
    dest(svc, B).flags |= DEST_F_OVERLOAD
    assert pick(svc) is None


def test_wlc_new_dest_wins_ties():
    """List order is newest first: a new idle dest beats an older idle one of equal weight."""
    t, svc = build("wlc", [(A, 1)])
    from pyvs.schedulers.testing import add

    add(t, svc, B, 1)
    assert pick(svc) == B


def test_sed_vs_nq_example():
    """ip_vs_sed.c / ip_vs_nq.c: A(w1, idle), B(w10, idle): nq -> A, sed -> B."""
    _, svc = service("nq", [(A, 1, 0, 0), (B, 10, 0, 0)])
    assert pick(svc) == A
    _, svc = service("sed", [(A, 1, 0, 0), (B, 10, 0, 0)])
    assert pick(svc) == B


def test_sed_ignores_inactive():
    """ip_vs_sed.c: overhead = active + 1 (inactive ignored)."""
    _, svc = service("sed", [(A, 1, 1, 0), (B, 1, 0, 1000)])
    assert pick(svc) == B
    _, svc = service("sed", [(A, 2, 1, 0), (B, 1, 0, 1000)])  # 2/2 vs 1/1: tie -> A
    assert pick(svc) == A


def test_nq_no_idle_behaves_like_sed():
    """ip_vs_nq.c: without an idle dest, (active+1)/weight with strict comparison."""
    _, svc = service("nq", [(A, 1, 1, 0), (B, 3, 2, 0), (C, 3, 5, 0)])
    assert pick(svc) == B  # 2/1, 3/3, 6/3
    _, svc = service("nq", [(A, 1, 1, 0), (B, 3, 2, 0), (C, 3, 0, 0)])
    assert pick(svc) == C  # idle
    dest(svc, C).flags |= DEST_F_OVERLOAD
    assert pick(svc) == B


def test_fo_highest_weight_first_wins():
    """ip_vs_fo.c: highest weight among !OVERLOAD, strict '>' (first on ties)."""
    t, svc = service("fo", [(A, 5, 100, 0), (B, 7, 100, 0), (C, 7, 0, 0)])
    assert pick(svc) == B
    dest(svc, B).flags |= DEST_F_OVERLOAD
    assert pick(svc) == C
    edit(t, svc, C, 0)
    assert pick(svc) == A
    dest(svc, A).flags |= DEST_F_OVERLOAD
    assert pick(svc) is None


def test_ovf_overflow():
    """ip_vs_ovf.c: candidates need active <= weight; highest weight wins, first on ties."""
    _, svc = service("ovf", [(A, 2, 0, 0), (B, 3, 0, 0)])
    b = dest(svc, B)
    got = []
    for _ in range(8):
        d = svc.scheduler.schedule(svc, None)
        got.append(name_of(d))
        if d is not None:
            d.activeconns += 1
    # B takes w+1 = 4 (0..3 active are all <= 3), then A takes 3, then nothing
    assert got == [B] * 4 + [A] * 3 + [None]
    assert b.activeconns == 4
    b.activeconns = 3
    assert pick(svc) == B


# ---------------------------------------------------------------- properties
dest_st = st.tuples(st.integers(0, 5), st.integers(0, 20), st.integers(0, 600),
                    st.booleans())


def _mk(sched, specs):
    spec = [(f"10.0.1.{i + 1}", w, a, n) for i, (w, a, n, _) in enumerate(specs)]
    t, svc = service(sched, spec)
    for (_, _, _, ovl), d in zip(specs, svc.destinations, strict=True):
        if ovl:
            d.flags |= DEST_F_OVERLOAD
    return svc


def _eligible(svc):
    return [d for d in svc.destinations if d.weight > 0 and not d.flags & DEST_F_OVERLOAD]


@settings(max_examples=200, deadline=None)
@given(st.lists(dest_st, min_size=1, max_size=8))
def test_lc_never_strictly_worse(specs):
    """ip_vs_lc.c property: the pick has the minimum overhead among eligible dests,
    and is the first such in list order."""
    svc = _mk("lc", specs)
    got = svc.scheduler.schedule(svc, None)
    el = _eligible(svc)
    if not el:
        assert got is None
        return
    best = min(d.conn_overhead() for d in el)
    assert got.conn_overhead() == best
    assert got is next(d for d in el if d.conn_overhead() == best)


@settings(max_examples=200, deadline=None)
@given(st.lists(dest_st, min_size=1, max_size=8))
def test_wlc_never_strictly_worse_per_weight(specs):
    """ip_vs_wlc.c property: no eligible dest has strictly lower overhead/weight than
    the pick (checked by cross-multiplication), and ties go to the first in list."""
    svc = _mk("wlc", specs)
    got = svc.scheduler.schedule(svc, None)
    el = _eligible(svc)
    if not el:
        assert got is None
        return
    assert got in el
    for d in el:
        assert not d.conn_overhead() * got.weight < got.conn_overhead() * d.weight
    first = next(d for d in el
                 if d.conn_overhead() * got.weight == got.conn_overhead() * d.weight)
    assert got is first
