"""`pyvs trace`: attach to this namespace's director and print what it does, per packet.

    pyvs trace [--client ADDR] [--vip ADDR[:PORT]] [--real-server ADDR[:PORT]]
               [-t|-u ADDR:PORT] [-f MARK] [--count N] [--duration S]
               [--pcap-in FILE] [--pcap-out FILE] [--ladder FILE.svg] [--json]
               [-- COMMAND ...]

Stops at Ctrl-C, after ``--count`` packets, after ``--duration`` seconds, or -- with a
COMMAND, which starts once the trace is attached -- when the command has exited and
no traced packet came for ``--linger`` seconds (the connection's last packets).
The exit status is the command's, else 0.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time

from pyvs.engine.trace.filter import (
    FilterError,
    ServiceSpec,
    TraceFilter,
    parse_addr,
    parse_endpoint,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--client", action="append", default=[], metavar="ADDR",
                   help="packets of connections from this client address")
    p.add_argument("--vip", action="append", default=[], metavar="ADDR[:PORT]",
                   help="packets of connections to this virtual address (and port)")
    p.add_argument("--real-server", action="append", default=[], metavar="ADDR[:PORT]",
                   help="packets of connections served by this real server")
    p.add_argument("-t", "--tcp-service", action="append", default=[], metavar="ADDR:PORT",
                   help="packets of this TCP virtual service")
    p.add_argument("-u", "--udp-service", action="append", default=[], metavar="ADDR:PORT",
                   help="packets of this UDP virtual service")
    p.add_argument("-f", "--fwmark-service", action="append", default=[], metavar="MARK",
                   help="packets of this firewall-mark service")
    p.add_argument("--count", type=_positive(int), metavar="N",
                   help="stop after N packets")
    p.add_argument("--duration", type=_positive(float), metavar="SECONDS",
                   help="stop after this long")
    p.add_argument("--linger", type=_positive(float), default=1.0, metavar="SECONDS",
                   help="with a COMMAND: how long to wait for packets after it exits "
                        "(default 1)")
    p.add_argument("--pcap-in", metavar="FILE",
                   help="write the packets as the director received them (pcapng)")
    p.add_argument("--pcap-out", metavar="FILE",
                   help="write what the director sent for them (pcapng: IP packets, and "
                        "Ethernet frames for direct routing)")
    p.add_argument("--ladder", metavar="FILE.svg",
                   help="draw the ladder diagram of the traced packets (svg, png or pdf)")
    p.add_argument("--json", action="store_true",
                   help="print the raw events, one JSON object a line")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                   help="run this once the trace is attached; stop after it")


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {text}")
        return value
    return parse


def build_filter(args: argparse.Namespace) -> TraceFilter:
    services = [ServiceSpec.parse("tcp", s) for s in args.tcp_service]
    services += [ServiceSpec.parse("udp", s) for s in args.udp_service]
    services += [ServiceSpec.parse("fwm", s) for s in args.fwmark_service]
    return TraceFilter(clients=[parse_addr(a) for a in args.client],
                       vips=[parse_endpoint(v) for v in args.vip],
                       real_servers=[parse_endpoint(r) for r in args.real_server],
                       services=services)


class Outputs:
    """Where events go: stdout (words or JSON), the two pcapng files, the ladder."""

    def __init__(self, args: argparse.Namespace) -> None:
        from pyvs.engine.trace.pcapng import PcapNgWriter

        self.json = args.json
        self.ladder = args.ladder
        self.pcap_in = PcapNgWriter(args.pcap_in) if args.pcap_in else None
        self.pcap_out = PcapNgWriter(args.pcap_out) if args.pcap_out else None
        self.events: list[dict] = []
        self.t0: float | None = None
        self.wall0 = 0.0
        self.count = 0

    def add(self, ev: dict) -> None:
        if "lost" in ev:
            self.events.append(ev)
            self._print(ev)
            return
        if self.t0 is None:
            self.t0, self.wall0 = ev["t"], time.time()
        self.count += 1
        self.events.append(ev)
        when = self.wall0 + ev["t"] - self.t0
        if self.pcap_in is not None and ev.get("in"):
            self.pcap_in.write(bytes.fromhex(ev["in"]), "ip", when)
        if self.pcap_out is not None:
            for o in ev.get("out", []):
                self.pcap_out.write(bytes.fromhex(o["hex"]), o["link"], when)
        self._print(ev)

    def _print(self, ev: dict) -> None:
        if self.json:
            text = json.dumps(ev)
        else:
            from pyvs.engine.trace.words import describe

            text = "\n".join(describe(ev, self.count, self.t0 or 0.0))
        sys.stdout.write(text + "\n")  # one write: a command's output lands between events
        sys.stdout.flush()

    def close(self) -> None:
        for w in (self.pcap_in, self.pcap_out):
            if w is not None:
                w.close()
        if self.ladder:
            from pyvs.engine.trace.ladder import draw

            n = draw(self.events, self.ladder)
            sys.stderr.write(f"pyvs trace: ladder diagram of {self.count} packets "
                             f"({n} arrows) written to {self.ladder}\n")


def connect(flt: TraceFilter) -> tuple[socket.socket, dict]:
    """Subscribe to this namespace's director; returns the socket and its first answer."""
    from pyvs.engine.control import SOCKET_NAME

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(SOCKET_NAME)
    sock.sendall(json.dumps({"op": "trace", "filter": flt.to_json()}).encode())
    sock.shutdown(socket.SHUT_WR)
    first = b""
    while b"\n" not in first:
        data = sock.recv(65536)
        if not data:
            break
        first += data
    line, _, rest = first.partition(b"\n")
    return sock, {"answer": json.loads(line or b"{}"), "rest": rest}


