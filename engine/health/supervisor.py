"""The daemon's side of health checking: configuration, checker process, reload, status.

Lives in `pyvs run` (engine/daemon.py calls it between batches, like any control
request).  At start it applies the initial table itself (diff.initial_plan) through
the same "ipvsadm" control operation pyvsadm uses, then starts the checker process
(checkerd.py) in the same network namespace, bound to die with the daemon.  The
checker's requests ("health" op) are answered here:

  hello   -> the configuration, the pools' state and the generation
  apply   -> ipvsadm argv to run in order, and the new state of one pool; refused
             (rc 3) when its generation is not the current one (a reload came between)
  timings -> measured response times, handed to a scheduler's report(dest, seconds)

Reload (SIGHUP or `pyvs reload`): the file is read and checked first; a broken one
changes nothing and the reply says why; a good one is applied as a difference
(diff.plan_reload), the generation moves on and the checker is told (SIGUSR1).
"""

from __future__ import annotations

import collections
import datetime
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from pyvs.engine import logs
from pyvs.engine.health import ipvsops, model
from pyvs.engine.health.diff import Plan, initial_plan, plan_reload
from pyvs.engine.health.model import ConfigError, HealthConfig
from pyvs.engine.health.pool import VsPool, VsState, rs_id, vs_id
from pyvs.engine.health.procutil import die_with_parent

log = logging.getLogger("pyvs.health")
RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0)
HISTORY = 200


def load(path: str, kind: str) -> HealthConfig:
    """Read and check a configuration: kind "keepalived" or "toml"; raises ConfigError."""
    if kind == "keepalived":
        from pyvs.engine.health.keepalived import load as load_file
    else:
        from pyvs.engine.health.tomlconfig import load as load_file
    cfg = load_file(path)
    check_runtime(cfg)
    return cfg


def check_runtime(cfg: HealthConfig) -> None:
    """What only this host can tell: scripts exist, ICMP sockets are allowed."""
    from pyvs.engine.health.checks import ping

    for vs in cfg.virtual_servers:
        scripts = [(vs.where, name, getattr(vs, name)) for name in ("quorum_up", "quorum_down")]
        for rs in vs.real_servers:
            scripts += [(rs.where, name, getattr(rs, name))
                        for name in ("notify_up", "notify_down")]
            for c in rs.checkers:
                if c.kind == "MISC_CHECK":
                    scripts.append((c.where, "misc_path", c.misc_path))
                if c.kind == "PING_CHECK" and (why := ping.available()):
                    raise ConfigError(f"{c.where}: PING_CHECK: {why}")
        for where, name, script in scripts:
            if not script:
                continue
            try:
                argv = shlex.split(script)
            except ValueError as err:
                raise ConfigError(f"{where}: {name}: {script!r}: {err}") from None
            if not argv or shutil.which(argv[0]) is None:
                raise ConfigError(f"{where}: {name}: {argv[0] if argv else script!r}: no such "
                                  f"executable")


