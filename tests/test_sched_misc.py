"""twos, lblc and lblcr against ip_vs_twos.c, ip_vs_lblc.c and ip_vs_lblcr.c
(docs/ipvs-semantics.md, "Schedulers").  Time is a VirtualClock; randomness is injected."""

import random

from pyvs.engine.clock import VirtualClock
from pyvs.engine.model import DEST_F_OVERLOAD
from pyvs.schedulers.testing import build, delete, dest, edit, flow, make_env, name_of

A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"


class Scripted(random.Random):
    """A random source returning scripted values from randrange()."""

    def __init__(self, values):
        super().__init__(0)
        self.values = list(values)
        self.calls = []

    def randrange(self, n):  # noqa: D102
        self.calls.append(n)
        return self.values.pop(0)


def twos(values, spec):
    """spec in list order [(addr, weight, active)]."""
    env = make_env()
    env.random = Scripted(values)
    t, svc = build("twos", [(a, w) for a, w, _ in reversed(spec)], env=env)
    for a, _, act in spec:
        dest(svc, a).activeconns = act
    return env.random, svc


def test_twos_draws_in_0_W_inclusive():
    """ip_vs_twos.c: get_random_u32_below(W + 1) twice; r <= 0 after subtracting picks."""
    rnd, svc = twos([0, 6], [(A, 1, 0), (B, 2, 0), (C, 3, 0)])
    d = svc.scheduler.schedule(svc, flow())
    assert rnd.calls == [7, 7]
    assert name_of(d) == A  # r1=0 -> A; r2=6 -> C; equal load (0*.. > 0) false -> choice 1


def test_twos_lower_weighted_overhead_wins():
    """ip_vs_twos.c: choice 2 iff w2*oh1 > w1*oh2 (overhead = active*256 + inact)."""
    rnd, svc = twos([1, 3], [(A, 1, 2, ), (B, 2, 1), (C, 3, 0)])
    # r1=1 -> A (1-1=0), r2=3 -> B (3-1-2=0): 2*512 > 1*256 -> B
    assert name_of(svc.scheduler.schedule(svc, flow())) == B
    rnd.values = [3, 1]  # choice1 B, choice2 A: 1*256 > 2*512 false -> B
    assert name_of(svc.scheduler.schedule(svc, flow())) == B


def test_twos_skips_ineligible_and_fails_when_none():
    """ip_vs_twos.c: OVERLOAD and weight 0 excluded from W and the walk."""
    rnd, svc = twos([1, 1], [(A, 0, 0), (B, 2, 0), (C, 3, 0)])
    dest(svc, C).flags |= DEST_F_OVERLOAD
    assert name_of(svc.scheduler.schedule(svc, flow())) == B
    assert rnd.calls == [3, 3]
    dest(svc, B).flags |= DEST_F_OVERLOAD
    assert svc.scheduler.schedule(svc, flow()) is None


def test_twos_distribution_off_by_one():
    """ip_vs_twos.c: with equal loads choice 1 is returned; the first eligible dest has
    probability (w1+1)/(W+1)."""
    env = make_env(seed=3)
    _, svc = build("twos", [(B, 1), (A, 1)], env=env)  # list A, B
    n = 30000
    hits = sum(name_of(svc.scheduler.schedule(svc, flow())) == A for _ in range(n))
    assert abs(hits / n - 2 / 3) < 0.02


# ---------------------------------------------------------------- lblc
def lb(sched, spec, clock=None):
    env = make_env(clock=clock or VirtualClock())
    t, svc = build(sched, [(a, w) for a, w in reversed(spec)], env=env)
    return t, svc, env


def test_lblc_caches_by_daddr():
    """ip_vs_lblc.c: the key is the packet destination; a cached dest stays while usable."""
    t, svc, env = lb("lblc", [(A, 1), (B, 1)])
    s = svc.scheduler
    assert name_of(s.schedule(svc, flow(daddr="198.51.100.1"))) == A
    dest(svc, A).activeconns = 1  # 1 > w=1 is false: not lblc-overloaded
    assert name_of(s.schedule(svc, flow(saddr="9.9.9.9", daddr="198.51.100.1"))) == A
    assert name_of(s.schedule(svc, flow(daddr="198.51.100.2"))) == B  # wlc


def test_lblc_overload_rule():
    """ip_vs_lblc.c is_overloaded: active > weight AND some dest has 2*active < weight;
    then wlc picks again and the entry is replaced."""
    t, svc, env = lb("lblc", [(A, 2), (B, 2)])
    s = svc.scheduler
    f = flow(daddr="198.51.100.1")
    assert name_of(s.schedule(svc, f)) == A
    a, b = dest(svc, A), dest(svc, B)
    a.activeconns = 3
    b.activeconns = 1  # 2*1 < 2 false -> nobody is underloaded -> A kept
    assert name_of(s.schedule(svc, f)) == A
    b.activeconns = 0  # 0 < 2 -> A is lblc-overloaded
    assert name_of(s.schedule(svc, f)) == B
    assert s.table.entries[f.daddr][0] is b
    a.activeconns = 0
    assert name_of(s.schedule(svc, f)) == B  # sticky again


