"""The checkers' state machines (engine/health/machine.py) against keepalived's rules.

A machine sees one outcome at a time and the checker's up/down state; the harness
below plays keepalived's part (update_svr_checker_state: the state follows every
report) and records when each check happens.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pyvs.engine.health.machine import MiscMachine, RetryMachine, UrlMachine, machine_for


def play(machine, outcomes, up=True, warm=True):
    """Feed outcomes; returns [(outcome, report, delay, up after)].  ``warm``: the
    checker has run once already and succeeded (steady state)."""
    if warm:
        for _ in range(getattr(machine, "urls", 1)):
            machine.step(True, up)
    out = []
    for ok in outcomes:
        report, delay = machine.step(ok, up)
        if report is not None:
            up = report
        out.append((ok, report, delay, up))
    return out


MACHINES = st.sampled_from(["TCP_CHECK", "MISC_CHECK", "HTTP_GET"])


@given(kind=MACHINES, retry=st.integers(0, 4),
       outcomes=st.lists(st.booleans(), max_size=60))
def test_never_down_before_retry_plus_one_consecutive_failures(kind, retry, outcomes):
    machine = machine_for(kind, retry, 5.0, 1.0)
    run = play(machine, outcomes)
    streak = 0
    for ok, report, _delay, _up in run:
        streak = 0 if ok else streak + 1
        if report is False:
            assert streak >= retry + 1, (kind, retry, outcomes)


@given(kind=MACHINES, retry=st.integers(0, 4), failures=st.integers(0, 10))
def test_down_exactly_at_retry_plus_one_failures(kind, retry, failures):
    run = play(machine_for(kind, retry, 5.0, 1.0), [False] * failures)
    downs = [i for i, (_, report, _, _) in enumerate(run) if report is False]
    assert downs == ([retry] if failures > retry else [])


@given(retry=st.integers(0, 4), outcomes=st.lists(st.booleans(), max_size=40))
def test_retries_are_delay_before_retry_apart_checks_delay_loop_apart(retry, outcomes):
    run = play(RetryMachine(retry, 5.0, 1.0), outcomes)
    for (ok, report, delay, up) in run:
        if up and not ok and report is None:
            assert delay == 1.0  # a retry of a failed check
        else:
            assert delay == 5.0


@given(kind=st.sampled_from(["TCP_CHECK", "MISC_CHECK"]), retry=st.integers(0, 3),
       outcomes=st.lists(st.booleans(), max_size=40))
def test_a_down_checker_comes_up_on_its_first_success(kind, retry, outcomes):
    run = play(machine_for(kind, retry, 5.0, 1.0), [False] * (retry + 1) + outcomes)
    up = False
    for ok, report, _delay, after in run[retry + 1:]:
        if not up and ok:
            assert report is True
        up = after


def test_first_check_one_failure_is_enough():
    """check_check_config(): retry_it = retry before the first check."""
    for kind in ("TCP_CHECK", "MISC_CHECK", "HTTP_GET"):
        report, _ = machine_for(kind, 3, 5.0, 1.0).step(False, True)
        assert report is False, kind


def test_alpha_checker_comes_up_on_first_success_and_stays_down_on_failure():
    run = play(RetryMachine(2, 5.0, 1.0), [False, False, True], up=False, warm=False)
    assert [up for *_, up in run] == [False, False, True]
    assert run[2][1] is True


@given(failing_every=st.integers(2, 4), retry=st.integers(1, 3))
def test_flapping_slower_than_retry_never_goes_down(failing_every, retry):
    """A server failing every Nth check (N-1 >= retry successes between) stays up."""
    outcomes = [i % failing_every != 0 for i in range(1, 60)]
    run = play(RetryMachine(retry, 1.0, 0.5), outcomes)
    assert all(report is None for _, report, _, _ in run)


def test_url_machine_checks_every_url_in_turn_and_recovers_after_a_full_pass():
    m = UrlMachine(1, 5.0, 2.0, urls=3)
    urls = []

    def step(ok, up):
        urls.append(m.url())
        return m.step(ok, up)

    for _ in range(3):  # first pass: up
        step(True, True)
    assert urls == [0, 1, 2]
    assert step(False, True) == (None, 2.0)  # url 0 fails: retried after delay_before_retry
    assert step(False, True) == (False, 5.0)  # and again: down, next after max(dbr, loop)
    assert urls[-2:] == [0, 0]
    assert step(False, False) == (None, 5.0)  # still failing url 0
    assert step(True, False) == (None, 5.0)  # url 0 passes: now a full pass is needed
    assert step(True, False) == (None, 5.0)
    assert step(True, False) == (None, 5.0)
    assert step(True, False) == (True, 5.0)  # urls 0, 1, 2 passed
    assert urls[-4:] == [0, 0, 1, 2]


def test_url_machine_fast_recovery_checks_at_once():
    m = UrlMachine(0, 5.0, 2.0, urls=2, fast_recovery=True)
    assert m.step(False, True) == (False, 5.0)  # first check: one failure is enough
    assert m.step(True, False)[1] == 0.0  # recovering: no delay between urls
    assert m.step(True, False) == (None, 0.0)
    assert m.step(True, False) == (True, 5.0)


def test_misc_machine_counts_from_the_start_of_the_run():
    assert MiscMachine(1, 5.0, 1.0).from_start and not RetryMachine(1, 5.0, 1.0).from_start


def test_reload_migration_keeps_retries_already_spent():
    old = RetryMachine(3, 5.0, 1.0)
    play(old, [False, False])  # two failures of an up checker: retry_it = 2
    new = RetryMachine(1, 5.0, 1.0)
    new.migrate(old, is_up=True)
    assert new.step(False, True)[0] is False  # retry 1 already used up: down now
    down = RetryMachine(1, 5.0, 1.0)
    down.migrate(old, is_up=False)
    assert down.has_run and down.step(True, False)[0] is True