def stamp(when: float) -> str:
    t = datetime.datetime.fromtimestamp(when, datetime.UTC)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class HealthSupervisor:
    """``apply(argv) -> reply`` runs one ipvsadm command in the daemon (its control op)."""

    def __init__(self, path: str, kind: str, cfg: HealthConfig) -> None:
        self.path, self.kind, self.cfg = path, kind, cfg
        self.states: dict[str, VsState] = {}
        self.generation = 0
        self.apply: Callable[[list[str]], dict] | None = None
        self.director = None
        self.child: subprocess.Popen | None = None
        self.restarts = 0
        self.next_start = 0.0
        self.reload_requested = False
        self.pending_scripts: list[str] = []
        self.history: collections.deque = collections.deque(maxlen=HISTORY)
        # (virtual server name, real server, "up"|"down") -> times a real server went
        # there (alive changed in an update from the checker): `pyvs run --metrics`
        self.transitions: collections.Counter = collections.Counter()

    # -- start and stop -------------------------------------------------------------------
    def start(self, apply: Callable[[list[str]], dict], director) -> None:
        """Apply the initial table and start the checker; raises RuntimeError."""
        self.apply, self.director = apply, director
        for notice in self.cfg.notices:
            log.info("%s", notice)
        plan = initial_plan(self.cfg, time.time())
        errors = self.run_plan(plan)
        if errors:
            raise RuntimeError(f"{self.path}: the initial IPVS table was refused: {errors[0]}")
        self.states = plan.states
        log.info("%s: %d virtual servers, %d real servers configured", self.path,
                 len(self.cfg.virtual_servers),
                 sum(len(vs.real_servers) for vs in self.cfg.virtual_servers))
        self.start_child()

    def run_plan(self, plan: Plan) -> list[str]:
        for line in plan.lines:
            log.info("%s", line)
        self.pending_scripts += plan.scripts
        return self.run_ops(plan.ops)

    def run_ops(self, ops: list[list[str]]) -> list[str]:
        errors = []
        for argv in ops:
            reply = self.apply(argv)
            if reply.get("rc") != 0:
                errors.append(f"{' '.join(argv)}: {reply.get('err', '').strip()}")
        return errors

    def start_child(self) -> None:
        parent = os.getpid()
        level = logging.getLevelName(logging.getLogger("pyvs").getEffectiveLevel()).lower()
        self.child = subprocess.Popen(
            [sys.executable, "-m", "pyvs.engine.health.checkerd", "--log-level", level],
            stdin=subprocess.DEVNULL, start_new_session=True,  # stopped by stop(), not by
            preexec_fn=lambda: die_with_parent(parent))      # a signal to our group
        log.info("checker process %d started", self.child.pid)

    def stop(self) -> None:
        child, self.child = self.child, None
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(2.0)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(2.0)
        for vs in self.cfg.virtual_servers:  # omega: the down notifiers on the way out
            state = self.states.get(vs_id(vs))
            if not vs.omega or state is None:
                continue
            scripts = [rs.notify_down for rs in vs.real_servers
                       if rs.notify_down and state.servers[rs_id(rs)].alive]
            if state.quorum_up and vs.quorum_down:
                scripts.append(vs.quorum_down)
            for script in scripts:
                try:
                    subprocess.Popen(shlex.split(script), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
                except OSError as err:
                    log.warning("omega script %r: %s", script, err)

    def tick(self) -> None:
        """Between batches: a pending SIGHUP reload, a checker process that died."""
        if self.reload_requested:
            self.reload_requested = False
            self.reload()  # logs its "reload" event, applied or refused
        child = self.child
        if child is None or child.poll() is None:
            return
        now = time.monotonic()
        if not self.next_start:
            delay = RESTART_BACKOFF[min(self.restarts, len(RESTART_BACKOFF) - 1)]
            log.error("checker process %d exited with status %s; restarting in %gs",
                      child.pid, child.returncode, delay)
            self.next_start = now + delay
        elif now >= self.next_start:
            self.next_start = 0.0
            self.restarts += 1
            self.start_child()

    # -- requests -------------------------------------------------------------------------
    def handle(self, request: dict) -> dict:
        if request.get("op") == "reload":
            return self.reload()
        action = request.get("action")
        if action == "hello":
            scripts, self.pending_scripts = self.pending_scripts, []
            return {"rc": 0, "generation": self.generation, "config": model.to_json(self.cfg),
                    "states": {k: model.to_json(v) for k, v in self.states.items()},
                    "scripts": scripts}
        if action == "apply":
            return self.apply_update(request)
        if action == "timings":
            self.report_timings(request.get("samples", []))
            return {"rc": 0}
        return {"rc": 2, "out": "", "err": f"unknown health action {action!r}\n"}

    def apply_update(self, request: dict) -> dict:
        if request.get("generation") != self.generation:
            return {"rc": 3, "err": "stale configuration generation\n"}
        key = request.get("vs")
        if key not in self.states:
            return {"rc": 2, "err": f"unknown virtual server {key!r}\n"}
        errors = self.run_ops([list(map(str, argv)) for argv in request.get("ops", [])])
        old, self.states[key] = self.states[key], model.from_json(VsState, request["state"])
        self._count_transitions(key, old, self.states[key])
        event = request.get("event")
        if event is not None:
            event = {"time": stamp(time.time()), **event}
            self.history.append(event)
            up = event.get("state") == "UP"
            logs.event(log, "realserver-up" if up else "realserver-down",
                       "real server %s of %s is %s (%s: %s): %s", event.get("real_server"),
                       event.get("service"), "up" if up else "down", event.get("checker"),
                       event.get("reason"), event.get("action", "no change"),
                       level=logging.INFO if up else logging.WARNING,
                       **event)
        return {"rc": 0, "event": event, "errors": errors}

    def _count_transitions(self, key: str, old: VsState, new: VsState) -> None:
        name = next((vs.name() for vs in self.cfg.virtual_servers if vs_id(vs) == key), key)
        for server, state in new.servers.items():
            before = old.servers.get(server)
            if before is not None and before.alive != state.alive:
                self.transitions[(name, server, "up" if state.alive else "down")] += 1

    def server_states(self) -> list[tuple[str, str, bool]]:
        """(virtual server name, real server, alive) for every configured real server."""
        out = []
        for vs in self.cfg.virtual_servers:
            state = self.states.get(vs_id(vs))
            if state is not None:
                out += [(vs.name(), rs_id(rs), state.servers[rs_id(rs)].alive)
                        for rs in vs.real_servers]
        return out

    def report_timings(self, samples: list) -> None:
        """A scheduler with report(dest, seconds) hears the measured response times."""
        services = self.director.services.services
        for fields, addr, port, seconds in samples:
            ref = ipvsops.ServiceRef(*fields)
            svc = services.get(ref.key())
            report = getattr(getattr(svc, "scheduler", None), "report", None)
            if svc is None or not callable(report):
                continue
            dest = svc.find_dest(10 if ref.family == 6 else 2,
                                 model.Target(addr).packed(), port)
            if dest is not None:
                report(dest, float(seconds))

    def reload(self) -> dict:
        try:
            new = load(self.path, self.kind)
        except ConfigError as err:
            logs.event(log, "reload", "reload refused, nothing changed: %s", err,
                       level=logging.ERROR, config=self.path, error=str(err))
            return {"rc": 1, "out": "", "err": f"pyvs reload: {err}; nothing changed\n"}
        plan = plan_reload(self.cfg, self.states, new, time.time())
        errors = self.run_plan(plan)
        for notice in new.notices:
            log.info("%s", notice)
        self.cfg, self.states = new, plan.states
        self.generation += 1
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGUSR1)
        counts = collections.Counter(argv[0] for argv in plan.ops)
        names = {"-A": ("service", "added"), "-D": ("service", "removed"),
                 "-E": ("service", "edited"), "-a": ("real server", "added"),
                 "-d": ("real server", "removed"), "-e": ("real server", "edited")}
        done = ", ".join(f"{counts[k]} {noun}{'s' if counts[k] > 1 else ''} {verb}"
                         for k, (noun, verb) in names.items() if counts[k]) or \
            "no change to the IPVS table"
        out = f"{self.path} reloaded (configuration {self.generation}): {done}\n"
        logs.event(log, "reload", "%s", out.strip(), config=self.path,
                   generation=self.generation, changes=dict(counts), errors=errors)
        return {"rc": 0, "out": out, "err": "".join(f"pyvs reload: {e}\n" for e in errors)}

    # -- status ---------------------------------------------------------------------------
    def status(self) -> dict:
        out = []
        for vs in self.cfg.virtual_servers:
            state = self.states.get(vs_id(vs))
            if state is None:
                continue
            pool = VsPool(vs, self.cfg, state)
            servers = []
            for rs in vs.real_servers:
                st = state.servers[rs_id(rs)]
                servers.append({
                    "server": rs_id(rs), "state": "up" if st.alive else "down",
                    "in_table": st.set, "weight": pool.table_weight(rs) if st.set else None,
                    "since": stamp(st.since) if st.since else None, "reason": st.reason,
                    "checkers": [{"type": c.kind, "state": "up" if cs.up else "down",
                                  "since": stamp(cs.since) if cs.since else None,
                                  "reason": cs.reason}
                                 for c, cs in zip(rs.checkers, st.checkers, strict=True)]})
            sorry = None
            if vs.sorry_server is not None:
                sorry = {"server": rs_id(vs.sorry_server), "serving": state.sorry.alive}
            out.append({"name": vs.name(), "services": [r.text() for r in
                                                        ipvsops.services(vs, self.cfg)],
                        "quorum": "up" if state.quorum_up else "down", "sorry_server": sorry,
                        "real_servers": servers})
        child = self.child
        return {"config": self.path, "generation": self.generation,
                "checker_pid": child.pid if child and child.poll() is None else None,
                "virtual_servers": out, "transitions": list(self.history)[-20:]}
