"""`pyvs run --io ring|xdp --workers N`: N processes, each owning the connections whose
client end hashes to it (engine/io/owner.py, one definition for both ports).

Process 0 is the ordinary daemon (control socket, NFQUEUE port for fwmark/ICMP,
plumbing, its own rings or AF_XDP sockets); processes 1..N-1 are forked from it
before any socket exists and run the fast port only.
  * ring: every ring socket joins a fanout group per interface (classic BPF program,
    with defragmentation), so both directions of a NAT connection land in the same
    worker;
  * xdp: worker w has an AF_XDP socket on every receive queue q with q % N == w of
    every interface (engine/io/xdp.py XdpWorkers, made before the fork with the XDP
    programs, maps and hand-off rings); a frame received by a worker that does not
    own it is copied to its owner (engine/io/handoff.py), which serves and sends it.

Configuration: process 0 applies every pyvsadm / sysctl request itself and then
sends it down a pipe to each worker, which applies the same request in the same
order, so the service tables are identical everywhere (same destinations, same
shared-counter slots).

Shared counters (an anonymous shared mmap made before the fork, a numpy array of
shape (workers, slots, 7)): each process publishes, every tick (0.1 s), per
destination its conns/inpkts/outpkts/inbytes/outbytes and active/inactive
connection counts, and per service and in total its stats.  Then
  * every scheduler sees global load: around each scheduling decision the other
    workers' published active/inactive counts are added to the destinations
    (lc/wlc/sed/nq... read dest.activeconns), and taken off again afterwards;
  * process 0 answers `-L` listings (and `status`) with the sums over all workers.
Published values are at most one tick old.

Left out: `-Lnc` lists process 0's entries only;
per-worker rr/wrr cursors are independent (each worker keeps kernel order for its
own flows); fwmark/ICMP traffic is handled by process 0, so an fwmark connection
whose replies the fanout hash gives another worker is not found there.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import select
import selectors
import signal
import time

import numpy as np

log = logging.getLogger("pyvs.workers")

MAX_SLOTS = 4096  # destinations ever configured
MAX_SVCS = 1024
F_CONNS, F_INPKTS, F_OUTPKTS, F_INBYTES, F_OUTBYTES, F_ACTIVE, F_INACT = range(7)
_STATS = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")


class SharedCounters:
    def __init__(self, workers: int) -> None:
        self.workers = workers
        size_d = workers * MAX_SLOTS * 7 * 8
        size_s = workers * (MAX_SVCS + 1) * 5 * 8
        self._mm = mmap.mmap(-1, size_d + size_s)  # MAP_SHARED|MAP_ANONYMOUS: survives fork
        self.dests = np.frombuffer(self._mm, dtype=np.int64, count=workers * MAX_SLOTS * 7,
                                   ).reshape(workers, MAX_SLOTS, 7)
        self.svcs = np.frombuffer(self._mm, dtype=np.int64, offset=size_d,
                                  count=workers * (MAX_SVCS + 1) * 5,
                                  ).reshape(workers, MAX_SVCS + 1, 5)  # row 0: total
        self._cc = mmap.mmap(-1, workers * 8)
        self.conn_count = np.frombuffer(self._cc, dtype=np.int64)


class Slots:
    """Destination and service -> slot numbers, append-only, in configuration order
    (identical in every worker because every worker applies the same requests)."""

    def __init__(self) -> None:
        self.dest: dict[tuple, int] = {}
        self.svc: dict[tuple, int] = {}

    def update(self, director) -> None:
        for svc in sorted(director.services.services.values(), key=lambda s: repr(s.key)):
            if svc.key not in self.svc and len(self.svc) < MAX_SVCS:
                self.svc[svc.key] = len(self.svc) + 1
            for d in sorted(svc.destinations, key=lambda d: (d.addr, d.port)):
                k = (svc.key, d.addr, d.port)
                if k not in self.dest and len(self.dest) < MAX_SLOTS:
                    self.dest[k] = len(self.dest)

    def all_dests(self, director):
        for svc in director.services.services.values():
            for d in svc.destinations:
                s = self.dest.get((svc.key, d.addr, d.port))
                if s is not None:
                    yield svc, d, s


class Worker:
    """The per-process part: publishing, global scheduler view, listing merge."""

    def __init__(self, index: int, shared: SharedCounters, director) -> None:
        self.index = index
        self.shared = shared
        self.director = director
        self.slots = Slots()

    def configured(self) -> None:
        """After every configuration request: slots, and schedulers see global load."""
        self.slots.update(self.director)
        for svc in self.director.services.services.values():
            sched = svc.scheduler
            if sched is None or getattr(sched, "_pyvs_global", False):
                continue
            try:
                sched.schedule = self._global_schedule(svc, sched.schedule)
                sched._pyvs_global = True
            except AttributeError:  # a plugin with __slots__: local view only
                log.warning("scheduler %s keeps a per-worker view", svc.sched_name)

    def _global_schedule(self, svc, inner):
        def schedule(service, flow):
            adj = self._add_others(service, +1)
            try:
                return inner(service, flow)
            finally:
                self._undo(adj)
        return schedule

    def _others(self) -> np.ndarray:
        rows = self.shared.dests
        return rows.sum(axis=0) - rows[self.index]

    def _add_others(self, service, sign: int) -> list:
        rows = self.shared.dests
        me = self.index
        adj = []
        for d in service.destinations:
            s = self.slots.dest.get((service.key, d.addr, d.port))
            if s is None:
                continue
            col = rows[:, s]
            a = int(col[:, F_ACTIVE].sum() - col[me, F_ACTIVE])
            i = int(col[:, F_INACT].sum() - col[me, F_INACT])
            if a or i:
                d.activeconns += a
                d.inactconns += i
                adj.append((d, a, i))
        return adj

    @staticmethod
    def _undo(adj: list) -> None:
        for d, a, i in adj:
            d.activeconns -= a
            d.inactconns -= i

    def publish(self) -> None:
        d = self.director
        me = self.index
        rows = self.shared.dests[me]
        for _svc, dest, s in self.slots.all_dests(d):
            st = dest.stats
            rows[s] = (st.conns, st.inpkts, st.outpkts, st.inbytes, st.outbytes,
                       dest.activeconns, dest.inactconns)
        srows = self.shared.svcs[me]
        for svc in d.services.services.values():
            s = self.slots.svc.get(svc.key)
            if s is not None:
                srows[s] = svc.stats.as_tuple()
        srows[0] = d.total.as_tuple()
        self.shared.conn_count[me] = len(d.conntable)

    def merged(self, sign: int) -> None:
        """Add (+1) or take off (-1) the other workers' published counters."""
        d = self.director
        others = self._others()
        svcs = self.shared.svcs
        sothers = svcs.sum(axis=0) - svcs[self.index]
        for _svc, dest, s in self.slots.all_dests(d):
            row = others[s]
            st = dest.stats
            for j, name in enumerate(_STATS):
                setattr(st, name, getattr(st, name) + sign * int(row[j]))
            dest.activeconns += sign * int(row[F_ACTIVE])
            dest.inactconns += sign * int(row[F_INACT])
        for svc in d.services.services.values():
            s = self.slots.svc.get(svc.key)
            if s is None:
                continue
            for j, name in enumerate(_STATS):
                setattr(svc.stats, name, getattr(svc.stats, name) + sign * int(sothers[s, j]))
        for j, name in enumerate(_STATS):
            setattr(d.total, name, getattr(d.total, name) + sign * int(sothers[0, j]))


