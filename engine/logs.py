"""The director's log: one line per event, for a person (text) or a log shipper (JSON).

Events are what an operator acts on -- start, stop, a configuration change, a real
server going up or down, overload, drops -- never single packets: drops are summed
and reported once per interval (``DropSummary``), the way the kernel rate-limits its
own IPVS messages (IP_VS_DBG_RL).  ``event()`` attaches a name and fields to a
record; the text formatter shows the message, the JSON one an object per line:
  {"ts": "2026-12-05T23:40:01.123Z", "level": "info", "event": "start",
   "message": "...", "fields": {...}}
Records logged without ``event()`` (warnings, tracebacks) get the event "log".
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping

FORMATS = ("text", "json")
ENV = "PYVS_LOG_FORMAT"  # inherited by the checker process (engine/health/checkerd.py)
DROP_INTERVAL = 10.0  # seconds between two drop summaries


def event(logger: logging.Logger, name: str, message: str, *args,
          level: int = logging.INFO, **fields) -> None:
    """Log one event: ``message % args`` for people, ``name`` and ``fields`` for machines."""
    logger.log(level, message, *args, extra={"event": name, "fields": fields})


def _iso(created: float) -> str:
    ms = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{ms:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a traceback goes into "exc" (still one line)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": _iso(record.created), "level": record.levelname.lower(),
               "event": getattr(record, "event", "log"), "message": record.getMessage(),
               "logger": record.name, "pid": record.process,
               "fields": getattr(record, "fields", {})}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def formatter(fmt: str, prog: str = "pyvs") -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    return logging.Formatter(f"{prog}[%(process)d] %(levelname)s %(name)s: %(message)s")


def setup(level: str = "info", fmt: str | None = None, prog: str = "pyvs",
          stream=None) -> None:
    """Configure the root logger once for this process (``fmt`` None: from $PYVS_LOG_FORMAT,
    which child processes inherit)."""
    fmt = fmt or os.environ.get(ENV, "text")
    if fmt not in FORMATS:
        fmt = "text"
    os.environ[ENV] = fmt
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(fmt, prog))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))


class DropSummary:
    """Drops by reason, summed over ``interval`` seconds and logged as one line.

    ``counters`` is the director's live reason -> count mapping; ``extra`` (optional)
    returns further cumulative counters of the same kind (a port's overruns)."""

    def __init__(self, counters: Mapping[str, int], logger: logging.Logger,
                 interval: float = DROP_INTERVAL) -> None:
        self.counters = counters
        self.log = logger
        self.interval = interval
        self.last = dict(counters)
        self.due = time.monotonic() + interval

    def tick(self, now: float | None = None) -> dict[str, int]:
        """Log the interval's drops if it is over and there were any; returns them."""
        now = time.monotonic() if now is None else now
        if now < self.due:
            return {}
        self.due = now + self.interval
        current = dict(self.counters)
        delta = {k: v - self.last.get(k, 0) for k, v in current.items()
                 if v - self.last.get(k, 0) > 0}
        self.last = current
        if delta:
            text = ", ".join(f"{k} {v}" for k, v in sorted(delta.items(),
                                                             key=lambda kv: (-kv[1], kv[0])))
            event(self.log, "drops", "drops in the last %g s: %s", self.interval, text,
                  level=logging.WARNING, interval=self.interval, drops=delta)
        return delta


class OverloadWatch:
    """A port's overload counters (NFQUEUE overruns: packets the kernel dropped because
    the director did not read them in time), reported like drops: once per interval."""

    KEYS = ("overruns",)

    def __init__(self, logger: logging.Logger, interval: float = DROP_INTERVAL) -> None:
        self.log = logger
        self.interval = interval
        self.last: dict[str, int] = {}
        self.due = time.monotonic() + interval

    def tick(self, ports: Callable[[], Mapping[str, Mapping]], now: float | None = None
             ) -> dict[str, int]:
        """``ports``: the ports' status by name, asked for only once an interval is over."""
        now = time.monotonic() if now is None else now
        if now < self.due:
            return {}
        self.due = now + self.interval
        ports = ports()
        delta = {}
        for name, status in ports.items():
            for key in self.KEYS:
                value = status.get(key)
                if isinstance(value, int):
                    label = f"{name} {key}"
                    if value > self.last.get(label, 0):
                        delta[label] = value - self.last.get(label, 0)
                    self.last[label] = value
        if delta:
            event(self.log, "overload", "overload in the last %g s: %s", self.interval,
                  ", ".join(f"{k} {v}" for k, v in sorted(delta.items())),
                  level=logging.WARNING, interval=self.interval, counters=delta)
        return delta
