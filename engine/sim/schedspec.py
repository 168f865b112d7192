"""Scheduler names as ``pyvs sim --schedulers`` takes them, resolved to registry names.

* a kernel scheduler: ``rr``, ``wlc``, ``mh`` ... (schedulers/registry.py BUILTIN);
* ``mh@65537``: mh with another table size (schedulers/mh.py, research extension);
* a plugin: ``path/to/file.py:Class`` or ``package.module:Class``.

A plugin is loaded afresh on every call (the file is executed again, a module is
re-imported), so a researcher can edit the file and run again in the same Python
session, e.g. a notebook, and get the new code.  The fresh class is registered under
a unique name (``file.py:Class#3``) so it never replaces another run's class.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import sys
from pathlib import Path

from pyvs.schedulers import registry
from pyvs.schedulers.base import Scheduler
from pyvs.schedulers.mh import with_table_size

_loads = itertools.count(1)


class SchedulerSpecError(ValueError):
    """A scheduler name that names nothing usable (the message says why)."""


def _fresh_class(spec: str) -> type[Scheduler]:
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise SchedulerSpecError(f"{spec}: no such file {target}")
        modname = f"pyvs_sim_plugin_{path.stem}_{next(_loads)}"
        modspec = importlib.util.spec_from_file_location(modname, path)
        if modspec is None or modspec.loader is None:
            raise SchedulerSpecError(f"{spec}: cannot load {target}")
        module = importlib.util.module_from_spec(modspec)
        sys.modules[modname] = module  # dataclasses and pickling look modules up there
        try:
            modspec.loader.exec_module(module)
        except Exception as err:  # the researcher's file: say what broke, do not crash
            del sys.modules[modname]
            raise SchedulerSpecError(f"{spec}: {type(err).__name__}: {err}") from err
    else:
        try:
            module = importlib.import_module(target)
            module = importlib.reload(module)
        except Exception as err:
            raise SchedulerSpecError(f"{spec}: {type(err).__name__}: {err}") from err
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Scheduler)):
        raise SchedulerSpecError(f"{spec}: {attr} is not a Scheduler subclass "
                                 "(schedulers/base.py)")
    return cls


def resolve(spec: str) -> str:
    """The registry name to put in a ServiceSpec for ``spec`` (loading plugins afresh)."""
    spec = spec.strip()
    if not spec:
        raise SchedulerSpecError("empty scheduler name")
    if spec.startswith("mh@"):
        try:
            return with_table_size(int(spec[3:])).name
        except ValueError as err:
            raise SchedulerSpecError(f"{spec}: {err}") from None
    if ":" in spec:
        cls = _fresh_class(spec)
        fresh = type(cls.__name__, (cls,), {"name": f"{spec}#{next(_loads)}",
                                            "__module__": cls.__module__})
        registry.register(fresh)
        return fresh.name
    if registry.lookup(spec) is None:
        raise SchedulerSpecError(f"unknown scheduler {spec!r} (kernel schedulers: "
                                 f"{', '.join(registry.BUILTIN)}; or file.py:Class, "
                                 "module:Class, mh@SIZE)")
    return spec


def split(text: str) -> list[str]:
    """``rr,wlc,my.py:Mine`` -> names (a Windows-free world: ':' is never a drive)."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise SchedulerSpecError("--schedulers needs at least one name")
    if len(set(names)) != len(names):
        raise SchedulerSpecError("--schedulers names one scheduler twice")
    return names


def loaded_modules() -> int:
    """How many plugin modules this process has loaded (for tests of fresh loading)."""
    return sum(1 for m in sys.modules if m.startswith("pyvs_sim_plugin_"))
