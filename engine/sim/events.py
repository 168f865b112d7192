"""The timeline: what happens to real servers while the flows run.

Actions (what an operator or a failure does, and how the director learns it):

* ``fail S``    -- the server stops answering at once (requests in service there are
                   lost; new connections sent to it get no answer).  A health checker
                   notices ``detect_delay`` seconds later and takes it out of every
                   service: deletes it (``on_failure="remove"``, keepalived's default)
                   or sets its weight to 0 (``"quiesce"``, keepalived's
                   ``inhibit_on_failure``).
* ``recover S`` -- it answers again; the health checker puts it back after the delay.
* ``add S``     -- a new server (fields as in a cluster file) joins every service now.
* ``remove S``  -- ``ipvsadm -d`` now (connections still bound to it are dropped by
                   the director from then on, as the kernel does).
* ``weight S W``-- ``ipvsadm -e -w W`` now.
* ``quiesce S`` -- ``ipvsadm -e -w 0`` now (existing connections go on, no new ones).

A file holds one event per line, ``TIME ACTION SERVER [W | key=value ...]`` (``#``
starts a comment), or a JSON list of ``{"time": 10, "action": "fail", "server":
"rs3"}`` objects (``weight`` for weight, the server fields for add).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

ACTIONS = ("fail", "recover", "add", "remove", "weight", "quiesce")
ON_FAILURE = ("remove", "quiesce")


class EventError(ValueError):
    """An event that cannot be understood (the message names the line)."""


@dataclass(order=True)
class Event:
    time: float
    action: str = field(compare=False)
    server: str = field(compare=False)
    weight: int | None = field(default=None, compare=False)
    fields: dict = field(default_factory=dict, compare=False)  # add: ServerSpec fields

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise EventError(f"unknown action {self.action!r} (known: {', '.join(ACTIONS)})")
        if self.time < 0:
            raise EventError(f"{self.action} {self.server}: time must be >= 0")
        if self.action == "weight" and (self.weight is None or self.weight < 0):
            raise EventError(f"weight {self.server}: needs a weight >= 0")

    @property
    def label(self) -> str:
        extra = f" {self.weight}" if self.action == "weight" else ""
        return f"t={self.time:g} {self.action} {self.server}{extra}"

    def as_dict(self) -> dict:
        d = {"time": self.time, "action": self.action, "server": self.server}
        if self.weight is not None:
            d["weight"] = self.weight
        if self.fields:
            d.update(self.fields)
        return d


def _number(text: str) -> int | float | str:
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def parse_line(line: str, where: str = "") -> Event | None:
    line = line.split("#", 1)[0].strip()
    if not line:
        return None
    parts = line.split()
    if len(parts) < 3:
        raise EventError(f"{where}expected TIME ACTION SERVER, got {line!r}")
    try:
        t = float(parts[0])
    except ValueError:
        raise EventError(f"{where}time {parts[0]!r} is not a number") from None
    action, server, rest = parts[1].lower(), parts[2], parts[3:]
    weight = None
    fields: dict = {}
    for item in rest:
        key, eq, value = item.partition("=")
        if not eq:
            if action != "weight" or weight is not None:
                raise EventError(f"{where}unexpected {item!r}")
            try:
                weight = int(item)
            except ValueError:
                raise EventError(f"{where}weight {item!r} is not an integer") from None
        elif key == "weight" and action == "weight":
            weight = int(value)
        else:
            fields[key] = _number(value)
    try:
        return Event(t, action, server, weight, fields)
    except EventError as err:
        raise EventError(f"{where}{err}") from None


def load(path: str | Path) -> list[Event]:
    """Events from a text or JSON file, sorted by time (stable)."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise EventError(f"cannot read events file {path}: {err}") from None
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except ValueError as err:
            raise EventError(f"{path}: {err}") from None
        events = [from_dict(item, f"{path}[{i}]: ") for i, item in enumerate(items)]
    else:
        events = [e for n, line in enumerate(text.splitlines(), 1)
                  if (e := parse_line(line, f"{path}:{n}: ")) is not None]
    return sorted(events)


def from_dict(item: dict, where: str = "") -> Event:
    if not isinstance(item, dict):
        raise EventError(f"{where}an event is an object")
    item = dict(item)
    try:
        t = float(item.pop("time"))
        action = str(item.pop("action")).lower()
        server = str(item.pop("server"))
    except KeyError as err:
        raise EventError(f"{where}missing {err}") from None
    except (TypeError, ValueError):
        raise EventError(f"{where}time is not a number") from None
    weight = item.pop("weight", None) if action == "weight" else None
    try:
        return Event(t, action, server, None if weight is None else int(weight), item)
    except EventError as err:
        raise EventError(f"{where}{err}") from None
