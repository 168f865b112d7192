"""Plugin schedulers loaded through schedulers.registry.lookup, as `pyvsadm -s
path/to/file.py:Class` and `module:Class` do (registry.py; the kernel counterpart is
register_ip_vs_scheduler() in net/netfilter/ipvs/ip_vs_sched.c), plus the registry
knowing every built-in kernel scheduler name."""

from collections import Counter
from pathlib import Path

import pytest

from pyvs.engine.clock import VirtualClock
from pyvs.engine.model import DEST_F_OVERLOAD
from pyvs.engine.service import IPVSError
from pyvs.schedulers import registry
from pyvs.schedulers.testing import build, dest, flow, make_env, name_of

ROOT = Path(__file__).resolve().parent.parent
A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"


def test_all_builtins_available():
    """Every kernel scheduler name registers (ip_vs_<name>.c -> schedulers/<name>.py)."""
    assert registry.available() == list(registry.BUILTIN)
    for name in registry.BUILTIN:
        cls = registry.lookup(name)
        assert cls.name == name
        assert cls.__module__ == f"pyvs.schedulers.{name}"


HASHING = {"dh", "sh", "mh"}  # no fallback: a client hashed to an unusable server fails


@pytest.mark.parametrize("name", registry.BUILTIN)
def test_every_builtin_schedules_only_usable_destinations(name):
    """What every kernel scheduler shares: a lone server of weight 1 is chosen; a lone
    server that is OVERLOADed or has weight 0 is not (ip_vs_scheduler_err, "no destination
    available"); beside a weight-0 server, only the other one is ever chosen (the hashing
    schedulers fail instead for clients hashed to the weight-0 one)."""
    _, svc = build(name, [(A, 1)])
    assert name_of(svc.scheduler.schedule(svc, flow())) == A
    _, svc = build(name, [(A, 1)])
    dest(svc, A).flags |= DEST_F_OVERLOAD
    assert svc.scheduler.schedule(svc, flow()) is None
    _, svc = build(name, [(A, 0)])
    assert svc.scheduler.schedule(svc, flow()) is None
    allowed = {B, None} if name in HASHING else {B}
    for items in ([(A, 0), (B, 1)], [(B, 1), (A, 0)]):  # the weight-0 one last, then first
        _, svc = build(name, items)
        picks = Counter(name_of(svc.scheduler.schedule(svc, flow(f"10.9.{i}.{i + 1}",
                                                                 daddr=f"192.0.2.{i + 1}")))
                        for i in range(40))
        assert set(picks) <= allowed and picks[B] > 0, picks


def test_unknown_scheduler_enoent():
    with pytest.raises(IPVSError) as e:
        build("nosuch", [])
    assert e.value.errno == 2


def test_pick_k_via_path(monkeypatch):
    monkeypatch.chdir(ROOT)
    cls = registry.lookup("schedulers/examples/pick_k.py:PickK")
    assert cls is not None and cls.name == "pick_k"
    spec = "schedulers/examples/pick_k.py:PickK"
    t, svc = build(spec, [(A, 1), (B, 1), (C, 2)], env=make_env(seed=5))
    for d, act in zip(svc.destinations, (10, 0, 10), strict=True):  # list C B A
        d.activeconns = act
    # with 3 destinations and k = 3 every one is sampled: B (0 active) wins
    assert name_of(svc.scheduler.schedule(svc, flow())) == B
    dest(svc, B).flags |= DEST_F_OVERLOAD
    assert name_of(svc.scheduler.schedule(svc, flow())) == C  # 2560/2 < 2560/1
    for d in svc.destinations:
        d.flags |= DEST_F_OVERLOAD
    assert svc.scheduler.schedule(svc, flow()) is None


def test_pick_k_via_module_samples_k():
    cls = registry.lookup("pyvs.schedulers.examples.pick_k:PickK")
    assert cls is not None
    items = [(f"10.0.1.{i}", 1) for i in range(1, 11)]
    t, svc = build("pyvs.schedulers.examples.pick_k:PickK", items, env=make_env(seed=9))
    got = Counter(name_of(svc.scheduler.schedule(svc, flow())) for _ in range(2000))
    assert len(got) == 10  # all idle: the first draw wins, uniformly spread


def test_least_response_via_path(monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = "schedulers/examples/least_response.py:LeastResponse"
    assert registry.lookup(spec).name == "least_response"
    clock = VirtualClock(0.0)
    t, svc = build(spec, [(A, 1), (B, 1), (C, 1)], env=make_env(clock=clock))
    s = svc.scheduler
    a, b, c = dest(svc, A), dest(svc, B), dest(svc, C)
    # nobody measured: all cost 0 -> first in list (C)
    assert name_of(s.schedule(svc, flow())) == C
    s.report(a, 0.010)
    s.report(b, 0.050)
    s.report(c, 0.200)
    assert name_of(s.schedule(svc, flow())) == A
    a.activeconns = 9  # 0.01 * 10 = 0.1 > 0.05 * 1
    assert name_of(s.schedule(svc, flow())) == B
    clock.advance(31)  # samples go stale -> cost 0 -> list order again
    assert name_of(s.schedule(svc, flow())) == C
