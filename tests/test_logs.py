"""engine/logs.py and engine/sdnotify.py without a lab: the JSON line, the drop summary's
arithmetic over intervals, and the datagrams systemd would receive."""

from __future__ import annotations

import io
import json
import logging
import socket
from collections import Counter

from pyvs.engine import logs, sdnotify


def logger(fmt: str) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.formatter(fmt))
    log = logging.getLogger(f"pyvs.test.{fmt}")
    log.handlers = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    return log, out


def test_json_line_has_event_and_fields_and_plain_records_are_log_events():
    log, out = logger("json")
    logs.event(log, "config-change", "pyvsadm %s", "-A", argv=["-A"], rc=0)
    log.warning("something %d", 3)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["event"] == "config-change" and first["message"] == "pyvsadm -A"
    assert first["fields"] == {"argv": ["-A"], "rc": 0} and first["level"] == "info"
    assert first["ts"].endswith("Z")
    assert second["event"] == "log" and second["fields"] == {} and second["level"] == "warning"


def test_drop_summary_sums_an_interval_into_one_line_and_stays_quiet_without_drops():
    log, out = logger("text")
    drops: Counter = Counter()
    summary = logs.DropSummary(drops, log, interval=10)
    due = summary.due
    drops["no-service"] += 120
    drops["bad-udp-length"] += 3
    assert summary.tick(due - 1) == {}  # the interval is not over
    assert summary.tick(due) == {"no-service": 120, "bad-udp-length": 3}
    assert summary.tick(due + 10) == {}  # nothing new: no line
    drops["no-service"] += 1
    assert summary.tick(due + 20) == {"no-service": 1}
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("drops in the last 10 s: no-service 120, bad-udp-length 3")


def test_overload_reports_overrun_growth_per_port():
    log, out = logger("text")
    watch = logs.OverloadWatch(log, interval=10)
    due = watch.due
    assert watch.tick(lambda: {"nfqueue": {"overruns": 0, "packets": 5}}, due) == {}
    assert watch.tick(lambda: {"nfqueue": {"overruns": 7}}, due + 10) == {"nfqueue overruns": 7}
    assert "overload in the last 10 s: nfqueue overruns 7" in out.getvalue()


def test_sd_notify_sends_one_datagram_per_call(tmp_path, monkeypatch):
    assert not sdnotify.ready()  # no $NOTIFY_SOCKET: nothing, no error
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert sdnotify.ready("serving")
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving"
        assert sdnotify.reloading()
        assert sock.recv(4096).startswith(b"RELOADING=1\nMONOTONIC_USEC=")
        assert sdnotify.stopping()
        assert sock.recv(4096) == b"STOPPING=1"
