"""A tiny real server for the labs: who am I over HTTP and UDP, plus bulk transfers.

    python -m pyvs.engine.lab.servers --name rs1 --tcp-port 80 --udp-port 53 [--bind ADDR ...]

HTTP (threading, HTTP/1.1 keep-alive):
    GET  <any path>     -> "NAME\\n"
    GET  /peer          -> "NAME PEER_ADDR PEER_PORT\n" (the source address seen)
    GET  /bytes/N       -> N deterministic pseudo-random bytes (``pattern_chunks``),
                           streamed in chunks, never held in memory
    POST /sha256        -> "HEX\\n", the sha256 of the request body (Content-Length or
                           chunked), read in chunks
    every response carries ``X-Server: NAME``.
UDP: every datagram is answered with "NAME\\n", from the address it was sent to
(IP_PKTINFO / IPV6_PKTINFO), so a server holding several addresses (a VIP on ``lo``
in DR/TUN labs) answers from the right one.  A datagram that is a DNS query (one
question, QR=0) gets a DNS answer instead: NOERROR, no records (for DNS_CHECK).
``--tls-port N --cert F --key F`` also serves the HTTP above over TLS (for SSL_GET).

Failure modes for health-check tests, switched at run time through a control file
(``--control FILE``; default: ``NAME.control`` next to ``--ready-file``), read
again whenever it changes, one ``key=value`` per line:
    http=ok|500|hang|wrong-body   500: every request answered "500"; hang: requests
                                  are read and never answered (the connection stays
                                  open); wrong-body: 200 with another body
    udp=ok|silent                 silent: UDP and DNS datagrams get no answer
    dns=ok|refused                refused: DNS answers carry rcode 5 (REFUSED)
A missing or empty file means everything ok.

``--delay DIST`` and ``--capacity K`` make a slower or smaller server: every HTTP
request is served in a time drawn from DIST (seconds) holding one of K slots; the rest
wait their turn (engine/lab/pace.py; headers X-Queue-Wait, X-Service-Time).

With no ``--bind`` it listens on every IPv4 and IPv6 address (one socket per family).
``--ready-file PATH`` is written once every socket is listening.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import os
import random
import re
import select
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pyvs.engine.lab.pace import NO_PACE, Pace

CHUNK = 64 * 1024
HANG_LIMIT = 600.0  # a hung request is closed after this long at most
PATTERN_SEED = 0x5059_5653  # "PYVS"
MAX_BYTES = 1 << 34

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)


# ------------------------------------------------------------------ bulk pattern


def pattern_chunks(n: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """The deterministic byte stream served by GET /bytes/N (same for every server)."""
    rng = random.Random(PATTERN_SEED)
    left = n
    while left > 0:
        k = min(chunk, left)
        yield rng.randbytes(k)
        left -= k


def pattern_sha256(n: int) -> str:
    """sha256 hex of GET /bytes/N's body, computed locally (no network)."""
    h = hashlib.sha256()
    for c in pattern_chunks(n):
        h.update(c)
    return h.hexdigest()


def write_pattern(path: str, n: int) -> str:
    """Write the N-byte pattern to ``path``; returns its sha256 hex."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for c in pattern_chunks(n):
            h.update(c)
            f.write(c)
    return h.hexdigest()


# ----------------------------------------------------------------------- control


class Control:
    """The failure modes of the control file (see the module docstring)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._stamp: tuple | None = None
        self._modes: dict[str, str] = {}
        self._lock = threading.Lock()

    def mode(self, key: str) -> str:
        if not self.path:
            return "ok"
        with self._lock:
            try:
                st = os.stat(self.path)
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            except OSError:
                stamp = None
            if stamp != self._stamp:
                self._stamp = stamp
                self._modes = {}
                if stamp is not None:
                    try:
                        with open(self.path) as f:
                            for line in f:
                                k, _, v = line.partition("=")
                                self._modes[k.strip()] = v.strip()
                    except OSError:
                        pass
            return self._modes.get(key, "ok") or "ok"


NO_CONTROL = Control(None)