def _is_listing(argv: list[str]) -> bool:
    listing = any(a in ("--list", "--save") or
                  (a.startswith("-") and not a.startswith("--") and any(c in a for c in "LlS"))
                  for a in argv)
    return listing and not any(a in ("-Z", "--zero") for a in argv)


def run_workers(args) -> int:
    from pyvs.engine.daemon import Daemon
    from pyvs.engine.io.netdev import director_interfaces

    if args.io not in ("ring", "xdp"):
        log.error("--workers needs --io ring or --io xdp (NFQUEUE has one queue)")
        return 2
    n = args.workers
    interfaces = args.interfaces or director_interfaces()
    shared = SharedCounters(n)
    group = (os.getpid() * 16) & 0xFFF0
    xdp = None
    if args.io == "xdp":
        from pyvs.engine.io.xdp import XdpWorkers

        try:
            xdp = XdpWorkers.make(interfaces, n)
        except OSError as err:  # too few queues, or BPF not allowed here
            log.error("%s", err.strerror if err.strerror else err)
            return 2
    children: list[tuple[int, int]] = []
    ready_r, ready_w = os.pipe()  # each worker writes one byte once its port is open
    for w in range(1, n):
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(wfd)
            os.close(ready_r)
            for _, fd in children:
                os.close(fd)
            code = 1
            try:
                code = _child(w, rfd, shared, interfaces, group, xdp, ready_w)
            except BaseException:  # noqa: BLE001
                log.exception("worker %d failed", w)
            finally:
                os._exit(code)
        os.close(rfd)
        children.append((pid, wfd))

    os.close(ready_w)
    _wait_ready(ready_r, n - 1)
    daemon = Daemon(io=args.io, interfaces=interfaces)
    daemon.fanout_group = group
    if xdp is not None:
        daemon.port_options["xdp-workers"] = xdp
    worker = Worker(0, shared, daemon.director)
    plain = daemon.handle_request

    def handle_request(request: dict) -> dict:
        op = request.get("op")
        if op == "ipvsadm":
            argv = list(request.get("argv", []))
            merge = _is_listing(argv)
            if merge:
                worker.publish()
                worker.merged(+1)
            try:
                reply = plain(request)
            finally:
                if merge:
                    worker.merged(-1)
            if not merge and reply.get("rc") == 0:
                worker.configured()
                _broadcast(children, request)
            return reply
        if op == "sysctl":
            reply = plain(request)
            _broadcast(children, request)
            return reply
        if op == "status":
            reply = plain(request)
            worker.publish()
            reply["connections"] = int(shared.conn_count.sum())
            reply["workers"] = n
            if xdp is not None:  # per worker: received, handed to / served for others
                reply["xdp-workers"] = xdp.handoff.status()
            return reply
        return plain(request)

    daemon.handle_request = handle_request
    tick = daemon.director.tick

    def tick_and_publish() -> None:
        tick()
        worker.publish()

    daemon.director.tick = tick_and_publish
    if args.rules:
        from pyvs.engine.config import load_rules

        load_rules(args.rules, daemon.director)
        worker.configured()
        for line in _save(daemon.director):
            _broadcast(children, {"op": "ipvsadm", "argv": ["-R"], "stdin": line})
    try:
        return daemon.run()
    finally:
        for pid, fd in children:
            try:
                os.close(fd)
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        deadline = time.monotonic() + 5
        for pid, _ in children:
            while time.monotonic() < deadline:
                done, _status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                time.sleep(0.05)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except OSError:
                    pass


