"""PING_CHECK (check_ping.c): an ICMP echo request answered within connect_timeout.

keepalived uses an unprivileged ping socket; pyvs tries one and falls back to a raw
ICMP socket (root), and refuses the configuration where neither exists
(``available()``, checked when the configuration is loaded).
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time

from pyvs.engine.health.checks.base import Outcome, Target, destination, error_text, family
from pyvs.engine.health.model import Checker

ECHO = {socket.AF_INET: (8, 0, socket.IPPROTO_ICMP),
        socket.AF_INET6: (128, 129, socket.IPPROTO_ICMPV6)}


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def open_socket(fam: int) -> tuple[socket.socket, bool]:
    """(socket, raw?): a ping socket if the kernel allows it, else a raw one."""
    proto = ECHO[fam][2]
    try:
        return socket.socket(fam, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK, proto), False
    except OSError:
        return socket.socket(fam, socket.SOCK_RAW | socket.SOCK_NONBLOCK, proto), True


def available() -> str | None:
    """None if ICMP echo can be sent here, else why not."""
    try:
        sock, _ = open_socket(socket.AF_INET)
        sock.close()
    except OSError as err:
        return f"no ICMP socket: {error_text(err)}"
    return None


def _reply(data: bytes, fam: int, raw: bool, ident: int, seq: int) -> bool:
    if fam == socket.AF_INET and raw:
        data = data[(data[0] & 0xF) * 4:] if data else data
    if len(data) < 8:
        return False
    kind, _, _, rid, rseq = struct.unpack_from("!BBHHH", data)
    return kind == ECHO[fam][1] and rseq == seq and (rid == ident or not raw)


async def check(c: Checker, t: Target) -> Outcome:
    host, _ = destination(c, t)
    fam = family(host)
    loop = asyncio.get_running_loop()
    ident, seq = os.getpid() & 0xFFFF, int.from_bytes(os.urandom(2), "big")
    try:
        sock, raw = open_socket(fam)
    except OSError as err:
        return Outcome(False, f"PING {host}: {error_text(err)}")
    with sock:
        try:
            if c.bindto:
                sock.bind((c.bindto, 0))
            body = b"pyvs-ping" + os.urandom(8)
            packet = struct.pack("!BBHHH", ECHO[fam][0], 0, 0, ident, seq) + body
            if fam == socket.AF_INET:
                packet = packet[:2] + struct.pack("!H", csum(packet)) + packet[4:]
            started = time.monotonic()
            await loop.sock_sendto(sock, packet, (host, 0))
            deadline = started + c.connect_timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                data, peer = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), left)
                if peer[0] == host and _reply(data, fam, raw, ident, seq):
                    return Outcome(True, f"PING {host}: echo reply",
                                   seconds=time.monotonic() - started)
        except (OSError, TimeoutError) as err:
            return Outcome(False, f"PING {host}: {error_text(err)}")
