"""Scheduler registry: name -> class, like ip_vs_sched.c's register_ip_vs_scheduler().

Built-in schedulers are the modules in this package.  Third parties register
through the `pyvs.schedulers` entry-point group, or are named directly as
`path/to/file.py:Class` or `module:Class` on `pyvsadm -s`.  Such a plugin is read
afresh whenever a service is bound to it (created, or its scheduler set with -E), so
an edited file takes effect without restarting `pyvs run`; a relative path is the
caller's (pyvsadm sends its working directory, ``absolute``), and a plugin that cannot
be used says why (``PluginError``).
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import os
import sys
import traceback
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from pyvs.schedulers.base import Scheduler, SchedulerEnv

if TYPE_CHECKING:
    from pyvs.engine.model import VirtualService

BUILTIN = ("rr", "wrr", "lc", "wlc", "sed", "nq", "dh", "sh", "lblc", "lblcr", "mh", "fo",
           "ovf", "twos")

_registry: dict[str, type[Scheduler]] = {}
_loads = itertools.count(1)  # a fresh module name for every plugin load


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


class SchedulerNotFound(LookupError):
    """No scheduler of that name (the control plane answers ENOENT, as the kernel does)."""


class PluginError(SchedulerNotFound):
    """A plugin (``file.py:Class`` or ``module:Class``) that cannot be used; the message
    says why: no such file, a syntax error (file and line), an error while loading it,
    no such class, not a scheduler."""


def is_plugin(spec: str) -> bool:
    return ":" in spec


def absolute(spec: str, cwd: str | None) -> str:
    """``spec`` with a relative plugin file made absolute against ``cwd`` (the caller's
    directory, which pyvsadm sends), so the daemon's own directory never matters and the
    service lists and saves (-S) a name that means the same file everywhere."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target.endswith(".py") or cwd is None:
        return spec
    return f"{os.path.normpath(os.path.join(cwd, os.path.expanduser(target)))}:{attr}"


def _plugin_line(err: BaseException, path: str) -> str:
    """' line N' of the deepest frame of ``err``'s traceback that is in ``path``."""
    line = None
    for frame in traceback.extract_tb(err.__traceback__):
        if frame.filename == path:
            line = frame.lineno
    return f" line {line}" if line else ""


def load_plugin(spec: str) -> type[Scheduler]:
    """The class ``spec`` names, read afresh: the file is executed again (or the module
    re-imported), so an edited plugin takes effect.  Raises PluginError."""
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise PluginError(f"{spec}: no such file {target}")
        name = f"pyvs_user_{path.stem}_{next(_loads)}"
        modspec = importlib.util.spec_from_file_location(name, path)
        if modspec is None or modspec.loader is None:
            raise PluginError(f"{spec}: cannot load {target}")
        module = importlib.util.module_from_spec(modspec)
        sys.modules[name] = module  # dataclasses and pickling look modules up there
        try:
            modspec.loader.exec_module(module)
        except SyntaxError as err:
            del sys.modules[name]
            raise PluginError(f"{spec}: syntax error in {err.filename or target} line "
                              f"{err.lineno}: {err.msg}") from None
        except Exception as err:  # the user's file: say what broke, and where
            del sys.modules[name]
            raise PluginError(f"{spec}: {type(err).__name__} while loading {target}"
                              f"{_plugin_line(err, str(path))}: {err}") from None
        where = target
    else:
        try:
            module = importlib.reload(importlib.import_module(target))
        except ModuleNotFoundError as err:
            raise PluginError(f"{spec}: no module named {err.name}") from None
        except SyntaxError as err:
            raise PluginError(f"{spec}: syntax error in {err.filename} line {err.lineno}: "
                              f"{err.msg}") from None
        except Exception as err:
            raise PluginError(f"{spec}: {type(err).__name__} while importing {target}: "
                              f"{err}") from None
        where = f"module {target}"
    cls = getattr(module, attr, None)
    if cls is None:
        raise PluginError(f"{spec}: {where} has no {attr}")
    if not (isinstance(cls, type) and issubclass(cls, Scheduler)) or cls is Scheduler:
        raise PluginError(f"{spec}: {attr} in {where} is not a scheduler (a subclass of "
                          "pyvs.schedulers.base.Scheduler)")
    return cls


def plugin_source(spec: str) -> bytes | None:
    """The bytes of a plugin file (to tell an edited one), None for anything else."""
    target, _, _ = spec.rpartition(":")
    if not target.endswith(".py"):
        return None
    try:
        return Path(target).read_bytes()
    except OSError:
        return None


def lookup(name: str) -> type[Scheduler] | None:
    """The class of a kernel scheduler, a registered name or an entry point; a plugin
    spec is loaded afresh (None if it cannot be: ``load_plugin`` says why)."""
    cls = _registry.get(name) or _load_builtin(name)
    if cls is None and is_plugin(name):
        try:
            return load_plugin(name)
        except PluginError:
            return None
    return cls or _load_entry_point(name)


def create(name: str, svc: VirtualService, env: SchedulerEnv) -> Scheduler:
    """Bind a new scheduler instance to svc; a plugin file is read again each time.
    Raises PluginError (why a plugin cannot be used) or SchedulerNotFound."""
    cls = _registry.get(name) or _load_builtin(name)
    if cls is None and is_plugin(name):
        cls = load_plugin(name)
    if cls is None:
        cls = _load_entry_point(name)
    if cls is None:
        raise SchedulerNotFound(name)
    return cls(svc, env)


def available() -> list[str]:
    return [n for n in BUILTIN if lookup(n) is not None]
