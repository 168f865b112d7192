"""Network-namespace labs for pyvs (see netns-lab/README.md).

Entry points used by the CLI (``pyvs lab up|down``)::

    lab_up(mode, real_servers, clients, name=None) -> dict   # describe() of the lab
    lab_down(name) -> list[str]                               # namespaces removed

Rootless labs (a user namespace of their own): engine/lab/rootless.py; the command
line: engine/lab/labcli.py.

``lab_up`` leaves the lab and its real servers running, detached from the caller.
In tests use ``NatLab`` as a context manager instead.
"""

from __future__ import annotations

from .kinds import LABS
from .natlab import NatLab
from .netns import LabError
from .segment import DrLab
from .topology import Lab, cleanup_stale, down_by_name, lab_namespaces, url
from .tunlab import TunLab

__all__ = [
    "LABS",
    "DrLab",
    "Lab",
    "LabError",
    "NatLab",
    "TunLab",
    "cleanup_stale",
    "down_by_name",
    "lab_down",
    "lab_namespaces",
    "lab_up",
    "url",
]


def lab_up(mode: str, real_servers: int, clients: int, name: str | None = None,
           server_options: dict[str, list[str]] | None = None) -> dict:
    """Build a lab of ``mode`` ("nat", "dr" or "tun"), start one real server (HTTP :80, UDP :53) per
    real-server namespace, detached, and return the lab's ``describe()``."""
    try:
        cls = LABS[mode]
    except KeyError:
        raise LabError(f"lab mode {mode!r} not available (have: {', '.join(LABS)})") from None
    lab = cls(name=name, real_servers=real_servers, clients=clients,
              start_servers=True, detached=True, server_options=server_options)
    lab.up()
    return lab.describe()


def lab_down(name: str) -> list[str]:
    """Remove lab ``name`` (its namespaces, everything running in them, its state)."""
    return down_by_name(name)