def test_lblc_flag_overload_not_checked_weight0_and_deleted_are():
    """ip_vs_lblc.c: the cached dest's OVERLOAD flag is not checked; weight 0 and
    !AVAILABLE (deleted) are."""
    t, svc, env = lb("lblc", [(A, 1), (B, 1)])
    s = svc.scheduler
    f = flow(daddr="198.51.100.1")
    assert name_of(s.schedule(svc, f)) == A
    dest(svc, A).flags |= DEST_F_OVERLOAD
    assert name_of(s.schedule(svc, f)) == A
    dest(svc, A).flags &= ~DEST_F_OVERLOAD
    edit(t, svc, A, 0)
    assert name_of(s.schedule(svc, f)) == B
    edit(t, svc, A, 1)
    delete(t, svc, B)
    assert name_of(s.schedule(svc, f)) == A


def test_lblc_expiry_full_check():
    """ip_vs_lblc_check_expire: 60 s ticks, full sweep on the 30th tick removes entries
    unused for lblc_expiration; the sysctl is read at sweep time."""
    clock = VirtualClock(0.0)
    t, svc, env = lb("lblc", [(A, 1)], clock)
    env.sysctl.set("lblc_expiration", 600)
    s = svc.scheduler
    s.schedule(svc, flow(daddr="198.51.100.1"))  # lastuse 0
    clock.advance(1500)
    s.schedule(svc, flow(daddr="198.51.100.2"))  # lastuse 1500
    assert s.expire(1799) == 0 and len(s.table.entries) == 2
    assert s.expire(1800) == 1  # tick 30 at t=1800: 1800 >= 0+600, 1800 < 1500+600
    assert list(s.table.entries) == [flow(daddr="198.51.100.2").daddr]
    # counter restarts at 1, so the next full sweep is 30 ticks later, at t=3600
    assert s.expire(3599) == 0
    assert s.expire(3600) == 1


def test_lblc_partial_gc_over_max_size():
    """ip_vs_lblc_check_expire: above 16384 entries, entries idle >= 6 min are removed,
    goal = min((entries - 16384)*4/3, 8192), bucket by bucket."""
    clock = VirtualClock(0.0)
    t, svc, env = lb("lblc", [(A, 1)], clock)
    s = svc.scheduler
    for i in range(16384 + 300):
        s.schedule(svc, flow(daddr=f"100.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"))
    clock.advance(400)
    removed = s.expire(60)  # first tick: counter 1, table too big, but nothing idle yet
    assert removed == 0
    removed = s.expire(420)  # ticks at 120..420; entries idle 420 >= 360
    assert removed >= 400  # goal 400 reached at a bucket boundary
    assert len(s.table.entries) <= 16384 + 300 - 400


def test_lblcr_replication_and_shrink():
    """ip_vs_lblcr.c: set min/max, insertion at the front, removal of the most loaded
    member after lblcr_expiration without modification."""
    clock = VirtualClock(0.0)
    t, svc, env = lb("lblcr", [(A, 2), (B, 2), (C, 2)], clock)
    env.sysctl.set("lblcr_expiration", 100)
    s = svc.scheduler
    f = flow(daddr="198.51.100.1")
    a, b, c = dest(svc, A), dest(svc, B), dest(svc, C)
    assert name_of(s.schedule(svc, f)) == A
    a.activeconns = 3  # > 2, and B/C have 0*2 < 2 -> overloaded -> wlc -> B, added
    assert name_of(s.schedule(svc, f)) == B
    dset = s.table.entries[f.daddr][0]
    assert dset.members == [b, a]
    b.activeconns = 1
    assert name_of(s.schedule(svc, f)) == B  # set min: B 256/2 < A 768/2
    clock.advance(101)
    # > 1 member and lastmod older than 100 s: most loaded (A) removed; B still returned
    assert name_of(s.schedule(svc, f)) == B
    assert dset.members == [b]
    b.activeconns = 3
    a.activeconns = 0
    c.activeconns = 5
    # B overloaded (3 > 2, A has 0 < 2) -> wlc over the service -> A, inserted at front
    assert name_of(s.schedule(svc, f)) == A
    assert dset.members == [a, b]


def test_lblcr_set_min_skips_unavailable():
    """ip_vs_dest_set_min: members must be AVAILABLE and weight > 0 and !OVERLOAD."""
    t, svc, env = lb("lblcr", [(A, 1), (B, 1)])
    s = svc.scheduler
    f = flow(daddr="198.51.100.1")
    assert name_of(s.schedule(svc, f)) == A
    delete(t, svc, A)
    assert name_of(s.schedule(svc, f)) == B
    assert [name_of(d) for d in s.table.entries[f.daddr][0].members] == [B, A]
    assert s.expire(1e9) >= 0