# -------------------------------------------------------------------------- HTTP


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pyvs-lab"
    name = "server"
    verbose = False
    control = NO_CONTROL
    pace = NO_PACE
    timing: tuple[float, float] | None = None  # (queue wait, service time) of a paced request

    def _failure(self) -> bool:
        """Act out the control file's http mode; True when the request is handled."""
        mode = self.control.mode("http")
        if mode == "500":
            self._send(f"{self.name}\n".encode(), 500)
            return True
        if mode == "wrong-body":
            self._send(f"{self.name} wrong body\n".encode())
            return True
        if mode == "hang":
            deadline = time.monotonic() + HANG_LIMIT
            while self.control.mode("http") == "hang" and time.monotonic() < deadline:
                time.sleep(0.1)
            self.close_connection = True
            return True
        return False

    def log_message(self, fmt, *args):  # noqa: D401 - quiet unless --verbose
        if self.verbose:
            sys.stderr.write(f"{self.name} {self.address_string()} {fmt % args}\n")

    def _send(self, body: bytes, code: int = 200, ctype: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Server", self.name)
        self._timing_headers()
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _timing_headers(self) -> None:
        if self.timing is not None:
            self.send_header("X-Queue-Wait", f"{self.timing[0]:.6f}")
            self.send_header("X-Service-Time", f"{self.timing[1]:.6f}")

    def do_GET(self):  # noqa: N802 - http.server API
        if not self.pace.paced:
            return self._get()
        with self.pace.request() as self.timing:
            return self._get()

    def _get(self):
        if self._failure():
            return
        path = self.path.split("?", 1)[0]
        if path == "/peer":
            host, port = self.client_address[:2]
            self._send(f"{self.name} {host} {port}\n".encode())
            return
        m = re.fullmatch(r"/bytes/(\d+)", path)
        if not m:
            self._send(f"{self.name}\n".encode())
            return
        n = int(m.group(1))
        if n > MAX_BYTES:
            self._send(b"too large\n", 400)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.send_header("X-Server", self.name)
        self._timing_headers()
        self.end_headers()
        for c in pattern_chunks(n):
            self.wfile.write(c)

    do_HEAD = do_GET

    def _body_chunks(self) -> Iterator[bytes]:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                left = size
                while left:
                    c = self.rfile.read(min(CHUNK, left))
                    if not c:
                        return
                    left -= len(c)
                    yield c
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left > 0:
                c = self.rfile.read(min(CHUNK, left))
                if not c:
                    return
                left -= len(c)
                yield c

    def do_POST(self):  # noqa: N802 - http.server API
        if not self.pace.paced:
            return self._post()
        with self.pace.request() as self.timing:
            return self._post()

    def _post(self):
        if self._failure():
            return
        h = hashlib.sha256()
        for c in self._body_chunks():
            h.update(c)
        if self.path.split("?", 1)[0] == "/sha256":
            self._send(f"{h.hexdigest()}\n".encode())
        else:
            self._send(f"{self.name}\n".encode())


class _HTTP4(ThreadingHTTPServer):
    address_family = socket.AF_INET
    daemon_threads = True
    request_queue_size = 128

    def server_bind(self):
        # plain socket bind: HTTPServer.server_bind does a reverse lookup (getfqdn)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = "lab", self.server_address[1]


class _HTTP6(_HTTP4):
    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()


def tls_server(base: type, context: ssl.SSLContext) -> type:
    """``base`` with every accepted connection wrapped in TLS, the handshake done in
    the request's own thread (a stalled client never blocks the accept loop)."""

    class TLS(base):
        def finish_request(self, request, client_address):
            try:
                request = context.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError):
                return
            super().finish_request(request, client_address)

    return TLS


# --------------------------------------------------------------------------- UDP


def _udp_socket(family: int, addr: str, port: int) -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
    else:
        s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    s.bind((addr, port))
    return s


def dns_answer(query: bytes, rcode: int = 0) -> bytes | None:
    """A DNS response (no records) to a one-question query, or None if ``query`` is not
    a DNS query."""
    if len(query) < 17:
        return None
    ident, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", query)
    if flags & 0xF800 or qd != 1 or an or ns:
        return None
    i = 12
    while i < len(query) and query[i]:
        i += 1 + query[i]
    if i + 5 > len(query):
        return None
    question = query[12:i + 5]
    flags = 0x8000 | 0x0080 | (flags & 0x0100) | (rcode & 0xF)  # QR, RA, RD copied
    return struct.pack("!HHHHHH", ident, flags, 1, 0, 0, 0) + question


