"""`pyvs run`: the director process of one network namespace.

One thread, one selector: the packet port, the control socket and a periodic
tick (expiry, estimator).  Control requests are handled between batches, so the
engine needs no locks.  SIGTERM/SIGINT stop the loop; the plumbing is removed
on the way out (and at the next start, if a crash skipped that).
"""

from __future__ import annotations

import gc
import logging
import os
import selectors
import signal
import socket
import time

from pyvs.engine import control, sdnotify
from pyvs.engine.director import Director
from pyvs.engine.io.port import Port, PortContext, clear_stale, open_ports
from pyvs.engine.io.raw import RawSender
from pyvs.engine.logs import DropSummary, OverloadWatch, event
from pyvs.engine.plumbing import QUEUE_NUM
from pyvs.engine.sync.daemon import SyncDaemons
from pyvs.engine.sysctl import SysctlError
from pyvs.engine.trace.hook import TraceHub

log = logging.getLogger("pyvs")

TICK = 0.1
EXPIRE_BUDGET = 50_000  # entries looked at per tick in ring mode (expiry never stalls)


def keep_long_lived_out_of_gc() -> None:
    """Move every object alive now (connection entries above all) out of the cyclic
    garbage collector's reach, on every tick.  With a million entries a full automatic
    collection scanned them all and stalled the director for 60-150 ms (tens of
    thousands of frames lost at full rate); now collections only look at what the last
    tick created.  Entries are still freed by reference counting when they expire; the
    engine builds no reference cycles on the packet path."""
    gc.freeze()