def run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        flt = build_filter(args)
    except FilterError as err:
        sys.stderr.write(f"pyvs trace: {err}\n")
        return 2
    if args.ladder and os.path.splitext(args.ladder)[1].lower() not in (".svg", ".png", ".pdf"):
        sys.stderr.write("pyvs trace: --ladder needs a .svg, .png or .pdf file name\n")
        return 2
    try:
        outputs = Outputs(args)
    except OSError as err:
        sys.stderr.write(f"pyvs trace: {err.filename}: {err.strerror}\n")
        return 1
    try:
        sock, first = connect(flt)
    except (FileNotFoundError, ConnectionRefusedError):
        sys.stderr.write("pyvs trace: no pyvs director runs in this network namespace\n")
        return 1
    except (OSError, ValueError) as err:
        sys.stderr.write(f"pyvs trace: the director did not answer: {err}\n")
        return 1
    answer = first["answer"]
    if answer.get("rc") != 0:
        sys.stderr.write(answer.get("err") or "pyvs trace: the director refused\n")
        sock.close()
        return int(answer.get("rc") or 1)
    sys.stderr.write(f"pyvs trace: tracing {answer.get('tracing')} "
                     f"({'until the command ends' if command else 'Ctrl-C to stop'})\n")
    sys.stderr.flush()
    try:
        return _stream(sock, first["rest"], outputs, args, command)
    finally:
        sock.close()
        outputs.close()


def _stream(sock: socket.socket, pending: bytes, outputs: Outputs, args, command) -> int:
    stop = []
    old = signal.signal(signal.SIGTERM, lambda *_: stop.append("signal"))
    proc = None
    rc = 0
    if command:
        try:
            proc = subprocess.Popen(command)
        except OSError as err:
            sys.stderr.write(f"pyvs trace: cannot run {command[0]}: {err.strerror}\n")
            return 127
    start = time.monotonic()
    last_packet = start
    ended_at = None
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    buf = pending
    try:
        while not stop:
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                outputs.add(json.loads(line))
                last_packet = time.monotonic()
                if args.count and outputs.count >= args.count:
                    return _finish(proc, rc)
            now = time.monotonic()
            if args.duration and now - start >= args.duration:
                break
            if proc is not None and ended_at is None and proc.poll() is not None:
                ended_at = now
                rc = proc.returncode
            if ended_at is not None and now - max(ended_at, last_packet) >= args.linger:
                break
            if sel.select(0.05):
                data = sock.recv(1 << 16)
                if not data:
                    sys.stderr.write("pyvs trace: the director stopped\n")
                    break
                buf += data
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
        sel.close()
    return _finish(proc, rc)


def _finish(proc, rc: int) -> int:
    if proc is not None:
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.terminate()
            return proc.wait()
    return rc
