"""Health checks with real traffic: a real server fails in the ways real servers fail,
the checker takes it out within keepalived's detection window, and the client's
failed requests all fall inside that window; repaired, it takes traffic again.

Window (the issue's bound): delay_loop + retry x (connect_timeout + delay_before_retry)
+ 1 s.  Every test builds its own NAT lab (3 real servers) and director; a client
sends 50 requests/s, each on a new connection, through round robin.

The directors run with expire_nodest_conn=1, as LVS sites with health checks do: as in
the kernel, a removed server's connection entries otherwise stay, and a new request
whose source port happens to match one still in SYN_RECV (a request that hung on the
dead server) or a UDP entry would still be sent there after the removal.
"""

from __future__ import annotations

import time

import pytest

from pyvs.bench.health_scenario import (
    BOUND,
    CONNECT_TIMEOUT,
    DELAY_BEFORE_RETRY,
    DELAY_LOOP,
    RETRY,
    HealthRun,
    Stream,
    epoch,
    failure_window,
    http_conf,
    wait_for,
)
from pyvs.engine.lab import NatLab

pytestmark = pytest.mark.lab

RATE, CLIENT_TIMEOUT = 50.0, 1.0
RS1 = "198.18.2.11:80"


def udp_conf(lab: NatLab) -> str:
    servers = "".join(f"""
    real_server {rs['addr']} 53 {{
        UDP_CHECK {{
            payload 70 69 6e 67
            require_reply
            connect_timeout {CONNECT_TIMEOUT}
            retry {RETRY}
            delay_before_retry {DELAY_BEFORE_RETRY}
        }}
    }}""" for rs in lab.real_server_list())
    return f"""
virtual_server {NatLab.VIP} 53 {{
    delay_loop {DELAY_LOOP}
    lb_algo rr
    lb_kind NAT
    protocol UDP
{servers}
}}
"""


BREAK = {  # how -> (break it, repair it, is an outcome a failure?)
    "killed": (lambda r: r.kill_server("rs1"), lambda r: r.start_server("rs1"), None),
    "link-down": (lambda r: r.link("rs1", False), lambda r: r.link("rs1", True), None),
    "http-500": (lambda r: r.control("rs1", http="500"), lambda r: r.control("rs1"), None),
    "accepts-never-answers": (lambda r: r.control("rs1", http="hang"),
                              lambda r: r.control("rs1"), None),
    "wrong-digest": (lambda r: r.control("rs1", http="wrong-body"), lambda r: r.control("rs1"),
                     lambda o: not o.ok or "wrong" in (o.body or "")),
}


def detection_run(run: HealthRun, stream: Stream, how: str, rs1: str, rs1_name: str = "rs1"
                  ) -> tuple[float, float, float]:
    """Break rs1 under traffic, wait for its removal, repair it, wait until it answers
    again.  Returns (broken at, removed at, answering again after)."""
    brk, repair, _ = BREAK.get(how, (None, None, None))
    for name in ("rs1", "rs2", "rs3"):
        wait_for(lambda n=name: stream.answered_by(n, 0), 15, f"{name} answering")
    t_break = time.time()
    (brk or (lambda r: r.control(rs1_name, udp="silent")))(run)
    down = run.wait_transition(rs1, "DOWN", t_break, BOUND + 10)
    assert down["action"] == "removed"
    assert rs1 not in run.listing()
    t_down = epoch(down["time"])
    wait_for(lambda: any(o.t > t_down + 1.0 for o in stream.records()), 10, "traffic after")
    t_fix = time.time()
    (repair or (lambda r: r.control(rs1_name)))(run)
    up = run.wait_transition(rs1, "UP", t_fix, 20)
    t_up = epoch(up["time"])
    wait_for(lambda: stream.answered_by(rs1_name, t_up), 10, f"{rs1_name} answering again")
    return t_break, t_down, t_up


def check_window(records, t_break: float, t_down: float, bad) -> int:
    n, first, last = failure_window(records, bad)
    assert n > 0, "breaking the server cost no request: the test proves nothing"
    assert t_down - t_break <= BOUND, f"removed {t_down - t_break:.2f}s after the failure"
    # every failure was sent between the failure (less one request's timeout, for
    # requests in flight) and the removal
    assert first >= t_break - CLIENT_TIMEOUT, f"failure {t_break - first:.2f}s before"
    assert last <= t_down, f"a request failed {last - t_down:.3f}s after the removal"
    # round robin over 3: at most a third of what was sent in that window
    assert n <= RATE * (t_down - t_break + CLIENT_TIMEOUT) / 3 + 2
    return n


@pytest.mark.parametrize("how", list(BREAK))
def test_broken_real_server_is_taken_out_within_the_detection_window(
        nat_lab_factory, tmp_path, how):
    lab = nat_lab_factory(real_servers=3, clients=1)
    with HealthRun(lab, http_conf(lab, digest=how == "wrong-digest"), tmp_path,
                   sysctls=("expire_nodest_conn=1",)) as run:
        stream = Stream(lab, lab.url(), tmp_path / "stream.jsonl", RATE, 60, CLIENT_TIMEOUT)
        try:
            t_break, t_down, t_up = detection_run(run, stream, how, RS1)
        finally:
            records = stream.stop()
        assert f"{RS1}" in run.listing()
    bad = BREAK[how][2] or (lambda o: not o.ok)
    check_window(records, t_break, t_down, bad)
    assert not any(bad(o) for o in records if o.t > t_up), "failures after the repair"


def test_udp_service_whose_server_stops_replying(nat_lab_factory, tmp_path):
    lab = nat_lab_factory(real_servers=3, clients=1)
    rs1 = "198.18.2.11:53"
    with HealthRun(lab, udp_conf(lab), tmp_path, sysctls=("expire_nodest_conn=1",)) as run:
        stream = Stream(lab, f"udp://{NatLab.VIP}:53", tmp_path / "stream.jsonl", RATE, 60,
                        CLIENT_TIMEOUT)
        try:
            t_break, t_down, t_up = detection_run(run, stream, "udp-silent", rs1)
        finally:
            records = stream.stop()
    check_window(records, t_break, t_down, lambda o: not o.ok)
    assert all(o.ok for o in records if o.t > t_up)


def test_checks_and_removal_on_the_xdp_port(nat_lab_factory, tmp_path):
    """With --io xdp the real servers' answers to the checker are steered into AF_XDP
    like NAT replies and handed to the kernel (nothing matches them): checking works
    there too, with the same window."""
    lab = nat_lab_factory(real_servers=3, clients=1)
    with HealthRun(lab, http_conf(lab), tmp_path, io=("--io", "xdp"),
                   sysctls=("expire_nodest_conn=1",)) as run:
        stream = Stream(lab, lab.url(), tmp_path / "stream.jsonl", RATE, 60, CLIENT_TIMEOUT)
        try:
            t_break, t_down, t_up = detection_run(run, stream, "killed", RS1)
        finally:
            records = stream.stop()
    check_window(records, t_break, t_down, lambda o: not o.ok)
    assert all(o.ok for o in records if o.t > t_up)