def _udp_reply(s: socket.socket, reply: bytes, control: Control = NO_CONTROL) -> None:
    data, anc, _flags, peer = s.recvmsg(65535, 256)
    if control.mode("udp") == "silent":
        return
    dns = dns_answer(data, 5 if control.mode("dns") == "refused" else 0)
    if dns is not None:
        reply = dns
    out = []
    for level, typ, val in anc:
        if level == socket.IPPROTO_IP and typ == IP_PKTINFO and len(val) >= 12:
            # struct in_pktinfo {int ifindex; in_addr spec_dst; in_addr addr}
            dst = val[8:12]
            out = [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("=i4s4s", 0, dst, bytes(4)))]
        elif level == socket.IPPROTO_IPV6 and typ == IPV6_PKTINFO and len(val) >= 20:
            # struct in6_pktinfo {in6_addr addr; int ifindex}
            out = [(socket.IPPROTO_IPV6, IPV6_PKTINFO, struct.pack("=16si", val[:16], 0))]
    try:
        s.sendmsg([reply], out, 0, peer)
    except OSError:
        s.sendto(reply, peer)


def udp_loop(socks: list[socket.socket], name: str, stop: threading.Event,
             control: Control = NO_CONTROL) -> None:
    reply = f"{name}\n".encode()
    while not stop.is_set():
        ready, _, _ = select.select(socks, [], [], 0.5)
        for s in ready:
            try:
                _udp_reply(s, reply, control)
            except OSError:
                pass


# -------------------------------------------------------------------------- main


def serve(
    name: str,
    tcp_port: int = 80,
    udp_port: int = 53,
    bind: list[str] | None = None,
    ready_file: str | None = None,
    verbose: bool = False,
    control: str | None = None,
    tls_port: int = 0,
    cert: str | None = None,
    key: str | None = None,
    pace: Pace = NO_PACE,
) -> None:
    """Run until SIGTERM/SIGINT."""
    if control is None and ready_file:
        control = os.path.join(os.path.dirname(ready_file) or ".", f"{name}.control")
    ctl = Control(control)
    handler = type("NamedHandler", (Handler,), {"name": name, "verbose": verbose,
                                                "control": ctl, "pace": pace})
    if bind:
        targets = [(ipaddress.ip_address(a).version, a) for a in bind]
    else:
        targets = [(4, "0.0.0.0")]
        if socket.has_ipv6 and os.path.exists("/proc/net/if_inet6"):
            targets.append((6, "::"))

    https, udps = [], []
    for version, addr in targets:
        fam = socket.AF_INET6 if version == 6 else socket.AF_INET
        base = _HTTP6 if version == 6 else _HTTP4
        if tcp_port:
            https.append(base((addr, tcp_port), handler))
        if tls_port:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            https.append(tls_server(base, context)((addr, tls_port), handler))
        if udp_port:
            udps.append(_udp_socket(fam, addr, udp_port))

    stop = threading.Event()
    threads = [threading.Thread(target=h.serve_forever, daemon=True) for h in https]
    if udps:
        threads.append(threading.Thread(target=udp_loop, args=(udps, name, stop, ctl),
                                        daemon=True))
    for t in threads:
        t.start()

    def _stop(*_):
        # nothing to flush: exit at once so lab teardown is fast
        os._exit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if ready_file:
        tmp = ready_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(tmp, ready_file)
    while not stop.wait(1.0):
        pass
    for h in https:
        h.shutdown()
        h.server_close()
    for s in udps:
        s.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pyvs.engine.lab.servers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="name answered to every request")
    p.add_argument("--tcp-port", type=int, default=80, help="HTTP port (0: no HTTP)")
    p.add_argument("--udp-port", type=int, default=53, help="UDP port (0: no UDP)")
    p.add_argument("--bind", action="append", metavar="ADDR",
                   help="listen on this address only (repeatable); default: all v4+v6")
    p.add_argument("--ready-file", help="written when listening")
    p.add_argument("--verbose", action="store_true", help="log requests to stderr")
    p.add_argument("--control", help="failure-mode control file (default: NAME.control "
                                     "next to --ready-file)")
    p.add_argument("--tls-port", type=int, default=0, help="also serve HTTP over TLS here")
    p.add_argument("--cert", help="TLS certificate (PEM), with --tls-port")
    p.add_argument("--key", help="TLS private key (PEM), with --tls-port")
    p.add_argument("--delay", metavar="DIST", help="service time of an HTTP request, in "
                   "seconds: a number or a distribution (exp:mean=0.02, ...)")
    p.add_argument("--capacity", metavar="K", help="HTTP requests served at once (the "
                   "others queue); default: no limit")
    a = p.parse_args(argv)
    if a.tls_port and not (a.cert and a.key):
        p.error("--tls-port needs --cert and --key")
    try:
        pace = Pace.of(a.name, a.delay, a.capacity)
    except ValueError as err:
        p.error(str(err))
    serve(a.name, a.tcp_port, a.udp_port, a.bind, a.ready_file, a.verbose, a.control,
          a.tls_port, a.cert, a.key, pace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
