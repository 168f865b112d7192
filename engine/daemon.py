"""`pyvs run`: the director process of one network namespace.

One thread, one selector: the packet port, the control socket and a periodic
tick (expiry, estimator).  Control requests are handled between batches, so the
engine needs no locks.  SIGTERM/SIGINT stop the loop; the plumbing is removed
on the way out (and at the next start, if a crash skipped that).
"""

from __future__ import annotations

import gc
import logging
import selectors
import signal
import socket
import time

from engine import control
from engine.director import Director
from engine.io.nfqueue import NF_ACCEPT, NF_DROP, NfQueuePort
from engine.plumbing import QUEUE_NUM, Plumbing
from engine.sysctl import SysctlError
from engine.verdict import DROP, FORWARD

log = logging.getLogger("pyvs")

TICK = 0.1
EXPIRE_BUDGET = 50_000  # entries looked at per tick in ring mode (expiry never stalls)


class RawSender:
    """Sends the packets the director makes itself (ICMP errors) through the stack."""

    def __init__(self) -> None:
        self.v4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.v6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.l2 = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)

    def send_frame(self, ifname: str, frame: bytes) -> None:
        """An Ethernet frame out of one interface (direct routing: only the MAC changed)."""
        try:
            self.l2.sendto(frame, (ifname, 0))
        except OSError as err:
            log.debug("could not send a frame on %s: %s", ifname, err)

    def send(self, packet: bytes) -> None:
        try:
            if packet[0] >> 4 == 4:
                dst = socket.inet_ntop(socket.AF_INET, packet[16:20])
                self.v4.sendto(packet, (dst, 0))
            else:
                dst = socket.inet_ntop(socket.AF_INET6, packet[24:40])
                self.v6.sendto(packet, (dst, 0))
        except OSError as err:
            log.debug("could not send a generated packet: %s", err)

    def flush(self, director: Director) -> None:
        if director.outbox:
            for packet in director.outbox:
                self.send(packet)
            director.outbox.clear()
        if director.l2_outbox:
            for ifname, frame in director.l2_outbox:
                self.send_frame(ifname, frame)
            director.l2_outbox.clear()

    def close(self) -> None:
        self.v4.close()
        self.v6.close()
        self.l2.close()


def keep_long_lived_out_of_gc() -> None:
    """Move every object alive now (connection entries above all) out of the cyclic
    garbage collector's reach, on every tick.  With a million entries a full automatic
    collection scanned them all and stalled the director for 60-150 ms (tens of
    thousands of frames lost at full rate); now collections only look at what the last
    tick created.  Entries are still freed by reference counting when they expire; the
    engine builds no reference cycles on the packet path."""
    gc.freeze()


