"""Scheduler registry: name -> class, like ip_vs_sched.c's register_ip_vs_scheduler().

Built-in schedulers are the modules in this package.  Third parties register
through the `pyvs.schedulers` entry-point group, or are named directly as
`path/to/file.py:Class` or `module:Class` on `pyvsadm -s`.
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from pyvs.schedulers.base import Scheduler, SchedulerEnv

if TYPE_CHECKING:
    from pyvs.engine.model import VirtualService

BUILTIN = ("rr", "wrr", "lc", "wlc", "sed", "nq", "dh", "sh", "lblc", "lblcr", "mh", "fo",
           "ovf", "twos")

_registry: dict[str, type[Scheduler]] = {}


def register(cls: type[Scheduler]) -> type[Scheduler]:
    """Class decorator: make cls selectable by cls.name."""
    if not cls.name:
        raise ValueError(f"{cls!r} has no name")
    _registry[cls.name] = cls
    return cls


def _load_builtin(name: str) -> type[Scheduler] | None:
    if name not in BUILTIN:
        return None
    try:
        importlib.import_module(f"pyvs.schedulers.{name}")
    except ModuleNotFoundError:
        return None
    return _registry.get(name)


def _load_entry_point(name: str) -> type[Scheduler] | None:
    for ep in entry_points(group="pyvs.schedulers"):
        if ep.name == name:
            cls = ep.load()
            _registry[name] = cls
            return cls
    return None


def _load_path(spec: str) -> type[Scheduler] | None:
    """'dir/file.py:Class' or 'package.module:Class'."""
    if ":" not in spec:
        return None
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            return None
        modspec = importlib.util.spec_from_file_location(f"pyvs_user_{path.stem}", path)
        if modspec is None or modspec.loader is None:
            return None
        module = importlib.util.module_from_spec(modspec)
        modspec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError:
            return None
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Scheduler)):
        return None
    _registry[spec] = cls
    return cls


def lookup(name: str) -> type[Scheduler] | None:
    return (_registry.get(name) or _load_builtin(name) or _load_path(name)
            or _load_entry_point(name))


class SchedulerNotFound(LookupError):
    """No scheduler of that name (the control plane answers ENOENT, as the kernel does)."""


def create(name: str, svc: VirtualService, env: SchedulerEnv) -> Scheduler:
    """Bind a new scheduler instance to svc."""
    cls = lookup(name)
    if cls is None:
        raise SchedulerNotFound(name)
    return cls(svc, env)


def available() -> list[str]:
    return [n for n in BUILTIN if lookup(n) is not None]
