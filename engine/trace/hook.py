"""The daemon side of `pyvs trace`: watch the director decide, stream what it did.

``TraceHub`` lives in the daemon.  A `pyvs trace` client sends
``{"op": "trace", "filter": {...}}`` over the control socket (engine/control.py) and
keeps the connection open; the hub answers one JSON line (``{"rc": 0, ...}``), then
pushes one JSON line per packet that matches the client's filter (filter.py), until
the client goes away.  While at least one client is there the hub is the director's
tracer (Director.attach_tracer): each packet goes through ``TraceHub.handle``, which
notes what the director is about to see (the entry a lookup finds, its state, the
drop counters and the outboxes), lends the service's scheduler a probe that records
its inputs and choice (explain.py), lets ``Director.handle`` decide exactly as it
would untraced, and describes the difference.  The fast ports send the frames a
filter may match through ``Director.handle`` too (``batch_mask``).

The hub never blocks the packet path: sockets are non-blocking, a slow reader's
backlog is bounded (MAX_BACKLOG) and what does not fit is counted as lost and
reported to it.  A fault in the tracer is logged and leaves the verdict alone.
"""

from __future__ import annotations

import json
import logging
import select
import socket

from pyvs.engine.model import (
    FWD_BYPASS,
    FWD_DROUTE,
    FWD_LOCALNODE,
    FWD_MASQ,
    FWD_TUNNEL,
    Flow,
)
from pyvs.engine.trace import explain
from pyvs.engine.trace.filter import (
    FilterError,
    FlowView,
    TraceFilter,
    show_addr,
    show_endpoint,
)
from pyvs.engine.verdict import ACCEPT, DROP, FORWARD

log = logging.getLogger("pyvs.trace")

MAX_BACKLOG = 4 << 20  # bytes of events waiting for one slow reader
FWD_NAMES = {FWD_MASQ: "Masq", FWD_LOCALNODE: "Local", FWD_TUNNEL: "Tunnel",
             FWD_DROUTE: "Route", FWD_BYPASS: "Bypass"}
VERDICT_NAMES = {ACCEPT: "ACCEPT", FORWARD: "FORWARD", DROP: "DROP"}
PROTO_NAMES = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6"}
TCP_FLAGS = "FSRPAUEC"
_ICMP = (1, 58)


def tcp_flags(bits: int) -> str:
    return "".join(ch for i, ch in enumerate(TCP_FLAGS) if bits & (1 << i))


def service_name(svc) -> str | None:
    """The service as ipvsadm -Ln heads it."""
    if svc is None:
        return None
    if svc.fwmark:
        return f"FWM  {svc.fwmark} {svc.sched_name}"
    proto = PROTO_NAMES.get(svc.protocol, str(svc.protocol))
    return f"{proto}  {show_endpoint(svc.addr, svc.port)} {svc.sched_name}"


class Subscriber:
    """One `pyvs trace` client: its filter and its (non-blocking) socket."""

    def __init__(self, sock: socket.socket, flt: TraceFilter) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.filter = flt
        self.backlog = bytearray()
        self.lost = 0
        self.gone = False

    def send(self, data: bytes) -> None:
        if self.gone:
            return
        if self.backlog:
            if len(self.backlog) + len(data) > MAX_BACKLOG:
                self.lost += 1
                return
            self.backlog += data
            self.flush()
            return
        try:
            n = self.sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError:
            self.gone = True
            return
        if n < len(data):
            self.backlog += data[n:]

    def flush(self) -> None:
        if self.lost and len(self.backlog) < MAX_BACKLOG // 2:
            self.backlog += (json.dumps({"lost": self.lost}) + "\n").encode()
            self.lost = 0
        while self.backlog and not self.gone:
            try:
                n = self.sock.send(self.backlog)
            except BlockingIOError:
                return
            except OSError:
                self.gone = True
                return
            del self.backlog[:n]

    def hung_up(self) -> bool:
        """The client closed its end (POLLHUP: both directions of the socket are shut)."""
        p = select.poll()
        p.register(self.sock, select.POLLHUP | select.POLLERR)
        return bool(p.poll(0))

    def close(self) -> None:
        self.gone = True
        self.sock.close()