class Daemon:
    """``io``: "nfqueue" (the default, faithful path), "ring" (engine/io/ring.py: the
    fast path for addr:port services; fwmark services and ICMP stay on NFQUEUE) or
    "xdp" (engine/io/xdp.py: the same fast path over AF_XDP sockets)."""

    def __init__(self, director: Director | None = None, queue: int = QUEUE_NUM,
                 io: str = "nfqueue", interfaces: list[str] | None = None) -> None:
        self.director = director or Director()
        self.io = io
        self.plumbing = Plumbing(queue, ring=io in ("ring", "xdp"))
        self.queue = queue
        self.running = False
        self._generation = -1
        self.interfaces = interfaces
        self.ring_plumbing = None  # engine.plumbing_ring.RingPlumbing in ring mode
        self.ring = None  # engine.io.ring.RingPort in ring mode
        self.fanout_group: int | None = None  # set by engine/workers.py

    # -- control ------------------------------------------------------------------------------
    def handle_request(self, request: dict) -> dict:
        op = request.get("op")
        if op == "ipvsadm":
            from engine import ipvsadm

            rc, out, err = ipvsadm.run(list(request.get("argv", [])),
                                       request.get("stdin", ""), self.director)
            self._sync_plumbing()
            return {"rc": rc, "out": out, "err": err}
        if op == "sysctl":
            return self._sysctl(list(request.get("args", [])))
        if op == "status":
            d = self.director
            reply = {"rc": 0, "out": "", "err": "", "connections": len(d.conntable),
                     "drops": dict(d.drops)}
            if self.ring is not None:
                reply["ring"] = self.ring.status()
            return reply
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

    def _sync_plumbing(self) -> None:
        services = self.director.services
        if services.generation != self._generation:
            self.plumbing.sync(services.services.values())
            if self.ring is not None:
                # the ring takes a service's packets only once the kernel stops seeing
                # them, and gives them up before the kernel sees them again
                self.ring.update_services(services.services.values())
                if self.ring_plumbing is not None:
                    self.ring_plumbing.sync(services.services.values())
            self._generation = services.generation

    def _serve_control(self, listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return
        with conn:
            try:
                if control.peer_uid(conn) != 0:
                    reply = {"rc": 1, "out": "", "err": "Permission denied (you must be root)\n"}
                else:
                    request = control.read_request(conn)
                    try:
                        reply = self.handle_request(request)
                    except Exception as err:  # always answer; the director keeps running
                        log.exception("control request %r failed", request.get("op"))
                        reply = {"rc": 1, "out": "", "err": f"pyvs: internal error: {err}\n"}
                control.send_reply(conn, reply)
            except (OSError, ValueError) as err:
                log.warning("control request failed: %s", err)

    # -- packets ------------------------------------------------------------------------------
    def _serve_packets(self, port: NfQueuePort, sender: RawSender) -> None:
        director = self.director
        while True:
            batch = port.recv_batch()
            if not batch:
                return
            verdicts = director.process([p.buf for p in batch], [p.mark for p in batch])
            port.send_verdicts(batch, [NF_DROP if v == DROP else NF_ACCEPT for v in verdicts],
                               [v == FORWARD for v in verdicts])
            sender.flush(director)

    def _start_ring(self, sender: RawSender, fanout_group: int | None = None) -> None:
        from engine.io.ring import RingPort, director_interfaces
        from engine.plumbing_ring import RingPlumbing

        if not self.interfaces:
            self.interfaces = director_interfaces()
        if not self.interfaces:
            raise RuntimeError(f"--io {self.io}: no interface with an address in this namespace")
        self.director.conntable.expire_budget = EXPIRE_BUDGET
        if self.io == "xdp":
            from engine.io.xdp import XdpPort

            self.ring = XdpPort(self.director, self.interfaces, sender, fanout_group)
            return
        self.ring = RingPort(self.director, self.interfaces, sender, fanout_group)
        self.ring_plumbing = RingPlumbing(self.interfaces)
        self.ring_plumbing.install()

    @staticmethod
    def _clear_stale_fast_paths() -> None:
        """A ring or XDP director killed without its cleanup leaves an nftables netdev
        table or XDP programs that keep taking the services' packets from the kernel:
        remove them at start, whatever this run's mode."""
        from engine.io.steer import detach_stale
        from engine.plumbing_ring import RingPlumbing, RingPlumbingError

        try:
            RingPlumbing([]).remove()
        except RingPlumbingError:  # no nft: no ring table can exist either
            pass
        try:
            gone = detach_stale()
        except OSError as err:
            log.warning("could not look for a left-over pyvs XDP program: %s", err)
            return
        if gone:
            log.info("removed a left-over pyvs XDP program from %s", ", ".join(gone))

    # -- main loop ----------------------------------------------------------------------------
    def run(self) -> int:
        try:
            listener = control.listen()
        except OSError as err:
            log.error("another pyvs director already runs in this namespace (%s)", err)
            return 1
        self._clear_stale_fast_paths()
        self.plumbing.install()
        port = NfQueuePort(self.queue)
        sender = RawSender()
        if self.io in ("ring", "xdp"):
            try:
                self._start_ring(sender, self.fanout_group)
            except Exception:
                if self.ring_plumbing is not None:
                    self.ring_plumbing.remove()
                if self.ring is not None:
                    self.ring.close()
                port.close()
                sender.close()
                listener.close()
                self.plumbing.remove()
                raise
        self._sync_plumbing()
        self.running = True

        def stop(signum, frame):  # noqa: ARG001
            self.running = False

        old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
        sel = selectors.DefaultSelector()
        sel.register(port, selectors.EVENT_READ, "packets")
        sel.register(listener, selectors.EVENT_READ, "control")
        if self.ring is not None:
            for ring in self.ring.rings:
                sel.register(ring, selectors.EVENT_READ, ring)
        log.info("pyvs director running (nfqueue %d%s)", self.queue,
                 f", rings on {', '.join(self.interfaces)}" if self.ring is not None else "")
        next_tick = time.monotonic()
        try:
            while self.running:
                timeout = max(0.0, next_tick - time.monotonic())
                for key, _ in sel.select(timeout):
                    try:
                        if key.data == "packets":
                            self._serve_packets(port, sender)
                        elif key.data == "control":
                            self._serve_control(listener)
                        else:
                            self.ring.serve(key.data)
                    except Exception:  # the engine keeps serving whatever one batch did
                        log.exception("error while serving %s", key.data)
                        self.director.drops["engine-error"] += 1
                if time.monotonic() >= next_tick:
                    self.director.tick()
                    sender.flush(self.director)  # what the tick queued (DR neighbours)
                    if self.ring is not None:
                        self.ring.tick()
                    keep_long_lived_out_of_gc()
                    next_tick = time.monotonic() + TICK
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            sel.close()
            if self.ring_plumbing is not None:
                self.ring_plumbing.remove()  # the kernel sees the traffic again first
            if self.ring is not None:
                self.ring.close()
            port.close()
            sender.close()
            listener.close()
            self.plumbing.remove()
            log.info("pyvs director stopped; plumbing removed")
        return 0
