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
in DR/TUN labs) answers from the right one.

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
import struct
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 64 * 1024
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


# -------------------------------------------------------------------------- HTTP


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pyvs-lab"
    name = "server"
    verbose = False

    def log_message(self, fmt, *args):  # noqa: D401 - quiet unless --verbose
        if self.verbose:
            sys.stderr.write(f"{self.name} {self.address_string()} {fmt % args}\n")

    def _send(self, body: bytes, code: int = 200, ctype: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Server", self.name)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - http.server API
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


def _udp_reply(s: socket.socket, reply: bytes) -> None:
    data, anc, _flags, peer = s.recvmsg(65535, 256)
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


def udp_loop(socks: list[socket.socket], name: str, stop: threading.Event) -> None:
    reply = f"{name}\n".encode()
    while not stop.is_set():
        ready, _, _ = select.select(socks, [], [], 0.5)
        for s in ready:
            try:
                _udp_reply(s, reply)
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
) -> None:
    """Run until SIGTERM/SIGINT."""
    handler = type("NamedHandler", (Handler,), {"name": name, "verbose": verbose})
    if bind:
        targets = [(ipaddress.ip_address(a).version, a) for a in bind]
    else:
        targets = [(4, "0.0.0.0")]
        if socket.has_ipv6 and os.path.exists("/proc/net/if_inet6"):
            targets.append((6, "::"))

    https, udps = [], []
    for version, addr in targets:
        fam = socket.AF_INET6 if version == 6 else socket.AF_INET
        if tcp_port:
            https.append((_HTTP6 if version == 6 else _HTTP4)((addr, tcp_port), handler))
        if udp_port:
            udps.append(_udp_socket(fam, addr, udp_port))

    stop = threading.Event()
    threads = [threading.Thread(target=h.serve_forever, daemon=True) for h in https]
    if udps:
        threads.append(threading.Thread(target=udp_loop, args=(udps, name, stop), daemon=True))
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
    a = p.parse_args(argv)
    serve(a.name, a.tcp_port, a.udp_port, a.bind, a.ready_file, a.verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