class SchedulerProbe:
    """Records one scheduling decision: the probe stands in for ``scheduler.schedule``
    (an instance attribute, as engine/workers.py does) for the one packet traced."""

    def __init__(self, svc) -> None:
        self.record: dict | None = None
        self.sched = svc.scheduler
        if self.sched is None:
            return
        sched = self.sched
        self.inner = sched.schedule
        self.own = "schedule" in getattr(sched, "__dict__", {})

        def probe(service, flow: Flow):
            rec = {"scheduler": service.sched_name, "inputs": explain.dest_inputs(service),
                   "before": _safe(explain.before, sched)}
            dest = self.inner(service, flow)
            rec["chose"] = explain.dest_name(dest) if dest is not None else None
            rec["after"] = _safe(explain.after, sched, service, flow)
            self.record = rec
            return dest

        try:
            sched.schedule = probe
        except AttributeError:  # a plugin with __slots__: its choice is still seen
            self.sched = None

    def remove(self) -> None:
        if self.sched is None:
            return
        if self.own:
            self.sched.schedule = self.inner
        else:
            del self.sched.schedule


def _safe(fn, *args) -> dict:
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - an explanation never breaks a decision
        return {"unexplained": str(err)}


class Observation:
    """What one packet found before the director decided, and what it did."""

    def __init__(self, d, info, buf, mark: int) -> None:
        self.d = d
        self.info = info
        self.mark = mark
        # the forwarders rewrite ``info`` with the packet: keep what arrived
        self.src = (info.saddr, info.sport if info.has_ports else None)
        self.dst = (info.daddr, info.dport if info.has_ports else None)
        self.before = bytes(buf) if buf is not None else None
        self.drops = dict(d.drops)
        self.n_out = len(d.outbox)
        self.n_l2 = len(d.l2_outbox)
        self.reply = self.found = self.svc = self.probe = None
        proto = info.proto
        if proto == 6 or proto == 17:
            table = d.conntable
            self.reply = table.out_get(proto, info.saddr, info.sport, info.daddr, info.dport)
            if self.reply is None:
                self.found = table.in_get(proto, info.saddr, info.sport, info.daddr,
                                          info.dport)
                self.svc = d.services.find(info.af, proto, info.daddr, info.dport, mark)
                if self.svc is not None:
                    self.probe = SchedulerProbe(self.svc)
        self.conn0 = self.reply or self.found
        self.state0 = self.conn0.state_name if self.conn0 is not None else None

    def done(self) -> None:
        if self.probe is not None:
            self.probe.remove()

    def view(self) -> FlowView:
        conn = self.d.last
        v = FlowView(self.src[0], self.src[1] or 0, self.dst[0], self.dst[1] or 0)
        if conn is not None:
            v.client = (conn.caddr, conn.cport)
            v.vip = (conn.vaddr, conn.vport)
            if conn.fwd != FWD_BYPASS:
                v.real_server = (conn.daddr, conn.dport)
            v.service = conn.dest.service if conn.dest is not None else self.svc
        else:
            v.service = self.svc
        return v

    def event(self, verdict: int, buf, now: float) -> dict:
        d, info, conn = self.d, self.info, self.d.last
        ev: dict = {"t": now, "proto": PROTO_NAMES.get(info.proto, str(info.proto)),
                    "src": show_endpoint(*self.src), "dst": show_endpoint(*self.dst),
                    "len": info.ip_len, "mark": self.mark,
                    "verdict": VERDICT_NAMES.get(verdict, str(verdict)),
                    "in": self.before.hex() if self.before is not None else None}
        if info.proto == 6:
            ev["flags"] = tcp_flags(info.tcp_flags)
        if info.proto in _ICMP:
            ev["icmp"] = [info.icmp_type, info.icmp_code]
        if self.reply is not None:
            ev["lookup"] = "reply"
        elif self.found is not None:
            ev["lookup"] = "hit" if conn is self.found else "replaced"
            ev["old_state"] = self.state0
        elif info.proto in (6, 17):
            ev["lookup"] = "miss"
        svc = conn.dest.service if conn is not None and conn.dest is not None else self.svc
        ev["service"] = service_name(svc)
        if svc is not None:
            ev["persistent"] = svc.timeout if svc.persistent else 0
        if self.probe is not None and self.probe.record is not None:
            ev["schedule"] = self.probe.record
        if conn is not None:
            new = conn is not self.conn0
            ev["conn"] = {"client": show_endpoint(conn.caddr, conn.cport),
                          "vip": show_endpoint(conn.vaddr, conn.vport),
                          "rs": show_endpoint(conn.daddr, conn.dport),
                          "fwd": FWD_NAMES.get(conn.fwd, str(conn.fwd)),
                          "new": new, "state_before": "NONE" if new else self.state0,
                          "state": conn.state_name, "timeout": conn.timeout,
                          "in_pkts": conn.in_pkts}
            tmpl = conn.control
            if tmpl is not None:
                ev["template"] = {
                    "hit": new and (self.probe is None or self.probe.record is None),
                    "client": show_addr(tmpl.caddr),
                    "vip": show_endpoint(tmpl.vaddr, tmpl.vport),
                    "rs": show_endpoint(tmpl.daddr, tmpl.dport),
                    "timeout": tmpl.timeout, "controls": tmpl.n_control}
        out = []
        if verdict == FORWARD and buf is not None:
            out.append({"link": "ip", "hex": bytes(buf).hex(),
                        "to": "stack" if d.ctx.stack_forwards else "port"})
        out += [{"link": "ip", "hex": bytes(p).hex(), "to": "routed"}
                for p in d.outbox[self.n_out:]]
        out += [{"link": "eth", "hex": bytes(f).hex(), "to": ifname}
                for ifname, f in d.l2_outbox[self.n_l2:]]
        ev["out"] = out
        drops = {r: n - self.drops.get(r, 0) for r, n in d.drops.items()
                 if n != self.drops.get(r, 0)}
        if drops:
            ev["drops"] = drops
        ev["why"] = self._why(verdict, conn, out, drops)
        return ev

    def _why(self, verdict: int, conn, out: list, drops: dict) -> str:
        """The reason in one code (words.py says it in words)."""
        info = self.info
        if verdict == FORWARD:
            return "forwarded"
        if drops:
            return "dropped"
        if verdict == DROP:
            if out:
                return "sent-by-forwarder"
            if conn is not None and conn.fwd == FWD_DROUTE:
                return "waiting-for-neighbour"
            return "dropped"
        if info.proto in _ICMP:
            return "icmp-not-ours" if conn is None else "icmp-to-stack"
        if info.proto not in (6, 17):
            return "not-ipvs-protocol"
        if conn is None:
            if self.svc is None:
                return "no-service"
            if info.proto == 6 and not info.tcp_flags & 0x02:
                return "no-entry-no-syn"
            return "not-scheduled"
        if conn.fwd == FWD_BYPASS:
            return "bypass"
        return "local-real-server"