class Daemon:
    """``io``: the port set of engine/io/port.py MODES -- "nfqueue" (the default, faithful
    path), "ring" or "xdp" (a fast port for addr:port services, NFQUEUE for the rest)."""

    def __init__(self, director: Director | None = None, queue: int = QUEUE_NUM,
                 io: str = "nfqueue", interfaces: list[str] | None = None,
                 seed: int | None = None) -> None:
        """``seed``: the schedulers' random source (``pyvs run --seed``), as Director's."""
        self.director = director or Director(seed=seed)
        self.io = io
        self.queue = queue
        self.running = False
        self._generation = -1
        self.interfaces = interfaces
        self.ports: list[Port] = []
        self.fanout_group: int | None = None  # set by engine/workers.py
        self.port_options: dict = {}  # PortContext.options (engine/workers.py: xdp-workers)
        self.health = None  # engine/health/supervisor.py, with --keepalived / --config
        self.sync = SyncDaemons(self.director)  # --start-daemon master|backup
        self.selector: selectors.BaseSelector | None = None
        self.traces = TraceHub(self.director)  # `pyvs trace` clients (engine/trace)
        self.started = time.time()
        self.drop_summary = DropSummary(self.director.drops, log)
        self.overload = OverloadWatch(log)
        self._sighup = False
        self.metrics = None  # engine/metrics.py MetricsExporter, with --metrics

    # -- control ------------------------------------------------------------------------------
    def handle_request(self, request: dict) -> dict:
        op = request.get("op")
        if op == "ipvsadm":
            from pyvs.engine import ipvsadm

            # one sync daemon per director: not with --workers (each has its own table)
            sync = self.sync if self.fanout_group is None else None
            rc, out, err = ipvsadm.run(list(request.get("argv", [])),
                                       request.get("stdin", ""), self.director, sync,
                                       cwd=request.get("cwd"))
            self._sync_ports()
            self._watch_sync_sockets()
            return {"rc": rc, "out": out, "err": err}
        if op == "sysctl":
            return self._sysctl(list(request.get("args", [])))
        if op in ("health", "reload"):  # the checker process; `pyvs reload`
            if self.health is None:
                return {"rc": 1, "out": "", "err": "pyvs: this director runs without a "
                        "configuration file (pyvs run --keepalived FILE | --config FILE)\n"}
            return self.health.handle(request)
        if op == "status":
            d = self.director
            return {"rc": 0, "out": "", "err": "", "connections": len(d.conntable),
                    "pid": os.getpid(), "uptime": round(time.time() - self.started, 1),
                    "table": {"entries": len(d.conntable), "size": d.conn_tab_size,
                              "limit": d.defense.limit},
                    "config": self.health.path if self.health else None,
                    "drops": dict(d.drops), "io": self.io,
                    "ports": {p.name: p.status() for p in self.ports},
                    "sync": self.sync.status(), "defense": d.defense.status(),
                    "health": self.health.status() if self.health else None}
        if op == "top":
            if self.fanout_group is not None:  # worker 0's numbers would pass for the sums
                return {"rc": 1, "out": "", "err": "not available with --workers "
                        "(each worker has its own table; pyvsadm -L -n shows the sums)\n"}
            from pyvs.engine.topdata import snapshot

            return {"rc": 0, **snapshot(self.director, self.ports)}
        return {"rc": 2, "out": "", "err": f"unknown request {op!r}\n"}

    def _sysctl(self, args: list[str]) -> dict:
        sysctl = self.director.sysctl
        out, err, rc = [], [], 0
        if not args:
            args = sysctl.names()
        for arg in args:
            try:
                if "=" in arg:
                    name, _, value = arg.partition("=")
                    sysctl.set(name.strip(), value.strip())
                out.append(sysctl.format(arg.partition("=")[0].strip()))
            except SysctlError as e:
                err.append(str(e))
                rc = 255
        return {"rc": rc, "out": "".join(f"{line}\n" for line in out),
                "err": "".join(f"{line}\n" for line in err)}

    def _sync_ports(self) -> None:
        services = self.director.services
        if services.generation != self._generation:
            current = list(services.services.values())
            for port in self.ports:
                port.update(current)
            self._generation = services.generation

    def _watch_sync_sockets(self) -> None:
        """The selector follows the sync daemons started and stopped by pyvsadm."""
        sel = self.selector
        if sel is None:
            return
        wanted = set(self.sync.readers())
        for key in list(sel.get_map().values()):
            if key.data is self.sync and key.fileobj not in wanted:
                sel.unregister(key.fileobj)
        for sock in wanted:
            try:
                sel.get_key(sock)
            except KeyError:
                sel.register(sock, selectors.EVENT_READ, self.sync)

    def _serve_control(self, listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return
        with conn:
            try:
                refused = control.refusal(conn)
                request = control.read_request(conn)  # read even if refused: no reset
                if refused is not None:
                    reply = {"rc": 1, "out": "", "err": refused + "\n"}
                else:
                    if request.get("op") == "trace":  # a stream: the hub keeps a handle
                        self.traces.subscribe(conn.dup(), request, refuse=(
                            "not available with --workers (each worker has its own "
                            "director)" if self.fanout_group is not None else None))
                        return
                    try:
                        generation = self.director.services.generation
                        reply = self.handle_request(request)
                        self._log_change(request, reply, generation)
                    except Exception as err:  # always answer; the director keeps running
                        log.exception("control request %r failed", request.get("op"))
                        reply = {"rc": 1, "out": "", "err": f"pyvs: internal error: {err}\n"}
                control.send_reply(conn, reply)
            except (OSError, ValueError) as err:
                log.warning("control request failed: %s", err)

    def _log_change(self, request: dict, reply: dict, generation: int) -> None:
        """One line per configuration change a client made (pyvsadm, `pyvs sysctl`);
        the health checker's and `pyvs reload`'s are logged by engine/health."""
        op = request.get("op")
        if op == "ipvsadm" and self.director.services.generation != generation:
            argv = [str(a) for a in request.get("argv", [])]
            event(log, "config-change", "pyvsadm %s (rc %s)", " ".join(argv), reply.get("rc"),
                  source="pyvsadm", argv=argv, rc=reply.get("rc"))
        elif op == "sysctl" and any("=" in str(a) for a in request.get("args", [])):
            args = [str(a) for a in request.get("args", [])]
            event(log, "config-change", "sysctl %s (rc %s)", " ".join(args), reply.get("rc"),
                  source="sysctl", args=args, rc=reply.get("rc"))

    def _hangup(self, signum, frame) -> None:  # noqa: ARG002
        """SIGHUP (systemd's ExecReload): re-read the configuration file between batches."""
        self._sighup = True
        if self.health is not None:
            self.health.reload_requested = True

    def _tick_events(self) -> None:
        if self._sighup:
            self._sighup = False
            if self.health is None:
                event(log, "reload", "SIGHUP ignored: no configuration file to re-read "
                      "(pyvs run --config FILE | --keepalived FILE)", level=logging.WARNING,
                      rc=1)
            else:
                sdnotify.reloading()
                self.health.tick()  # applies the reload now
                sdnotify.ready()
        self.drop_summary.tick()
        self.overload.tick(lambda: {p.name: p.status() for p in self.ports})

    # -- main loop ----------------------------------------------------------------------------
    def open_ports(self, sender: RawSender) -> None:
        """Remove what a killed director left, then open this run's ports."""
        gone = clear_stale()
        if gone:
            log.info("removed what a killed director left: %s", ", ".join(gone))
        if self.io in ("ring", "xdp"):
            self.director.conntable.expire_budget = EXPIRE_BUDGET
        ctx = PortContext(self.director, sender, self.interfaces, self.fanout_group,
                          self.queue, self.port_options)
        self.ports = open_ports(self.io, ctx)
        self.interfaces = ctx.interfaces

    def close_ports(self) -> None:
        for port in self.ports:  # fast port first: the kernel sees its traffic again
            port.close()
        self.ports = []

    def run(self) -> int:
        try:
            listener = control.listen()
        except OSError as err:
            log.error("another pyvs director already runs in this namespace (%s)", err)
            return 1
        sender = RawSender()
        try:
            self.open_ports(sender)
            self._sync_ports()
            if self.health is not None:  # the initial table, then the checker process
                self.health.start(lambda argv: self.handle_request(
                    {"op": "ipvsadm", "argv": argv}), self.director)
        except BaseException:
            self.close_ports()
            sender.close()
            listener.close()
            raise
        self.running = True

        def stop(signum, frame):  # noqa: ARG001
            self.running = False

        old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
        old[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._hangup)
        sel = self.selector = selectors.DefaultSelector()
        sel.register(listener, selectors.EVENT_READ, None)
        for port in self.ports:
            for reader in port.readers():
                sel.register(reader, selectors.EVENT_READ, port)
        event(log, "start", "pyvs director running (%s%s)",
              " + ".join(p.name for p in self.ports),
              f" on {', '.join(self.interfaces)}" if self.interfaces else "",
              ports=[p.name for p in self.ports], interfaces=self.interfaces,
              config=self.health.path if self.health else None, pid=os.getpid())
        sdnotify.ready(f"serving ({' + '.join(p.name for p in self.ports)})")
        next_tick = time.monotonic()
        try:
            while self.running:
                wake = next_tick
                sync_wake = self.sync.next_wakeup()  # on the director's clock
                if sync_wake is not None:
                    wake = min(wake, time.monotonic() + sync_wake - self.director.now())
                timeout = max(0.0, wake - time.monotonic())
                for key, _ in sel.select(timeout):
                    port = key.data
                    try:
                        if port is None:
                            self._serve_control(listener)
                        else:
                            port.serve(key.fileobj)
                    except Exception:  # the engine keeps serving whatever one batch did
                        log.exception("error while serving %s", port.name if port else "control")
                        self.director.drops["engine-error"] += 1
                self.sync.poll(self.director.now())  # the master's due messages
                if time.monotonic() >= next_tick:
                    self.director.tick()
                    sender.flush(self.director)  # what the tick queued (DR neighbours)
                    self.traces.tick()
                    for port in self.ports:
                        port.tick()
                    self._tick_events()
                    if self.health is not None:
                        self.health.tick()
                    if self.metrics is not None:  # a snapshot for the scrapes, when due
                        self.metrics.tick(self)
                    keep_long_lived_out_of_gc()
                    next_tick = time.monotonic() + TICK
        finally:
            sdnotify.stopping()
            for s, handler in old.items():
                signal.signal(s, handler)
            if self.health is not None:
                self.health.stop()
            self.sync.close()
            self.selector = None
            sel.close()
            self.traces.close()
            self.close_ports()
            sender.close()
            listener.close()
            event(log, "stop", "pyvs director stopped; plumbing removed",
                  uptime=round(time.time() - self.started, 1))
        return 0
