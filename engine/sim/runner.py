"""One simulation run: one scheduler, one workload, one cluster, on virtual time.

The loop merges four time-ordered streams -- director ticks (every ``tick`` s, as
``pyvs run`` ticks every 0.1 s: expiry, trash, estimator), timeline events
(engine/sim/events.py, and the health checker's delayed reactions), connection
closes (known when the server model admits a request) and flow arrivals -- and at
each step moves the director's VirtualClock and plays the flow's packets at the
chosen level (engine/sim/drivers.py).  Everything random is drawn from the run's
seed, so a run is reproducible bit for bit.

At equal times: tick, then timeline, then closes, then arrivals.
"""

from __future__ import annotations

import heapq
import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pyvs.engine.clock import VirtualClock
from pyvs.engine.director import Director
from pyvs.engine.model import (
    AF_INET,
    FWD_DROUTE,
    FWD_MASQ,
    IPPROTO_TCP,
    IPPROTO_UDP,
    SVC_F_PERSISTENT,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    DestSpec,
    ServiceSpec,
    pack_addr,
)
from pyvs.engine.service import IPVSError
from pyvs.engine.sim import schedspec
from pyvs.engine.sim.cluster import SERVER_BASE, Cluster, ServerSpec
from pyvs.engine.sim.drivers import LEVELS, Flow, SimRoutes
from pyvs.engine.sim.events import ON_FAILURE, Event
from pyvs.engine.sim.metrics import (  # noqa: F401 - the outcome codes, re-exported
    BROKEN,
    FAILED,
    NODEST,
    OUTCOMES,
    REFUSED,
    SERVED,
    Recorder,
)
from pyvs.engine.sim.servers import ADMITTED, DOWN, make_servers, server_for
from pyvs.engine.sim.workload import Workload
from pyvs.engine.sysctl import SysctlError
from pyvs.schedulers.base import Scheduler

SCHED_FLAGS = {"sh-fallback": SVC_F_SCHED1, "sh-port": SVC_F_SCHED2,
               "mh-fallback": SVC_F_SCHED1, "mh-port": SVC_F_SCHED2, "flag-1": SVC_F_SCHED1,
               "flag-2": SVC_F_SCHED2}
PROTO = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP}
INF = math.inf


class SimError(ValueError):
    """A simulation that cannot run as asked (the message says why)."""


@dataclass
class Options:
    """How to run (the same for every scheduler of a comparison)."""

    level: str = "flow"  # flow | packet
    seed: int = 0
    events: list[Event] = field(default_factory=list)
    detect_delay: float = 3.0  # health check: seconds from fail/recover to the reaction
    on_failure: str = "remove"  # remove | quiesce
    persistent: int = 0  # ipvsadm -p SECONDS (0: none)
    sched_flags: str = ""  # ipvsadm -b
    sysctl: dict = field(default_factory=dict)  # net.ipv4.vs.* settings
    tick: float = 0.1
    interval: float | None = None  # metrics sampling period (None: about 300 samples)

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise SimError(f"level must be one of {', '.join(LEVELS)}")
        if self.on_failure not in ON_FAILURE:
            raise SimError(f"on_failure must be one of {', '.join(ON_FAILURE)}")
        if self.detect_delay < 0 or self.tick <= 0 or self.persistent < 0:
            raise SimError("detect_delay >= 0, tick > 0 and persistent >= 0")
        for flag in filter(None, (f.strip() for f in self.sched_flags.split(","))):
            if flag not in SCHED_FLAGS:
                raise SimError(f"unknown scheduler flag {flag!r} "
                               f"(known: {', '.join(SCHED_FLAGS)})")

    @property
    def flag_bits(self) -> int:
        bits = 0
        for flag in filter(None, (f.strip() for f in self.sched_flags.split(","))):
            bits |= SCHED_FLAGS[flag]
        return bits