def _wait_ready(fd: int, workers: int, timeout: float = 10.0) -> None:
    """Until every worker's port is open (its sockets in the XDP maps, its rings in the
    fanout group), so that the control socket answers only when all of them serve."""
    got = 0
    deadline = time.monotonic() + timeout
    try:
        while got < workers and time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                break
            chunk = os.read(fd, 64)
            if not chunk:  # every worker has exited or written
                break
            got += len(chunk)
    finally:
        os.close(fd)
    if got < workers:
        log.warning("%d of %d workers did not report ready", workers - got, workers)


def _save(director) -> list[str]:
    from pyvs.engine import ipvsadm

    _rc, out, _err = ipvsadm.run(["-S", "-n"], "", director)
    return [out]


def _broadcast(children, request: dict) -> None:
    line = (json.dumps(request) + "\n").encode()
    for _pid, fd in children:
        try:
            os.write(fd, line)
        except OSError as err:
            log.warning("worker pipe: %s", err)


def _child(index: int, rfd: int, shared: SharedCounters, interfaces: list[str],
           group: int, xdp=None, ready: int = -1) -> int:
    from pyvs.engine import ipvsadm
    from pyvs.engine.daemon import EXPIRE_BUDGET, TICK, keep_long_lived_out_of_gc
    from pyvs.engine.director import Director
    from pyvs.engine.io.raw import RawSender
    from pyvs.engine.io.ring import RingPort

    running = [True]

    def stop(signum, frame):  # noqa: ARG001
        running[0] = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    director = Director()
    director.conntable.expire_budget = EXPIRE_BUDGET
    worker = Worker(index, shared, director)
    sender = RawSender()
    if xdp is None:
        port = RingPort(director, interfaces, sender, group, plumbing=False)  # process 0's
    else:
        from pyvs.engine.io.xdp import XdpPort

        port = XdpPort(director, interfaces, sender, xdp, index)  # process 0 attaches
    if ready >= 0:
        os.write(ready, b"r")
        os.close(ready)
    sel = selectors.DefaultSelector()
    for ring in port.readers():
        sel.register(ring, selectors.EVENT_READ, ring)
    os.set_blocking(rfd, False)
    sel.register(rfd, selectors.EVENT_READ, "config")
    pending = b""
    next_tick = time.monotonic()
    log.info("pyvs worker %d running (%s on %s)", index, port.name, ", ".join(interfaces))
    try:
        while running[0]:
            timeout = max(0.0, next_tick - time.monotonic())
            for key, _ in sel.select(timeout):
                if key.data == "config":
                    try:
                        chunk = os.read(rfd, 1 << 16)
                    except BlockingIOError:
                        continue
                    if not chunk:  # process 0 is gone
                        running[0] = False
                        break
                    pending += chunk
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        req = json.loads(line)
                        if req.get("op") == "ipvsadm":
                            ipvsadm.run(list(req.get("argv", [])), req.get("stdin", ""),
                                        director, cwd=req.get("cwd"))
                        elif req.get("op") == "sysctl":
                            for arg in req.get("args", []):
                                if "=" in arg:
                                    name, _, value = arg.partition("=")
                                    try:
                                        director.sysctl.set(name.strip(), value.strip())
                                    except Exception:  # noqa: BLE001 - process 0 reported it
                                        pass
                        worker.configured()
                        port.update(list(director.services.services.values()))
                else:
                    try:
                        port.serve(key.data)
                    except Exception:  # noqa: BLE001
                        log.exception("worker %d: error while serving a ring", index)
                        director.drops["engine-error"] += 1
            if time.monotonic() >= next_tick:
                director.tick()
                sender.flush(director)
                port.tick()
                worker.publish()
                keep_long_lived_out_of_gc()
                next_tick = time.monotonic() + TICK
    finally:
        sel.close()
        port.close()
        sender.close()
    return 0
