"""What every checker shares: where to connect, the source to bind, the outcome.

keepalived's conn_opts (layer4.c): connect to ``connect_ip``:``connect_port``
(default: the real server's address and port), from ``bindto``:``bind_port``
(bound on ``bind_if``) with the socket mark ``fwmark``, within ``connect_timeout``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import ssl
import time
from dataclasses import dataclass

from pyvs.engine.health.model import Checker

SO_MARK = getattr(socket, "SO_MARK", 36)


@dataclass
class Outcome:
    ok: bool
    reason: str
    seconds: float | None = None  # response time, for a scheduler's report() hook
    status: int | None = None  # MISC_CHECK exit status (misc_dynamic)


@dataclass
class Target:
    """The real server a checker watches, and what the checks need around it."""

    addr: str
    port: int
    url_index: int = 0  # HTTP_GET/SSL_GET: the url this check fetches
    ssl_context: ssl.SSLContext | None = None


def destination(c: Checker, t: Target) -> tuple[str, int]:
    return (c.connect_ip or t.addr, c.connect_port if c.connect_port is not None else t.port)


def family(host: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


def error_text(err: BaseException) -> str:
    """A short reason: "connection refused", "no route to host", "timeout"..."""
    if isinstance(err, TimeoutError):
        return "timeout"
    if isinstance(err, OSError) and err.errno:
        return os.strerror(err.errno).lower()
    return str(err) or type(err).__name__


def bound_socket(c: Checker, host: str, kind: int, proto: int = 0) -> socket.socket:
    """A non-blocking socket of ``host``'s family with the checker's source options."""
    sock = socket.socket(family(host), kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, proto)
    try:
        if c.fwmark:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, c.fwmark)
        if c.bind_if:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, c.bind_if.encode())
        if c.bindto or c.bind_port:
            if c.bind_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            any_addr = "::" if sock.family == socket.AF_INET6 else "0.0.0.0"
            sock.bind((c.bindto or any_addr, c.bind_port or 0))
    except BaseException:
        sock.close()
        raise
    return sock


async def open_tcp(c: Checker, t: Target, server_hostname: str | None = None
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, float]:
    """Connect (and with an SSL context, handshake) within connect_timeout; returns the
    streams and the connect time in seconds."""
    host, port = destination(c, t)
    loop = asyncio.get_running_loop()
    sock = bound_socket(c, host, socket.SOCK_STREAM)
    started = time.monotonic()
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), c.connect_timeout)
        connected = time.monotonic() - started
        left = max(0.001, c.connect_timeout - connected)
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            sock=sock, ssl=t.ssl_context,
            server_hostname=(server_hostname or "") if t.ssl_context else None), left)
    except BaseException:
        sock.close()
        raise
    return reader, writer, connected


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 1.0)
    except (OSError, TimeoutError, ssl.SSLError):
        pass