class Run:
    """One scheduler on one workload; ``execute()`` returns the Recorder's result."""

    def __init__(self, workload: Workload, cluster: Cluster, scheduler: str,
                 options: Options | None = None,
                 progress: Callable[[int], None] | None = None) -> None:
        self.workload = workload
        self.cluster = Cluster([ServerSpec(**vars(s)) for s in cluster.servers], cluster.fwd)
        self.label = scheduler
        self.opt = options or Options()
        self.progress = progress
        self.clock = VirtualClock(0.0)
        self.director = Director(clock=self.clock, routes=SimRoutes(self.clock),
                                 seed=self.opt.seed)
        for name, value in self.opt.sysctl.items():
            try:
                self.director.sysctl.set(name, str(value))
            except SysctlError as err:
                raise SimError(str(err)) from None
        self.level = LEVELS[self.opt.level](self.director, self.cluster.fwd)
        self.sched_name = schedspec.resolve(scheduler)
        self.servers = make_servers(self.cluster.servers, self.opt.seed)
        self.server_of: dict[bytes, int] = {}
        self.dests: list[list] = []  # per server: its Destination objects (all services)
        self.in_service: list[bool] = []
        self.svc_keys: list[tuple] = []
        self._build()
        self.recorder = Recorder(self, len(workload))

    # -- configuration, as ipvsadm would do it ------------------------------------------
    def _build(self) -> None:
        flags = self.opt.flag_bits | (SVC_F_PERSISTENT if self.opt.persistent else 0)
        for sd in self.workload.services:
            spec = ServiceSpec(AF_INET, PROTO[sd.proto], pack_addr(sd.vip), sd.port,
                               scheduler=self.sched_name, flags=flags,
                               timeout=self.opt.persistent)
            try:
                svc = self.director.services.add_service(spec)
            except IPVSError as err:
                raise SimError(f"{self.label}: service {sd.label}: {err}") from None
            self.svc_keys.append(svc.key)
        self.reports = [svc.scheduler for svc in self.director.services.services.values()
                        if type(svc.scheduler).report is not Scheduler.report]
        for spec in self.cluster.servers:
            self._register(spec)
            self._add_dests(len(self.in_service) - 1)

    def _register(self, spec: ServerSpec) -> int:
        index = len(self.dests)
        self.server_of[pack_addr(spec.addr)] = index
        self.dests.append([])
        self.in_service.append(False)
        return index

    def _dest_spec(self, spec: ServerSpec, port: int, weight: int | None = None) -> DestSpec:
        return DestSpec(pack_addr(spec.addr), port,
                        fwd=FWD_MASQ if self.cluster.fwd == "nat" else FWD_DROUTE,
                        weight=spec.weight if weight is None else weight,
                        u_threshold=spec.u_threshold, l_threshold=spec.l_threshold)

    def _add_dests(self, index: int) -> None:
        spec = self.cluster.servers[index]
        for key, sd in zip(self.svc_keys, self.workload.services, strict=True):
            dest = self.director.services.add_dest(key, self._dest_spec(spec, sd.port))
            if all(d is not dest for d in self.dests[index]):
                self.dests[index].append(dest)
        self.in_service[index] = True

    def _del_dests(self, index: int) -> None:
        if not self.in_service[index]:
            return
        spec = self.cluster.servers[index]
        addr = pack_addr(spec.addr)
        for key, sd in zip(self.svc_keys, self.workload.services, strict=True):
            self.director.services.del_dest(key, AF_INET, addr, sd.port, self.clock.now())
        self.in_service[index] = False

    def _set_weight(self, index: int, weight: int) -> None:
        spec = self.cluster.servers[index]
        if not self.in_service[index]:
            return
        for key, sd in zip(self.svc_keys, self.workload.services, strict=True):
            self.director.services.edit_dest(key, self._dest_spec(spec, sd.port, weight))

    # -- the timeline --------------------------------------------------------------------
    def _server_index(self, name: str) -> int:
        for i, s in enumerate(self.cluster.servers):
            if s.name == name or s.addr == name:
                return i
        raise SimError(f"event names an unknown server {name!r}")

    def _apply(self, kind: str, event: Event, now: float) -> None:
        """A user event ("user") or the health checker's reaction ("hc-down"/"hc-up")."""
        if kind == "user" and event.action == "add":
            fields = {k: v for k, v in event.fields.items() if k != "name"}
            fields.setdefault("addr", str(ipaddress.IPv4Address(SERVER_BASE
                                                                 + len(self.dests))))
            spec = ServerSpec(name=event.server, **fields)
            if any(s.name == spec.name or s.addr == spec.addr for s in self.cluster.servers):
                raise SimError(f"{event.label}: a server with that name or address exists")
            self.cluster.servers.append(spec)
            index = self._register(spec)
            self.servers.append(server_for(spec, self.opt.seed, index))
            self._add_dests(index)
            return
        index = self._server_index(event.server)
        server = self.servers[index]
        spec = self.cluster.servers[index]
        if kind == "hc-down":
            if not server.up:  # still down when the checker looks
                if self.opt.on_failure == "remove":
                    self._del_dests(index)
                else:
                    self._set_weight(index, 0)
            return
        if kind == "hc-up":
            if server.up:
                if not self.in_service[index]:
                    self._add_dests(index)
                else:
                    self._set_weight(index, spec.weight)
            return
        action = event.action
        if action == "fail":
            self._lose_flows(index, now)
            server.fail()
            self._later(now + self.opt.detect_delay, "hc-down", event)
        elif action == "recover":
            server.recover()
            self._later(now + self.opt.detect_delay, "hc-up", event)
        elif action == "remove":
            self._del_dests(index)
        elif action == "weight":
            spec.weight = event.weight
            self._set_weight(index, event.weight)
        elif action == "quiesce":
            self._set_weight(index, 0)

    def _later(self, at: float, kind: str, event: Event) -> None:
        heapq.heappush(self.timeline, (at, next(self._seq), kind, event))

    def _lose_flows(self, index: int, now: float) -> None:
        """A failed server's requests are lost: their connections stay in the director
        (as in IPVS) until they expire or their destination is removed."""
        rec = self.recorder
        for i in [i for i, f in self.open.items() if f.server == index]:
            del self.open[i]
            rec.finish(i, BROKEN, now, math.nan)

    # -- the loop ------------------------------------------------------------------------
    def execute(self) -> dict:
        wl = self.workload
        n = len(wl)
        starts = wl.start.tolist()
        durations = wl.duration.tolist()
        req = wl.req_bytes.tolist()
        resp = wl.resp_bytes.tolist()
        caddrs = [int(a).to_bytes(4, "big") for a in wl.caddr.tolist()]
        sports = wl.sport.tolist()
        services = wl.service.tolist()
        vips = [(PROTO[s.proto], pack_addr(s.vip), s.port) for s in wl.services]
        level, director, clock, servers = self.level, self.director, self.clock, self.servers
        rec = self.recorder
        server_of = self.server_of
        self.open: dict[int, Flow] = {}
        self.timeline: list = []
        self._seq = iter(range(1 << 62))
        for ev in self.opt.events:
            self._later(ev.time, "user", ev)
        closes: list[tuple[float, int]] = []
        tick = self.opt.tick
        next_tick = tick
        interval = self.opt.interval or max(tick, (wl.span or 1.0) / 300)
        rec.interval = interval
        next_sample = 0.0
        i = 0
        report_every = 4096
        wall = time.perf_counter()
        while True:
            t_open = starts[i] if i < n else INF
            t_close = closes[0][0] if closes else INF
            t_tl = self.timeline[0][0] if self.timeline else INF
            t = min(t_open, t_close, t_tl)
            if t == INF:
                break
            while next_tick <= t or next_sample <= t:
                if next_sample <= next_tick:
                    if next_sample > clock.now():
                        clock.advance(next_sample - clock.now())
                    rec.sample(next_sample)
                    next_sample += interval
                else:
                    if next_tick > clock.now():
                        clock.advance(next_tick - clock.now())
                    director.tick()
                    next_tick += tick
            if t > clock.now():
                clock.advance(t - clock.now())
            if t_tl == t:
                at, _, kind, event = heapq.heappop(self.timeline)
                if kind == "user":
                    rec.event(event, list(self.open))
                self._apply(kind, event, at)
            elif t_close == t:
                _, j = heapq.heappop(closes)
                f = self.open.pop(j, None)
                if f is None:
                    continue  # lost with its server
                ok = level.close(f, resp[j], t)
                servers[f.server].finished()
                rt = t - f.start
                if ok:
                    rec.finish(j, SERVED, t, rt, f.wait)
                    dest = f.conn.dest
                    if self.reports and dest is not None and dest.service is not None:
                        dest.service.scheduler.report(dest, rt)
                else:
                    rec.finish(j, BROKEN, t, math.nan)
            else:
                proto, vaddr, vport = vips[services[i]]
                f = Flow(i, proto, caddrs[i], sports[i], vaddr, vport)
                conn = level.syn(f, req[i], t)
                s = server_of.get(conn.daddr, -1) if conn is not None else -1
                if s < 0:
                    rec.finish(i, NODEST, t, math.nan)
                else:
                    f.raddr, f.rport, f.server, f.start = conn.daddr, conn.dport, s, t
                    rec.assigned(i, s)
                    status, finish, wait = servers[s].admit(t, durations[i])
                    if status == ADMITTED:
                        f.wait = wait
                        level.accept(f, req[i], t)
                        self.open[i] = f
                        heapq.heappush(closes, (finish, i))
                    elif status == DOWN:
                        rec.finish(i, FAILED, t, math.nan)
                    else:
                        level.refuse(f, t)
                        rec.finish(i, REFUSED, t, math.nan)
                i += 1
                if self.progress is not None and i % report_every == 0:
                    self.progress(i)
        wall = time.perf_counter() - wall
        rec.sample(clock.now())
        if self.progress is not None:
            self.progress(n)
        return rec.result(wall, level.calls)