class TraceHub:
    """Every `pyvs trace` client of one director (see the module doc)."""

    def __init__(self, director) -> None:
        self.director = director
        self.subscribers: list[Subscriber] = []
        self.addrs: set[bytes] | None = None  # see TraceFilter.necessary_addrs
        self._v4 = None
        self._generation = -1
        self._faults = 0

    # -- clients ------------------------------------------------------------------------
    def subscribe(self, sock: socket.socket, request: dict, refuse: str | None = None) -> None:
        """Answer a trace request on ``sock`` and, if it is good, keep streaming to it
        (``refuse``: why this director cannot be traced)."""
        try:
            if refuse:
                raise FilterError(refuse)
            flt = TraceFilter.from_json(request.get("filter") or {})
        except FilterError as err:
            _answer(sock, {"rc": 1 if refuse else 2, "err": f"pyvs trace: {err}\n"})
            sock.close()
            return
        if not _answer(sock, {"rc": 0, "tracing": flt.describe()}):
            sock.close()
            return
        self.subscribers.append(Subscriber(sock, flt))
        self._generation = -1  # recompute what the fast ports must hand over
        if self.director.tracer is None:
            self.director.attach_tracer(self)
        log.info("trace attached: %s", flt.describe())

    def tick(self) -> None:
        """Flush backlogs, forget clients that went away; detach when none is left."""
        for sub in list(self.subscribers):
            sub.flush()
            if sub.gone or sub.hung_up():
                sub.close()
                self.subscribers.remove(sub)
                self._generation = -1
                log.info("trace detached: %s", sub.filter.describe())
        if not self.subscribers and self.director.tracer is self:
            self.director.detach_tracer()

    def close(self) -> None:
        for sub in self.subscribers:
            sub.flush()
            sub.close()
        self.subscribers = []
        if self.director.tracer is self:
            self.director.detach_tracer()

    # -- the tracer interface (Director.attach_tracer, engine/fastpath.py) ----------------
    def _refresh(self) -> None:
        services = self.director.services
        if services.generation == self._generation:
            return
        self._generation = services.generation
        addrs: set[bytes] | None = set()
        for sub in self.subscribers:
            need = sub.filter.necessary_addrs(list(services.services.values()))
            if need is None:
                addrs = None
                break
            addrs |= need
        self.addrs = addrs
        self._v4 = None

    def batch_mask(self, saddr, sport, daddr, dport):
        """Which frames of a fast-path batch (IPv4 columns) a filter may match."""
        import numpy as np

        self._refresh()
        if self.addrs is None:
            return np.ones(len(saddr), dtype=bool)
        if self._v4 is None:
            self._v4 = [int.from_bytes(a, "big") for a in self.addrs if len(a) == 4]
        if len(self._v4) > 4:
            return np.isin(saddr, self._v4) | np.isin(daddr, self._v4)
        mask = np.zeros(len(saddr), dtype=bool)
        for a in self._v4:  # a few addresses: plain comparisons beat np.isin
            mask |= (saddr == a) | (daddr == a)
        return mask

    def handle(self, untraced, info, buf, mark: int, now: float | None) -> int:
        """Director.handle, watched (the hook Director.attach_tracer installs)."""
        d = self.director
        if self._generation != d.services.generation:
            self._refresh()
        addrs = self.addrs
        if (addrs is not None and info.proto not in _ICMP and info.saddr not in addrs
                and info.daddr not in addrs):
            return untraced(info, buf, mark, now)
        if now is None:
            now = d.clock.now()
        try:
            obs = Observation(d, info, buf, mark)
        except Exception:  # noqa: BLE001 - never break the packet path
            self._fault()
            return untraced(info, buf, mark, now)
        try:
            verdict = untraced(info, buf, mark, now)
        finally:
            obs.done()
        try:
            self._publish(obs, verdict, buf, now)
        except Exception:  # noqa: BLE001
            self._fault()
        return verdict

    def _publish(self, obs: Observation, verdict: int, buf, now: float) -> None:
        view = obs.view()
        wanted = [s for s in self.subscribers if not s.gone and s.filter.matches(view)]
        if not wanted:
            return
        line = (json.dumps(obs.event(verdict, buf, now)) + "\n").encode()
        for sub in wanted:
            sub.send(line)

    def _fault(self) -> None:
        self._faults += 1
        if self._faults <= 3:
            log.exception("pyvs trace: could not describe a packet (the verdict stands)")


def _answer(sock: socket.socket, reply: dict) -> bool:
    try:
        sock.sendall((json.dumps(reply) + "\n").encode())
        return True
    except OSError:
        return False
