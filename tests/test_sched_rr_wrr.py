"""rr and wrr against net/netfilter/ipvs/ip_vs_rr.c and ip_vs_wrr.c (docs/ipvs-semantics.md).

Services are built through ServiceTable one `ipvsadm -a` at a time, so the list
is newest-first and wrr's dest_changed runs on each add, as in the kernel.
Sequences below use the last octet of each destination address.
"""

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from pyvs.engine.model import DEST_F_OVERLOAD
from pyvs.schedulers.testing import add, build, delete, dest, edit, run
from pyvs.schedulers.wrr import WeightedRoundRobin


def seq(svc, n):
    return " ".join("-" if x is None else x.rsplit(".", 1)[1] for x in run(svc, n))


# ---------------------------------------------------------------- rr
def test_rr_order_is_list_order_newest_first():
    """ip_vs_rr.c: add A,B,C -> list C,B,A; the cursor starts at the head."""
    _, svc = build("rr", [("10.0.0.1", 1), ("10.0.0.2", 1), ("10.0.0.3", 1)])
    assert seq(svc, 6) == "3 2 1 3 2 1"


def test_rr_skips_weight0_and_overload():
    """ip_vs_rr.c: only !OVERLOAD && weight > 0 are eligible (example 3.2: A,C,A,C)."""
    t, svc = build("rr", [("10.0.0.3", 1), ("10.0.0.2", 0), ("10.0.0.1", 1)])
    assert seq(svc, 4) == "1 3 1 3"
    edit(t, svc, "10.0.0.2", 1)
    dest(svc, "10.0.0.3").flags |= DEST_F_OVERLOAD
    assert seq(svc, 4) == "1 2 1 2"  # cursor was on 3: wrap to 1, then 2


def test_rr_all_ineligible_fails_and_keeps_cursor():
    """ip_vs_rr.c: nothing eligible -> NULL, sched_data unchanged."""
    t, svc = build("rr", [("10.0.0.1", 1), ("10.0.0.2", 1), ("10.0.0.3", 1)])
    assert seq(svc, 1) == "3"
    for d in svc.destinations:
        d.flags |= DEST_F_OVERLOAD
    assert seq(svc, 2) == "- -"
    for d in svc.destinations:
        d.flags &= ~DEST_F_OVERLOAD
    assert seq(svc, 1) == "2"


def test_rr_add_mid_stream_goes_to_head():
    """ip_vs_rr.c has no add hook: a new dest at the list head is reached after the wrap."""
    t, svc = build("rr", [("10.0.0.1", 1), ("10.0.0.2", 1), ("10.0.0.3", 1)])
    assert seq(svc, 2) == "3 2"
    add(t, svc, "10.0.0.4")  # list 4,3,2,1, cursor still on 2
    assert seq(svc, 5) == "1 4 3 2 1"


def test_rr_add_while_cursor_at_head_is_next():
    """ip_vs_rr.c: with the cursor still at the head, the new dest is picked first."""
    t, svc = build("rr", [("10.0.0.1", 1), ("10.0.0.2", 1)])
    add(t, svc, "10.0.0.3")
    assert seq(svc, 3) == "3 2 1"


def test_rr_delete_cursor_moves_to_predecessor():
    """ip_vs_rr_del_dest: deleting the cursor's dest -> next pick is its successor."""
    t, svc = build("rr", [("10.0.0.1", 1), ("10.0.0.2", 1), ("10.0.0.3", 1),
                          ("10.0.0.4", 1)])  # list 4 3 2 1
    assert seq(svc, 2) == "4 3"
    delete(t, svc, "10.0.0.3")  # cursor -> 4
    assert seq(svc, 4) == "2 1 4 2"


def test_rr_delete_head_cursor():
    """ip_vs_rr_del_dest: cursor on the first element -> back to the list head."""
    t, svc = build("rr", [("10.0.0.1", 1), ("10.0.0.2", 1), ("10.0.0.3", 1)])
    assert seq(svc, 1) == "3"
    delete(t, svc, "10.0.0.3")
    assert seq(svc, 3) == "2 1 2"


def test_rr_delete_other_keeps_position():
    """Deleting a dest not under the cursor does not move the cursor (ip_vs_rr.c)."""
    t, svc = build("rr", [("10.0.0.1", 1), ("10.0.0.2", 1), ("10.0.0.3", 1),
                          ("10.0.0.4", 1)])
    assert seq(svc, 2) == "4 3"
    delete(t, svc, "10.0.0.4")  # before the cursor
    assert seq(svc, 3) == "2 1 3"


def test_rr_empty_service():
    """ip_vs_rr.c: empty list -> NULL."""
    _, svc = build("rr", [])
    assert seq(svc, 1) == "-"


# ---------------------------------------------------------------- wrr
def test_wrr_ipvsadm_adds_4_3_2():
    """ip_vs_wrr.c: adds A4,B3,C2 -> C B A | A | B A | C B A | C B A, then
    the 9-cycle A | B A | C B A | C B A (cw carried across the adds' dest_changed)."""
    _, svc = build("wrr", [("10.0.0.1", 4), ("10.0.0.2", 3), ("10.0.0.3", 2)])
    s = svc.scheduler
    assert (s.di, s.mw, s.cw) == (1, 4, 1)
    assert seq(svc, 12) == "3 2 1 1 2 1 3 2 1 3 2 1"
    assert seq(svc, 18) == "1 2 1 3 2 1 3 2 1 " * 1 + "1 2 1 3 2 1 3 2 1"


