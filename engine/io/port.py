"""The port interface, and the registry that turns ``pyvs run --io MODE`` into ports.

A port gets packets from the kernel to the director and back: it receives a batch,
hands it to the director, transmits what comes back, and keeps the kernel plumbing
that sends it exactly what pyvs takes (engine/takes.py) -- installed when it opens,
refreshed by ``update`` on every configuration change, removed on ``close``.

``--io`` names a *set* of ports (MODES): a fast port (ring, xdp) takes what it can
serve -- TCP/UDP to services' addr:port and NAT replies -- and NFQUEUE the rest
(fwmark services, ICMP errors).  The daemon knows ports only through this interface.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("pyvs.port")


class Port:
    """What the daemon needs of a port.  ``name`` keys its counters in ``pyvs status``."""

    name = ""

    def readers(self) -> list[Any]:
        """Objects with ``fileno()`` the daemon waits on; each is passed to ``serve``."""
        raise NotImplementedError

    def serve(self, reader: Any) -> int:
        """Handle what ``reader`` has now (bounded); returns packets handled."""
        raise NotImplementedError

    def update(self, services: list) -> None:
        """The configuration changed: take exactly what the new one needs."""

    def tick(self) -> None:
        """Periodic work (every daemon tick, ~100 ms)."""

    def status(self) -> dict:
        return {}

    def close(self) -> None:
        """Give everything back to the kernel; safe to call twice."""

    @classmethod
    def open(cls, ctx: PortContext) -> Port:
        """Open the port (sockets, plumbing) for the run ``ctx`` describes."""
        raise NotImplementedError

    @staticmethod
    def clear_stale() -> list[str]:
        """Remove what a director killed without its cleanup left; returns what it removed."""
        return []


@dataclass
class PortContext:
    """What opening a port may use."""

    director: Any
    raw: Any  # engine/io/raw.py RawSender: the director's own stack
    interfaces: list[str] | None = None
    fanout_group: int | None = None
    queue: int = 20601
    options: dict = field(default_factory=dict)


# --io MODE -> the ports it runs, fast port first (it takes its traffic from the kernel
# before NFQUEUE's rules are narrowed to the rest)
MODES: dict[str, tuple[str, ...]] = {
    "nfqueue": ("nfqueue",),
    "ring": ("ring", "nfqueue"),
    "xdp": ("xdp", "nfqueue"),
}
_CLASSES = {
    "nfqueue": "pyvs.engine.io.nfqueue:NfQueuePort",
    "ring": "pyvs.engine.io.ring:RingPort",
    "xdp": "pyvs.engine.io.xdp:XdpPort",
}


def port_class(name: str) -> type[Port]:
    """The class behind a port name (imported on first use: numpy only when needed)."""
    module, _, attr = _CLASSES[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def open_ports(mode: str, ctx: PortContext) -> list[Port]:
    """Open every port of ``mode``; if one fails, close those already open and raise."""
    if mode not in MODES:
        raise ValueError(f"unknown --io {mode!r} (choose from {', '.join(MODES)})")
    names = MODES[mode]
    ports: list[Port] = []
    try:
        for name in names:
            ports.append(port_class(name).open(ctx))
    except BaseException:
        for port in reversed(ports):
            port.close()
        raise
    return ports


def clear_stale() -> list[str]:
    """Remove whatever any kind of port left behind when its director was killed
    (a netdev table, XDP programs, queue rules), whatever this run's mode."""
    gone: list[str] = []
    for name in _CLASSES:
        try:
            gone += port_class(name).clear_stale()
        except OSError as err:
            log.warning("could not look for what a killed %s port left: %s", name, err)
    return gone