def _fresh(weights_in_list_order):
    """A service whose wrr state is re-initialised (cw = mw), like init_service on an
    existing list (ipvsadm -E -s wrr), to check the worked table rows."""
    names = [f"10.0.0.{i + 1}" for i in range(len(weights_in_list_order))]
    # add in reverse so the list order is as written
    items = list(zip(names, weights_in_list_order, strict=True))[::-1]
    _, svc = build("rr", items)
    svc.scheduler = WeightedRoundRobin(svc, svc.scheduler.env)
    letters = {n.rsplit(".", 1)[1]: "ABCDEF"[i] for i, n in enumerate(names)}
    return svc, letters


def test_wrr_table_rows():
    """ip_vs_wrr.c worked table, list order as written, cw starting at mw."""
    rows = [
        ((4, 3, 2), "A A B A B C A B C"),
        ((2, 3, 5), "C C B C A B C A B C"),
        ((4, 2), "A A B"),
        ((6, 4, 2), "A A B A B C"),
        ((3, 0, 1), "A A A C"),
        ((1, 1, 1), "A B C"),
    ]
    for weights, want in rows:
        svc, letters = _fresh(weights)
        n = len(want.split())
        got = [letters[x.rsplit(".", 1)[1]] for x in run(svc, 2 * n)]
        assert " ".join(got) == want + " " + want, weights


def test_wrr_dest_changed_on_edit_resets_cursor():
    """ip_vs_wrr_dest_changed on upd_dest: cl -> head, cw carried unless > mw."""
    t, svc = build("wrr", [("10.0.0.1", 4), ("10.0.0.2", 3), ("10.0.0.3", 2)])
    run(svc, 4)  # 3 2 1 1 ; now cw=4, cl=A
    edit(t, svc, "10.0.0.1", 2)  # max 3 -> mw 3, cw 4 > 3 -> 3
    s = svc.scheduler
    assert (s.cl, s.di, s.mw, s.cw) == (-1, 1, 3, 3)
    # list 3(2) 2(3) 1(2), cw 3: B; cw 2: C B A; cw 1: C B A
    assert seq(svc, 7) == "2 3 2 1 3 2 1"


def test_wrr_gcd_rounding():
    """ip_vs_wrr_dest_changed: with di > 1, cw = (cw / di) * di + 1."""
    t, svc = build("wrr", [("10.0.0.1", 4), ("10.0.0.2", 2)])
    s = svc.scheduler
    # add A(4): di 4, mw 1, cw 1 ; add B(2): di 2, mw 3, cw=(1/2)*2+1 = 1
    assert (s.di, s.mw, s.cw) == (2, 3, 1)
    # cw 1: B A; cw -1 -> 3 (restarted): A; cw 1: B A
    assert seq(svc, 5) == "2 1 1 2 1"


def test_wrr_weight0_and_overload():
    """ip_vs_wrr.c: weight 0 never >= cw; OVERLOAD skipped; all overloaded -> NULL."""
    t, svc = build("wrr", [("10.0.0.1", 2), ("10.0.0.2", 1)])
    edit(t, svc, "10.0.0.2", 0)
    assert set(run(svc, 6)) == {"10.0.0.1"}
    dest(svc, "10.0.0.1").flags |= DEST_F_OVERLOAD
    assert run(svc, 3) == [None] * 3
    dest(svc, "10.0.0.1").flags &= ~DEST_F_OVERLOAD
    assert set(run(svc, 2)) == {"10.0.0.1"}


def test_wrr_all_zero_fails():
    """ip_vs_wrr.c: mw == 0 -> no destination available."""
    _, svc = build("wrr", [("10.0.0.1", 0), ("10.0.0.2", 0)])
    assert run(svc, 2) == [None, None]


def test_wrr_delete_mid_stream():
    """ip_vs_wrr_dest_changed on del_dest: cl -> head; remaining weights keep their share."""
    t, svc = build("wrr", [("10.0.0.1", 3), ("10.0.0.2", 2), ("10.0.0.3", 1)])
    run(svc, 4)
    delete(t, svc, "10.0.0.3")
    c = Counter(run(svc, 50))
    assert c == {"10.0.0.1": 30, "10.0.0.2": 20}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=7),
       st.integers(min_value=0, max_value=40))
def test_wrr_full_cycle_gives_weight_share(weights, warmup):
    """ip_vs_wrr.c property: every window of whole cycles of sum(w)/di picks gives each
    destination exactly weight/di picks (weight-0 destinations none)."""
    items = [(f"10.0.0.{i + 1}", w) for i, w in enumerate(weights)]
    _, svc = build("wrr", items)
    s = svc.scheduler
    total = sum(weights)
    if total == 0:
        assert run(svc, 3) == [None] * 3
        return
    run(svc, warmup)
    di = s.di
    cycle = total // di
    # No alignment needed: dest_changed keeps cw == 1 (mod di), i.e. a state of the
    # cycle, so the sequence is periodic from the first pick and any window of whole
    # cycles is exact.
    got = Counter(run(svc, cycle * 3))
    for addr, w in items:
        assert got.get(addr, 0) == 3 * w // di
